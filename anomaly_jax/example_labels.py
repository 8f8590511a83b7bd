"""What every alteration kind shares (anomaly_jax.corruptions, anomaly_jax.edits): keys in,
the coin that leaves an example clean, and the labels out - one definition of each, so the
seeds' kinds and the edits label examples the same way.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def typed_key(key: Array) -> Array:
    """A typed PRNG key (array) from a typed key or raw uint32[..., 2] key data."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    key = jnp.asarray(key)
    if key.dtype == jnp.uint32 and key.shape[-1:] == (2,):
        return jax.random.wrap_key_data(key)
    raise ValueError(
        f"expected a typed PRNG key or uint32[..., 2] key data, "
        f"got {key.dtype}{list(key.shape)}"
    )


def check_image(image: Array, ndim: int, name: str) -> None:
    """A ValueError naming `name` unless image is uint8 with `ndim` dims ([B,]H, W, C)."""
    if image.ndim != ndim or image.dtype != jnp.uint8:
        dims = "[B, H, W, C]" if ndim == 4 else "[H, W, C]"
        raise ValueError(
            f"{name}: expected images uint8{dims}, got {image.dtype}{list(image.shape)}"
        )


def altered_coin(k_coin: Array, p_altered: float) -> Array:
    """bool[]: whether an example is altered, True with probability p_altered (static)."""
    if p_altered >= 1.0:
        return jnp.bool_(True)
    return jax.random.uniform(k_coin, ()) < p_altered


def example_labels(shape: tuple[int, ...], center: Array, half_size: Array, ratio: Array,
                   mask: Array, altered: Array) -> dict[str, Array]:
    """One example's labels (see `alter_batch`) from its image shape (H, W, C), the region's
    centre int32[2] and half-size in pixels, the ratio, mask bool[H, W] and coin bool[]."""
    height, width = shape[:2]
    return {
        "center": jnp.asarray(center).astype(jnp.float32)
        / jnp.array([height, width], jnp.float32),
        "half_size": jnp.asarray(half_size, jnp.int32),
        "half_size_norm": jnp.asarray(half_size, jnp.float32) / height,
        "ratio": jnp.asarray(ratio, jnp.float32),
        "mask": mask,
        "altered": altered,
    }


def check_keys(images: Array, keys: Array, name: str) -> Array:
    """images uint8[B, H, W, C] and one key per image (typed or raw): the typed keys[B]."""
    check_image(images, 4, name)
    keys = typed_key(keys)
    if keys.shape != images.shape[:1]:
        raise ValueError(f"{name}: expected one key per image ({images.shape[0]}), "
                         f"got keys of shape {list(keys.shape)}")
    return keys
