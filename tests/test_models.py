"""Tests of anomaly_jax.models: parameter counts (PyTorch formulas), shapes, fast == plain
(outputs and gradients), bf16, dropout, and functional use under jit / pmap."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from anomaly_jax import model_ops as ops
from anomaly_jax import models as M


def torch_seed_params(size: int, fusion: str | None) -> int:
    """Parameter count of the PyTorch seed CNN (torch_seed_cnn.py) plus the fusion layers."""
    ch = (3, 4, 8, 16, 32, 64)
    convs = sum(ch[i] * ch[i + 1] * 9 + ch[i + 1] for i in range(5))
    flat = 64 * (size // 16) ** 2
    early = 2 if fusion in ("early", "linear") else 0
    late = 2 if fusion == "late" else 0
    linear = 6 if fusion == "linear" else 0
    return convs + (flat + early) * 100 + 100 + (100 + late) * 2 + 2 + linear


def torch_white_box_params(size: int) -> int:
    side = ((size - 4) // 2 - 4) // 2
    return (3 * 8 * 25 + 8) + (8 * 8 * 25 + 8) + 8 * side * side * 2 + 2


def abstract(name: str, size: int, **kw):
    return nnx.eval_shape(lambda: M.make_model(name, size, rngs=nnx.Rngs(0), **kw))


@pytest.mark.parametrize("name", M.SEED_MODEL_NAMES)
def test_param_counts_match_torch(name):
    if name == "white_box_net":
        assert M.num_params(abstract(name, 64)) == torch_white_box_params(64) == 4922
    else:
        want = torch_seed_params(800, M._FUSION_OF[name])
        assert M.num_params(abstract(name, 800)) == want
    assert torch_seed_params(800, None) == 16_025_014


def test_seed_cnn_800_output_shape_abstract():
    model = abstract("seed_cnn", 800)
    out = nnx.eval_shape(lambda m, x: m(x), model, jax.ShapeDtypeStruct((2, 800, 800, 3), jnp.float32))
    assert out.shape == (2, 2) and out.dtype == jnp.float32


def test_names_and_errors():
    assert [M.uses_features(n) for n in M.MODEL_NAMES] == [False, True, True, True, False, False]
    assert [M.is_dense(n) for n in M.MODEL_NAMES] == [False] * 5 + [True]
    with pytest.raises(ValueError, match="seed_cnn"):
        M.make_model("resnet", 64, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="multiple of 16"):
        M.make_model("seed_cnn", 50, rngs=nnx.Rngs(0))


def test_init_is_torch_uniform():
    model = M.make_model("white_box_net", 64, rngs=nnx.Rngs(0))
    k = np.asarray(model.fc.kernel[...])
    bound = 1 / math.sqrt(8 * 13 * 13)
    assert np.abs(k).max() <= bound and np.abs(k).max() > 0.95 * bound
    assert abs(k.std() - bound / math.sqrt(3)) < 0.02 * bound  # std of U(-a, a) is a/sqrt(3)


def call(model, x, f=None, key=None):
    """The model's forward, jitted (eager op-by-op dispatch is slow on a loaded CPU)."""
    return nnx.jit(lambda m, x, f, k: m(x, f, dropout_key=k))(model, x, f, key)


def inputs(b, size, seed=0):
    kx, kf = jax.random.split(jax.random.key(seed))
    x = jax.random.uniform(kx, (b, size, size, 3))
    f = jnp.stack([jax.random.uniform(kf, (b,)) * 100 + 30, jnp.full((b,), 1.1)], axis=1)
    return x, f


@pytest.mark.parametrize("name", M.SEED_MODEL_NAMES)
def test_shapes_and_all_params(name):
    model = M.make_model(name, 64, rngs=nnx.Rngs(0))
    x, f = inputs(3, 64)
    out = call(model, x, f)
    assert out.shape == (3, 2) and out.dtype == jnp.float32
    _, state = nnx.split(model)
    variables = jax.tree_util.tree_leaves(state, is_leaf=lambda v: isinstance(v, nnx.Variable))
    assert variables and all(isinstance(v, nnx.Param) for v in variables)


@functools.lru_cache(maxsize=None)
def parity_fns(name, size):
    """Both impls of `name` with the same parameters, and their jitted loss-and-gradient
    functions of (params, x, f, key); cached so several inputs share one compilation."""
    fast = M.make_model(name, size, impl="fast", rngs=nnx.Rngs(1))
    plain = M.make_model(name, size, impl="plain", rngs=nnx.Rngs(1))
    gf, params = nnx.split(fast)
    gp, params_p = nnx.split(plain)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(params_p)

    def loss(g, p, x, f, key):
        return jnp.sum(nnx.merge(g, p)(x, f, dropout_key=key) ** 2)

    def grad_fn(g):
        return jax.jit(jax.value_and_grad(functools.partial(loss, g)))

    def out_fn(g):
        return jax.jit(lambda p, x, f: nnx.merge(g, p)(x, f))

    return params, (grad_fn(gf), out_fn(gf)), (grad_fn(gp), out_fn(gp))


def assert_fast_equals_plain(name, size, x, f):
    params, (grad_f, out_f), (grad_p, out_p) = parity_fns(name, size)
    key = jax.random.key(3)
    lf, dfast = grad_f(params, x, f, key)
    lp, dplain = grad_p(params, x, f, key)
    np.testing.assert_allclose(out_f(params, x, f), out_p(params, x, f), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lf, lp, rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(dfast), jax.tree_util.tree_leaves(dplain)):
        scale = float(jnp.abs(b).max()) + 1e-12
        np.testing.assert_allclose(a / scale, b / scale, atol=2e-5)


# white_box_net at 41: odd sides before both pools (cropped rows get zero gradient); batch 6
# is not a multiple of WHITE_BOX_CHUNK, so the padded weight-gradient chunk is covered too.
@pytest.mark.parametrize("name,size", [("seed_cnn", 64), ("fusion_late", 48),
                                       ("white_box_net", 64), ("white_box_net", 41)])
def test_fast_equals_plain_outputs_and_gradients(name, size):
    x, f = inputs(6, size)
    assert_fast_equals_plain(name, size, x, f)


def tied_images(b, size, seed=0):
    """Images of flat 8x8 blocks in 3 grey levels: conv outputs inside a block are equal, so
    most pooling windows hold several equal maxima. float32[b, size, size, 3]."""
    levels = jax.random.randint(jax.random.key(seed), (b, size // 8, size // 8, 1), 0, 3) / 2
    levels = jnp.broadcast_to(levels, (b, size // 8, size // 8, 3))
    return jnp.repeat(jnp.repeat(levels, 8, 1), 8, 2)


def test_white_box_fast_ties_go_to_first_maximum_like_plain():
    x = tied_images(6, 64)
    model = M.make_model("white_box_net", 64, impl="plain", rngs=nnx.Rngs(1))
    z = ops.conv_plain(x, model.conv1.kernel[...], model.conv1.bias[...], "VALID")
    windows = np.asarray(ops._pool_windows(z))
    n_max = (windows == windows.max(axis=(2, 4), keepdims=True)).sum(axis=(2, 4))
    assert (n_max > 1).mean() > 0.5  # the case the reshape-max gradient would split
    assert_fast_equals_plain("white_box_net", 64, x, None)


def test_leaky_max_pool_fast_gradient_is_select_and_scatter():
    z = jnp.round(jax.random.normal(jax.random.key(0), (2, 7, 9, 3)) * 2) / 2  # many ties
    g = jax.random.normal(jax.random.key(1), (2, 3, 4, 3))

    def plain(z):
        return ops.max_pool_plain(jax.nn.leaky_relu(z, ops.LEAKY_SLOPE))

    out_f, vjp_f = jax.vjp(ops._leaky_max_pool_fast, z)
    out_p, vjp_p = jax.vjp(plain, z)
    np.testing.assert_array_equal(out_f, out_p)
    np.testing.assert_allclose(vjp_f(g)[0], vjp_p(g)[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("batch", [7, 203])  # padded last chunk; more chunks than the cap
def test_conv_valid_fast_gradients_equal_xla(batch):
    x = jax.random.normal(jax.random.key(0), (batch, 9, 8, 2))
    w = jax.random.normal(jax.random.key(1), (5, 5, 2, 3))
    dy = jax.random.normal(jax.random.key(2), (batch, 5, 4, 3))
    out_f, vjp_f = jax.vjp(ops._conv_valid_fast, x, w)
    out_p, vjp_p = jax.vjp(ops._conv_valid_nhwc, x, w)
    np.testing.assert_allclose(out_f, out_p, rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.jit(vjp_f)(dy), vjp_p(dy)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


@pytest.mark.parametrize("name", ["fusion_early", "white_box_net"])
def test_bfloat16_compute_float32_params(name):
    m32 = M.make_model(name, 64, rngs=nnx.Rngs(0))
    m16 = M.make_model(name, 64, dtype="bfloat16", rngs=nnx.Rngs(0))
    _, state = nnx.split(m16)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(state))
    x, f = inputs(4, 64)
    o32, o16 = call(m32, x, f), call(m16, x, f)
    assert o16.dtype == jnp.float32
    scale = float(jnp.abs(o32).max())
    np.testing.assert_allclose(o16, o32, atol=0.05 * scale + 0.05)


def test_dropout():
    model = M.make_model("white_box_net", 64, rngs=nnx.Rngs(0))
    x, _ = inputs(8, 64)
    np.testing.assert_array_equal(call(model, x), call(model, x))
    k = jax.random.key(7)
    np.testing.assert_array_equal(call(model, x, key=k), call(model, x, key=k))
    assert not np.allclose(call(model, x, key=k), call(model, x, key=jax.random.key(8)))
    h = jnp.abs(jax.random.normal(jax.random.key(0), (200, 1352))) + 0.1
    d = ops.dropout(h, k, 0.5)
    dropped = float(jnp.mean(d == 0))
    assert 0.48 < dropped < 0.52
    np.testing.assert_allclose(jnp.where(d != 0, d, 2 * h), 2 * h, rtol=1e-6)
    # The logits are the dense layer applied to exactly that masked, scaled feature vector.
    feats = ops.white_box_trunk_fast(x, *(v[...] for v in (model.conv1.kernel, model.conv1.bias,
                                                           model.conv2.kernel, model.conv2.bias)))
    want = ops.dropout(feats, k, 0.5) @ model.fc.kernel[...] + model.fc.bias[...]
    np.testing.assert_allclose(call(model, x, key=k), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["fusion_linear", "white_box_net"])
def test_merge_inside_pmap(name):
    assert jax.local_device_count() >= 2
    model = M.make_model(name, 64, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    x, f = inputs(4, 64)
    keys = jax.random.split(jax.random.key(0), 2)

    def step(p, x, f, k):
        def loss(p):
            return jnp.mean(nnx.merge(graphdef, p)(x, f, dropout_key=k) ** 2)
        l, g = jax.value_and_grad(loss)(p)
        return jax.lax.pmean(l, "d"), jax.lax.pmean(g, "d")

    rep = jax.tree.map(lambda a: jnp.stack([a, a]), params)
    l, g = jax.pmap(step, axis_name="d")(rep, x.reshape(2, 2, 64, 64, 3), f.reshape(2, 2, 2), keys)
    forward = jax.jit(lambda p, x, f, k: nnx.merge(graphdef, p)(x, f, dropout_key=k))
    out0 = forward(params, x[:2], f[:2], keys[0])
    out1 = forward(params, x[2:], f[2:], keys[1])
    want = (jnp.mean(out0 ** 2) + jnp.mean(out1 ** 2)) / 2
    np.testing.assert_allclose(l[0], want, rtol=1e-5)
    assert jax.tree_util.tree_structure(g) == jax.tree_util.tree_structure(rep)


def test_impl_auto_is_fast_on_cpu_and_plain_elsewhere():
    assert M.resolve_impl("auto", "cpu") == "fast"
    for backend in ("gpu", "cuda", "rocm", "tpu", "METAL"):
        assert M.resolve_impl("auto", backend) == "plain"
    assert M.resolve_impl("plain", "cpu") == "plain" and M.resolve_impl("fast", "gpu") == "fast"
    with pytest.raises(ValueError, match="auto, fast, plain"):
        M.resolve_impl("turbo", "cpu")


def test_per_example_dropout_does_not_depend_on_the_batch():
    """With one key per example (what the train step passes), an example's output is the same
    in a batch of 4 and of 2, at any position."""
    model = M.make_model("white_box_net", 64, rngs=nnx.Rngs(0))
    x, f = inputs(4, 64)
    keys = jax.random.split(jax.random.key(3), 4)
    whole = call(model, x, f, keys)
    pair = call(model, x[jnp.array([3, 1])], f[jnp.array([3, 1])], keys[jnp.array([3, 1])])
    np.testing.assert_allclose(pair, whole[jnp.array([3, 1])], rtol=1e-6, atol=1e-7)
    assert not np.allclose(call(model, x, f, None), whole)  # dropout did act
