"""VDM (Ho et al. 2022): the base video model and its cascaded super-resolution stage.

    method.py     'vdm': UNet3D builder, joint image-video packing, loss, guided sampling
    super_res.py  'vdm_sr': the cascade stage conditioned on a downsampled copy of its frames
"""

from vdiff.methods.vdm.method import VDM, build_unet, drop_labels, pack_joint_batch
from vdiff.methods.vdm.super_res import VDMSuperRes, upsample_nearest

__all__ = ["VDM", "VDMSuperRes", "build_unet", "drop_labels", "pack_joint_batch",
           "upsample_nearest"]
