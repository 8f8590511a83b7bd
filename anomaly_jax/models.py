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
* `impl="fast"`: formulations that XLA:CPU runs well (for SeedCNN,
  space-to-depth conv+pool in the first blocks and reshape-max pooling, see
  `model_ops.seed_block_s2d`;
  for WhiteBoxNet, custom gradients for the conv weights (batch-chunked) and a fused
  leaky-ReLU + max-pool whose gradient is a mask, see `model_ops.white_box_trunk_fast`);
  tests prove it equals "plain" in outputs and gradients. `model.impl=auto` (the default)
  picks fast on XLA:CPU and plain on any other backend (`resolve_impl`).

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

from anomaly_jax.config import DENSE_MODELS, ModelConfig, choices
from anomaly_jax.localiser import OUTPUTS, LocaliserNet
from anomaly_jax.model_ops import SEED_S2D_BLOCKS, dropout, seed_block, white_box_trunk

# The seeds' models (image -> two numbers); the dense localiser is in anomaly_jax.localiser.
MODEL_NAMES = choices(ModelConfig, "name")
SEED_MODEL_NAMES = tuple(n for n in MODEL_NAMES if n not in DENSE_MODELS)
IMPLS = tuple(i for i in choices(ModelConfig, "impl") if i != "auto")  # what "auto" resolves to
DTYPES = choices(ModelConfig, "dtype")
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


def _weights(conv: Conv, dtype: jax.typing.DTypeLike) -> tuple[jax.Array, jax.Array]:
    """A conv's (kernel, bias) in the compute dtype (float32 parameters are cast at use)."""
    return conv.kernel[...].astype(dtype), conv.bias[...].astype(dtype)


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
            x = seed_block(x, *_weights(conv, dt), self.impl, pool=i < last,
                           space_to_depth=i < SEED_S2D_BLOCKS)
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
        x = white_box_trunk(x, *_weights(self.conv1, x.dtype), *_weights(self.conv2, x.dtype),
                            self.impl)
        x = dropout(x, dropout_key, DROPOUT_RATE)
        return self.fc(x).astype(jnp.float32)


# --------------------------------------------------------------------------- factory
def resolve_impl(impl: str, backend: str) -> str:
    """model.impl -> the formulation used: "auto" is "fast" on XLA:CPU (its formulations are
    CPU tricks: space-to-depth convs doing 4x the FLOPs, chunked weight gradients) and "plain"
    on any other backend ("gpu", "cuda", "rocm", "tpu", ...); "fast" / "plain" as asked."""
    if impl == "auto":
        return "fast" if backend == "cpu" else "plain"
    if impl not in IMPLS:
        raise ValueError(f"model impl {impl!r} is not one of auto, {', '.join(IMPLS)}")
    return impl


def make_model(
    name: str, image_size: int, *, dtype: str = "float32", impl: str = "auto", width: int = 16,
    target: str = "edges", rngs: nnx.Rngs
) -> nnx.Module:
    """Builds the model `name` (one of MODEL_NAMES) for square images of side `image_size`.

    "localiser" is the dense, fully convolutional model of `anomaly_jax.localiser` (any image
    size; `width` channels; `target` "edges" or "mask" sets its output maps,
    `localiser.OUTPUTS`); the others are the seeds' models. impl: "auto" | "fast" |
    "plain", resolved here for the default backend (`resolve_impl`).
    """
    impl = resolve_impl(impl, jax.default_backend())
    if name == "localiser":
        return LocaliserNet(width=width, outputs=OUTPUTS[target], dtype=dtype, rngs=rngs)
    if name == "white_box_net":
        return WhiteBoxNet(image_size, dtype=dtype, impl=impl, rngs=rngs)
    if name in _FUSION_OF:
        return SeedCNN(image_size, fusion=_FUSION_OF[name], dtype=dtype, impl=impl, rngs=rngs)
    raise ValueError(f"model.name {name!r} is not one of {', '.join(MODEL_NAMES)}")


assert tuple(OUTPUTS) == choices(ModelConfig, "target")  # a map count for every target


def uses_features(name: str) -> bool:
    """True when the model consumes the (r, discolor_ratio) features (the fusion_* models)."""
    if name not in MODEL_NAMES:
        raise ValueError(f"model.name {name!r} is not one of {', '.join(MODEL_NAMES)}")
    return _FUSION_OF.get(name) is not None


def is_dense(name: str) -> bool:
    """True for the dense localiser (uint8 images in, per-pixel edge logits out)."""
    return name in DENSE_MODELS


def num_params(model: nnx.Module) -> int:
    """Number of scalar parameters (works on abstract models from nnx.eval_shape too)."""
    state = nnx.state(model, nnx.Param)
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(state))
