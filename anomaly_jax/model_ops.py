"""The ops the seed models call, in two formulations chosen by `impl`: "plain" (textbook
`lax.conv_general_dilated` / `lax.reduce_window`, what a GPU wants) and "fast" (what XLA:CPU
runs well: space-to-depth conv+pool blocks, batch-chunked conv weight gradients, a fused
leaky-ReLU + max-pool with a mask gradient), plus inverted dropout.

Shapes are NHWC: x: float[B, H, W, C]; conv kernels float[kh, kw, Cin, Cout]. The fast and
plain forms agree in outputs and gradients (tests/test_models.py, test_models_seed_fast.py);
re-run those and the profiler after changing a formulation.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

LEAKY_SLOPE = 0.01


# --------------------------------------------------------------------------- ops
def conv_plain(x: jax.Array, w: jax.Array, b: jax.Array, padding: str) -> jax.Array:
    """Reference convolution. x: [B, H, W, Cin], w: [k, k, Cin, Cout] -> [B, H', W', Cout]."""
    y = lax.conv_general_dilated(
        x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + b


def max_pool_plain(x: jax.Array) -> jax.Array:
    """Reference 2x2/2 max-pool (floor mode). x: [B, H, W, C] -> [B, H//2, W//2, C]."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _max_pool_fast(x: jax.Array) -> jax.Array:
    """2x2/2 max-pool as reshape + max: its gradient is elementwise, not select-and-scatter.

    Odd sides are cropped first, as PyTorch's floor mode does. Ties (rare in float data) share
    the gradient instead of giving it to the first maximum.
    """
    bsz, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2, :]
    return x.reshape(bsz, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


WHITE_BOX_CHUNK = 5  # images per weight-gradient conv in the fast WhiteBoxNet (best of 1..20 tried)
_MAX_GRAD_CHUNKS = 40  # cap on the unrolled weight-gradient convs (compile time at large batch)


def _conv_valid_nhwc(x: jax.Array, w: jax.Array) -> jax.Array:
    """'valid' conv, no bias. x: [B, H, W, Cin], w: [k, k, Cin, Cout] -> [B, H-k+1, W-k+1, Cout]."""
    return lax.conv_general_dilated(
        x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _conv_weight_grad(x: jax.Array, dy: jax.Array, w_shape: tuple[int, ...]) -> jax.Array:
    """XLA's own weight gradient of `_conv_valid_nhwc`. x: [b, H, W, Cin], dy: [b, H', W', Cout]."""
    w0 = jnp.zeros(w_shape, x.dtype)
    return jax.vjp(lambda w: _conv_valid_nhwc(x, w), w0)[1](dy)[0]


def _conv_weight_grad_chunked(x: jax.Array, dy: jax.Array, w_shape: tuple[int, ...]) -> jax.Array:
    """Sum of per-chunk weight gradients over small batch chunks, unrolled (not a loop).

    Why: XLA:CPU's weight-gradient conv is superlinear in the batch (measured at batch 100:
    ~6x slower than 20 convs of 5 images), and the same chunks under lax.map/lax.scan measured
    2-4x slower than unrolled. Zero images added to fill the last chunk contribute exactly zero.
    x: [B, H, W, Cin], dy: [B, H', W', Cout] -> float[w_shape] in x's dtype.
    """
    n = x.shape[0]
    chunk = max(WHITE_BOX_CHUNK, -(-n // _MAX_GRAD_CHUNKS))
    pad = -n % chunk
    if pad:
        x = jnp.pad(x, ((0, pad), (0, 0), (0, 0), (0, 0)))
        dy = jnp.pad(dy, ((0, pad), (0, 0), (0, 0), (0, 0)))
    parts = [_conv_weight_grad(x[s : s + chunk], dy[s : s + chunk], w_shape)
             for s in range(0, n + pad, chunk)]
    return functools.reduce(jnp.add, parts)


@jax.custom_vjp
def _conv_valid_fast(x: jax.Array, w: jax.Array) -> jax.Array:
    """`_conv_valid_nhwc` whose weight gradient is `_conv_weight_grad_chunked` and whose input
    gradient is the transposed conv (a 'full' conv with the flipped kernel), as XLA's own."""
    return _conv_valid_nhwc(x, w)


def _conv_valid_fast_fwd(x: jax.Array, w: jax.Array):
    return _conv_valid_nhwc(x, w), (x, w)


def _conv_valid_fast_bwd(res, dy: jax.Array):
    x, w = res
    k = w.shape[0]
    w_t = jnp.flip(w, (0, 1)).swapaxes(2, 3)  # [k, k, Cout, Cin]
    dx = lax.conv_general_dilated(dy, w_t, (1, 1), [(k - 1, k - 1)] * 2,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return dx, _conv_weight_grad_chunked(x, dy, w.shape)


_conv_valid_fast.defvjp(_conv_valid_fast_fwd, _conv_valid_fast_bwd)


def _pool_windows(z: jax.Array) -> jax.Array:
    """z: [B, H, W, C] -> its 2x2 windows [B, H//2, 2, W//2, 2, C] (odd sides cropped)."""
    b, h, w, c = z.shape
    return z[:, : h // 2 * 2, : w // 2 * 2, :].reshape(b, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def _leaky_max_pool_fast(z: jax.Array) -> jax.Array:
    """max_pool_2x2(leaky_relu(z)) of z: [B, H, W, C] -> [B, H//2, W//2, C] (floor mode).

    leaky ReLU is increasing, so it commutes with max and runs on the 4x smaller pooled map.
    The gradient goes to the first maximum of each window in row-major order, exactly as
    select-and-scatter (the plain impl, PyTorch) does, but as one elementwise fusion: XLA:CPU's
    select-and-scatter measured ~7x slower. At z == 0 the slope is 1, as jax.nn.leaky_relu's.
    """
    return jax.nn.leaky_relu(_pool_windows(z).max(axis=(2, 4)), LEAKY_SLOPE)


def _leaky_max_pool_fast_fwd(z: jax.Array):
    m = _pool_windows(z).max(axis=(2, 4))
    return jax.nn.leaky_relu(m, LEAKY_SLOPE), (z, m)


def _leaky_max_pool_fast_bwd(res, dp: jax.Array):
    z, m = res
    b, h, w, c = z.shape
    g = dp * jnp.where(m >= 0, 1.0, LEAKY_SLOPE).astype(dp.dtype)  # as jax.nn.leaky_relu at 0
    eq = _pool_windows(z) == m[:, :, None, :, None, :]
    e00, e01, e10, e11 = eq[:, :, 0, :, 0], eq[:, :, 0, :, 1], eq[:, :, 1, :, 0], eq[:, :, 1, :, 1]
    firsts = (e00, e01 & ~e00, e10 & ~(e00 | e01), e11 & ~(e00 | e01 | e10))
    zero = jnp.zeros((), dp.dtype)
    d00, d01, d10, d11 = (jnp.where(f, g, zero) for f in firsts)
    d = jnp.stack([jnp.stack([d00, d01], 3), jnp.stack([d10, d11], 3)], 2)
    d = d.reshape(b, h // 2 * 2, w // 2 * 2, c)
    return (jnp.pad(d, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


_leaky_max_pool_fast.defvjp(_leaky_max_pool_fast_fwd, _leaky_max_pool_fast_bwd)


def white_box_trunk_fast(
    x: jax.Array, w1: jax.Array, b1: jax.Array, w2: jax.Array, b2: jax.Array
) -> jax.Array:
    """Fast WhiteBoxNet trunk (both conv-leaky-pool blocks). x: [B, S, S, 3] -> [B, s*s*8],
    flattened in NHWC order like the plain impl (so the dense layer means the same).

    XLA:CPU's native conv is kept for the forward and input gradient (fastest measured at batch
    100); only the weight gradient (chunked) and the pooling (mask from the forward) differ.
    """
    x = _leaky_max_pool_fast(_conv_valid_fast(x, w1) + b1)
    x = _leaky_max_pool_fast(_conv_valid_fast(x, w2) + b2)
    return x.reshape(x.shape[0], -1)


# XLA:CPU's native convolution is the fastest measured choice for SeedCNN's later 3x3 'same'
# convs (im2col would materialise ~700 MB at batch 10); the first SEED_S2D_BLOCKS blocks use
# `seed_block_s2d` instead (see below).
POOL = {"plain": max_pool_plain, "fast": _max_pool_fast}


# SeedCNN's conv+pool blocks have few channels at large sides (3->4 at 800x800 ... 16->32 at
# 100x100), where XLA:CPU's conv is slowest: Eigen's GEMM tiles are nearly empty. Space-to-depth turns "3x3 'same' conv,
# then 2x2 max-pool" into a 3x3 conv on the half-resolution grid with 4x the channels (the four
# pixels of each pooling window side by side), which Eigen runs ~2x faster, and the pool into a
# max over channel groups. The gradients go back through the original conv, whose weight
# gradient XLA runs faster than the space-to-depth one's.
SEED_S2D_BLOCKS = 4  # leading conv+pool blocks in space-to-depth form (4 beat 2 and 0 at 800)


def _seed_space_to_depth(x: jax.Array) -> jax.Array:
    """x: [B, H, W, C] (H, W even) -> [B, H/2, W/2, 4C], channels ordered (row, col, c)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // 2, w // 2, 4 * c)


def _seed_depth_to_space(y: jax.Array, c: int) -> jax.Array:
    """Inverse of `_seed_space_to_depth`. y: [B, h, w, 4c] -> [B, 2h, 2w, c]."""
    b, h, w, _ = y.shape
    y = y.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, 2 * h, 2 * w, c)


def _seed_s2d_selection() -> np.ndarray:
    """One-hot float32[3, 2, 2, 3] S[u, p, a, k]: on the half grid, tap u of input sub-row p
    feeds output sub-row a through original kernel row k = 2(u-1) + p - a + 1 (when in 0..2)."""
    s = np.zeros((3, 2, 2, 3), np.float32)
    for u in range(3):
        for p in range(2):
            for a in range(2):
                k = 2 * (u - 1) + p - a + 1
                if 0 <= k < 3:
                    s[u, p, a, k] = 1.0
    return s


def _seed_s2d_kernel(w: jax.Array) -> jax.Array:
    """w: [3, 3, Cin, Cout] -> [3, 3, 4Cin, 4Cout], the same conv on space-to-depth data.
    Every entry is one entry of w or 0 (exact in any dtype)."""
    s = jnp.asarray(_seed_s2d_selection(), w.dtype)
    cin, cout = w.shape[2], w.shape[3]
    w2 = jnp.einsum("upak,vqbl,klio->uvpqiabo", s, s, w)
    return w2.reshape(3, 3, 4 * cin, 4 * cout)


def _seed_conv_same(x: jax.Array, w: jax.Array) -> jax.Array:
    """3x3 'same' conv without bias. x: [B, H, W, Cin], w: [3, 3, Cin, Cout] -> [B, H, W, Cout]."""
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


@jax.custom_vjp
def _seed_conv_s2d(x: jax.Array, w: jax.Array) -> jax.Array:
    """space_to_depth(conv_same(x, w)) computed on space-to-depth data.
    x: [B, H, W, Cin] (H, W even), w: [3, 3, Cin, Cout] -> [B, H/2, W/2, 4Cout]."""
    return _seed_conv_same(_seed_space_to_depth(x), _seed_s2d_kernel(w))


def _seed_conv_s2d_fwd(x: jax.Array, w: jax.Array):
    return _seed_conv_s2d(x, w), (x, w)


def _seed_conv_s2d_bwd(res, dy: jax.Array):
    # Unused input gradients (the first block's, w.r.t. the images) are removed by XLA's DCE.
    x, w = res
    _, vjp = jax.vjp(_seed_conv_same, x, w)
    return vjp(_seed_depth_to_space(dy, w.shape[-1]))


_seed_conv_s2d.defvjp(_seed_conv_s2d_fwd, _seed_conv_s2d_bwd)


def seed_block_s2d(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """max_pool_2x2(relu(conv_same(x, w) + b)) via space-to-depth; relu and +b commute with the
    max. x: [B, H, W, Cin] (H, W even) -> [B, H/2, W/2, Cout] in x's dtype."""
    y = _seed_conv_s2d(x, w)
    bsz, h, wd, _ = y.shape
    return jax.nn.relu(y.reshape(bsz, h, wd, 4, w.shape[-1]).max(axis=3) + b)


# --------------------------------------------------------------------------- blocks by impl
# What the models call: one block, two formulations. The choice lives here, not in the models.


def seed_block(x: jax.Array, w: jax.Array, b: jax.Array, impl: str, *, pool: bool,
               space_to_depth: bool) -> jax.Array:
    """SeedCNN's block: relu(conv_same(x, w) + b), then a 2x2 max-pool if `pool`.

    x: [B, H, W, Cin] -> [B, H/2, W/2, Cout] (pool) or [B, H, W, Cout], in x's dtype.
    impl "fast": the space-to-depth form where `space_to_depth` (leading blocks, pool only),
    and the reshape max-pool; "plain": textbook conv and reduce_window pool.
    """
    if impl == "fast" and pool and space_to_depth:
        return seed_block_s2d(x, w, b)
    x = jax.nn.relu(conv_plain(x, w, b, "SAME"))
    return POOL[impl](x) if pool else x


def white_box_trunk(x: jax.Array, w1: jax.Array, b1: jax.Array, w2: jax.Array, b2: jax.Array,
                    impl: str) -> jax.Array:
    """WhiteBoxNet's two conv(5x5 valid)-leaky-ReLU-max-pool blocks, flattened NHWC.

    x: [B, S, S, 3] -> [B, s*s*8]. impl "fast": `white_box_trunk_fast`; "plain": textbook ops.
    """
    if impl == "fast":
        return white_box_trunk_fast(x, w1, b1, w2, b2)
    x = max_pool_plain(jax.nn.leaky_relu(conv_plain(x, w1, b1, "VALID"), LEAKY_SLOPE))
    x = max_pool_plain(jax.nn.leaky_relu(conv_plain(x, w2, b2, "VALID"), LEAKY_SLOPE))
    return x.reshape(x.shape[0], -1)


def dropout(x: jax.Array, key: jax.Array | None, rate: float) -> jax.Array:
    """Inverted dropout drawn from `key` only; identity when key is None.

    key: one key (the whole batch's mask from it) or key[B], one per example (what the train
    step passes: keys from (seed, step, example id), so an example's mask does not depend on
    its batch, position or device).
    """
    if key is None:
        return x
    if key.ndim == 1:
        keep = jax.vmap(lambda k: jax.random.bernoulli(k, 1.0 - rate, x.shape[1:]))(key)
    else:
        keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype))


