"""Does a class-conditional PVDM latent model learn to use its label? A known-answer check.

Each of K classes has one fixed latent pattern (±0.8 per element, plus N(0, 0.05²)); the real
latent stage (loss, triplane UNet, DDIM sampler) trains on them with Adam, and every 500 steps
samples asked for class c are read as their nearest pattern: accuracy 1 means the label is
used, 1/K that it is ignored. `--class_init_std` rescales the fresh class-embedding table to
that std (0.02: the init before 2026-12-06). CPU, runlocal-size UNet, about 3 min.

    PYTHONPATH=. python benchmarks/studies/class_conditioning_synthetic.py --class_init_std=0.02
"""
import argparse
import datetime
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tests.helpers import load_config
from vdiff.methods.pvdm import PVDMAutoencoderStage, PVDMLatentStage
from vdiff.train.sharding import strip_boxes

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=3000)
ap.add_argument("--lr", type=float, default=3e-4)
ap.add_argument("--class_init_std", type=float, default=1.0)
ap.add_argument("--classes", type=int, default=10)
ap.add_argument("--out", default="")
a = ap.parse_args()
K = a.classes
ae_config = load_config("pvdm_ae_digits", "runlocal")
ae = PVDMAutoencoderStage(ae_config)
ae_params = strip_boxes(jax.jit(ae.init)(
    jax.random.key(0), {"video": np.zeros((2, ae.num_frames, 32, 32, 1), np.uint8)}))
c = load_config("pvdm_ldm_digits", "runlocal,classes=True")
c.model.num_classes, c.pvdm.sample_labels, c.pvdm.cache_latents = K, (), True
m = PVDMLatentStage(c, autoencoder=(ae_config, ae_params["autoencoder"]))
L, C = m.num_tokens, m.latent_channels
rng = np.random.default_rng(0)
patterns = (0.8 * np.sign(rng.standard_normal((K, L, C)))).astype(np.float32)
params = strip_boxes(jax.jit(m.init)(jax.random.key(0), m.example_batch(4)))
table = params["unet"]["ConditioningEmbedding_0"]["class_embed"]["embedding"]
table = table * (a.class_init_std / float(jnp.std(table)))
params["unet"]["ConditioningEmbedding_0"]["class_embed"]["embedding"] = table
tx = optax.adam(a.lr)
unet, opt = params["unet"], tx.init(params["unet"])


@jax.jit
def step(unet, opt, batch, key):
    loss, g = jax.value_and_grad(lambda u: m.loss(dict(params, unet=u), batch, key)[0])(unet)
    updates, opt = tx.update(g, opt, unet)
    return optax.apply_updates(unet, updates), opt, loss


n_eval = 4 * K
sample = jax.jit(lambda p, r, lab: m.sample_latents(
    p, r, n_eval, jnp.zeros((n_eval, L, C)), sampler="ddim", num_steps=20, labels=lab))
rows, t0 = [], time.time()
for i in range(a.steps):
    lab = rng.integers(K, size=32)
    x = patterns[lab] + 0.05 * rng.standard_normal((32, L, C)).astype(np.float32)
    unet, opt, loss = step(unet, opt, {"latents": np.stack([x, x], 1),
                                       "label": lab.astype(np.int32)}, jax.random.key(i))
    if (i + 1) % 500 == 0:
        want = np.arange(n_eval) % K
        z = np.asarray(sample(dict(params, unet=unet), jax.random.key(9), jnp.asarray(want)))
        d = ((z[:, None] - patterns[None]) ** 2).mean((2, 3))
        rows.append(dict(step=i + 1, loss=round(float(loss), 4),
                         accuracy=float(np.mean(d.argmin(1) == want)),
                         nearest_mse=round(float(d.min(1).mean()), 4)))
        print(json.dumps(rows[-1]), flush=True)
result = dict(benchmark="class_conditioning_synthetic", date=str(datetime.date.today()),
              device=f"CPU ({platform.processor() or platform.machine()})", args=vars(a),
              chance=1 / K, wall_s=round(time.time() - t0, 1), trajectory=rows)
print(json.dumps(result, indent=1))
if a.out:
    json.dump(result, open(a.out, "w"), indent=1)
