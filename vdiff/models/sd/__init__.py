"""Stable Diffusion 1.x components in linen, loadable from diffusers-layout safetensors.

Module names mirror the PyTorch state-dict names (a linen module named "resnets.0"
inside one named "down_blocks.1"), so one generic rule in `convert.py` maps every
parameter; see that module for the rule and the errors it raises.
"""
