"""SD 1.x UNet and ControlNet in linen against PyTorch diffusers, on tiny random models.

Each reference model is built with a fixed torch seed, every parameter is perturbed
(so diffusers' zero inits — ControlNet's 1×1 convs, its conditioning conv_out — cannot
hide a wiring bug), saved as safetensors and loaded back through `load_unet` /
`load_controlnet`. Inputs are NHWC on the JAX side, NCHW on the torch side.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from vdiff.errors import ConfigError  # noqa: E402
from vdiff.models.sd import controlnet as C  # noqa: E402
from vdiff.models.sd import convert  # noqa: E402
from vdiff.models.sd import unet as U  # noqa: E402

WEIGHTS = "diffusion_pytorch_model.safetensors"
SD15_UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0", "act_fn": "silu",
    "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                         "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
    "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                       "CrossAttnUpBlock2D"],
}

# Two tiny UNets between them cover both projections, per-block and shared head counts,
# 1 and 2 layers per block, 2 transformer layers, and odd latent sizes (diffusers'
# forwarded upsample_size).
TINY = {
    "conv_proj": dict(layers_per_block=1, attention_head_dim=(2, 4),
                      use_linear_projection=False),
    "linear_proj": dict(layers_per_block=2, attention_head_dim=4, use_linear_projection=True,
                        transformer_layers_per_block=2),
}
SIZES = {"conv_proj": (9, 12), "linear_proj": (16, 16)}


def _randomise(model, seed: int, std: float = 0.05):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model.eval()


def _tiny_unet(kind: str):
    torch.manual_seed(0)
    model = diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        norm_num_groups=8, **TINY[kind])
    return _randomise(model, seed=1)


@pytest.fixture(scope="module")
def tiny_unets(tmp_path_factory):
    """{kind: (torch model, saved folder)}."""
    out = {}
    for kind in TINY:
        model = _tiny_unet(kind)
        folder = str(tmp_path_factory.mktemp(kind))
        model.save_pretrained(folder, safe_serialization=True)
        out[kind] = (model, folder)
    return out


@pytest.fixture(scope="module")
def loaded(tiny_unets):
    """{kind: (module, params)} through `load_unet`, loaded once."""
    return {kind: U.load_unet(folder) for kind, (_, folder) in tiny_unets.items()}


def _inputs(kind: str, seed: int = 0):
    """(latents, timesteps, text tokens) as torch tensors, NCHW."""
    g = torch.Generator().manual_seed(seed)
    h, w = SIZES[kind]
    return (torch.randn(2, 4, h, w, generator=g), torch.tensor([10.0, 700.0]),
            torch.randn(2, 7, 32, generator=g))


def nhwc(t) -> jnp.ndarray:
    return jnp.asarray(t.detach().permute(0, 2, 3, 1).numpy())


def assert_close(actual, expected_nchw, rel: float = 1e-4) -> float:
    """Max abs difference, asserted ≤ rel · max(1, output scale); returned for reports."""
    expected = expected_nchw.detach().permute(0, 2, 3, 1).numpy()
    actual = np.asarray(actual)
    assert actual.shape == expected.shape
    err = float(np.abs(actual - expected).max())
    assert err <= rel * max(1.0, float(np.abs(expected).max())), err
    return err


@pytest.mark.parametrize("kind", list(TINY))
def test_unet_matches_diffusers(tiny_unets, loaded, kind):
    model, _ = tiny_unets[kind]
    x, t, ctx = _inputs(kind)
    with torch.no_grad():
        expected = model(x, t, ctx).sample
    module, params = loaded[kind]
    assert module.config.use_linear_projection == (kind == "linear_proj")
    out = jax.jit(module.apply)({"params": params}, nhwc(x), jnp.asarray(t.numpy()),
                                jnp.asarray(ctx.numpy()))
    assert out.dtype == jnp.float32
    assert_close(out, expected)


def test_bf16_and_remat_load_the_same_params(tiny_unets):
    """remat wraps blocks without renaming params; bf16 compute stays near float32."""
    model, folder = tiny_unets["conv_proj"]
    x, _, ctx = _inputs("conv_proj", seed=5)
    module, params = U.load_unet(folder, dtype=jnp.bfloat16, remat=True)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
    out = jax.jit(module.apply)({"params": params}, nhwc(x), 500, jnp.asarray(ctx.numpy()))
    with torch.no_grad():
        expected = model(x, 500, ctx).sample
    assert out.dtype == jnp.float32
    assert_close(out, expected, rel=5e-2)


def test_widen_input_channels_keeps_outputs(tiny_unets, loaded):
    """Zero-initialised extra channels: any values in them leave the output unchanged."""
    model, _ = tiny_unets["conv_proj"]
    x, t, ctx = _inputs("conv_proj", seed=3)
    with torch.no_grad():
        expected = model(x, t, ctx).sample
    module, params = loaded["conv_proj"]
    wide = U.widen_input_channels(params, 10)
    assert wide["conv_in"]["kernel"].shape == (3, 3, 14, 32)
    assert params["conv_in"]["kernel"].shape == (3, 3, 4, 32)  # input not modified
    np.testing.assert_array_equal(wide["conv_in"]["kernel"][:, :, :4], params["conv_in"]["kernel"])
    extra = 5.0 * jax.random.normal(jax.random.key(0), nhwc(x).shape[:3] + (10,))
    out = jax.jit(module.apply)({"params": wide}, jnp.concatenate([nhwc(x), extra], -1),
                                jnp.asarray(t.numpy()), jnp.asarray(ctx.numpy()))
    assert_close(out, expected)


def test_controlnet_and_residuals_match_diffusers(tiny_unets, loaded, tmp_path):
    unet, _ = tiny_unets["conv_proj"]
    torch.manual_seed(2)
    control = diffusers.ControlNetModel.from_unet(unet,
                                                  conditioning_embedding_out_channels=(8, 16))
    _randomise(control, seed=3).save_pretrained(str(tmp_path), safe_serialization=True)
    x, t, ctx = _inputs("conv_proj")
    image = torch.randn(2, 3, 2 * x.shape[2], 2 * x.shape[3],
                        generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        down, mid = control(x, t, ctx, image, conditioning_scale=0.7, return_dict=False)
        guess_down, guess_mid = control(x, t, ctx, image, conditioning_scale=0.7,
                                        guess_mode=True, return_dict=False)
        expected = unet(x, t, ctx, down_block_additional_residuals=down,
                        mid_block_additional_residual=mid).sample

    cmodule, cparams = C.load_controlnet(str(tmp_path))
    t_j, ctx_j = jnp.asarray(t.numpy()), jnp.asarray(ctx.numpy())

    def both_modes(p, *args):
        return tuple(cmodule.apply({"params": p}, *args, conditioning_scale=0.7,
                                   guess_mode=guess) for guess in (False, True))

    (jdown, jmid), (jguess_down, jguess_mid) = jax.jit(both_modes)(
        cparams, nhwc(x), t_j, ctx_j, nhwc(image))
    assert len(jdown) == len(down) == 4
    for a, b in zip([*jdown, *jguess_down], [*down, *guess_down]):
        assert_close(a, b)
    assert_close(jmid, mid)
    assert_close(jguess_mid, guess_mid)

    umodule, uparams = loaded["conv_proj"]
    out = jax.jit(lambda p, x, dr, mr: umodule.apply(
        {"params": p}, x, t_j, ctx_j, down_block_additional_residuals=dr,
        mid_block_additional_residual=mr))(uparams, nhwc(x), jdown, jmid)
    assert_close(out, expected)


def test_controlnet_from_unet_copies_shared_parts(tiny_unets, loaded, tmp_path):
    """Same tree as diffusers' `ControlNetModel.from_unet`; shared weights equal the
    UNet's, the 1×1 convs and the conditioning conv_out are zero."""
    unet, _ = tiny_unets["conv_proj"]
    reference = diffusers.ControlNetModel.from_unet(unet,
                                                    conditioning_embedding_out_channels=(8, 16))
    reference.save_pretrained(str(tmp_path), safe_serialization=True)
    _, ref_params = C.load_controlnet(str(tmp_path))

    umodule, uparams = loaded["conv_proj"]
    module, params = C.controlnet_from_unet(uparams, umodule.config,
                                            conditioning_embedding_out_channels=(8, 16))
    assert module.config.cross_attention_dim == 32
    flat = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    ref_flat = dict(jax.tree_util.tree_flatten_with_path(ref_params)[0])
    assert flat.keys() == ref_flat.keys()
    for path, value in flat.items():
        name = convert.torch_name(tuple(p.key for p in path))
        assert value.shape == ref_flat[path].shape, name
        if name.startswith("controlnet_cond_embedding") and "conv_out" not in name:
            continue  # freshly initialised, differently from torch
        np.testing.assert_allclose(np.asarray(value), np.asarray(ref_flat[path]), err_msg=name)
    assert not np.any(np.asarray(params["controlnet_mid_block"]["kernel"]))


def test_conversion_errors_name_the_tensors(tiny_unets, tmp_path):
    _, folder = tiny_unets["linear_proj"]
    shutil.copy(os.path.join(folder, "config.json"), tmp_path)
    state = load_file(os.path.join(folder, WEIGHTS))
    del state["conv_in.weight"]
    state["mid_block.resnets.0.conv1.bias_renamed"] = state.pop("mid_block.resnets.0.conv1.bias")
    name = "up_blocks.1.attentions.0.proj_in.weight"
    state[name] = np.ascontiguousarray(state[name].T[:-1])
    save_file(state, os.path.join(tmp_path, WEIGHTS))
    with pytest.raises(convert.WeightConversionError) as err:
        U.load_unet(str(tmp_path))
    message = str(err.value)
    for part in ("2 missing", "conv_in.weight", "mid_block.resnets.0.conv1.bias",
                 "1 unexpected", "mid_block.resnets.0.conv1.bias_renamed",
                 "1 mis-shaped", name):
        assert part in message, part


def test_pickle_checkpoints_are_refused(tiny_unets, tmp_path):
    model, folder = tiny_unets["conv_proj"]
    model.save_pretrained(str(tmp_path), safe_serialization=False)
    assert not any(f.endswith(".safetensors") for f in os.listdir(tmp_path))
    with pytest.raises(convert.WeightConversionError, match="pickle"):
        U.load_unet(str(tmp_path))
    with pytest.raises(convert.WeightConversionError, match="pickle"):
        convert.load_state_dict(os.path.join(tmp_path, "diffusion_pytorch_model.bin"))


def test_config_parsing_and_unsupported_features():
    config = U.UNetConfig.from_diffusers_config(SD15_UNET_CONFIG)
    assert config == U.UNetConfig()  # the defaults are SD 1.5's
    assert config.num_attention_heads == (8, 8, 8, 8)  # attention_head_dim counts heads
    sd21 = U.UNetConfig.from_diffusers_config(
        {**SD15_UNET_CONFIG, "attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024,
         "use_linear_projection": True, "upcast_attention": True})
    assert sd21.num_attention_heads == (5, 10, 20, 20) and sd21.upcast_attention
    # Features switched off by their default values are fine.
    U.UNetConfig.from_diffusers_config({**SD15_UNET_CONFIG, "class_embed_type": None,
                                        "only_cross_attention": [False] * 4, "dropout": 0.0})

    with pytest.raises(ConfigError, match="class_embed_type='timestep'") as err:
        U.UNetConfig.from_diffusers_config(
            {**SD15_UNET_CONFIG, "class_embed_type": "timestep", "only_cross_attention": True,
             "some_future_key": 1})
    assert "only_cross_attention=True" in str(err.value)
    assert "unknown config key some_future_key" in str(err.value)
    with pytest.raises(ConfigError, match="AttnUpBlock2D"):
        U.UNetConfig.from_diffusers_config(
            {**SD15_UNET_CONFIG, "up_block_types": ["UpBlock2D"] + ["AttnUpBlock2D"] * 3})
    with pytest.raises(ConfigError, match="layers_per_block"):
        U.UNetConfig(layers_per_block=(2, 2))
    with pytest.raises(ConfigError, match="addition_embed_type=.text."):
        C.ControlNetConfig.from_diffusers_config({"addition_embed_type": "text"})


def test_sd15_names_and_shapes_match_diffusers():
    """The full-size SD 1.5 UNet's tree lines up with diffusers' state dict, name for
    name and shape for shape (meta tensors: no weights are made)."""
    with torch.device("meta"):
        reference = diffusers.UNet2DConditionModel.from_config(SD15_UNET_CONFIG)
    state = {k: np.broadcast_to(np.zeros((), np.float32), v.shape)
             for k, v in reference.state_dict().items()}
    module = U.UNet2DConditionModel(U.UNetConfig.from_diffusers_config(SD15_UNET_CONFIG))
    shapes = U.param_shapes(module)
    convert.convert_state_dict(state, shapes, what="UNet")  # raises on any mismatch
    assert sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes)) == 859_520_964
