"""Interpolation between two real images (Wang & Golland 2023): training-free, one video.

    python -m vdiff.main --config=configs/interpolation.py --workdir=OUT --mode=sample \
        --application=interpolate --config.interpolation.sd=SD_DIR \
        --config.interpolation.image_a=a.png --config.interpolation.image_b=b.png \
        --config.interpolation.prompt_a="a photo of a cat" \
        --config.interpolation.prompt_b="a photo of a dog"
    python -m vdiff.main --config=configs/interpolation.py --workdir=OUT --mode=sample \
        --application=interpolate --config.interpolation.dreampose_run=WORKDIR/vae \
        --config.interpolation.image_a=a.png --config.interpolation.image_b=b.png \
        --config.interpolation.keypoints_a=a.json --config.interpolation.keypoints_b=b.json

Writes OUT/interpolation.mp4, OUT/frames/ and OUT/run.json (or under --output_dir), as
`python -m vdiff.interpolation.cli` does. Keys: vdiff/methods/interpolation/config.py;
--num_steps (DDIM steps), --seed, --guidance_scale (SD text guidance) and --num_frames act
as for every method; DDIM is the only sampler. No config arguments.
"""

from vdiff import config_lib
from vdiff.methods.interpolation.config import interpolation_defaults


def get_config(arg=None):
    config_lib.parse_arg(arg)  # takes none: any argument is a clear error
    return interpolation_defaults()
