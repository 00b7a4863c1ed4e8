"""PVDM methods: the autoencoder stage's one-loss GAN routing and optimizers, the latent
stage's frozen autoencoder, token layout, conditioning switch and long videos, and both
stages through `python -m vdiff.main`.

The latent stage needs a trained autoencoder run. The command-line runs (autoencoder
training, latent training, long-video sampling, reconstruction eval) start in background
threads with the first test of this module (the `cli` fixture), so the subprocesses compile
and train while the in-process tests run; a test that needs a run waits for it. On two
cores the file takes about two minutes, most of it the four command-line runs.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
import sys
import threading
import time
import types
from concurrent.futures import Future, ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import REPO, load_config
from vdiff.errors import ConfigError
from vdiff.methods.pvdm import PVDMAutoencoderStage, PVDMLatentStage
from vdiff.core.pixels import to_unit_range
from vdiff.models import triplane
from vdiff.models.pvdm_discriminators import hinge_d_loss, hinge_g_loss
from vdiff.train.sharding import strip_boxes
from vdiff.train.state import TrainState
from vdiff.train.train_step import train_step

AE_CONFIG = os.path.join(REPO, "configs", "pvdm_ae_digits.py")
LDM_CONFIG = os.path.join(REPO, "configs", "pvdm_ldm_digits.py")
B = 2  # in-process batch size
GAN_START, RAMP, GAN_WEIGHT = 2, 4, 0.5
STEP_ON, STEP_OFF = 4, 1  # scheduled λ at STEP_ON = 0.5 · (4 − 2) / 4
LAMBDA_ON = GAN_WEIGHT * (STEP_ON - GAN_START) / RAMP


def _uint8_video(seed: int, frames: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (B, frames, 32, 32, 1)).astype(np.uint8)


def _leaves(tree):
    return jax.tree.leaves(jax.tree.map(np.asarray, tree))


def assert_trees_close(actual, expected, rtol=2e-4):
    """Leafwise allclose with an absolute floor relative to the whole tree's scale (some
    gradients are zero up to rounding, e.g. a conv bias right before a GroupNorm)."""
    a, e = _leaves(actual), _leaves(expected)
    assert len(a) == len(e) and a
    scale = max(float(np.abs(y).max()) for y in e)
    for x, y in zip(a, e):
        assert x.shape == y.shape
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * scale)


def tree_max_abs_diff(a, b) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(_leaves(a), _leaves(b)))


def trees_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b)))


# --------------------------------------------------------------------------------------------
# the command-line chain (background)


class _CliChain:
    """Runs `python -m vdiff.main` invocations in two worker threads, output to files."""

    def __init__(self, logs):
        self.logs = logs
        self.pool = ThreadPoolExecutor(2)
        self.lock = threading.Lock()
        self.procs: list[subprocess.Popen] = []
        self.closed = False

    def main(self, config, workdir, *flags, arg="runlocal", ready=None):
        """Runs to completion; returns stdout. `ready` = (path, future): the future gets
        `workdir` as soon as `path` exists, while the run goes on."""
        cmd = [sys.executable, "-m", "vdiff.main", f"--config={config}:{arg}",
               f"--workdir={workdir}", *flags]
        with self.lock:
            if self.closed:
                raise RuntimeError("cancelled")
            n = len(self.procs)
            out, err = self.logs / f"run{n}.out", self.logs / f"run{n}.err"
            with open(out, "w") as o, open(err, "w") as e:
                proc = subprocess.Popen(cmd, cwd=REPO, stdout=o, stderr=e)
            self.procs.append(proc)
        deadline = time.monotonic() + 600
        while proc.poll() is None:
            if ready is not None and not ready[1].done() and ready[0].exists():
                ready[1].set_result(workdir)
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise TimeoutError(" ".join(cmd))
            time.sleep(0.2)
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{err.read_text()[-3000:]}"
        return out.read_text()

    def close(self):
        with self.lock:
            self.closed = True
            procs = list(self.procs)
        self.pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        self.pool.shutdown(wait=True)


@pytest.fixture(scope="module", autouse=True)
def cli(tmp_path_factory):
    """Futures of the command-line runs, in two chains:

        ae (train) ─ its checkpoint committed ─→ ldm (train) ─ its checkpoint ─→ sample
                   └─ the run done, and ldm's checkpoint ─→ eval of ae

    A run's checkpoint is all the next one reads, so each starts as soon as it is
    committed, while the previous run writes its final samples (and evaluation)."""
    root = tmp_path_factory.mktemp("pvdm_cli")
    ae, ldm, out = root / "ae", root / "ldm", root / "long"
    chain = _CliChain(root)
    runs = types.SimpleNamespace(ae_checkpoint=Future(), ldm_checkpoint=Future())

    def train(config, workdir, checkpoint, arg, after=None):
        """Trains; `checkpoint` gets `workdir` once the last step's checkpoint is committed
        (or the exception that stopped the run, so no waiter hangs)."""
        try:
            if after is not None:
                after.result()
            steps = int(load_config(os.path.basename(config)[:-3], arg).train.num_steps)
            chain.main(config, workdir, arg=arg, ready=(
                workdir / "checkpoints" / str(steps) / "commit_success.txt", checkpoint))
        except BaseException as e:
            if not checkpoint.done():
                checkpoint.set_exception(e)
            raise
        if not checkpoint.done():
            checkpoint.set_result(workdir)
        return workdir

    def eval_ae():
        runs.ae.result()
        runs.ldm_checkpoint.result()
        before = (ae / "eval.jsonl").read_text().splitlines()
        stdout = chain.main(AE_CONFIG, ae, "--mode=eval")
        return before, (ae / "eval.jsonl").read_text().splitlines(), stdout

    def sample_long():
        runs.ldm_checkpoint.result()
        chain.main(LDM_CONFIG, ldm, "--mode=sample", "--application=extend",
                   "--num_frames=10", "--sampler=ddim", "--num_steps=3", "--num_samples=2",
                   f"--output_dir={out}", arg=f"runlocal,ae={ae}")
        return out

    runs.ae = chain.pool.submit(train, AE_CONFIG, ae, runs.ae_checkpoint, "runlocal")
    # the latent run trains from cached latents, the config's default (the in-process
    # tests cover the encoder path)
    runs.ldm = chain.pool.submit(train, LDM_CONFIG, ldm, runs.ldm_checkpoint,
                                 f"runlocal,ae={ae}", after=runs.ae_checkpoint)
    runs.sample = chain.pool.submit(sample_long)  # on the first worker free
    runs.eval = chain.pool.submit(eval_ae)
    yield runs
    chain.close()


@pytest.fixture(scope="module")
def ae_workdir(cli):
    return cli.ae_checkpoint.result()


# --------------------------------------------------------------------------------------------
# stage 1: the autoencoder


@pytest.fixture(scope="module")
def ae():
    """The runlocal autoencoder with a scheduled adversarial weight (λ known at each step).

    The reconstruction loss is L1 only (pvdm.lpips_weight = 0): LPIPS only adds compile time
    here, and the command-line run trains with it."""
    c = load_config("pvdm_ae_digits", "runlocal")
    c.pvdm.update(dict(gan_weight_mode="scheduled", gan_start_step=GAN_START,
                       gan_ramp_steps=RAMP, gan_weight=GAN_WEIGHT, lpips_weight=0.0))
    m = PVDMAutoencoderStage(c)
    batch = {"video": _uint8_video(0, m.num_frames)}
    params = strip_boxes(jax.jit(m.init)(jax.random.key(0), batch))
    assert set(params) == {"autoencoder", "disc2d", "disc3d"}
    x = jnp.asarray(to_unit_range(batch["video"]))
    recon = jax.jit(lambda p: m.model.apply({"params": p}, x)[0])(params["autoencoder"])
    return types.SimpleNamespace(config=c, method=m, batch=batch, params=params, x=x,
                                 recon=recon)


def test_ae_one_loss_routes_each_objective_to_its_parameters(ae):
    m, params, batch, x = ae.method, ae.params, ae.batch, ae.x
    rng = jax.random.key(3)
    rng_rec = jax.random.split(rng)[0]  # what the loss hands its reconstruction term
    # (the batch is a jit argument, as in train_step: `PVDMAutoencoderStage.lpips` indexes
    # the video with traced frame indices, which fails on a closed-over numpy batch)
    grads_at = jax.jit(jax.grad(lambda p, b, step: m.loss(p, b, rng, step=step),
                                has_aux=True))
    g_on, metrics_on = grads_at(params, batch, jnp.int32(STEP_ON))
    g_off, metrics_off = grads_at(params, batch, jnp.int32(STEP_OFF))
    np.testing.assert_allclose(float(metrics_on["adv_weight"]), LAMBDA_ON, rtol=1e-6)
    assert float(metrics_off["adv_weight"]) == 0.0

    disc = {k: params[k] for k in ("disc2d", "disc3d")}

    @jax.jit
    @jax.grad
    def disc_reference(d, leak):
        """Hinge L_D alone (+ `leak` · L_G, what a missing stop-gradient would add)."""
        p = {**params, **d}
        recon = m.model.apply({"params": params["autoencoder"]}, x)[0]
        r2, r3 = m._logits(p, x)
        f2, f3 = m._logits(p, recon)
        return (hinge_d_loss(r2, f2) + hinge_d_loss(r3, f3)
                + leak * (hinge_g_loss(f2) + hinge_g_loss(f3)))

    @jax.jit
    @jax.grad
    def ae_reference(a, lam):
        """Reconstruction + λ · L_G with λ a constant and the discriminators fixed."""
        recon = m.model.apply({"params": a}, x)[0]
        rec, _ = m.reconstruction_loss(x, recon, rng_rec)
        f2, f3 = m._logits(params, recon)
        return rec + lam * (hinge_g_loss(f2) + hinge_g_loss(f3))

    want_disc = disc_reference(disc, 0.0)
    assert_trees_close({k: g_on[k] for k in disc}, want_disc)
    # the comparison can fail: letting L_G reach the discriminators changes their gradient
    leaked = disc_reference(disc, LAMBDA_ON)
    assert tree_max_abs_diff(leaked, want_disc) > 100 * 2e-4 * max(
        np.abs(v).max() for v in _leaves(want_disc))

    want_ae_on = ae_reference(params["autoencoder"], LAMBDA_ON)
    want_ae_off = ae_reference(params["autoencoder"], 0.0)
    assert_trees_close(g_on["autoencoder"], want_ae_on)
    assert_trees_close(g_off["autoencoder"], want_ae_off)
    # ... and the generator term contributes visibly to the autoencoder's gradient
    scale = max(np.abs(v).max() for v in _leaves(want_ae_on))
    assert tree_max_abs_diff(want_ae_on, want_ae_off) > 20 * 2e-4 * scale

    # before gan_start_step: no discriminator gradient at all
    for k in disc:
        for leaf in _leaves(g_off[k]):
            assert not np.any(leaf), k
    assert np.isfinite(float(metrics_off["d_loss"]))  # still reported


def test_latent_noise_decodes_perturbed_planes_in_training_only(ae):
    """pvdm.latent_noise = σ: the training loss decodes z + σ·ε (ε from the loss's own key),
    the evaluation loss (train=False) and σ = 0 decode z itself."""
    c = copy.deepcopy(ae.config)
    c.pvdm.update(dict(latent_noise=0.3, gan_start_step=-1))
    m = PVDMAutoencoderStage(c)
    params = {"autoencoder": ae.params["autoencoder"]}
    rng = jax.random.key(5)
    loss = jax.jit(lambda p, b, train: m.loss(p, b, rng, train=train), static_argnums=2)
    noisy, _ = loss(params, ae.batch, True)
    clean, clean_metrics = loss(params, ae.batch, False)

    rng_rec, rng_noise = jax.random.split(rng)
    planes = m.encode(params, ae.x)
    keys = jax.random.split(rng_noise, len(planes))
    perturbed = triplane.Triplane(*(z + 0.3 * jax.random.normal(k, z.shape, z.dtype)
                                    for z, k in zip(planes, keys)))
    want_noisy = m.reconstruction_loss(ae.x, m.decode(params, perturbed), rng_rec)[0]
    want_clean = m.reconstruction_loss(ae.x, m.decode(params, planes), rng_rec)[0]
    np.testing.assert_allclose(float(noisy), float(want_noisy), rtol=1e-5)
    np.testing.assert_allclose(float(clean), float(want_clean), rtol=1e-5)
    assert abs(float(noisy) - float(clean)) > 1e-3 * float(clean)  # the noise is visible
    c.pvdm.latent_noise = 0.0  # off: training decodes z exactly
    off = PVDMAutoencoderStage(c).loss(params, ae.batch, rng, train=True)[0]
    np.testing.assert_allclose(float(off), float(clean), rtol=1e-5)
    assert float(clean_metrics["latent_abs_mean"]) < 1.0  # measured on z, before the noise


def test_adaptive_weight_is_the_bounded_gradient_ratio(ae):
    p, x, recon = ae.params, ae.x, ae.recon
    rng, step = jax.random.key(5), jnp.int32(STEP_ON)
    disc = {k: p[k] for k in ("disc2d", "disc3d")}

    def adaptive(max_weight):
        c = copy.deepcopy(ae.config)
        c.pvdm.update(dict(gan_weight_mode="adaptive", adaptive_max_weight=max_weight))
        return PVDMAutoencoderStage(c)

    m = adaptive(1e6)

    @jax.jit
    def ratio(d):
        """‖∇_x̂ L_rec‖ / (‖∇_x̂ L_G‖ + 10⁻⁴), L_rec = mean |x − x̂| here."""
        g_rec = jax.grad(lambda v: jnp.mean(jnp.abs(x - v)))(recon)
        g_adv = jax.grad(lambda v: sum(hinge_g_loss(f) for f in m._logits(d, v)))(recon)
        return jnp.linalg.norm(g_rec) / (jnp.linalg.norm(g_adv) + 1e-4)

    r = float(ratio(disc))
    assert np.isfinite(r) and r > 0
    cap = r / 2
    big, small = m, adaptive(cap)
    weights = jax.jit(lambda d: (big.adversarial_weight(x, recon, d, rng, step),
                                 small.adversarial_weight(x, recon, d, rng, step)))
    w_big, w_small = (float(w) for w in weights(disc))
    np.testing.assert_allclose(w_big, GAN_WEIGHT * r, rtol=1e-4)  # unclipped: w · ratio
    np.testing.assert_allclose(w_small, GAN_WEIGHT * cap, rtol=1e-5)  # clipped at the cap
    # A collapsed critic (zero weights: constant logits, ∇L_G = 0) gives a huge ratio:
    # the weight stays finite and capped.
    zero = jax.tree.map(jnp.zeros_like, disc)
    w_big, w_small = (float(w) for w in weights(zero))
    for w, limit in ((w_big, GAN_WEIGHT * 1e6), (w_small, GAN_WEIGHT * cap)):
        assert np.isfinite(w) and 0.0 <= w <= limit * (1 + 1e-6)
    np.testing.assert_allclose(w_small, GAN_WEIGHT * cap, rtol=1e-5)


def test_ae_optimizer_steps_each_group_with_its_own_adam(ae):
    m, c = ae.method, ae.config
    tx, schedule = m.optimizer(c.train)
    state = jax.jit(lambda p: TrainState.create(params=p, tx=tx))(ae.params)
    step = jax.jit(functools.partial(train_step, method=m, tx=tx, schedule=schedule,
                                     ema_decay=float(c.train.ema_decay)))
    rng = jax.random.key(7)
    on, metrics_on = step(state.replace(step=jnp.int32(STEP_ON)), ae.batch, rng)
    off, metrics_off = step(state, ae.batch, rng)
    assert float(metrics_on["finite"]) == float(metrics_off["finite"]) == 1.0
    assert int(on.step) == STEP_ON + 1 and int(off.step) == 1

    for k in ("autoencoder", "disc2d", "disc3d"):
        assert not trees_equal(on.params[k], ae.params[k]), k
    assert not trees_equal(off.params["autoencoder"], ae.params["autoencoder"])
    # zero discriminator gradients before gan_start_step → Adam's update is exactly zero
    for k in ("disc2d", "disc3d"):
        assert trees_equal(off.params[k], ae.params[k]), k
    # Adam's first step moves each coordinate by ≈ its group's learning rate
    lr, disc_lr = float(c.train.lr), float(c.pvdm.disc_lr)
    assert lr != disc_lr
    ae_move = tree_max_abs_diff(on.params["autoencoder"], ae.params["autoencoder"])
    disc_move = max(tree_max_abs_diff(on.params[k], ae.params[k]) for k in ("disc2d", "disc3d"))
    np.testing.assert_allclose(ae_move, lr, rtol=0.02)
    np.testing.assert_allclose(disc_move, disc_lr, rtol=0.02)


# --------------------------------------------------------------------------------------------
# stage 2: latent diffusion over the frozen autoencoder


def _ldm_config(ae_workdir, cond_prob, *, small=False):
    """The runlocal latent config; `small`: one UNet level (half the compile time), for
    in-process tests where the UNet's depth does not matter."""
    c = load_config("pvdm_ldm_digits", f"runlocal,ae={ae_workdir}")
    assert c.pvdm.cache_latents  # the config's default; these tests encode video batches
    c.pvdm.cond_prob, c.pvdm.cache_latents = cond_prob, False
    if cond_prob == 0:
        c.data.num_frames = c.pvdm.clip_frames
    if small:
        c.model.update(dict(channel_mults=(1,), attn_levels=(0,)))
    return c


def _perturbed_unet(params, seed):
    """conv_out is zero-initialised (the model would ignore z and cond): make it generic."""
    out = jax.tree.map(lambda v: v, params)  # a fresh container
    leaves, tree = jax.tree.flatten(params["unet"]["conv_out"])
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    out["unet"] = dict(params["unet"])
    out["unet"]["conv_out"] = jax.tree.unflatten(
        tree, [0.05 * jax.random.normal(k, v.shape, v.dtype) for v, k in zip(leaves, keys)])
    return out


@pytest.fixture(scope="module")
def ldm(ae_workdir):
    """A conditional (cond_prob = 1) and an unconditional (cond_prob = 0, S-frame) model."""
    cond = PVDMLatentStage(_ldm_config(ae_workdir, 1.0, small=True))
    # the same autoencoder, handed over instead of restored a second time
    unc = PVDMLatentStage(_ldm_config(ae_workdir, 0.0, small=True),
                          autoencoder=(cond.ae_config, cond.ae_params))
    cond_params = strip_boxes(jax.jit(cond.init)(jax.random.key(0), cond.example_batch(B)))
    unc_params = strip_boxes(jax.jit(unc.init)(jax.random.key(0), unc.example_batch(B)))
    return types.SimpleNamespace(cond=cond, unc=unc, cond_params=cond_params,
                                 unc_params=unc_params,
                                 cond_live=_perturbed_unet(cond_params, 1),
                                 unc_live=_perturbed_unet(unc_params, 2))


def test_latent_tokens_layout_and_round_trip(ldm):
    m, ae_cfg = ldm.cond, ldm.cond.ae_config
    s, r, patch = m.clip_frames, m.resolution, int(ae_cfg.model.patch_size)
    hp = wp = r // patch
    assert m.num_tokens == hp * wp + s * wp + s * hp
    assert m.latent_channels == int(ae_cfg.model.latent_channels)
    clip = to_unit_range(_uint8_video(1, s))
    planes = jax.jit(lambda p, v: m.autoencoder.apply({"params": p}, v,
                                                      method=m.autoencoder.encode))(
        ldm.cond_params["autoencoder"], clip)
    assert planes.s.shape == (B, hp, wp, m.latent_channels)
    assert planes.h.shape == (B, s, wp, m.latent_channels)
    assert planes.w.shape == (B, s, hp, m.latent_channels)
    tokens = jax.jit(m.encode)(ldm.cond_params, clip)
    assert tokens.shape == (B, m.num_tokens, m.latent_channels)
    np.testing.assert_allclose(tokens, triplane.to_tokens(planes), atol=1e-5)
    back = m.planes(triplane.to_tokens(planes))
    for name in triplane.Triplane._fields:  # each plane back in its own slot
        np.testing.assert_array_equal(getattr(back, name), getattr(planes, name))
    noise = jax.random.normal(jax.random.key(2), tokens.shape)
    np.testing.assert_array_equal(triplane.to_tokens(m.planes(noise)), noise)


def test_cached_latents_match_the_encoder_path(ldm, ae_workdir):
    """pvdm.cache_latents: the cache holds the encoder's latents of the training clips (in
    the pipeline's order), a batch of cached latents gives the same loss as the batch of
    videos they came from, and the iterator draws [B, 2, L, C] batches."""
    from vdiff.data import pipeline

    c = _ldm_config(ae_workdir, 1.0, small=True)
    c.pvdm.cache_latents = True
    m = PVDMLatentStage(c, autoencoder=(ldm.cond.ae_config, ldm.cond.ae_params))
    latents, labels = m.training_latents(batch_size=16)
    n = len(pipeline.get_data_source(c.data, split="train"))
    assert latents.shape == (n, 2, m.num_tokens, m.latent_channels) and labels.shape == (n,)
    clips, clip_labels = pipeline.take_clips(c.data, B, split="train", seed=0,
                                             random_flip=False, temporal_crop="first",
                                             with_labels=True)
    np.testing.assert_array_equal(labels[:B], clip_labels)
    s = m.clip_frames
    encode = jax.jit(lambda p, v: m.encode(p, to_unit_range(v)))
    for j in range(2):
        np.testing.assert_allclose(latents[:B, j], encode(ldm.cond_params,
                                                          clips[:, j * s:(j + 1) * s]),
                                   atol=1e-5)
    rng = jax.random.key(7)
    loss_v, _ = jax.jit(lambda p, b: ldm.cond.loss(p, b, rng))(ldm.cond_live, {"video": clips})
    loss_c, _ = jax.jit(lambda p, b: m.loss(p, b, rng))(ldm.cond_live,
                                                        {"latents": latents[:B]})
    np.testing.assert_allclose(float(loss_c), float(loss_v), rtol=1e-5)

    assert ldm.cond.make_iterator(4, 0) is None  # cache off: the shared pipeline
    it = m.make_iterator(4, 0)
    batch = next(it)
    assert batch["latents"].shape == (4, 2, m.num_tokens, m.latent_channels)
    assert batch["label"].shape == (4,)
    assert it.get_state() == {"index": 1}
    assert m.example_batch(3)["latents"].shape == (3, 2, m.num_tokens, m.latent_channels)

    c.data.random_flip = True
    with pytest.raises(ConfigError, match="cache_latents needs every training example"):
        PVDMLatentStage(c, autoencoder=(ldm.cond.ae_config, ldm.cond.ae_params)
                        ).training_latents()


def test_conditional_loss_sees_the_first_clip_and_the_switch_drops_it(ldm):
    m, params, s = ldm.cond, ldm.cond_live, ldm.cond.clip_frames
    rng = jax.random.key(6)
    video = _uint8_video(4, 2 * s)
    other = _uint8_video(5, 2 * s)
    first_changed = np.concatenate([other[:, :s], video[:, s:]], axis=1)
    second_changed = np.concatenate([video[:, :s], other[:, s:]], axis=1)

    def losses(method):
        fn = jax.jit(lambda p, v: method.loss(p, {"video": v}, rng))
        return [fn(params, v) for v in (video, first_changed, second_changed)]

    (base, metrics), (first, _), (second, _) = losses(m)
    base, first, second = float(base), float(first), float(second)
    # cond_prob = 1: every example is conditional, so the first clip reaches the loss
    np.testing.assert_allclose(float(metrics["loss_conditional"]), base, rtol=1e-6)
    assert abs(first - base) > 1e-4 * abs(base), (base, first)
    assert abs(second - base) > 1e-4 * abs(base), (base, second)
    # The same conditional model with the condition always dropped (cond = 0): the first
    # clip no longer matters, the second (the target) still does.
    dropped = copy.copy(m)
    dropped.cond_prob = 0.0
    (base0, metrics0), (first0, _), (second0, _) = losses(dropped)
    np.testing.assert_allclose(float(first0), float(base0), rtol=1e-6)
    assert abs(float(second0) - float(base0)) > 1e-4 * abs(float(base0))
    np.testing.assert_allclose(float(metrics0["loss_unconditional"]), float(base0), rtol=1e-6)


def test_unconditional_model_and_frame_count_checks(ldm, ae_workdir):
    m, params, s = ldm.unc, ldm.unc_live, ldm.unc.clip_frames
    assert not m.conditional and ldm.cond.conditional
    assert m.example_batch(1)["video"].shape[1] == s
    assert ldm.cond.example_batch(1)["video"].shape[1] == 2 * s
    c_lat = m.latent_channels  # + 3 one-hot plane-identity channels (model.plane_inputs)
    assert ldm.unc_params["unet"]["conv_in"]["Conv_0"]["kernel"].shape[2] == c_lat + 3
    assert ldm.cond_params["unet"]["conv_in"]["Conv_0"]["kernel"].shape[2] == 2 * c_lat + 3

    rng = jax.random.key(8)
    fn = jax.jit(lambda p, v: m.loss(p, {"video": v}, rng))
    video = _uint8_video(6, s)
    base, metrics = fn(params, video)
    assert np.isfinite(float(base)) and "loss_conditional" not in metrics
    for frame in (0, s - 1):  # every frame is part of the target
        changed = video.copy()
        changed[:, frame] = 255 - changed[:, frame]
        assert abs(float(fn(params, changed)[0]) - float(base)) > 1e-4 * abs(float(base))

    bad = _ldm_config(ae_workdir, 0.0)
    bad.data.num_frames = 2 * s
    with pytest.raises(ConfigError, match=rf"data.num_frames={2 * s} .*needs {s} frames"):
        PVDMLatentStage(bad)
    bad = _ldm_config(ae_workdir, 0.5)
    bad.data.num_frames = s
    with pytest.raises(ConfigError, match=rf"data.num_frames={s} .*needs {2 * s} frames"):
        PVDMLatentStage(bad)
    with pytest.raises(ConfigError, match="unconditional"):
        m.generate_long_video(params, rng, 1, s + 1)


def test_long_video_chains_clips_through_their_latents(ldm):
    m, params, s = ldm.cond, ldm.cond_live, ldm.cond.clip_frames
    assert s == 4
    rng, steps = jax.random.key(9), 2
    video = jax.jit(lambda p, r: m.generate_long_video(p, r, B, 10, sampler="ddim",
                                                       num_steps=steps))(params, rng)
    video = np.asarray(video)
    assert video.shape == (B, 10, 32, 32, 1)
    assert np.all(np.isfinite(video)) and video.min() >= -1.0 and video.max() <= 1.0

    @jax.jit
    def clip(p, r, cond):
        """One clip by hand: its latents and its decoded frames."""
        z = m.sample_latents(p, r, B, cond, sampler="ddim", num_steps=steps)
        return z, jnp.clip(m.decode(p, z), -1.0, 1.0)

    keys = jax.random.split(rng, 3)  # one key per clip, as the implementation splits
    zeros = jnp.zeros((B, m.num_tokens, m.latent_channels))
    z1, x1 = clip(params, keys[0], zeros)
    z2, x2 = clip(params, keys[1], z1)
    _, x3 = clip(params, keys[2], z2)
    np.testing.assert_allclose(video[:, :s], x1, atol=1e-4)
    np.testing.assert_allclose(video[:, s:2 * s], x2, atol=1e-4)
    np.testing.assert_allclose(video[:, 2 * s:], x3[:, :10 - 2 * s], atol=1e-4)
    # the chaining matters: the same noise without the first clip's latents differs
    free, _ = clip(params, keys[1], zeros)
    assert float(jnp.abs(free - z2).max()) > 1e-2


@pytest.fixture(scope="module")
def classes(ldm, ae_workdir):
    """A class-conditional latent model on digit-set labels (the `classes=True` config)."""
    c = load_config("pvdm_ldm_digits", f"runlocal,ae={ae_workdir},classes=True")
    assert c.data.label_from == "digit_set" and c.model.num_classes == 110
    c.pvdm.cache_latents = False
    c.model.update(dict(channel_mults=(1,), attn_levels=(0,)))
    m = PVDMLatentStage(c, autoencoder=(ldm.cond.ae_config, ldm.cond.ae_params))
    params = strip_boxes(jax.jit(m.init)(jax.random.key(0), m.example_batch(B)))
    # every zero-initialised UNet leaf made generic: at init the residual branches (where
    # the class embedding enters through FiLM) are exactly zero
    leaves, tree = jax.tree.flatten(params["unet"])
    keys = jax.random.split(jax.random.key(3), len(leaves))
    live = dict(params, unet=jax.tree.unflatten(tree, [
        v + 0.05 * jax.random.normal(k, v.shape, v.dtype) if not np.any(v) else v
        for v, k in zip(leaves, keys)]))
    return types.SimpleNamespace(m=m, live=live)


def test_class_labels_reach_the_loss_unless_dropped(classes):
    m, params = classes.m, classes.live
    video = _uint8_video(4, 2 * m.clip_frames)
    rng = jax.random.key(11)

    def loss(method, label):
        batch = {"video": video, "label": np.full((B,), label, np.int32)}
        return float(jax.jit(lambda p, b: method.loss(p, b, rng))(params, batch)[0])

    assert m.config.diffusion.cond_drop_prob == 0.1
    assert abs(loss(m, 3) - loss(m, 57)) > 1e-5 * abs(loss(m, 3))
    always_dropped = copy.copy(m)  # cond_drop_prob = 1: every label becomes the null class
    always_dropped.config = m.config.copy_and_resolve_references()
    always_dropped.config.diffusion.cond_drop_prob = 1.0
    np.testing.assert_allclose(loss(always_dropped, 3), loss(always_dropped, 57), rtol=1e-6)
    with pytest.raises(ValueError, match="class-conditional"):
        m.apply(params, jnp.zeros((B, m.num_tokens, m.latent_channels)), jnp.zeros((B,)),
                jnp.zeros((B, m.num_tokens, m.latent_channels)))


def test_classifier_free_guidance_mixes_conditional_and_null_eps(classes):
    """ε̃ = (1 + w)·ε(z, c) − w·ε(z, ∅), with w = 0 the plain conditional denoiser; the
    samples cycle through the config's one-digit classes."""
    from vdiff.data import moving_digits
    from vdiff.diffusion import targets

    m, params = classes.m, classes.live
    np.testing.assert_array_equal(m.sample_labels(12), [
        moving_digits.one_digit_class(d % 10) for d in range(12)])
    z = jax.random.normal(jax.random.key(1), (B, m.num_tokens, m.latent_channels))
    cond = jax.random.uniform(jax.random.key(2), z.shape, minval=-1, maxval=1)
    logsnr = jnp.full((B,), 0.5)
    labels = jnp.asarray([moving_digits.one_digit_class(3), 27], jnp.int32)

    def eps(lab):
        out = m.apply(params, z, logsnr, cond, labels=lab)
        return targets.predictions(z=z, model_output=out, logsnr=logsnr,
                                   parameterization=m.parameterization)[1]

    e_c, e_null = eps(labels), eps(jnp.full((B,), m.num_classes))
    assert float(jnp.abs(e_c - e_null).max()) > 1e-4
    w = 2.5
    want = targets.x0_from_eps(z=z, eps=(1 + w) * e_c - w * e_null, logsnr=logsnr)
    got = m.denoiser(params, cond, labels=labels, guidance_scale=w)(z, logsnr)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    plain = m.denoiser(params, cond, labels=labels)(z, logsnr)
    want0 = targets.x0_from_eps(z=z, eps=e_c, logsnr=logsnr)
    np.testing.assert_allclose(plain, want0, rtol=1e-4, atol=1e-5)
    video = jax.jit(lambda p, r: m.generate_long_video(
        p, r, B, 6, num_steps=2, labels=labels, guidance_scale=w))(params, jax.random.key(3))
    assert video.shape == (B, 6, 32, 32, 1) and np.all(np.isfinite(np.asarray(video)))


def test_digit_set_classes_and_labels_from_the_pipeline():
    from vdiff.data import moving_digits, pipeline

    md = moving_digits
    assert md.digit_set_class(np.array([4, -1])) == md.one_digit_class(4) == 54
    assert md.digit_set_class(np.array([7, 2])) == md.digit_set_class(np.array([2, 7])) == 29
    seen = {md.digit_set_class(np.array(p)) for p in
            [(a, -1) for a in range(10)] + [(a, b) for a in range(10) for b in range(10)]}
    assert len(seen) == 10 + 55 and max(seen) < md.NUM_DIGIT_SET_CLASSES
    for cls in seen:  # each class names its digits
        digits = md.digits_of_class(cls)
        padded = np.array(list(digits) + [-1] * (2 - len(digits)))
        assert md.digit_set_class(padded) == cls
    with pytest.raises(ValueError):
        md.digit_set_class(np.array([-1, -1]))

    c = load_config("pvdm_ldm_digits", "runlocal,classes=True")
    source = pipeline.get_data_source(c.data, split="train")
    want = sorted(md.digit_set_class(source[i]["labels"]) for i in range(len(source)))
    _, got = pipeline.take_clips(c.data, len(source), split="train", with_labels=True)
    assert sorted(got.tolist()) == want
    c.data.label_from = "digits"
    with pytest.raises(ConfigError, match="label_from"):
        pipeline.take_clips(c.data, 1, split="train")


def test_digit_accuracy_reads_real_one_digit_frames_as_their_digit():
    from vdiff.eval import digit_score

    clf = digit_score.classifier(32)
    x, y = digit_score._frames(8, split="test", resolution=32, max_digits=1, seed=3)
    videos = np.rint(x).astype(np.uint8).reshape(8, -1, 32, 32, 1)
    digits = y.reshape(8, -1)[:, 0]
    assert digit_score.accuracy(videos, digits, clf) > 0.8
    assert digit_score.accuracy(videos, (digits + 1) % 10, clf) < 0.2
    assert digit_score.reference_accuracy(clf) > 0.85


def test_missing_autoencoder_names_the_command(tmp_path):
    for workdir in (tmp_path / "nothing_here", ""):
        with pytest.raises(ConfigError, match=r"python -m vdiff\.main .*pvdm_ae_digits\.py"):
            PVDMLatentStage(_ldm_config(workdir, 0.5))


@pytest.fixture(scope="module")
def ae_checkpoint_ema(ae_workdir):
    """The autoencoder run's EMA params, restored with `vdiff.core.checkpoints.restore_ema_params`."""
    from vdiff.core.checkpoints import restore_ema_params
    from vdiff.train import sharding

    ae_cfg = load_config("pvdm_ae_digits", "runlocal")
    restored, step = restore_ema_params(ae_cfg, str(ae_workdir), PVDMAutoencoderStage(ae_cfg),
                                        sharding.make_mesh((1, -1, 1)))
    assert step == int(ae_cfg.train.num_steps)
    return restored["autoencoder"]


@pytest.fixture(scope="module")
def ldm_run_restorer(ae_workdir, ldm):
    """Restores the full TrainState (params, not only EMA) of the command-line latent run,
    built before that run finishes (fixtures are set up before the test waits for it)."""
    from vdiff.train import sharding
    from vdiff.train.checkpoint import Checkpointer
    from vdiff.train.setup import build_train_fns

    m = PVDMLatentStage(_ldm_config(ae_workdir, 0.5),  # the command-line run's config
                        autoencoder=(ldm.cond.ae_config, ldm.cond.ae_params))
    fns = build_train_fns(m.config, m, sharding.make_mesh(m.config.mesh.shape))

    def restore(workdir):
        ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=1,
                            save_every=0, async_save=False)
        try:
            step = ckpt.latest_step()
            return ckpt.restore(step, fns.abstract_state)[0], step
        finally:
            ckpt.close()
    return types.SimpleNamespace(method=m, restore=restore)


def test_frozen_autoencoder_is_the_checkpoint_and_never_trains(ldm, ae_checkpoint_ema,
                                                               ldm_run_restorer, cli):
    """The command-line latent run trained 4 steps of `train_step` with the method's own
    optimizer (the trainer builds it with `method.optimizer`): its autoencoder copy is
    bit-identical to the autoencoder run's EMA checkpoint, its UNet trained."""
    ae_params = ae_checkpoint_ema
    assert trees_equal(ldm.cond.ae_params, ae_params)  # read from the autoencoder run
    for params in (ldm.cond_params, ldm.unc_params):
        assert trees_equal(params["autoencoder"], ae_params)  # copied in at init
        # the UNet's output convolution starts at zero ...
        assert not np.any(np.asarray(params["unet"]["conv_out"]["Conv_0"]["kernel"]))

    state, step = ldm_run_restorer.restore(str(cli.ldm_checkpoint.result()))
    config = ldm_run_restorer.method.config
    assert step == int(config.train.num_steps) == int(state.step)
    assert trees_equal(state.params["autoencoder"], ae_params)  # bit-identical
    # ... and after training it is not: the UNet was updated
    assert np.any(np.asarray(state.params["unet"]["conv_out"]["Conv_0"]["kernel"]))
    # The EMA copy (what sampling decodes with) only up to rounding: the shared train step's
    # d·e + (1 − d)·p with p = e is not always e in float32 (1-ulp changes).
    assert_trees_close(state.ema_params["autoencoder"], ae_params, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# command line


def test_cli_latent_training_and_long_video(cli):
    ldm_dir = cli.ldm.result()
    assert os.path.isdir(ldm_dir / "checkpoints" / "4")
    lines = [json.loads(x) for x in open(ldm_dir / "metrics.jsonl")]
    losses = [x["loss"] for x in lines if "loss" in x]
    assert losses and all(np.isfinite(losses))
    # the runlocal config's evaluator ran at the end, on video batches through the encoder
    (ev,) = [json.loads(x) for x in open(ldm_dir / "eval.jsonl")]
    assert ev["step"] == 4 and np.isfinite(ev["heldout_loss_test"])
    assert ev["heldout_loss_gap"] == pytest.approx(ev["heldout_loss_test"]
                                                   - ev["heldout_loss_train"])
    assert ev["nn_train_videos"] == 64 and 0.0 < ev["nn_train_rmse"] < 1.0  # 8-frame samples
    out = cli.sample.result()
    with np.load(out / "samples.npz") as f:
        videos = f["videos"]
    assert videos.shape == (2, 10, 32, 32, 1)
    info = json.loads((out / "info.json").read_text())
    assert info["clips"] == 3 and info["frames"] == 10 and info["step"] == 4


def test_cli_autoencoder_eval_appends_reconstruction_metrics(cli):
    before, after, stdout = cli.eval.result()
    assert len(after) == len(before) + 1
    result = json.loads(after[-1])
    for key in ("recon_psnr", "recon_ssim", "recon_lpips"):
        assert np.isfinite(result[key]), key
        assert f'"{key}"' in stdout
    assert result["recon_lpips"] >= 0 and -1 <= result["recon_ssim"] <= 1
    assert result["recon_num_videos"] == 4.0
    # the same EMA weights and held-out clips as the evaluation at the end of training
    at_end_of_training = json.loads(before[-1])
    for key in ("recon_psnr", "recon_ssim", "recon_lpips"):
        np.testing.assert_allclose(result[key], at_end_of_training[key], rtol=1e-4, atol=1e-6)


def test_cli_autoencoder_run_turned_the_gan_on(cli):
    """runlocal: gan_start_step = 2, adaptive weight ≤ gan_weight · adaptive_max_weight."""
    ae = cli.ae.result()
    config = json.loads((ae / "config.json").read_text())
    assert config["pvdm"]["gan_start_step"] == 2
    cap = config["pvdm"]["gan_weight"] * config["pvdm"]["adaptive_max_weight"]
    lines = [json.loads(x) for x in open(ae / "metrics.jsonl")]
    by_step = {x["step"]: x for x in lines if "adv_weight" in x}
    assert by_step[2]["adv_weight"] == 0.0  # steps 0, 1: reconstruction only
    assert 0.0 < by_step[4]["adv_weight"] <= cap * (1 + 1e-6)  # steps 2, 3: adversarial
    assert all(np.isfinite(x["loss"]) and np.isfinite(x["d_loss"]) for x in by_step.values())


def test_digits_latent_config_evaluator_selection_also_holds_for_runlocal():
    """`evals=` picks evaluators by name; `runlocal` shrinks them (so the benchmark scripts'
    `--mode=eval` calls run on CPU) without dropping the ones asked for."""
    full = load_config("pvdm_ldm_digits", "")
    assert {"digit_score", "heldout_loss", "nearest_train", "fvd"} <= set(full.evals)
    picked = load_config("pvdm_ldm_digits", "runlocal,evals=digit_score+heldout_loss")
    assert sorted(picked.evals) == ["digit_score", "heldout_loss"]
    assert picked.evals.digit_score.num_videos < full.evals.digit_score.num_videos
    assert sorted(load_config("pvdm_ldm_digits", "runlocal").evals) == [
        "heldout_loss", "nearest_train"]
    assert not load_config("pvdm_ldm_digits", "runlocal,evals=none").evals
    with pytest.raises(ValueError, match="unknown evaluator"):
        load_config("pvdm_ldm_digits", "runlocal,evals=digit_score+fvd")


def test_exported_autoencoder_round_trips_and_serves_as_the_latent_stage_workdir(
        ldm, ae_workdir, tmp_path, capsys):
    """`python -m vdiff.methods.pvdm WORKDIR OUT` keeps exactly the EMA autoencoder weights,
    and a latent stage pointed at OUT encodes like one pointed at the training workdir."""
    from vdiff.methods import pvdm

    out = tmp_path / "exported"
    assert pvdm.main([str(ae_workdir), str(out)]) == 0
    assert sorted(os.listdir(out)) == ["autoencoder_ema.msgpack", "config.json"]
    restored = pvdm.load_autoencoder_params(pvdm.load_autoencoder_config(str(out)), str(out))
    want, got = jax.tree.leaves_with_path(ldm.cond.ae_params), jax.tree.leaves_with_path(restored)
    assert [p for p, _ in want] == [p for p, _ in got]
    for (_, w), (_, g) in zip(want, got):
        np.testing.assert_array_equal(np.asarray(w), g)
    stage = PVDMLatentStage(_ldm_config(str(out), 1.0, small=True))
    video = jnp.asarray(_uint8_video(3, stage.clip_frames), jnp.float32) / 127.5 - 1.0
    np.testing.assert_allclose(stage.encode({"autoencoder": stage.ae_params}, video),
                               ldm.cond.encode({"autoencoder": ldm.cond.ae_params}, video),
                               atol=1e-6)
    assert pvdm.main([str(tmp_path / "missing"), str(tmp_path / "o2")]) == 2
    assert "holds no trained autoencoder" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()
