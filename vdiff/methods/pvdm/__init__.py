"""PVDM: projected latent video diffusion (Yu et al., CVPR 2023, arXiv 2302.07685).

Two stages, two registered methods, both driven by the shared `train_step` and trainer:

    config.py        pvdm_defaults: every key of both stages
    autoencoder.py   'pvdm_ae': the projected autoencoder (L1 + LPIPS, optional GAN stage)
    latent.py        'pvdm_ldm': diffusion over the frozen autoencoder's triplane latents,
                     clip-conditional long videos
    latent_cache.py  pvdm.cache_latents: encode the training set once, train from the cache
    weights.py       a trained autoencoder's config and EMA weights: load, export
    cli.py           `python -m vdiff.methods.pvdm WORKDIR OUT` (the export)
"""

from vdiff.methods.pvdm.autoencoder import (PVDMAutoencoderStage, build_autoencoder,
                                            held_out_clips, to_rgb)
from vdiff.methods.pvdm.cli import main
from vdiff.methods.pvdm.config import STAGES, pvdm_defaults
from vdiff.methods.pvdm.latent import PVDMLatentStage
from vdiff.methods.pvdm.weights import (EXPORTED_AUTOENCODER, export_autoencoder,
                                        load_autoencoder_config, load_autoencoder_params)

__all__ = ["EXPORTED_AUTOENCODER", "PVDMAutoencoderStage", "PVDMLatentStage", "STAGES",
           "build_autoencoder", "export_autoencoder", "held_out_clips",
           "load_autoencoder_config", "load_autoencoder_params", "main", "pvdm_defaults",
           "to_rgb"]
