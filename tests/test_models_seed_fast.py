"""Tests of SeedCNN's fast path (anomaly_jax.models `_seed_*`): the space-to-depth conv+pool
block equals conv -> ReLU -> 2x2 max-pool with its gradients. The whole fast model equals the
plain one in outputs and every gradient in tests/test_models.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from anomaly_jax import model_ops as ops


def reference_block(x, w, b):
    """Textbook conv 'same' + bias, ReLU, reduce_window max-pool (NHWC)."""
    y = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = jax.nn.relu(y + b)
    return lax.reduce_window(y, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def test_space_to_depth_round_trip_and_layout():
    x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
    y = ops._seed_space_to_depth(x)
    assert y.shape == (2, 2, 3, 12)
    # channel (p, q, c) of half-grid cell (i, j) is pixel (2i+p, 2j+q), channel c
    np.testing.assert_array_equal(np.asarray(y[1, 1, 2].reshape(2, 2, 3)), np.asarray(x[1, 2:4, 4:6]))
    np.testing.assert_array_equal(np.asarray(ops._seed_depth_to_space(y, 3)), np.asarray(x))


def test_s2d_kernel_is_a_rearrangement():
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 2, 5))
    w2 = np.asarray(ops._seed_s2d_kernel(w))
    assert w2.shape == (3, 3, 8, 20)
    # each original weight appears once per (input sub-pixel, output sub-pixel) pair that it links:
    # 2 (rows a) * 2 (cols b) output sub-pixels, each sees all 9 taps once
    nz = w2[w2 != 0]
    assert nz.size == 4 * w.size
    assert set(np.round(nz, 6)) == set(np.round(np.asarray(w).ravel(), 6))


@pytest.mark.parametrize("size,cin,cout", [(12, 3, 4)])
def test_block_matches_reference_with_gradients(size, cin, cout):
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(size), 4)
    x = jax.random.normal(k1, (2, size, size, cin))
    w = jax.random.normal(k2, (3, 3, cin, cout)) * 0.3
    b = jax.random.normal(k3, (cout,)) * 0.1
    ct = jax.random.normal(k4, (2, size // 2, size // 2, cout))
    want, vjp_ref = jax.jit(lambda x, w, b: jax.vjp(reference_block, x, w, b))(x, w, b)
    got, vjp_fast = jax.jit(lambda x, w, b: jax.vjp(ops.seed_block_s2d, x, w, b))(x, w, b)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for g, r in zip(vjp_fast(ct), vjp_ref(ct)):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4 * float(jnp.abs(r).max()))
