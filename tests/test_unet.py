"""UNet3D: shapes, the factorized structure and the joint image-video mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdiff.models.unet3d import UNet3D
from vdiff.nn.attention import image_frame_mask

B, F, H, C = 2, 6, 16, 1


@pytest.fixture(scope="module")
def model_and_params():
    model = UNet3D(out_channels=C, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                   attn_resolutions=(8,), temporal_attn_resolutions=(16, 8), head_dim=8,
                   num_classes=10)
    z = jnp.zeros((B, F, H, H, C))
    params = jax.jit(lambda r: model.init(r, z, jnp.zeros((B,)), labels=jnp.zeros((B,), jnp.int32),
                                          frame_is_image=jnp.zeros((B, F), bool)))(jax.random.key(0))
    # The output conv and every residual branch's last conv are zero-initialised;
    # perturb all params so the test sees a generic network, not an identity-ish one.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape)
                                       for x, k in zip(leaves, keys)])
    apply = jax.jit(lambda p, z, l, lab, img: model.apply(p, z, l, labels=lab, frame_is_image=img))
    return apply, params


def test_output_shape_and_dtype(model_and_params):
    apply, params = model_and_params
    z = jax.random.normal(jax.random.key(2), (B, F, H, H, C))
    out = apply(params, z, jnp.array([0.0, 3.0]), jnp.array([1, 10]), jnp.zeros((B, F), bool))
    assert out.shape == z.shape and out.dtype == jnp.float32
    assert np.all(np.isfinite(out))


def test_zero_initialised_output():
    model = UNet3D(out_channels=3, base_channels=8, channel_mults=(1,), num_res_blocks=1,
                   attn_resolutions=(), temporal_attn_resolutions=(8,), head_dim=8)
    z = jax.random.normal(jax.random.key(0), (1, 3, 8, 8, 3))
    params = model.init(jax.random.key(0), z, jnp.zeros((1,)))
    np.testing.assert_array_equal(model.apply(params, z, jnp.zeros((1,))), 0.0)


def test_image_mask_pattern():
    is_image = jnp.array([[False, False, True, True]])
    mask = np.asarray(image_frame_mask(is_image)[0])
    expected = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], bool)
    np.testing.assert_array_equal(mask, expected)


def test_image_frames_are_independent(model_and_params):
    """Changing other frames leaves an image frame's output unchanged; a video frame's changes."""
    apply, params = model_and_params
    is_image = jnp.array([[False] * 4 + [True] * 2] * B)
    z = jax.random.normal(jax.random.key(3), (B, F, H, H, C))
    logsnr, labels = jnp.array([1.0, -2.0]), jnp.array([[3, 3, 3, 3, 5, 7]] * B)
    base = apply(params, z, logsnr, labels, is_image)
    # Perturb every frame except image frame 4.
    z2 = z.at[:, :4].add(1.0).at[:, 5].add(-1.0)
    out = apply(params, z2, logsnr, labels, is_image)
    np.testing.assert_allclose(out[:, 4], base[:, 4], atol=1e-5)
    # Video frame 0 is perturbed directly; frame 1 only through temporal attention from 0.
    z3 = z.at[:, 0].add(1.0)
    out3 = apply(params, z3, logsnr, labels, is_image)
    assert np.max(np.abs(out3[:, 1] - base[:, 1])) > 1e-3, "video frames must see each other"
    np.testing.assert_allclose(out3[:, 4:], base[:, 4:], atol=1e-5)


def test_without_mask_image_frames_would_mix(model_and_params):
    """Control for the test above: with no mask, frame 4 does depend on frame 0."""
    apply, params = model_and_params
    z = jax.random.normal(jax.random.key(4), (B, F, H, H, C))
    logsnr, labels = jnp.zeros((B,)), jnp.zeros((B,), jnp.int32)
    no_mask = jnp.zeros((B, F), bool)
    base = apply(params, z, logsnr, labels, no_mask)
    out = apply(params, z.at[:, 0].add(1.0), logsnr, labels, no_mask)
    assert np.max(np.abs(out[:, 4] - base[:, 4])) > 1e-3


def test_class_label_changes_output(model_and_params):
    apply, params = model_and_params
    z = jax.random.normal(jax.random.key(5), (B, F, H, H, C))
    img = jnp.zeros((B, F), bool)
    a = apply(params, z, jnp.zeros((B,)), jnp.array([1, 1]), img)
    b = apply(params, z, jnp.zeros((B,)), jnp.array([10, 10]), img)  # null class
    assert np.max(np.abs(a - b)) > 1e-3


def test_bad_input_shapes_raise():
    model = UNet3D(out_channels=1, base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=1,
                   attn_resolutions=(), temporal_attn_resolutions=(), head_dim=8)
    with pytest.raises(ValueError, match="must be divisible"):
        model.init(jax.random.key(0), jnp.zeros((1, 2, 6, 6, 1)), jnp.zeros((1,)))
    with pytest.raises(ValueError, match=r"\[B, F, H, W, C\]"):
        model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,)))


def test_in_place_temporal_attention_matches_the_token_layout():
    """temporal_attention_impl='einsum' (attention across frames without transposes) has
    the same parameters and outputs as the (b h w) f c token path, masks and bias included."""
    from vdiff.nn.attention import TemporalAttention

    x = jax.random.normal(jax.random.key(0), (2, 5, 3, 4, 16))
    is_image = jnp.array([[False] * 5, [False, False, True, False, True]])
    ref = TemporalAttention(head_dim=8, max_relative_distance=4)
    params = ref.init(jax.random.key(1), x, is_image)
    # perturb every weight (the output projection and bias table start at zero)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape)
                                       for p, k in zip(leaves, keys)])
    fast = TemporalAttention(head_dim=8, max_relative_distance=4, implementation="einsum")
    assert jax.tree.structure(fast.init(jax.random.key(1), x, is_image)) == tree
    for mask in (None, is_image):
        np.testing.assert_allclose(fast.apply(params, x, mask), ref.apply(params, x, mask),
                                   atol=2e-5, rtol=2e-5)


def test_remat_policies_keep_parameters_loss_and_gradients():
    """model.remat only changes what the backward pass stores: the same parameter tree
    (names included, so checkpoints are interchangeable), loss and gradients — dropout too."""
    kw = dict(out_channels=C, base_channels=8, channel_mults=(1,), num_res_blocks=1,
              attn_resolutions=(8,), head_dim=4, dropout=0.2)
    z = jax.random.normal(jax.random.key(0), (B, 3, 8, 8, C))
    logsnr, is_image = jnp.linspace(-3.0, 3.0, B), jnp.zeros((B, 3), bool)
    rngs = {"params": jax.random.key(1), "dropout": jax.random.key(2)}
    results = {}
    for remat in ("none", "dots", "full"):
        model = UNet3D(**kw, remat=remat)
        params = jax.jit(lambda r, model=model: model.init(r, z, logsnr, frame_is_image=is_image,
                                                           train=True))(rngs)

        def loss(p, model=model):
            out = model.apply(p, z, logsnr, frame_is_image=is_image, train=True,
                              rngs={"dropout": jax.random.key(3)})
            return jnp.mean(out ** 2) + 1e-3 * sum(jnp.sum(x ** 2) for x in jax.tree.leaves(p))

        results[remat] = (params, *jax.jit(jax.value_and_grad(loss))(params))
    ref_params, ref_loss, ref_grads = results["none"]
    assert "ResBlock_0" in ref_params["params"]
    for remat in ("dots", "full"):
        params, value, grads = results[remat]
        assert jax.tree.structure(params) == jax.tree.structure(ref_params)
        jax.tree.map(np.testing.assert_array_equal, params, ref_params)
        np.testing.assert_allclose(value, ref_loss, rtol=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     grads, ref_grads)
    with pytest.raises(ValueError, match="remat"):
        UNet3D(**kw, remat="sometimes").init(rngs, z, logsnr, frame_is_image=is_image)


@pytest.mark.parametrize("channels", [32, 48, 6])
def test_frame_group_norm_matches_flax_group_norm_per_frame(channels):
    """The channels-last two-stage GroupNorm equals flax's nn.GroupNorm applied frame by
    frame (same parameter names, so old checkpoints load), with a non-zero mean and a
    non-trivial scale/bias, in float32 and from bfloat16 input."""
    import flax.linen as nn

    from vdiff.nn.layers import FrameGroupNorm, num_groups_for

    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x = 3.0 + 2.0 * jax.random.normal(k1, (2, 3, 5, 7, channels))
    ours = FrameGroupNorm()
    params = ours.init(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, params) == {
        "params": {"GroupNorm_0": {"scale": (channels,), "bias": (channels,)}}}
    params = {"params": {"GroupNorm_0": {
        "scale": 1.0 + jax.random.normal(k2, (channels,)),
        "bias": jax.random.normal(k3, (channels,))}}}
    flax_norm = nn.GroupNorm(num_groups=num_groups_for(channels), dtype=jnp.float32)
    ref = jax.vmap(lambda frame: flax_norm.apply(
        {"params": params["params"]["GroupNorm_0"]}, frame), in_axes=1, out_axes=1)(x)
    np.testing.assert_allclose(ours.apply(params, x), ref, rtol=1e-5, atol=1e-5)
    xb = x.astype(jnp.bfloat16)
    out_b = FrameGroupNorm(jnp.bfloat16).apply(params, xb)
    ref_b = jax.vmap(lambda frame: flax_norm.apply(
        {"params": params["params"]["GroupNorm_0"]}, frame), in_axes=1, out_axes=1)(xb)
    assert out_b.dtype == jnp.bfloat16
    np.testing.assert_allclose(out_b.astype(jnp.float32), ref_b, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dim", [64, 256])
def test_class_embedding_starts_as_strong_as_the_noise_level_embedding(dim):
    """At init, changing the class moves the conditioning vector about as far as changing the
    noise level does. With a small table (N(0, 0.02²)) the class signal was ~17× weaker (ratio 0.058) and a
    class-conditional model needed thousands of Adam steps before it used its label
    (benchmarks/studies/class_conditioning_synthetic.py)."""
    from vdiff.nn.embeddings import ConditioningEmbedding

    module = ConditioningEmbedding(dim, num_classes=10)
    logsnr = jnp.linspace(-10.0, 10.0, 11)
    labels = jnp.arange(11) % 11  # every class and the null class
    params = module.init(jax.random.key(0), logsnr, labels, 1)

    def emb(lg, lab):
        return module.apply(params, lg, lab, 1)[:, 0]

    by_class = emb(jnp.zeros(11), labels)            # one noise level, every class
    by_noise = emb(logsnr, jnp.zeros(11, jnp.int32))  # one class, every noise level
    spread = lambda e: float(jnp.sqrt(jnp.mean(jnp.var(e, axis=0))))  # noqa: E731
    ratio = spread(by_class) / spread(by_noise)
    assert 0.3 < ratio < 10.0, ratio
