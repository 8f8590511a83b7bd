"""Flax NNX models of the two seed experiments: SeedCNN (+ three fusion variants) and WhiteBoxNet.

Every model maps `images: float32[B, H, W, 3]` in [0, 1] (NHWC) and optional
`features: float32[B, 2]` (raw `(r, discolor_ratio)`) to `float32[B, 2]` (a normalised centre
for SeedCNN, logits for WhiteBoxNet). Models are meant to be used functionally: split them with
`nnx.split(model)` (every state leaf is an `nnx.Param`; there is no BatchNorm and no RNG state)
and call `nnx.merge(graphdef, params)(images, features, dropout_key=key)` inside jit/pmap.
Dropout draws only from the explicit `dropout_key`.

Two interchangeable implementations share one parameter pytree:

* `impl="plain"`: textbook `lax.conv_general_dilated` + `lax.reduce_window` max-pool, the
  reference.
* `impl="fast"` (default): formulations that XLA:CPU runs well (reshape-max pooling for
  SeedCNN; a chunked, rematerialised CNHW im2col trunk for WhiteBoxNet, see
  `_white_box_trunk_fast`); tests prove it equals "plain" in outputs and gradients.

A researcher may change: the architectures (keep the parameter counts of the seeds if you want
to reproduce them), the initialisers (PyTorch's defaults, to match the seeds' dynamics), and the
fast formulations (re-run tests/test_models.py and the benchmarks afterwards).
"""
from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

MODEL_NAMES = ("seed_cnn", "fusion_early", "fusion_late", "fusion_linear", "white_box_net")
IMPLS = ("fast", "plain")
DTYPES = ("float32", "bfloat16")
_FUSION_OF = {
    "seed_cnn": None,
    "fusion_early": "early",
    "fusion_late": "late",
    "fusion_linear": "linear",
}
SEED_CHANNELS = (3, 4, 8, 16, 32, 64)
SEED_HIDDEN = 100
WHITE_BOX_CHANNELS = 8
WHITE_BOX_KERNEL = 5
LEAKY_SLOPE = 0.01
DROPOUT_RATE = 0.5

Fusion = Literal["early", "late", "linear"] | None
Impl = Literal["fast", "plain"]


# --------------------------------------------------------------------------- parameters
def _torch_uniform(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
    """PyTorch's default Conv/Linear init: kaiming_uniform(a=sqrt(5)) == U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


class Conv(nnx.Module):
    """Parameters of a square convolution: kernel float32[k, k, cin, cout] (HWIO), bias [cout]."""

    def __init__(self, cin: int, cout: int, k: int, *, rngs: nnx.Rngs):
        fan_in = cin * k * k
        self.kernel = nnx.Param(_torch_uniform(rngs.params(), (k, k, cin, cout), fan_in))
        self.bias = nnx.Param(_torch_uniform(rngs.params(), (cout,), fan_in))


class Linear(nnx.Module):
    """Parameters of a dense layer: kernel float32[din, dout], bias float32[dout]."""

    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs):
        self.kernel = nnx.Param(_torch_uniform(rngs.params(), (din, dout), din))
        self.bias = nnx.Param(_torch_uniform(rngs.params(), (dout,), din))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, din] in the compute dtype -> [B, dout] in the same dtype."""
        return x @ self.kernel[...].astype(x.dtype) + self.bias[...].astype(x.dtype)


# --------------------------------------------------------------------------- ops
def _conv_plain(x: jax.Array, w: jax.Array, b: jax.Array, padding: str) -> jax.Array:
    """Reference convolution. x: [B, H, W, Cin], w: [k, k, Cin, Cout] -> [B, H', W', Cout]."""
    y = lax.conv_general_dilated(
        x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + b


def _im2col_cnhw(x: jax.Array, k: int) -> jax.Array:
    """x: [C, B, H, W] -> patches [k*k*C, B, H-k+1, W-k+1] in (kh, kw, c) order ("valid")."""
    _, _, h, w = x.shape
    ho, wo = h - k + 1, w - k + 1
    return jnp.concatenate(
        [x[:, :, i : i + ho, j : j + wo] for i in range(k) for j in range(k)], axis=0
    )


def _conv_cnhw_gemm(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """'valid' conv as im2col + one GEMM in CNHW layout. x: [Cin, B, H, W], w: [k, k, Cin, Cout]
    -> [Cout, B, H', W']. Slices of CNHW are long contiguous rows, so the concatenation is cheap;
    the forward and both gradients are dots with a long contraction/row dimension."""
    k = w.shape[0]
    y = lax.dot_general(w.reshape(-1, w.shape[-1]), _im2col_cnhw(x, k), (((0,), (0,)), ((), ())))
    return y + b[:, None, None, None]


def _max_pool_cnhw(x: jax.Array) -> jax.Array:
    """2x2/2 max-pool (floor mode) of x: [C, B, H, W] as reshape + max."""
    c, bsz, h, w = x.shape
    x = x[:, :, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(c, bsz, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def _max_pool_plain(x: jax.Array) -> jax.Array:
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


WHITE_BOX_CHUNK = 5  # images per trunk chunk in the fast WhiteBoxNet (fastest measured of 2..20)


def _white_box_trunk(
    x: jax.Array, w1: jax.Array, b1: jax.Array, w2: jax.Array, b2: jax.Array
) -> jax.Array:
    """Fast WhiteBoxNet trunk on one chunk. x: [b, S, S, 3] -> [b, s*s*8], flattened in NHWC
    order (so the dense layer's parameters mean the same as in the plain impl)."""
    x = jnp.transpose(x, (3, 0, 1, 2))
    x = _max_pool_cnhw(jax.nn.leaky_relu(_conv_cnhw_gemm(x, w1, b1), LEAKY_SLOPE))
    x = _max_pool_cnhw(jax.nn.leaky_relu(_conv_cnhw_gemm(x, w2, b2), LEAKY_SLOPE))
    return jnp.transpose(x, (1, 2, 3, 0)).reshape(x.shape[1], -1)


def _white_box_trunk_fast(
    x: jax.Array, w1: jax.Array, b1: jax.Array, w2: jax.Array, b2: jax.Array
) -> jax.Array:
    """Runs `_white_box_trunk` over batch chunks with lax.map under jax.checkpoint.

    Why: on XLA:CPU every large temporary is page-faulted afresh on each step and im2col of a
    3-channel 5x5 conv is 25x the input; chunking keeps patches cache-sized and reused, and
    remat keeps only the chunk's input for the backward pass. x: [B, S, S, 3] -> [B, F].
    """
    bsz = x.shape[0]
    chunk = next(c for c in range(min(WHITE_BOX_CHUNK, bsz), 0, -1) if bsz % c == 0)
    body = jax.checkpoint(lambda xc: _white_box_trunk(xc, w1, b1, w2, b2))
    out = lax.map(body, x.reshape(bsz // chunk, chunk, *x.shape[1:]))
    return out.reshape(bsz, -1)


# XLA:CPU's native convolution is the fastest measured choice for SeedCNN's 3x3 'same' convs at
# 800x800 (im2col would materialise ~700 MB at batch 10); only the pooling differs there.
_CONV = {"plain": _conv_plain, "fast": _conv_plain}
_POOL = {"plain": _max_pool_plain, "fast": _max_pool_fast}


def _apply_conv(conv: Conv, x: jax.Array, padding: str, impl: str) -> jax.Array:
    """Runs `conv` on x in x's dtype (float32 parameters are cast at use)."""
    return _CONV[impl](x, conv.kernel[...].astype(x.dtype), conv.bias[...].astype(x.dtype), padding)


def _dropout(x: jax.Array, key: jax.Array | None, rate: float) -> jax.Array:
    """Inverted dropout drawn from `key` only; identity when key is None."""
    if key is None:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype))


def _check_args(impl: str, dtype: str) -> None:
    if impl not in IMPLS:
        raise ValueError(f"model impl {impl!r} is not one of {IMPLS}")
    if dtype not in DTYPES:
        raise ValueError(f"model dtype {dtype!r} is not one of {DTYPES}")


def _check_images(images: jax.Array, image_size: int, name: str) -> None:
    if images.ndim != 4 or images.shape[1:] != (image_size, image_size, 3):
        raise ValueError(
            f"{name}: images must be [B, {image_size}, {image_size}, 3], got {images.shape}"
        )


# --------------------------------------------------------------------------- models
class SeedCNN(nnx.Module):
    """Seed 1's CNN: five 3x3 'same' convs 3->4->8->16->32->64 (ReLU, 2x2 max-pool after the
    first four), flatten, FC 100, ReLU, FC 2; optional fusion of the raw (r, ratio) features:

    * "early": concatenated to the flattened conv features, before FC 100;
    * "late": concatenated after FC 100's ReLU (FC 102 -> 2);
    * "linear": Linear(2 -> 2), then concatenated before FC 100.
    """

    def __init__(
        self,
        image_size: int,
        *,
        fusion: Fusion = None,
        dtype: str = "float32",
        impl: Impl = "fast",
        rngs: nnx.Rngs,
    ):
        _check_args(impl, dtype)
        if fusion not in (None, "early", "late", "linear"):
            raise ValueError(f"SeedCNN fusion {fusion!r} is not one of None, early, late, linear")
        if image_size <= 0 or image_size % 16:
            raise ValueError(f"SeedCNN image_size must be a positive multiple of 16, got {image_size}")
        self.image_size = image_size
        self.fusion = fusion
        self.dtype = dtype
        self.impl = impl
        ch = SEED_CHANNELS
        self.convs = nnx.List(
            [Conv(ch[i], ch[i + 1], 3, rngs=rngs) for i in range(len(ch) - 1)]
        )
        flat = ch[-1] * (image_size // 16) ** 2
        n_early = 2 if fusion in ("early", "linear") else 0
        n_late = 2 if fusion == "late" else 0
        self.feature_linear = Linear(2, 2, rngs=rngs) if fusion == "linear" else None
        self.fc1 = Linear(flat + n_early, SEED_HIDDEN, rngs=rngs)
        self.fc2 = Linear(SEED_HIDDEN + n_late, 2, rngs=rngs)

    def __call__(
        self,
        images: jax.Array,
        features: jax.Array | None = None,
        *,
        dropout_key: jax.Array | None = None,
    ) -> jax.Array:
        """images: float32[B, S, S, 3] in [0, 1]; features: float32[B, 2] (fusion models only);
        dropout_key: unused (no dropout). Returns float32[B, 2]."""
        del dropout_key
        _check_images(images, self.image_size, "SeedCNN")
        if self.fusion is not None and (features is None or features.shape != (images.shape[0], 2)):
            got = None if features is None else features.shape
            raise ValueError(f"SeedCNN fusion={self.fusion!r} needs features [B, 2], got {got}")
        dt = jnp.dtype(self.dtype)
        x = images.astype(dt)
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            x = jax.nn.relu(_apply_conv(conv, x, "SAME", self.impl))
            if i < last:
                x = _POOL[self.impl](x)
        x = x.reshape(x.shape[0], -1)
        if self.fusion is not None:
            f = features.astype(dt)
            if self.fusion == "linear":
                f = self.feature_linear(f)
            if self.fusion in ("early", "linear"):
                x = jnp.concatenate([x, f], axis=-1)
        x = jax.nn.relu(self.fc1(x))
        if self.fusion == "late":
            x = jnp.concatenate([x, features.astype(dt)], axis=-1)
        return self.fc2(x).astype(jnp.float32)


class WhiteBoxNet(nnx.Module):
    """Seed 2's classifier: conv 8@5x5 valid, leaky ReLU(0.01), max-pool 2; conv 8@5x5 valid,
    leaky ReLU, max-pool 2; dropout 0.5; dense 2 (logits; softmax lives in the loss)."""

    def __init__(
        self, image_size: int = 64, *, dtype: str = "float32", impl: Impl = "fast", rngs: nnx.Rngs
    ):
        _check_args(impl, dtype)
        k, c = WHITE_BOX_KERNEL, WHITE_BOX_CHANNELS
        side = ((image_size - k + 1) // 2 - k + 1) // 2
        if side <= 0:
            raise ValueError(f"WhiteBoxNet image_size {image_size} is too small (need >= 16)")
        self.image_size = image_size
        self.dtype = dtype
        self.impl = impl
        self.conv1 = Conv(3, c, k, rngs=rngs)
        self.conv2 = Conv(c, c, k, rngs=rngs)
        self.fc = Linear(c * side * side, 2, rngs=rngs)

    def __call__(
        self,
        images: jax.Array,
        features: jax.Array | None = None,
        *,
        dropout_key: jax.Array | None = None,
    ) -> jax.Array:
        """images: float32[B, S, S, 3] in [0, 1]; features: ignored; dropout 0.5 is active iff
        dropout_key is given. Returns logits float32[B, 2]."""
        del features
        _check_images(images, self.image_size, "WhiteBoxNet")
        x = images.astype(jnp.dtype(self.dtype))
        if self.impl == "fast":
            c1, c2 = self.conv1, self.conv2
            w1, b1, w2, b2 = (v[...].astype(x.dtype) for v in (c1.kernel, c1.bias, c2.kernel, c2.bias))
            x = _white_box_trunk_fast(x, w1, b1, w2, b2)
        else:
            x = _max_pool_plain(jax.nn.leaky_relu(_conv_plain(
                x, self.conv1.kernel[...].astype(x.dtype), self.conv1.bias[...].astype(x.dtype), "VALID"), LEAKY_SLOPE))
            x = _max_pool_plain(jax.nn.leaky_relu(_conv_plain(
                x, self.conv2.kernel[...].astype(x.dtype), self.conv2.bias[...].astype(x.dtype), "VALID"), LEAKY_SLOPE))
            x = x.reshape(x.shape[0], -1)
        x = _dropout(x, dropout_key, DROPOUT_RATE)
        return self.fc(x).astype(jnp.float32)


# --------------------------------------------------------------------------- factory
def make_model(
    name: str, image_size: int, *, dtype: str = "float32", impl: Impl = "fast", rngs: nnx.Rngs
) -> nnx.Module:
    """Builds the model `name` (one of MODEL_NAMES) for square images of side `image_size`."""
    if name == "white_box_net":
        return WhiteBoxNet(image_size, dtype=dtype, impl=impl, rngs=rngs)
    if name in _FUSION_OF:
        return SeedCNN(image_size, fusion=_FUSION_OF[name], dtype=dtype, impl=impl, rngs=rngs)
    raise ValueError(f"model.name {name!r} is not one of {', '.join(MODEL_NAMES)}")


def uses_features(name: str) -> bool:
    """True when the model consumes the (r, discolor_ratio) features (the fusion_* models)."""
    if name not in MODEL_NAMES:
        raise ValueError(f"model.name {name!r} is not one of {', '.join(MODEL_NAMES)}")
    return _FUSION_OF.get(name) is not None


def num_params(model: nnx.Module) -> int:
    """Number of scalar parameters (works on abstract models from nnx.eval_shape too)."""
    state = nnx.state(model, nnx.Param)
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(state))
