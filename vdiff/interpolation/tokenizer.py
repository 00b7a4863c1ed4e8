"""CLIP's byte-level BPE tokenizer, read from a diffusers ``tokenizer/`` folder.

Pipeline (as OpenAI's CLIP and ``transformers.CLIPTokenizer``): Unicode NFC, runs of
whitespace → one space, strip, lowercase; split with CLIP's pre-tokenisation regex;
map every UTF-8 byte of a piece to a printable unicode character (GPT-2's byte table);
append ``</w>`` to the piece's last symbol and apply the BPE merges by rank; look the
symbols up in ``vocab.json``. ``encode`` wraps the ids in ``<|startoftext|>`` …
``<|endoftext|>`` and pads / truncates to ``max_length`` (77 for Stable Diffusion). BOS, EOS and the pad token are special: they are
matched in the raw text before anything else.
(OpenAI's tokenizer also runs ``ftfy`` and HTML unescaping; transformers without ftfy
does neither, and neither do we.)
"""

from __future__ import annotations

import functools
import json
import os
import unicodedata
from typing import Sequence

import numpy as np
import regex

from vdiff.errors import ConfigError

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"""
    r"""[^\s\p{L}\p{N}]+""", regex.IGNORECASE)
_WHITESPACE = regex.compile(r"\s+")


@functools.lru_cache(maxsize=1)
def byte_table() -> dict[int, str]:
    """GPT-2 / CLIP byte → printable character map (printable bytes map to themselves)."""
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
            + list(range(ord("®"), ord("ÿ") + 1)))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    return _WHITESPACE.sub(" ", text).strip().lower()


class CLIPTokenizer:
    """``encode(text) -> int32 [max_length]``; ``__call__(texts) -> int32 [B, max_length]``."""

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]], *,
                 max_length: int = 77, pad_token: str = EOS):
        self.vocab = dict(vocab)
        self.ranks = {tuple(m): i for i, m in enumerate(merges)}
        self.max_length = int(max_length)
        for tok in (BOS, EOS, pad_token):
            if tok not in self.vocab:
                raise ConfigError(f"tokenizer vocab has no {tok!r}")
        self.bos_id, self.eos_id = self.vocab[BOS], self.vocab[EOS]
        self.pad_id = self.vocab[pad_token]
        self.unk_id = self.eos_id
        self._cache: dict[str, list[str]] = {BOS: [BOS], EOS: [EOS]}
        # Special tokens are matched in the raw text first, as transformers does (so with
        # SD 2's pad token "!" every "!" is that token, not the BPE of "!").
        self.special = sorted({BOS, EOS, pad_token}, key=len, reverse=True)
        self._special_re = regex.compile("(" + "|".join(regex.escape(t)
                                                        for t in self.special) + ")")

    @classmethod
    def from_folder(cls, folder: str, *, max_length: int | None = None) -> "CLIPTokenizer":
        """A diffusers/transformers tokenizer folder: vocab.json, merges.txt and optionally
        tokenizer_config.json / special_tokens_map.json (pad token, model_max_length)."""
        vocab_path, merges_path = (os.path.join(folder, "vocab.json"),
                                   os.path.join(folder, "merges.txt"))
        for p in (vocab_path, merges_path):
            if not os.path.isfile(p):
                raise ConfigError(f"tokenizer file not found: {p} (a CLIP tokenizer folder "
                                  "has vocab.json and merges.txt)")
        with open(vocab_path, encoding="utf-8") as f:
            vocab = json.load(f)
        merges = []
        with open(merges_path, encoding="utf-8") as f:
            for line in f.read().split("\n"):
                if not line.strip() or line.startswith("#version"):
                    continue
                parts = line.split()
                if len(parts) == 2:
                    merges.append((parts[0], parts[1]))
        pad, length = EOS, 77
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    cfg = json.load(f)
                p = cfg.get("pad_token")
                if isinstance(p, dict):
                    p = p.get("content")
                if isinstance(p, str) and p in vocab:
                    pad = p
                ml = cfg.get("model_max_length")
                if isinstance(ml, int) and 0 < ml < 100000:
                    length = ml
        return cls(vocab, merges, max_length=max_length or length, pad_token=pad)

    def bpe(self, piece: str) -> list[str]:
        """BPE symbols of one pre-tokenised piece (already byte-mapped)."""
        if piece in self._cache:
            return self._cache[piece]
        word = list(piece[:-1]) + [piece[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(self.ranks.get((word[i], word[i + 1]), None), i)
                     for i in range(len(word) - 1)]
            pairs = [p for p in pairs if p[0] is not None]
            if not pairs:
                break
            rank = min(p[0] for p in pairs)
            first, second = next((word[i], word[i + 1]) for r, i in pairs if r == rank)
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self._cache[piece] = word
        return word

    def tokenize(self, text: str) -> list[int]:
        """Ids of the text without BOS/EOS, padding or truncation."""
        table = byte_table()
        ids = []
        for segment in self._special_re.split(text):
            if segment in self.special:
                ids.append(self.vocab[segment])
                continue
            for piece in PATTERN.findall(normalize(segment)):
                if piece in (BOS, EOS):
                    ids.append(self.vocab[piece])
                    continue
                mapped = "".join(table[b] for b in piece.encode("utf-8"))
                ids.extend(self.vocab.get(s, self.unk_id) for s in self.bpe(mapped))
        return ids

    def encode(self, text: str, *, max_length: int | None = None,
               padding: bool = True) -> np.ndarray:
        n = self.max_length if max_length is None else int(max_length)
        ids = [self.bos_id] + self.tokenize(text)[: n - 2] + [self.eos_id]
        if padding:
            ids = ids + [self.pad_id] * (n - len(ids))
        return np.asarray(ids, np.int32)

    def __call__(self, texts: str | Sequence[str], **kw) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        return np.stack([self.encode(t, **kw) for t in texts])
