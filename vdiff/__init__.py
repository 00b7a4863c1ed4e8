"""vdiff: video diffusion models in JAX/Flax on one shared diffusion core."""

__version__ = "0.1.0"
