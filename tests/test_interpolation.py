"""Image interpolation with a latent diffusion model (Wang & Golland 2023): slerp, noise
profiles, the DID tree, exact DDIM on a Gaussian model, seeding, textual inversion and its
cache, CLIP ranking against transformers, the BPE tokenizer against transformers, and the
CLI end to end on a tiny diffusers Stable Diffusion folder (with and without ControlNet) and
on a micro DreamPose run, where `vdiff.main --config=configs/interpolation.py` writes the same
outputs as the CLI."""

from __future__ import annotations

import collections
import dataclasses
import json
import os

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from vdiff.errors import ConfigError
from vdiff.interpolation import schemes
from vdiff.interpolation import textual_inversion as ti
from vdiff.interpolation.tokenizer import CLIPTokenizer, byte_table
from vdiff.models.sd.latent_diffusion import DiscreteSchedule, scaled_linear_betas

SCHEDULE = DiscreteSchedule.from_betas(scaled_linear_betas())


# ----------------------------------------------------------------------------- slerp


def test_slerp_endpoints_norm_and_linear_angle():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    ts = np.linspace(0, 1, 7)
    out = np.asarray(schemes.slerp(a, b, ts)).reshape(7, -1)
    np.testing.assert_allclose(out[0], a.ravel(), atol=1e-6)
    np.testing.assert_allclose(out[-1], b.ravel(), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    theta = np.arccos(np.dot(a.ravel(), b.ravel()))
    angles = np.arccos(np.clip(out @ a.ravel(), -1, 1))
    np.testing.assert_allclose(angles, ts * theta, atol=1e-3)
    # nearly parallel: lerp, finite
    c = a + 1e-6 * b
    mid = np.asarray(schemes.slerp(a, c, 0.5))
    np.testing.assert_allclose(mid, 0.5 * (a + c), atol=1e-6)
    assert np.all(np.isfinite(mid))
    np.testing.assert_allclose(schemes.lerp(np.zeros(3), np.ones(3), 0.25), 0.25)


# ----------------------------------------------------------------------------- profiles


def test_noise_profiles_shapes_and_range():
    for shape in schemes.SHAPES:
        lv = schemes.frame_noise_levels(9, 0.3, 0.55, shape)
        assert lv[0] == lv[-1] == 0.0
        inner = lv[1:-1]
        assert np.isclose(inner.min(), 0.3) and np.isclose(inner.max(), 0.55)
        np.testing.assert_allclose(inner, inner[::-1])  # symmetric
        assert np.all(np.diff(inner[:4]) > 0)  # rising to the middle
        d = schemes.depth_noise_levels(4, 0.3, 0.55, shape)
        assert np.isclose(d[0], 0.55) and np.isclose(d[-1], 0.3) and np.all(np.diff(d) < 0)
    lin, cvx, ccv = (schemes.depth_noise_levels(5, 0.3, 0.55, s) for s in schemes.SHAPES)
    assert np.all(cvx[1:-1] < lin[1:-1]) and np.all(ccv[1:-1] > lin[1:-1])
    assert schemes.depth_noise_levels(1).tolist() == [0.55]
    with pytest.raises(ConfigError):
        schemes.frame_noise_levels(5, 0.6, 0.3)
    with pytest.raises(ConfigError):
        schemes.shape_fn(0.5, "wiggly")


# ----------------------------------------------------------------------------- DID tree


@pytest.mark.parametrize("branching", [2, 3, 4, (3, 2), (2, 5)])
@pytest.mark.parametrize("num_frames", [2, 3, 4, 5, 8, 9, 12, 17])
def test_did_schedule(num_frames, branching):
    nodes = schemes.did_schedule(num_frames, branching)
    frames = [n.frame for n in nodes]
    assert sorted(frames) == list(range(1, num_frames - 1))  # each inner frame once
    done = {0, num_frames - 1}
    pairs = collections.defaultdict(list)
    for n in nodes:
        assert n.left in done and n.right in done  # parents first
        assert n.left < n.frame < n.right and 0 < n.t < 1
        earlier = {0, num_frames - 1} | {m.frame for m in nodes if m.depth < n.depth}
        assert not any(n.left < m < n.right for m in earlier)  # adjacent parents
        pairs[(n.depth, n.left)].append(n)
        done.add(n.frame)
    depths = [n.depth for n in nodes]
    assert depths == sorted(depths)  # coarse to fine
    for (depth, left), kids in pairs.items():  # siblings share one parent pair
        assert len({k.right for k in kids}) == 1
        b = branching if isinstance(branching, int) else branching[min(depth, len(branching) - 1)]
        assert len(kids) <= b - 1
    if nodes:
        lv = schemes.depth_noise_levels(schemes.num_depths(nodes))
        assert all(lv[n.depth] <= lv[p.depth] for n in nodes for p in nodes
                   if p.frame in (n.left, n.right))


def test_did_schedule_bisection_and_errors():
    nodes = schemes.did_schedule(9, 2)
    assert [(n.frame, n.depth) for n in nodes] == [(4, 0), (2, 1), (6, 1), (1, 2), (3, 2),
                                                   (5, 2), (7, 2)]
    with pytest.raises(ConfigError):
        schemes.did_schedule(1)
    with pytest.raises(ConfigError):
        schemes.did_schedule(5, 1)


# ----------------------------------------------------------------------------- Gaussian model


@dataclasses.dataclass(eq=False)
class GaussianDenoiser:
    """The exact ε-predictor of data N(μ, s² I): x̂0 = μ + α s²/(α² s² + σ²)(z − α μ)."""

    mu: np.ndarray
    s: float

    @property
    def params(self):
        return {"mu": jnp.asarray(self.mu, jnp.float32)}

    @staticmethod
    def x0(mu, s, z, lam):
        a2 = 1 / (1 + np.exp(-lam)) if isinstance(lam, float) else jax.nn.sigmoid(lam)
        s2 = 1 - a2
        a = a2 ** 0.5
        return mu + a * s ** 2 / (a2 * s ** 2 + s2) * (z - a * mu)

    def eps(self, params, z, logsnr, cond):
        lam = logsnr.reshape((-1,) + (1,) * (z.ndim - 1))
        a, sig = jnp.sqrt(jax.nn.sigmoid(lam)), jnp.sqrt(jax.nn.sigmoid(-lam))
        return (z - a * self.x0(params["mu"], self.s, z, lam)) / sig


MU = np.linspace(-1, 1, 2 * 3 * 2).reshape(2, 3, 2).astype(np.float32)


GAUSS = GaussianDenoiser(MU, 0.5)  # one instance: its jitted DDIM loop compiles once


def _gauss_interp(steps=200, candidates=1, **kw):
    return schemes.Interpolator(GAUSS, SCHEDULE.logsnr, ddim_steps=steps,
                                candidates=candidates, **kw)


def _ends():
    rng = np.random.default_rng(1)
    return (jnp.asarray(MU + 0.5 * rng.normal(size=MU.shape), jnp.float32),
            jnp.asarray(MU + 0.5 * rng.normal(size=MU.shape), jnp.float32))


def _ref_frame(key, xl, xr, t, level, steps):
    """numpy reference of one frame: shared noise, slerp, exact DDIM to x̂0."""
    k0 = schemes.start_index(level, steps)
    lams = [float(SCHEDULE.logsnr(k / steps)) for k in range(k0, 0, -1)]
    eps = np.asarray(jax.random.normal(jax.random.fold_in(key, 0), xl.shape), np.float64)
    a, s = np.sqrt(1 / (1 + np.exp(-lams[0]))), np.sqrt(1 / (1 + np.exp(lams[0])))
    z = np.asarray(schemes.slerp(a * np.asarray(xl) + s * eps, a * np.asarray(xr) + s * eps, t))
    x0_fn = lambda z, lam: GaussianDenoiser.x0(MU.astype(np.float64), 0.5, z, float(lam))  # noqa
    return schemes.ddim_reference(x0_fn, z, lams), z, lams


def test_interpolate_denoise_is_exact_ddim_on_gaussian_model():
    xa, xb = _ends()
    n, steps = 5, 200
    interp = _gauss_interp(steps)
    key = jax.random.key(7)
    out = np.asarray(interp.run("interp_denoise", key, xa, xb, n, lambda f, p: {}))
    np.testing.assert_array_equal(out[0], xa)
    np.testing.assert_array_equal(out[-1], xb)
    levels = schemes.frame_noise_levels(n)
    pair = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, 1), 0), 0)
    for i in range(1, n - 1):
        ref, z, lams = _ref_frame(pair, xa, xb, i / (n - 1), levels[i], steps)
        np.testing.assert_allclose(out[i], ref, atol=2e-4)
        # DDIM with 200 steps ≈ the probability-flow ODE, known in closed form:
        a2 = 1 / (1 + np.exp(-lams[0]))
        ode = MU + 0.5 * (z - np.sqrt(a2) * MU) / np.sqrt(a2 * 0.25 + 1 - a2)
        np.testing.assert_allclose(out[i], ode, atol=2.5e-2)
    # first-order convergence of DDIM to the ODE solution
    errs = []
    for steps in (100, 1000):
        mid = np.asarray(_gauss_interp(steps).run("interp_denoise", key, xa, xb, 3,
                                                  lambda f, p: {}))[1]
        ref, z, lams = _ref_frame(pair, xa, xb, 0.5, 0.55, steps)
        a2 = 1 / (1 + np.exp(-lams[0]))
        ode = MU + 0.5 * (z - np.sqrt(a2) * MU) / np.sqrt(a2 * 0.25 + 1 - a2)
        np.testing.assert_allclose(mid, ref, atol=2e-4)
        errs.append(np.abs(mid - ode).max())
    assert errs[1] < errs[0] / 5 and errs[1] < 6e-3, errs
    # interpolate only = slerp of the ends
    only = np.asarray(interp.run("interp", key, xa, xb, n, None))
    np.testing.assert_allclose(only[2], schemes.slerp(xa, xb, 0.5), atol=1e-6)


def test_did_matches_reference_with_shared_pair_noise_and_seeds():
    xa, xb = _ends()
    n, steps, branching = 6, 50, (3, 2)
    interp = _gauss_interp(steps, branching=branching)
    key = jax.random.key(3)
    out = np.asarray(interp.run("did", key, xa, xb, n, lambda f, p: {}))
    nodes = schemes.did_schedule(n, branching)
    levels = schemes.depth_noise_levels(schemes.num_depths(nodes))
    frames = {0: np.asarray(xa), n - 1: np.asarray(xb)}
    base = jax.random.fold_in(key, 2)
    for node in nodes:
        pair = jax.random.fold_in(jax.random.fold_in(base, node.depth), node.left)
        frames[node.frame] = _ref_frame(pair, frames[node.left], frames[node.right], node.t,
                                        levels[node.depth], steps)[0]
    np.testing.assert_allclose(out, np.stack([frames[i] for i in range(n)]), atol=3e-4)
    again = np.asarray(interp.run("did", jax.random.key(3), xa, xb, n, lambda f, p: {}))
    np.testing.assert_array_equal(out, again)
    other = np.asarray(interp.run("did", jax.random.key(4), xa, xb, n, lambda f, p: {}))
    assert np.abs(other[1:-1] - out[1:-1]).max() > 1e-3


def test_candidates_and_selection():
    xa, xb = _ends()
    interp = _gauss_interp(30, candidates=3)
    seen = {}

    def select(frame, c):
        seen[frame] = np.asarray(c)
        return 2

    out = np.asarray(interp.run("did", jax.random.key(0), xa, xb, 3, lambda f, p: {}, select))
    assert seen[1].shape == (3,) + MU.shape
    assert np.abs(seen[1][0] - seen[1][1]).max() > 1e-4  # different noises
    np.testing.assert_array_equal(out[1], seen[1][2])
    with pytest.raises(ConfigError):
        interp.run("did", jax.random.key(0), xa, xb, 3, lambda f, p: {}, lambda f, c: 5)


# ----------------------------------------------------------------------------- inversion


@dataclasses.dataclass(eq=False)
class ToyTextDenoiser:
    """ε̂ = z/2 + W·mean_L(neg + g (pos − neg)): depends on the text contexts."""

    w: np.ndarray
    guidance_scale: float = 2.0

    @property
    def params(self):
        return {"w": jnp.asarray(self.w)}

    def eps(self, params, z, logsnr, cond):
        ctx = cond["neg"] + self.guidance_scale * (cond["pos"] - cond["neg"])
        return 0.5 * z + (ctx.mean(1) @ params["w"])[:, None, None, :]


def test_textual_inversion_lowers_loss_and_caches(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(2, 8, 8, 3)).astype(np.float32)
    den = ToyTextDenoiser(rng.normal(size=(6, 3)).astype(np.float32))
    embs = [jnp.asarray(rng.normal(size=(4, 6)), jnp.float32) for _ in range(3)]
    settings = ti.InversionSettings(steps=40, learning_rate=2e-2, num_crops=3,
                                    guidance_scale=2.0, eval_samples=16)
    kw = dict(cache_dir=str(tmp_path), prompts=("a", "b", ""), model_id="toy")
    pa, pb, ng, info = ti.invert_embeddings(den, lambda x: x, SCHEDULE.logsnr, images, *embs,
                                            settings, **kw)
    assert not info["cached"] and info["steps_run"] == 40
    assert info["loss_after"] < info["loss_before"]
    assert not np.allclose(pa, embs[0]) and not np.allclose(ng, embs[2])
    assert os.path.isfile(info["cache_path"])
    pa2, pb2, ng2, info2 = ti.invert_embeddings(den, lambda x: x, SCHEDULE.logsnr, images,
                                                *embs, settings, **kw)
    assert info2["cached"] and info2["steps_run"] == 0
    np.testing.assert_array_equal(pa2, pa)
    np.testing.assert_array_equal(ng2, ng)
    kw["prompts"] = ("a", "c", "")
    info3 = ti.invert_embeddings(den, lambda x: x, SCHEDULE.logsnr, images, *embs,
                                 dataclasses.replace(settings, steps=1), **kw)[3]
    assert not info3["cached"]


# ----------------------------------------------------------------------------- tokenizer


CORPUS = ("a photo of a cat and a dog . the cat sits on the mat , the dog runs in the park "
          "hello world photos of cats and dogs painting portrait of a person smiling")


def make_tokenizer_files(folder, num_merges=60):
    """A tiny CLIP vocab: all bytes (plain and with </w>), BPE merges learned greedily from
    CORPUS, the special tokens. Returns the vocab."""
    os.makedirs(folder, exist_ok=True)
    table = byte_table()
    words = collections.Counter()
    for w in CORPUS.split():
        s = [table[b] for b in w.encode()]
        words[tuple(s[:-1] + [s[-1] + "</w>"])] += 1
    merges = []
    for _ in range(num_merges):
        pairs = collections.Counter()
        for w, c in words.items():
            for p in zip(w[:-1], w[1:]):
                pairs[p] += c
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        new = collections.Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i < len(w) - 1 and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += c
        words = new
    syms = list(table.values())
    syms = syms + [s + "</w>" for s in syms] + ["".join(m) for m in merges]
    vocab = {}
    for s in syms + ["<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(s, len(vocab))
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return vocab


PROMPTS = ["A photo of a CAT and a dog!", "  the\tcat   sits on the mat,  hello world  ",
           "Naïve café: 3 cats & 12 dogs?!", "it's a dog's park; they'll run",
           "emoji 🐱 日本 portrait", "hello <|endoftext|> world", "", "cat " * 90]


def test_tokenizer_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    make_tokenizer_files(str(tmp_path))
    ours = CLIPTokenizer.from_folder(str(tmp_path))
    ref = transformers.CLIPTokenizer.from_pretrained(str(tmp_path))  # vocab + merges
    expected = ref(PROMPTS, padding="max_length", max_length=77, truncation=True)["input_ids"]
    got = ours(PROMPTS)
    assert got.shape == (len(PROMPTS), 77)
    np.testing.assert_array_equal(got, np.asarray(expected))
    assert len(ours.tokenize("the cat")) < len("the cat")  # merges were applied
    # SD 2's tokenizer pads with "!", which then is a special token
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        with open(tmp_path / name, "w") as f:
            json.dump({"pad_token": "!", "model_max_length": 77}, f)
    ours = CLIPTokenizer.from_folder(str(tmp_path))
    ref = transformers.CLIPTokenizer.from_pretrained(str(tmp_path))
    expected = ref(PROMPTS, padding="max_length", max_length=77, truncation=True)["input_ids"]
    assert ours.pad_id == ref.pad_token_id != ref.eos_token_id
    np.testing.assert_array_equal(ours(PROMPTS), np.asarray(expected))


# ----------------------------------------------------------------------------- CLIP ranking


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("clip")
    vocab = make_tokenizer_files(str(folder))
    text = transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=16,
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"])
    vision = transformers.CLIPVisionConfig(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=37,
        num_hidden_layers=1, num_attention_heads=4, projection_dim=16)
    torch.manual_seed(0)
    model = transformers.CLIPModel(transformers.CLIPConfig(
        text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return str(folder), model


def test_clip_ranking_picks_highest_score(clip_folder):
    import torch

    from vdiff.interpolation.clip_ranking import CandidateSelector, ClipRanker
    from vdiff.models.sd.clip import clip_preprocess

    folder, model = clip_folder
    ranker = ClipRanker.from_folder(folder, "a photo of a cat", "a dog")
    images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (5, 40, 36, 3)), jnp.float32)
    scores = ranker.scores(images)
    tok = CLIPTokenizer.from_folder(folder)
    unit = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
    feats = lambda out: getattr(out, "pooler_output", out)  # noqa: E731
    with torch.no_grad():
        px = torch.from_numpy(np.array(clip_preprocess(images, 32))).permute(0, 3, 1, 2)
        img = unit(feats(model.get_image_features(pixel_values=px)))
        txt = unit(feats(model.get_text_features(
            input_ids=torch.from_numpy(tok(["a photo of a cat", "a dog"]).astype(np.int64)))))
        ref = (img @ txt[0] - img @ txt[1]).numpy()
    np.testing.assert_allclose(scores, ref, atol=1e-4)
    assert ranker.best(images) == int(np.argmax(ref))
    sel = CandidateSelector(lambda z: z, ranker)
    assert sel(3, images) == int(np.argmax(ref))
    assert sel.record[3]["chosen"] == int(np.argmax(ref))
    forced = CandidateSelector(lambda z: z, ranker, choices={3: 1})
    assert forced(3, images) == 1 and forced(4, images) == int(np.argmax(ref))


# ----------------------------------------------------------------------------- CLI


def _openpose(path, shift):
    rng = np.random.default_rng(shift)
    kps = np.concatenate([rng.uniform(2, 14, (18, 2)), np.ones((18, 1))], 1)
    with open(path, "w") as f:
        json.dump({"people": [{"pose_keypoints_2d": kps.ravel().tolist()}]}, f)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """A tiny diffusers SD folder, a ControlNet, two 16×16 images and keypoints."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    import imageio.v3 as iio

    root = tmp_path_factory.mktemp("tiny_sd")
    sd = root / "sd"
    vocab = make_tokenizer_files(str(sd / "tokenizer"))
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        norm_num_groups=8, layers_per_block=1, attention_head_dim=4)
    unet.save_pretrained(sd / "unet", safe_serialization=True)
    diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
        layers_per_block=1, latent_channels=4, norm_num_groups=8,
        sample_size=16).save_pretrained(sd / "vae", safe_serialization=True)
    transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
        num_attention_heads=4, max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"])).save_pretrained(
        sd / "text_encoder", safe_serialization=True)
    diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                            beta_end=0.012).save_pretrained(sd / "scheduler")
    cn = diffusers.ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16))
    with torch.no_grad():
        for p in cn.parameters():  # undo the zero inits so the control has an effect
            p.add_(torch.randn_like(p) * 0.05)
    cn.save_pretrained(root / "controlnet", safe_serialization=True)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        iio.imwrite(root / f"{name}.png", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        _openpose(root / f"{name}.json", ord(name))
    iio.imwrite(root / "big.png", np.zeros((24, 16, 3), np.uint8))
    (root / "broken.png").write_bytes(b"not a png")
    return root


def _cli(root, out, *extra):
    from vdiff.interpolation import cli
    args = cli.build_parser().parse_args([
        f"--sd={root / 'sd'}", f"--image_a={root / 'a.png'}", f"--image_b={root / 'b.png'}",
        "--prompt_a=a photo of a cat", "--prompt_b=a dog", "--negative=painting",
        f"--out={out}", *extra])
    return cli.run(args, log=lambda s: None)


def _frames(out):
    import imageio.v3 as iio
    d = os.path.join(out, "frames")
    return np.stack([iio.imread(os.path.join(d, f)) for f in sorted(os.listdir(d))])


def test_cli_did_with_inversion_clip_and_interactive(tiny_sd, clip_folder, tmp_path):
    from vdiff.data.video_io import read_video
    common = ["--num_frames=5", "--scheme=did", "--ddim_steps=10", "--candidates=2",
              f"--clip={clip_folder[0]}", "--inversion_steps=2", "--seed=1"]
    info = _cli(tiny_sd, tmp_path / "run1", *common, "--interactive")
    assert os.path.isfile(tmp_path / "run1" / "interpolation.mp4")
    assert read_video(str(tmp_path / "run1" / "interpolation.mp4")).shape[0] == 5
    frames = _frames(tmp_path / "run1")
    assert frames.shape == (5, 16, 16, 3)
    assert not info["textual_inversion"]["cached"]
    scores = json.load(open(tmp_path / "run1" / "candidates" / "scores.json"))
    assert sorted(int(k) for k in scores) == [1, 2, 3]
    for k, v in scores.items():
        assert v["chosen"] == int(np.argmax(v["scores"]))
        assert os.path.isfile(tmp_path / "run1" / "candidates" / f"frame_{int(k):03d}" /
                              "cand_1.png")
    # same seed, cached inversion → identical frames; a forced choice changes frame 2
    cache = f"--cache_dir={tmp_path / 'run1' / 'textinv_cache'}"
    flip = 1 - scores["2"]["chosen"]
    info2 = _cli(tiny_sd, tmp_path / "run2", *common, cache, f"--choices=2:{flip}")
    assert info2["textual_inversion"]["cached"]
    f2 = _frames(tmp_path / "run2")
    assert info2["selection"]["2"]["chosen"] == flip
    assert not np.array_equal(f2[2], frames[2])
    np.testing.assert_array_equal(f2[[0, 4]], frames[[0, 4]])


def test_cli_pose_guidance_interp_denoise_and_reproducible(tiny_sd, tmp_path):
    root = tiny_sd
    pose = [f"--keypoints_a={root / 'a.json'}", f"--keypoints_b={root / 'b.json'}",
            f"--controlnet={root / 'controlnet'}", "--control_profile=taper"]
    args = ["--num_frames=4", "--scheme=interp_denoise", "--ddim_steps=8", "--seed=3"]
    _cli(root, tmp_path / "p1", *args, *pose)
    _cli(root, tmp_path / "p2", *args, *pose)
    _cli(root, tmp_path / "p3", *args, *pose, "--control_strength=0")  # same compiled fn
    f1, f2, f3 = (_frames(tmp_path / n) for n in ("p1", "p2", "p3"))
    assert os.path.isfile(tmp_path / "p1" / "interpolation.mp4")
    np.testing.assert_array_equal(f1, f2)  # one seed → identical frames
    assert not np.array_equal(f1[1:-1], f3[1:-1])  # the ControlNet changes the frames


def test_cli_errors(tiny_sd, tmp_path):
    from vdiff.interpolation import cli
    with pytest.raises(ConfigError, match="different sizes"):
        _cli(tiny_sd, tmp_path / "e", f"--image_b={tiny_sd / 'big.png'}")
    with pytest.raises(ConfigError, match="cannot read image"):
        _cli(tiny_sd, tmp_path / "e", f"--image_b={tiny_sd / 'broken.png'}")
    with pytest.raises(ConfigError, match="needs all of"):
        _cli(tiny_sd, tmp_path / "e", f"--keypoints_a={tiny_sd / 'a.json'}")
    rc = cli.main([f"--sd={tmp_path / 'nothing'}", f"--image_a={tiny_sd / 'a.png'}",
                   f"--image_b={tiny_sd / 'b.png'}", f"--out={tmp_path / 'e'}"])
    assert rc == 2


# ----------------------------------------------------------------------------- DreamPose backend


@pytest.fixture(scope="module")
def micro_dreampose():
    """A micro DreamPose model (16 px, VAE ÷1) with random N(0, 0.1²) params: mechanics
    only. Params from the shapes alone: compiling `init` would take longer than the tests."""
    from vdiff.models import dreampose as dp
    model = dp.DreamPoseModel.from_configs(**dp.tiny_configs("micro"))
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda k: model.init(k, 16), jax.random.key(0))
    return model, jax.tree.map(
        lambda s: jnp.asarray(0.1 * rng.normal(size=s.shape), s.dtype), shapes)


def _synthetic_pair(size=16):
    from vdiff.data import synthetic_people as sp
    kps = sp.random_motion(6, seed=3, size=size)
    video = sp.render_person(kps, size, sp.random_appearance(2)).astype(np.float32)
    return video, kps


def test_dreampose_denoiser_guidance_weights(micro_dreampose):
    from vdiff.interpolation import dreampose_backend as dpb
    model, params = micro_dreampose
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.normal(size=(2, 16, 16, 4)), jnp.float32)
    ctx = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
    pose = jnp.asarray(rng.uniform(-1, 1, size=(2, 16, 16, 10)), jnp.float32)
    lam = jnp.asarray([-1.0, 2.0])
    cond = {"context": ctx, "pose": pose}
    # one compiled function for every guidance weight (traced scales)
    guided = jax.jit(lambda s_i, s_p: dpb.DreamPoseDenoiser(model, params, s_i, s_p).eps(
        params, z, lam, cond))
    eps = lambda s_i, s_p: guided(jnp.float32(s_i), jnp.float32(s_p))  # noqa: E731
    plain = jax.jit(lambda c, p: model.eps(params, z, lam, c, p))
    # s = (1, 1): the plain conditional network; (0, 0): the unconditional one (∅ = zeros)
    np.testing.assert_allclose(eps(1.0, 1.0), plain(ctx, pose), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(eps(0.0, 0.0), plain(0 * ctx, 0 * pose), rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(eps(2.0, 4.0) - eps(1.0, 1.0)).max()) > 1e-4
    # the schemes' t grid and the UNet timestep agree: t = (i + 1)/N ↦ timestep i
    i = np.array([0, 99, 500, 999])
    np.testing.assert_allclose(
        model.schedule.timestep(model.schedule.logsnr((i + 1) / 1000)), i, atol=1e-2)


def test_dreampose_cond_fn_endpoints_and_windows(micro_dreampose):
    from vdiff.data import pose as pose_lib
    from vdiff.interpolation import dreampose_backend as dpb
    model, params = micro_dreampose
    video, kps = _synthetic_pair()
    backend = dpb.make_backend(model, params)
    xa, xb, ca, cb = dpb.encode_pair(backend, [video[0], video[-1]])
    n = 5
    fn = dpb.dreampose_cond_fn(backend, ca, cb, kps[0], kps[-1], n, (16, 16))
    c0, c1 = fn(0, 0.0), fn(n - 1, 1.0)
    np.testing.assert_allclose(c0["context"], ca, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c1["context"], cb, rtol=1e-5, atol=1e-5)
    # frame j's window = the training-style window of the interpolated pose sequence
    maps = pose_lib.render_pose_uv(
        pose_lib.interpolate_keypoints(kps[0], kps[-1], np.linspace(0, 1, n)), 16)
    windows = pose_lib.pose_windows(maps)
    for j in range(n):
        np.testing.assert_allclose(dpb.pose_window_at(kps[0], kps[-1], j / (n - 1), n,
                                                      (16, 16)), windows[j], atol=1e-6)
    np.testing.assert_allclose(c0["pose"], model.pose_to_latent(
        jnp.asarray(windows[:1]), (16, 16))[0], atol=1e-6)
    np.testing.assert_allclose(windows[0][..., 4:6], pose_lib.render_pose_uv(kps[0], 16))
    np.testing.assert_allclose(windows[-1][..., 4:6], pose_lib.render_pose_uv(kps[-1], 16))
    with pytest.raises(ConfigError):
        dpb.dreampose_cond_fn(backend, ca, cb, kps[0], kps[-1], n, (16, 16),
                              context_interp="cubic")


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory, micro_dreampose):
    """A DreamPose run folder (config.json + checkpoint) of the micro model, two frames of
    a synthetic person and their OpenPose files."""
    import imageio.v3 as iio

    from vdiff.data.video_io import to_uint8
    from vdiff.methods.dreampose.config import dreampose_defaults
    from vdiff.train.checkpoint import Checkpointer
    _, params = micro_dreampose
    root = tmp_path_factory.mktemp("dp_run")
    c = dreampose_defaults("vae_decoder")
    c.model.size, c.data.resolution = "micro", 16
    (root / "run").mkdir()
    (root / "run" / "config.json").write_text(c.to_json())
    ck = Checkpointer(str(root / "run" / "checkpoints"), max_to_keep=1, save_every=1,
                      async_save=False)
    ck.save(1, {"params": jax.tree.map(np.asarray, params)}, {})
    ck.close()
    video, kps = _synthetic_pair()
    for name, i in (("a", 0), ("b", -1)):
        iio.imwrite(root / f"{name}.png", to_uint8(video[i]))
        (root / f"{name}.json").write_text(json.dumps(
            {"people": [{"pose_keypoints_2d": kps[i].ravel().tolist()}]}))
    return root


def _dp_args(root, out, *extra, run=True):
    from vdiff.interpolation import cli
    return cli.build_parser().parse_args(
        ([f"--dreampose_run={root / 'run'}"] if run else []) +
        [f"--image_a={root / 'a.png'}", f"--image_b={root / 'b.png'}", f"--out={out}",
         *extra])


def test_cli_dreampose_run(micro_run, tmp_path):
    from vdiff.interpolation import cli
    kp = [f"--keypoints_a={micro_run / 'a.json'}", f"--keypoints_b={micro_run / 'b.json'}"]
    info = cli.run(_dp_args(micro_run, tmp_path / "o", *kp, "--num_frames=4", "--scheme=did",
                            "--ddim_steps=4"), log=lambda s: None)
    frames = _frames(tmp_path / "o")
    assert frames.shape == (4, 16, 16, 3) and len(info["did_schedule"]) == 2
    import imageio.v3 as iio
    np.testing.assert_array_equal(frames[0], iio.imread(micro_run / "a.png"))
    # model choice and the options that only apply to one kind of model
    with pytest.raises(ConfigError, match="exactly one model"):
        cli.run(_dp_args(micro_run, tmp_path / "e", *kp, run=False))
    with pytest.raises(ConfigError, match="exactly one model"):
        cli.run(_dp_args(micro_run, tmp_path / "e", *kp, f"--sd={tmp_path}"))
    for bad in ("--prompt_a=a cat", "--negative=blur", "--inversion_steps=3",
                f"--controlnet={tmp_path}"):
        with pytest.raises(ConfigError, match="for sd models only"):
            cli.run(_dp_args(micro_run, tmp_path / "e", *kp, bad))
    with pytest.raises(ConfigError, match="needs keypoints_a"):
        cli.run(_dp_args(micro_run, tmp_path / "e"))
    assert cli.main([f"--dreampose_run={tmp_path / 'none'}", *kp, "--image_a=a.png",
                     "--image_b=b.png", f"--out={tmp_path / 'e'}"]) == 2


def _vdiff_main(*argv: str) -> int:
    """`python -m vdiff.main ARGV` in this process: the models and compiled functions the
    CLI tests loaded are reused (vdiff.interpolation.runner caches them). The config flag
    reads its --config.KEY overrides from sys.argv."""
    import sys

    from absl import flags

    from vdiff import main as vdiff_main
    saved, sys.argv = sys.argv, ["vdiff.main", *argv]
    flags.FLAGS.unparse_flags()
    try:
        vdiff_main.parse_flags(sys.argv)
        return vdiff_main.main(["vdiff.main"])
    finally:
        flags.FLAGS.unparse_flags()
        sys.argv = saved


def test_main_config_writes_what_the_cli_writes(micro_run, tmp_path):
    """`vdiff.main --config=configs/interpolation.py --mode=sample` and the CLI give the same
    frames and run.json for one seed; --num_steps, --num_frames and --seed map to the DDIM
    steps, the frame count and the seed, --output_dir to the output folder."""
    from tests.helpers import REPO
    from vdiff.interpolation import cli

    kp = [f"--keypoints_a={micro_run / 'a.json'}", f"--keypoints_b={micro_run / 'b.json'}"]
    cli_info = cli.run(_dp_args(micro_run, tmp_path / "cli", *kp, "--num_frames=4",
                                "--ddim_steps=4", "--seed=5"), log=lambda s: None)
    key = "--config.interpolation."
    rc = _vdiff_main(
        f"--config={REPO}/configs/interpolation.py", f"--workdir={tmp_path / 'w'}",
        "--mode=sample", "--application=interpolate", "--num_steps=4", "--num_frames=4",
        "--seed=5", f"--output_dir={tmp_path / 'main'}",
        f"{key}dreampose_run={micro_run / 'run'}", f"{key}image_a={micro_run / 'a.png'}",
        f"{key}image_b={micro_run / 'b.png'}", f"{key}keypoints_a={micro_run / 'a.json'}",
        f"{key}keypoints_b={micro_run / 'b.json'}")
    assert rc == 0
    assert os.path.isfile(tmp_path / "main" / "interpolation.mp4")
    np.testing.assert_array_equal(_frames(tmp_path / "main"), _frames(tmp_path / "cli"))
    runs = [cli_info, json.load(open(tmp_path / "main" / "run.json"))]
    for r in runs:  # all but the output paths and the timing
        del r["args"]["out"], r["video"], r["sampling_seconds"]
    assert json.loads(json.dumps(runs[0], default=str)) == runs[1]
