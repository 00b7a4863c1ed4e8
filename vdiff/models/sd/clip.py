"""CLIP's text and vision transformers (transformers `CLIPTextModel[WithProjection]`,
`CLIPVisionModel[WithProjection]`) in linen.

Both are pre-LN transformers over tokens:

    x ← x + SelfAttn(LN₁ x)      (causal for text)
    x ← x + MLP(LN₂ x)           (fc1 → quick_gelu / gelu → fc2)

Text: token + position embeddings → layers → final_layer_norm = last_hidden_state; the
pooled output is last_hidden_state at the EOS token. Stable Diffusion 1.x conditions its
UNet on last_hidden_state.
Vision: p×p patch conv (no bias) → [class_embedding, patches] + position embeddings →
pre_layrnorm → layers = last_hidden_state; pooled = post_layernorm(CLS token).
The WithProjection variants add a bias-free Dense from the pooled output to
text_embeds / image_embeds.

Linen module names are the transformers state-dict names. The top-level module holds
the transformer as a child named "text_model" / "vision_model" (the names inside a
CLIPModel or a *WithProjection checkpoint) next to "text_projection" /
"visual_projection"; the loaders add that prefix to checkpoints saved without it
(transformers ≥ 5 saves a standalone CLIPTextModel / CLIPVisionModel unprefixed).

    text, params = load_clip_text("<sd>/text_encoder")
    out = text.apply({"params": params}, input_ids)       # out.last_hidden_state [B, 77, 768]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vdiff.errors import ConfigError
from vdiff.models.sd import convert
from vdiff.models.sd.attention import multihead_attention

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The eos_token_id of CLIP configs saved before transformers PR #24773; with it the EOS
# position is the argmax of the ids (EOS is the largest id in CLIP's vocabulary).
_LEGACY_EOS_TOKEN_ID = 2

_ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


def _check_common(cfg: Any) -> None:
    if cfg.hidden_act not in _ACTIVATIONS:
        raise ConfigError(f"CLIP hidden_act {cfg.hidden_act!r} is not supported; "
                          f"use one of {sorted(_ACTIVATIONS)}.")
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ConfigError(f"CLIP hidden_size {cfg.hidden_size} is not divisible by "
                          f"num_attention_heads {cfg.num_attention_heads}.")


def _sub_config(d: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The text / vision part of a config dict: a full CLIPConfig nests it under
    `key`; the standalone CLIPTextConfig / CLIPVisionConfig is the dict itself."""
    if d.get("model_type") == "clip" or key in d:
        return dict(d.get(key) or {})
    return dict(d)


def _from_dict(cls: type, d: Mapping[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names and v is not None})


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """transformers `CLIPTextConfig` fields that shape the network (same defaults)."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 49407

    def __post_init__(self):
        _check_common(self)

    @classmethod
    def from_transformers_config(cls, d: Mapping[str, Any]) -> "CLIPTextConfig":
        """From a CLIPTextConfig config.json dict, or a CLIPConfig one (its text_config)."""
        return _from_dict(cls, _sub_config(d, "text_config"))


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    """transformers `CLIPVisionConfig` fields that shape the network (same defaults)."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        _check_common(self)
        if self.image_size % self.patch_size:
            raise ConfigError(f"CLIP image_size {self.image_size} is not a multiple of "
                              f"patch_size {self.patch_size}.")

    @property
    def num_positions(self) -> int:
        """Patches plus the class token."""
        return (self.image_size // self.patch_size) ** 2 + 1

    @classmethod
    def from_transformers_config(cls, d: Mapping[str, Any]) -> "CLIPVisionConfig":
        """From a CLIPVisionConfig config.json dict, or a CLIPConfig one (its vision_config)."""
        return _from_dict(cls, _sub_config(d, "vision_config"))


class CLIPTextOutput(NamedTuple):
    """float32 outputs. hidden_states (with output_hidden_states): the embeddings and
    each layer's output, before final_layer_norm (SDXL reads hidden_states[-2])."""

    last_hidden_state: jnp.ndarray                 # [B, L, D]
    pooler_output: jnp.ndarray                     # [B, D]
    text_embeds: jnp.ndarray | None = None         # [B, projection_dim]
    hidden_states: tuple[jnp.ndarray, ...] | None = None


class CLIPVisionOutput(NamedTuple):
    """float32 outputs; hidden_states as for CLIPTextOutput (last_hidden_state is the
    last of them: the vision model applies no final norm to the sequence)."""

    last_hidden_state: jnp.ndarray                 # [B, 1 + patches, D]
    pooler_output: jnp.ndarray                     # [B, D]
    image_embeds: jnp.ndarray | None = None        # [B, projection_dim]
    hidden_states: tuple[jnp.ndarray, ...] | None = None


def _layer_norm(x: jnp.ndarray, eps: float, name: str, dtype: Any) -> jnp.ndarray:
    """torch.nn.LayerNorm with float32 statistics, back in the compute dtype. Must be
    called inside a compact method (the norm becomes a child named `name`)."""
    norm = nn.LayerNorm(epsilon=eps, dtype=jnp.float32, use_fast_variance=False, name=name)
    return norm(x.astype(jnp.float32)).astype(dtype)


class CLIPAttention(nn.Module):
    """Multi-head self-attention with q/k/v/out projections (transformers names)."""

    num_heads: int
    attention_impl: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, is_causal: bool = False,
                 mask: jnp.ndarray | None = None) -> jnp.ndarray:
        d = x.shape[-1]
        q, k, v = (nn.Dense(d, dtype=self.dtype, name=n)(x)
                   for n in ("q_proj", "k_proj", "v_proj"))
        out = multihead_attention(q, k, v, num_heads=self.num_heads,
                                  implementation=self.attention_impl,
                                  is_causal=is_causal and mask is None, mask=mask)
        return nn.Dense(d, dtype=self.dtype, name="out_proj")(out)


class CLIPMLP(nn.Module):
    """fc1 → activation → fc2."""

    intermediate_size: int
    hidden_act: str
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        h = nn.Dense(self.intermediate_size, dtype=self.dtype, name="fc1")(x)
        h = _ACTIVATIONS[self.hidden_act](h)
        return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(h)


class CLIPEncoderLayer(nn.Module):
    """x + attn(LN₁ x), then x + mlp(LN₂ x)."""

    num_heads: int
    intermediate_size: int
    hidden_act: str
    layer_norm_eps: float
    attention_impl: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, is_causal: bool = False,
                 mask: jnp.ndarray | None = None) -> jnp.ndarray:
        h = _layer_norm(x, self.layer_norm_eps, "layer_norm1", self.dtype)
        x = x + CLIPAttention(self.num_heads, self.attention_impl, self.dtype,
                              name="self_attn")(h, is_causal=is_causal, mask=mask)
        h = _layer_norm(x, self.layer_norm_eps, "layer_norm2", self.dtype)
        return x + CLIPMLP(self.intermediate_size, self.hidden_act, self.dtype,
                           name="mlp")(h)


class CLIPEncoder(nn.Module):
    """The stack of layers ("layers.0", …); returns the output and, when asked,
    every intermediate sequence starting with the input."""

    config: CLIPTextConfig | CLIPVisionConfig
    attention_impl: str | None = None
    remat: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, is_causal: bool = False,
                 mask: jnp.ndarray | None = None, output_hidden_states: bool = False
                 ) -> tuple[jnp.ndarray, tuple[jnp.ndarray, ...] | None]:
        c = self.config
        layer_cls = (nn.remat(CLIPEncoderLayer, static_argnums=(2,)) if self.remat
                     else CLIPEncoderLayer)
        states = [x]
        for i in range(c.num_hidden_layers):
            x = layer_cls(c.num_attention_heads, c.intermediate_size, c.hidden_act,
                          c.layer_norm_eps, self.attention_impl, self.dtype,
                          name=f"layers.{i}")(x, is_causal, mask)
            states.append(x)
        return x, (tuple(states) if output_hidden_states else None)


def eos_positions(input_ids: jnp.ndarray, eos_token_id: int) -> jnp.ndarray:
    """Index of the pooled token per sequence, transformers' rule: the argmax of the ids
    for legacy configs (eos_token_id == 2), else the first occurrence of eos_token_id
    (padding may repeat it)."""
    ids = input_ids.astype(jnp.int32)
    if eos_token_id == _LEGACY_EOS_TOKEN_ID:
        return jnp.argmax(ids, axis=-1)
    return jnp.argmax(ids == eos_token_id, axis=-1)


class CLIPTextEmbeddings(nn.Module):
    """token_embedding(ids) + position_embedding(0 … L-1)."""

    config: CLIPTextConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jnp.ndarray) -> jnp.ndarray:
        c = self.config
        tokens = nn.Embed(c.vocab_size, c.hidden_size, dtype=self.dtype,
                          name="token_embedding")(input_ids)
        positions = nn.Embed(c.max_position_embeddings, c.hidden_size, dtype=self.dtype,
                             name="position_embedding")(jnp.arange(input_ids.shape[-1]))
        return tokens + positions


class CLIPTextTransformer(nn.Module):
    """embeddings → causal encoder → final_layer_norm; pooled at the EOS token."""

    config: CLIPTextConfig
    attention_impl: str | None = None
    remat: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jnp.ndarray, attention_mask: jnp.ndarray | None = None,
                 output_hidden_states: bool = False):
        c = self.config
        length = input_ids.shape[-1]
        if length > c.max_position_embeddings:
            raise ValueError(f"{length} tokens exceed max_position_embeddings "
                             f"{c.max_position_embeddings}.")
        x = CLIPTextEmbeddings(c, self.dtype, name="embeddings")(input_ids)
        mask = None
        if attention_mask is not None:  # causal and not padding, True = may attend
            causal = jnp.tril(jnp.ones((length, length), bool))
            mask = causal[None, None] & (attention_mask[:, None, None, :] > 0)
        x, states = CLIPEncoder(c, self.attention_impl, self.remat, self.dtype,
                                name="encoder")(x, True, mask, output_hidden_states)
        last = _layer_norm(x, c.layer_norm_eps, "final_layer_norm", self.dtype)
        pos = eos_positions(input_ids, c.eos_token_id)
        pooled = jnp.take_along_axis(last, pos[:, None, None], axis=1)[:, 0]
        return last, pooled, states


class CLIPTextModel(nn.Module):
    """CLIP's text tower; with_projection=True is `CLIPTextModelWithProjection`.

    __call__(input_ids [B, L] int, attention_mask [B, L] or None (1 = token, 0 = padding;
    Stable Diffusion passes none), output_hidden_states) → CLIPTextOutput, float32.
    dtype is the compute dtype; params are float32.
    """

    config: CLIPTextConfig
    with_projection: bool = False
    dtype: Any = jnp.float32
    attention_impl: str | None = None
    remat: bool = False

    @nn.compact
    def __call__(self, input_ids: jnp.ndarray, attention_mask: jnp.ndarray | None = None,
                 output_hidden_states: bool = False) -> CLIPTextOutput:
        last, pooled, states = CLIPTextTransformer(
            self.config, self.attention_impl, self.remat, self.dtype,
            name="text_model")(input_ids, attention_mask, output_hidden_states)
        embeds = None
        if self.with_projection:
            embeds = nn.Dense(self.config.projection_dim, use_bias=False, dtype=self.dtype,
                              name="text_projection")(pooled).astype(jnp.float32)
        f32 = lambda t: t.astype(jnp.float32)  # noqa: E731
        return CLIPTextOutput(f32(last), f32(pooled), embeds,
                              None if states is None else tuple(map(f32, states)))


class CLIPTextModelWithProjection(CLIPTextModel):
    """CLIPTextModel with `text_projection` (text_embeds), e.g. SDXL's second encoder."""

    with_projection: bool = True


class CLIPVisionEmbeddings(nn.Module):
    """[class_embedding, patch_embedding(image)] + position_embedding."""

    config: CLIPVisionConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        c = self.config
        p = c.patch_size
        class_embedding = self.param("class_embedding", nn.initializers.normal(1.0),
                                     (c.hidden_size,))
        patches = nn.Conv(c.hidden_size, (p, p), strides=(p, p), padding="VALID",
                          use_bias=False, dtype=self.dtype,
                          name="patch_embedding")(images.astype(self.dtype))
        b = patches.shape[0]
        patches = patches.reshape(b, -1, c.hidden_size)
        cls = jnp.broadcast_to(class_embedding.astype(self.dtype), (b, 1, c.hidden_size))
        positions = nn.Embed(c.num_positions, c.hidden_size, dtype=self.dtype,
                             name="position_embedding")(jnp.arange(c.num_positions))
        return jnp.concatenate([cls, patches], axis=1) + positions


class CLIPVisionTransformer(nn.Module):
    """embeddings → pre_layrnorm → encoder; pooled = post_layernorm(CLS token)."""

    config: CLIPVisionConfig
    attention_impl: str | None = None
    remat: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jnp.ndarray, output_hidden_states: bool = False):
        c = self.config
        if images.shape[1:3] != (c.image_size, c.image_size):
            raise ValueError(f"CLIP vision expects {c.image_size}×{c.image_size} images "
                             f"(NHWC), got {images.shape}; see clip_preprocess.")
        x = CLIPVisionEmbeddings(c, self.dtype, name="embeddings")(images)
        x = _layer_norm(x, c.layer_norm_eps, "pre_layrnorm", self.dtype)
        x, states = CLIPEncoder(c, self.attention_impl, self.remat, self.dtype,
                                name="encoder")(x, False, None, output_hidden_states)
        pooled = _layer_norm(x[:, 0], c.layer_norm_eps, "post_layernorm", self.dtype)
        return x, pooled, states


class CLIPVisionModel(nn.Module):
    """CLIP's image tower; with_projection=True is `CLIPVisionModelWithProjection`.

    __call__(images [B, S, S, C] NHWC, already normalised (clip_preprocess),
    output_hidden_states) → CLIPVisionOutput, float32.
    """

    config: CLIPVisionConfig
    with_projection: bool = False
    dtype: Any = jnp.float32
    attention_impl: str | None = None
    remat: bool = False

    @nn.compact
    def __call__(self, images: jnp.ndarray, output_hidden_states: bool = False
                 ) -> CLIPVisionOutput:
        last, pooled, states = CLIPVisionTransformer(
            self.config, self.attention_impl, self.remat, self.dtype,
            name="vision_model")(images, output_hidden_states)
        embeds = None
        if self.with_projection:
            embeds = nn.Dense(self.config.projection_dim, use_bias=False, dtype=self.dtype,
                              name="visual_projection")(pooled).astype(jnp.float32)
        f32 = lambda t: t.astype(jnp.float32)  # noqa: E731
        return CLIPVisionOutput(f32(last), f32(pooled), embeds,
                                None if states is None else tuple(map(f32, states)))


class CLIPVisionModelWithProjection(CLIPVisionModel):
    """CLIPVisionModel with `visual_projection` (image_embeds), e.g. IP-Adapter's encoder."""

    with_projection: bool = True


def clip_preprocess(images: jnp.ndarray, size: int) -> jnp.ndarray:
    """Images [B, H, W, 3] in [-1, 1] → CLIP input [B, size, size, 3]: like
    CLIPImageProcessor, bicubic resize of the short side to `size` (antialiased when
    shrinking), centre crop, clip to [0, 1] (as 8-bit images would be), normalise
    with CLIP's mean / std."""
    b, h, w, ch = images.shape
    scale = size / min(h, w)
    new_h, new_w = max(size, int(h * scale)), max(size, int(w * scale))
    x = (images.astype(jnp.float32) + 1.0) / 2.0
    if (new_h, new_w) != (h, w):
        x = jax.image.resize(x, (b, new_h, new_w, ch), method="bicubic", antialias=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = jnp.clip(x[:, top:top + size, left:left + size], 0.0, 1.0)
    return (x - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)


def _prefixed(state: Mapping[str, np.ndarray], prefix: str,
              top_level: tuple[str, ...]) -> dict[str, np.ndarray]:
    """`state` with `prefix` on every tower key: checkpoints saved from a standalone
    transformers ≥ 5 CLIPTextModel / CLIPVisionModel carry none. Keys starting with one
    of `top_level` (the projections, CLIPModel's logit_scale) stay as they are."""
    if any(k.startswith(prefix) for k in state):
        return dict(state)
    return {k if k.startswith(top_level) else prefix + k: v for k, v in state.items()}


def _load(folder: str, module_fn: Callable[[bool], nn.Module], example: jnp.ndarray,
          tower: str, projection: str, other: tuple[str, ...],
          with_projection: bool | None, what: str) -> tuple[nn.Module, Any]:
    """Shared body of the loaders: prefix the state, decide on the projection, convert."""
    top_level = (projection + ".", "logit_scale") + other
    state = _prefixed(convert.load_state_dict(folder), tower + ".", top_level)
    has_projection = f"{projection}.weight" in state
    if with_projection is None:
        with_projection = has_projection
    module = module_fn(with_projection)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), example)["params"]
    # A CLIPModel checkpoint holds both towers; the other one and the buffers are unused.
    ignore = ("position_ids", "logit_scale") + other
    if not with_projection:
        ignore += (projection + ".",)
    params = convert.convert_state_dict(state, shapes, ignore=ignore, what=what)
    return module, jax.tree_util.tree_map(jnp.asarray, params)


def load_clip_text(folder: str, *, dtype: Any = jnp.float32,
                   with_projection: bool | None = None, attention_impl: str | None = None,
                   remat: bool = False) -> tuple[CLIPTextModel, Any]:
    """(module, float32 params) from a transformers CLIP text folder (config.json +
    safetensors), e.g. <sd>/text_encoder. with_projection None: whether the checkpoint
    has text_projection.weight."""
    config = CLIPTextConfig.from_transformers_config(convert.load_config(folder))
    return _load(
        folder,
        lambda proj: CLIPTextModel(config, proj, dtype, attention_impl, remat),
        jnp.zeros((1, config.max_position_embeddings), jnp.int32),
        "text_model", "text_projection", ("vision_model.", "visual_projection."),
        with_projection, "CLIP text model")


def load_clip_vision(folder: str, *, dtype: Any = jnp.float32,
                     with_projection: bool | None = None, attention_impl: str | None = None,
                     remat: bool = False) -> tuple[CLIPVisionModel, Any]:
    """(module, float32 params) from a transformers CLIP vision folder (config.json +
    safetensors), e.g. an image_encoder. with_projection None: whether the checkpoint
    has visual_projection.weight."""
    config = CLIPVisionConfig.from_transformers_config(convert.load_config(folder))
    return _load(
        folder,
        lambda proj: CLIPVisionModel(config, proj, dtype, attention_impl, remat),
        jnp.zeros((1, config.image_size, config.image_size, config.num_channels),
                  jnp.float32),
        "vision_model", "visual_projection", ("text_model.", "text_projection."),
        with_projection, "CLIP vision model")
