"""Ranking candidate frames with CLIP, and the interactive candidate workflow.

score(image) = cos(CLIP_image(image), CLIP_text(positive)) − cos(CLIP_image(image),
CLIP_text(negative)) (the negative term is dropped without a negative prompt); the
candidate with the highest score wins. Interactive mode writes every candidate to
``<out>/candidates/frame_NNN/cand_C.png`` and the scores to ``<out>/candidates/
scores.json``; a second run with ``--choices=FRAME:CAND,...`` (same seed and settings)
regenerates exactly the same candidates and keeps the chosen ones (in DID a choice also
changes the frames made from it, so the run is repeated rather than pasted together).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vdiff.errors import ConfigError

Array = jax.Array


def _unit(x: Array) -> Array:
    x = jnp.asarray(x, jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class ClipRanker:
    """Scores images [B, H, W, 3] in [−1, 1] against a positive (minus a negative) prompt."""

    def __init__(self, vision: Any, vision_params: Any, pos_embed: Array,
                 neg_embed: Array | None = None):
        from vdiff.models.sd.clip import clip_preprocess

        self.vision, self.vision_params = vision, vision_params
        self.pos = _unit(pos_embed).reshape(-1)
        self.neg = None if neg_embed is None else _unit(neg_embed).reshape(-1)
        size = vision.config.image_size

        @jax.jit
        def embed(params, images):
            out = vision.apply({"params": params}, clip_preprocess(images, size))
            return _unit(out.image_embeds)

        self._embed = embed

    @classmethod
    def from_models(cls, text: Any, text_params: Any, vision: Any, vision_params: Any,
                    tokenizer: Any, positive: str, negative: str = "") -> "ClipRanker":
        def embed_text(s):
            ids = tokenizer(s, max_length=text.config.max_position_embeddings)
            out = text.apply({"params": text_params}, jnp.asarray(ids))
            if out.text_embeds is None:
                raise ConfigError("CLIP ranking needs a text model with text_projection")
            return out.text_embeds[0]

        return cls(vision, vision_params, embed_text(positive),
                   embed_text(negative) if negative else None)

    @classmethod
    def from_folder(cls, folder: str, positive: str, negative: str = "") -> "ClipRanker":
        """A transformers CLIPModel folder (config.json + safetensors, with both towers
        and projections) holding vocab.json + merges.txt itself or in tokenizer/."""
        from vdiff.interpolation.tokenizer import CLIPTokenizer
        from vdiff.models.sd import clip

        if not os.path.isdir(folder):
            raise ConfigError(f"CLIP folder not found: {folder}")
        tok_dir = folder if os.path.isfile(os.path.join(folder, "vocab.json")) else \
            os.path.join(folder, "tokenizer")
        tokenizer = CLIPTokenizer.from_folder(tok_dir)
        text, text_params = clip.load_clip_text(folder, with_projection=True)
        vision, vision_params = clip.load_clip_vision(folder, with_projection=True)
        return cls.from_models(text, text_params, vision, vision_params, tokenizer,
                               positive, negative)

    def image_embeds(self, images: Array) -> Array:
        return self._embed(self.vision_params, jnp.asarray(images, jnp.float32))

    def scores(self, images: Array) -> np.ndarray:
        e = self.image_embeds(images)
        s = e @ self.pos
        if self.neg is not None:
            s = s - e @ self.neg
        return np.asarray(s, np.float64)

    def best(self, images: Array) -> int:
        return int(np.argmax(self.scores(images)))


def parse_choices(spec: str | None) -> dict[int, int]:
    """'4:2,2:0' → {4: 2, 2: 0}; a JSON file path with {"frame": cand} also works."""
    if not spec:
        return {}
    if os.path.isfile(spec):
        with open(spec) as f:
            return {int(k): int(v) for k, v in json.load(f).items()}
    out = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            f, c = part.split(":")
            out[int(f)] = int(c)
        except ValueError:
            raise ConfigError(f"choices entries are FRAME:CANDIDATE, got {part!r}") from None
    return out


class CandidateSelector:
    """A ``select_fn(frame, latents [C, ...]) -> int`` for `schemes.Interpolator`.

    Forced ``choices`` win; otherwise the CLIP ``ranker``'s best (candidate 0 without a
    ranker). Decodes candidates with ``decode_fn``; records scores and picks, and with
    ``save_dir`` writes every candidate image (interactive mode)."""

    def __init__(self, decode_fn: Callable[[Array], Array], ranker: ClipRanker | None = None,
                 choices: Mapping[int, int] | None = None, save_dir: str | None = None):
        self.decode_fn, self.ranker = decode_fn, ranker
        self.choices = dict(choices or {})
        self.save_dir = save_dir
        self.record: dict[int, dict] = {}

    def __call__(self, frame: int, latents: Array) -> int:
        images = None
        if self.ranker is not None or self.save_dir:
            images = self.decode_fn(latents)
        scores = None if self.ranker is None else self.ranker.scores(images)
        if frame in self.choices:
            pick = self.choices[frame]
            if not 0 <= pick < latents.shape[0]:
                raise ConfigError(f"--choices: frame {frame} has candidates "
                                  f"0..{latents.shape[0] - 1}, got {pick}")
        elif scores is not None:
            pick = int(np.argmax(scores))
        else:
            pick = 0
        self.record[frame] = {"scores": None if scores is None else [float(s) for s in scores],
                              "chosen": pick, "forced": frame in self.choices}
        if self.save_dir:
            from vdiff.data.video_io import to_uint8
            import imageio.v3 as iio

            d = os.path.join(self.save_dir, f"frame_{frame:03d}")
            os.makedirs(d, exist_ok=True)
            for c, img in enumerate(np.asarray(images)):
                iio.imwrite(os.path.join(d, f"cand_{c}.png"), to_uint8(img))
        return pick

    def write_json(self, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            json.dump({str(k): v for k, v in sorted(self.record.items())}, f, indent=1)
