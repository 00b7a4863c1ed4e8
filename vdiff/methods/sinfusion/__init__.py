"""SinFusion: diffusion models trained on one image or one short video (Nikankin et al. 2023).

    config.py      sinfusion_defaults, frame/crop shapes, per-role run configs
    curriculum.py  the Predictor's frame-difference curriculum
    inputs.py      each role's target and conditioning frames from a video batch
    roles.py       the role classes (image, projector, predictor, interpolator) and
                   SinFusionModel, the registered method 'sinfusion'
    apps.py        the applications as pure, jittable functions of params and roles
    sampling.py    `--mode=sample`: the applications over a workdir's per-role checkpoints
"""

from vdiff.methods.sinfusion import apps
from vdiff.methods.sinfusion.config import (ROLE_PARAMETERIZATION, crop_shape, frame_shape,
                                            role_config, sinfusion_defaults, training_runs)
from vdiff.methods.sinfusion.curriculum import (curriculum_k_range, curriculum_max_k,
                                                sample_frame_pair)
from vdiff.methods.sinfusion.inputs import (RoleInputs, frames_at, interpolator_inputs,
                                            predictor_inputs, projector_inputs,
                                            synthetic_frames)
from vdiff.methods.sinfusion.roles import (ROLES, SinFusionImage, SinFusionInterpolator,
                                           SinFusionModel, SinFusionPredictor,
                                           SinFusionProjector, make_sinfusion)

__all__ = ["ROLES", "ROLE_PARAMETERIZATION", "RoleInputs", "SinFusionImage",
           "SinFusionInterpolator", "SinFusionModel", "SinFusionPredictor",
           "SinFusionProjector", "apps", "crop_shape", "curriculum_k_range",
           "curriculum_max_k", "frame_shape", "frames_at", "interpolator_inputs",
           "make_sinfusion", "predictor_inputs", "projector_inputs", "role_config",
           "sample_frame_pair", "sinfusion_defaults", "synthetic_frames", "training_runs"]
