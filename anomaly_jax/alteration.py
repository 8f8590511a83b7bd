"""Altering a batch by example id: the one way training, `scripts.make_dataset` and the
profiler turn clean images into altered ones.

An example's alteration is a pure function of (the run's alteration key, its id[, the step]):
the same on any number of devices or processes, in any batch, at any position.
"""
from __future__ import annotations

import jax

from anomaly_jax import corruptions, jpeg
from anomaly_jax.config import CorruptionConfig


def example_keys(base: jax.Array, ids: jax.Array, step: jax.Array | None) -> jax.Array:
    """One key per example: from (base, id) for fixed alterations, (base, step, id) fresh.

    ids: int32[B] -> key[B]. Keys depend on the example, not on its batch or device, so
    the same global batch gives the same alterations on any number of devices.
    """
    if step is not None:
        base = jax.random.fold_in(base, step)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(ids)


def alter_examples(corruption: CorruptionConfig, images: jax.Array, base_key: jax.Array,
                   ids: jax.Array, step: jax.Array | None = None, *, jpeg_roundtrip: bool = True
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """images uint8[B, H, W, 3] of examples `ids` int32[B] -> (altered uint8[B, H, W, 3], labels).

    The corruption's kind and sampler (`corruptions.alter_batch`) with `example_keys(base_key,
    ids, step)`, then, if `corruption.jpeg_quality` is set and `jpeg_roundtrip`, the on-device
    JPEG round trip (as seed 1's photos were saved after the alteration). A file export that
    writes JPEGs itself passes jpeg_roundtrip=False. labels: as `corruptions.alter_batch`.
    """
    c = corruption
    out, labels = corruptions.alter_batch(c.kind, images, example_keys(base_key, ids, step),
                                          p_altered=c.p_altered, overflow=c.overflow,
                                          box_size=c.box_size)
    if c.jpeg_quality and jpeg_roundtrip:
        out = jpeg.jpeg_roundtrip_batch(out, c.jpeg_quality)
    return out, labels
