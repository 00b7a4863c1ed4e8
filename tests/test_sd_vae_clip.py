"""Parity of the linen SD VAE and CLIP towers with diffusers / transformers (PyTorch).

Tiny random models are saved with `save_pretrained` (safetensors) and loaded with
vdiff's loaders, so the tests cover config parsing, weight conversion and the forward
passes together. Every torch parameter gets noise added, so zero-initialised biases,
unit norm scales and the like cannot hide a wrong mapping.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")

from vdiff.errors import ConfigError  # noqa: E402
from vdiff.models.sd import clip, convert, vae  # noqa: E402

TOL = 1e-4  # max |jax - torch| relative to the output's max magnitude (float32)


def _randomize(model, seed: int, std: float = 0.1):
    """Adds N(0, std²) noise to every parameter, in place; returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)
    return model.eval()


def _rel_err(ours, theirs) -> float:
    ours = np.asarray(ours, np.float64)
    theirs = theirs.detach().numpy().astype(np.float64) if hasattr(theirs, "detach") \
        else np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-6))


def _nchw(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(t) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


# --------------------------------------------------------------------------- VAE

@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory):
    torch.manual_seed(0)
    model = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32),
        layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=32)
    _randomize(model, seed=1)
    folder = tmp_path_factory.mktemp("vae")
    model.save_pretrained(folder, safe_serialization=True)
    return str(folder), model


@pytest.fixture(scope="module")
def vae_inputs():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    latents = rng.normal(size=(2, 16, 16, 4)).astype(np.float32)
    return images, latents


def test_vae_matches_diffusers(vae_folder, vae_inputs):
    folder, ref = vae_folder
    images, latents = vae_inputs
    module, params = vae.load_vae(folder)
    assert module.config.scaling_factor == pytest.approx(0.18215)
    variables = {"params": params}
    mean, logvar = jax.jit(lambda v, x: module.apply(v, x, method=module.encode))(
        variables, images)
    decoded = jax.jit(lambda v, z: module.apply(v, z, method=module.decode))(
        variables, latents)
    with torch.no_grad():
        dist = ref.encode(_nchw(images)).latent_dist
        ref_decoded = ref.decode(_nchw(latents)).sample
    errors = {"mean": _rel_err(mean, _nhwc(dist.mean)),
              "logvar": _rel_err(logvar, _nhwc(dist.logvar)),
              "decode": _rel_err(decoded, _nhwc(ref_decoded))}
    print("VAE relative max errors:", errors)
    assert max(errors.values()) < TOL, errors


def test_vae_sample_latent_and_config():
    mean = jnp.full((4096,), 2.0)
    logvar = jnp.full((4096,), np.log(0.25))
    z = vae.sample_latent(jax.random.PRNGKey(0), mean, logvar)
    assert abs(float(z.mean()) - 2.0) < 0.05 and abs(float(z.std()) - 0.5) < 0.05
    with pytest.raises(ConfigError, match="down_block_types"):
        vae.VAEConfig.from_diffusers_config(
            {"down_block_types": ["CrossAttnDownBlock2D"], "block_out_channels": [32]})


def test_vae_legacy_attention_names_and_mismatch_error(vae_folder):
    folder, _ = vae_folder
    module, params = vae.load_vae(folder)
    state = convert.load_state_dict(folder)
    legacy = {k.replace(".to_q.", ".query.").replace(".to_out.0.", ".proj_attn."): v
              for k, v in state.items()}
    renamed = convert.convert_state_dict(vae.rename_legacy_keys(legacy),
                                         vae.init_shapes(module))
    assert _same(params, renamed)
    wrong = vae.AutoencoderKL(vae.VAEConfig(block_out_channels=(16, 32, 32),
                                            layers_per_block=1, norm_num_groups=8))
    with pytest.raises(convert.WeightConversionError, match="missing"):
        convert.convert_state_dict(state, vae.init_shapes(wrong))


# --------------------------------------------------------------------------- CLIP text

def _text_folder(tmp_path_factory, eos_token_id: int, with_projection: bool):
    cfg = transformers.CLIPTextConfig(
        vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=16, projection_dim=16,
        hidden_act="quick_gelu" if eos_token_id == 2 else "gelu",
        bos_token_id=97, eos_token_id=eos_token_id, pad_token_id=1)
    torch.manual_seed(0)
    cls = (transformers.CLIPTextModelWithProjection if with_projection
           else transformers.CLIPTextModel)
    model = _randomize(cls(cfg), seed=2)
    folder = tmp_path_factory.mktemp(f"clip_text_{eos_token_id}")
    model.save_pretrained(folder, safe_serialization=True)
    return str(folder), model


def _token_ids(eos: int, pad: int, low: int, high: int) -> np.ndarray:
    """Two padded sequences [BOS, words…, EOS, pad…] of different lengths."""
    rng = np.random.default_rng(0)
    ids = np.full((2, 16), pad, np.int64)
    for row, n in enumerate((5, 11)):
        ids[row, 0] = 97
        ids[row, 1:n] = rng.integers(low, high, n - 1)
        ids[row, n] = eos
    return ids


@pytest.mark.parametrize("rule", ["legacy_argmax", "first_eos"])
def test_clip_text_matches_transformers(tmp_path_factory, rule):
    if rule == "legacy_argmax":
        # eos_token_id == 2 in the config: the EOS is found as the largest id (98 here,
        # like 49407 in CLIP's vocabulary), padded with the EOS token as SD 1.x does.
        folder, ref = _text_folder(tmp_path_factory, 2, with_projection=False)
        ids, mask = _token_ids(eos=98, pad=98, low=3, high=97), None
    else:
        # Modern configs: first occurrence of eos_token_id (3), with larger ids in the
        # text so that argmax would pick the wrong token; padding masked out.
        folder, ref = _text_folder(tmp_path_factory, 3, with_projection=True)
        ids = _token_ids(eos=3, pad=1, low=4, high=99)
        mask = (np.arange(16)[None] <= np.array([[5], [11]])).astype(np.int64)
    module, params = clip.load_clip_text(folder)
    assert module.with_projection == (rule == "first_eos")
    out = jax.jit(module.apply)({"params": params}, jnp.asarray(ids, jnp.int32),
                                None if mask is None else jnp.asarray(mask))
    with torch.no_grad():
        ref_out = ref(input_ids=torch.from_numpy(ids),
                      attention_mask=None if mask is None else torch.from_numpy(mask))
    errors = {"last_hidden_state": _rel_err(out.last_hidden_state, ref_out.last_hidden_state)}
    if module.with_projection:
        errors["text_embeds"] = _rel_err(out.text_embeds, ref_out.text_embeds)
        # Pooled = last_hidden_state at the EOS index; check that index directly too.
        pos = np.asarray(clip.eos_positions(jnp.asarray(ids), 3))
        np.testing.assert_array_equal(pos, [5, 11])
    else:
        errors["pooled"] = _rel_err(out.pooler_output, ref_out.pooler_output)
    print(f"CLIP text ({rule}) relative max errors:", errors)
    assert max(errors.values()) < TOL, errors


# --------------------------------------------------------------------------- CLIP vision

@pytest.fixture(scope="module")
def vision_folder(tmp_path_factory):
    cfg = transformers.CLIPVisionConfig(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
        num_hidden_layers=2, num_attention_heads=4, projection_dim=16)
    torch.manual_seed(0)
    model = _randomize(transformers.CLIPVisionModelWithProjection(cfg), seed=3)
    folder = tmp_path_factory.mktemp("clip_vision")
    model.save_pretrained(folder, safe_serialization=True)
    return str(folder), model


def test_clip_vision_matches_transformers(vision_folder):
    folder, ref = vision_folder
    module, params = clip.load_clip_vision(folder)
    assert module.with_projection
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    out = jax.jit(module.apply)({"params": params}, images)
    with torch.no_grad():
        ref_out = ref(pixel_values=_nchw(images))
        ref_pooled = ref.vision_model(pixel_values=_nchw(images)).pooler_output
    errors = {"last_hidden_state": _rel_err(out.last_hidden_state, ref_out.last_hidden_state),
              "pooled": _rel_err(out.pooler_output, ref_pooled),
              "image_embeds": _rel_err(out.image_embeds, ref_out.image_embeds)}
    print("CLIP vision relative max errors:", errors)
    assert max(errors.values()) < TOL, errors


def test_clip_preprocess():
    images = jnp.linspace(-1, 1, 2 * 48 * 64 * 3).reshape(2, 48, 64, 3)
    out = clip.clip_preprocess(images, 32)
    assert out.shape == (2, 32, 32, 3)
    white = clip.clip_preprocess(jnp.ones((1, 32, 32, 3)), 32)
    np.testing.assert_allclose(white[0, 0, 0], (1 - np.array(clip.CLIP_MEAN))
                               / np.array(clip.CLIP_STD), rtol=1e-5)


def _same(a, b) -> bool:
    return jax.tree_util.tree_all(jax.tree_util.tree_map(
        lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b))


def test_clip_loaders_accept_other_layouts(tmp_path, vision_folder):
    """A full CLIPModel checkpoint feeds both loaders; a prefixed standalone text
    checkpoint (what transformers 4 wrote, e.g. SD 1.x text_encoder) loads like an
    unprefixed one (transformers 5)."""
    from safetensors.numpy import save_file
    text = transformers.CLIPTextConfig(
        vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
        num_attention_heads=4, max_position_embeddings=16, projection_dim=16,
        bos_token_id=97, eos_token_id=98, pad_token_id=1)
    vision = transformers.CLIPVisionConfig(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
        num_hidden_layers=1, num_attention_heads=4, projection_dim=16)
    full = transformers.CLIPModel(transformers.CLIPConfig(
        text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16))
    full.save_pretrained(tmp_path / "full", safe_serialization=True)
    t, tp = clip.load_clip_text(str(tmp_path / "full"))
    v, vp = clip.load_clip_vision(str(tmp_path / "full"))
    assert t.with_projection and v.with_projection
    assert t.config.num_hidden_layers == 1 and v.config.image_size == 32
    t_plain, _ = clip.load_clip_text(str(tmp_path / "full"), with_projection=False)
    assert not t_plain.with_projection

    transformers.CLIPTextModel(text).save_pretrained(tmp_path / "t5", safe_serialization=True)
    state = convert.load_state_dict(str(tmp_path / "t5"))
    (tmp_path / "t4").mkdir()
    (tmp_path / "t4" / "config.json").write_text((tmp_path / "t5" / "config.json").read_text())
    save_file({"text_model." + k: v for k, v in state.items()},
              str(tmp_path / "t4" / "model.safetensors"))
    assert _same(clip.load_clip_text(str(tmp_path / "t5"))[1],
                 clip.load_clip_text(str(tmp_path / "t4"))[1])


# --------------------------------------------------------------------------- bf16

def test_bf16_smoke(vae_folder, vae_inputs, vision_folder):
    """bf16 compute (with remat) runs, stays finite, and lands near the float32 torch
    reference; params stay float32."""
    images, _ = vae_inputs
    folder, ref = vae_folder
    module, params = vae.load_vae(folder, dtype=jnp.bfloat16, remat=True)
    recon = jax.jit(module.apply)({"params": params}, images)
    with torch.no_grad():
        x = _nchw(images)
        ref_recon = ref.decode(ref.encode(x).latent_dist.mean).sample
    assert recon.dtype == jnp.float32 and bool(jnp.isfinite(recon).all())
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(
        lambda p: p.dtype == jnp.float32, params))
    vae_err = _rel_err(recon, _nhwc(ref_recon))
    assert vae_err < 0.05, vae_err

    folder, ref = vision_folder
    module, params = clip.load_clip_vision(folder, dtype=jnp.bfloat16, remat=True)
    pixels = np.random.default_rng(1).normal(size=(1, 32, 32, 3)).astype(np.float32)
    embeds = jax.jit(module.apply)({"params": params}, pixels).image_embeds
    with torch.no_grad():
        ref_embeds = ref(pixel_values=_nchw(pixels)).image_embeds
    clip_err = _rel_err(embeds, ref_embeds)
    print(f"bf16 relative max errors: VAE recon {vae_err:.2e}, CLIP image_embeds {clip_err:.2e}")
    assert bool(jnp.isfinite(embeds).all()) and clip_err < 0.05, clip_err
