"""Altering a batch by example id: the one way training, `scripts.make_dataset` and the
profiler turn clean images into altered ones.

An example's alteration is a pure function of (the run's alteration key, its id[, the step]):
the same on any number of devices or processes, in any batch, at any position.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from anomaly_jax import corruptions, edit_loop, edit_sampling, jpeg
from anomaly_jax.config import KIND_ORDER, MIX_KIND, SEED_KINDS, CorruptionConfig, mix_weights


def example_keys(base: jax.Array, ids: jax.Array, step: jax.Array | None) -> jax.Array:
    """One key per example: from (base, id) for fixed alterations, (base, step, id) fresh.

    ids: int32[B] -> key[B]. Keys depend on the example, not on its batch or device, so
    the same global batch gives the same alterations on any number of devices.
    """
    if step is not None:
        base = jax.random.fold_in(base, step)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(ids)


def alter_examples(corruption: CorruptionConfig, images: jax.Array, base_key: jax.Array,
                   ids: jax.Array, step: jax.Array | None = None, *, jpeg_roundtrip: bool = True,
                   batching: str = "auto") -> tuple[jax.Array, dict[str, jax.Array]]:
    """images uint8[B, H, W, 3] of examples `ids` int32[B] -> (altered uint8[B, H, W, 3], labels).

    Keys `example_keys(base_key, ids, step)`, then by corruption.kind and .region:
      an old kind (SEED_KINDS) on a square -> `corruptions.alter_batch` (the seeds' runs,
                                              bit for bit as before issue 12);
      an edit, or an old kind on "free"    -> `edit_sampling.alter_batch_edits`;
      "mix"                                -> `edit_sampling.alter_batch_mix` with `mix_weights`;
    the last two by `edit_loop.alter_batch_loop` (the same bits) when `batching` (static;
    `edit_loop.batching`: "auto" is "loop" on CPU for images above 64 px) says "loop" -
    donate `images` then.
    Then, if `corruption.jpeg_quality` is set and `jpeg_roundtrip`, the on-device JPEG round
    trip (`as_saved`; as seed 1's photos were saved after the alteration): it changes
    pixels, never the labels. A file export that writes JPEGs itself passes jpeg_roundtrip=False.
    labels: as `corruptions.alter_batch` (center float32[B, 2], half_size int32[B],
    half_size_norm float32[B], ratio float32[B], mask bool[B, H, W], altered bool[B]) plus
    kind int32[B], the index into KIND_ORDER (the same for every example unless "mix").
    Unused labels cost nothing inside a jit.
    """
    c = corruption
    keys = example_keys(base_key, ids, step)
    if c.kind in SEED_KINDS and c.region == "square":
        out, labels = corruptions.alter_batch(c.kind, images, keys, p_altered=c.p_altered,
                                              overflow=c.overflow, box_size=c.box_size)
    elif edit_loop.batching(batching, max(images.shape[1:3])) == "loop":
        weights = mix_weights(c) if c.kind == MIX_KIND else {c.kind: 1.0}
        out, labels = edit_loop.alter_batch_loop(images, keys, weights, c.region, c.p_altered,
                                                 overflow=c.overflow, box_size=c.box_size)
    elif c.kind == MIX_KIND:
        out, labels = edit_sampling.alter_batch_mix(images, keys, mix_weights(c), c.region,
                                                    c.p_altered, overflow=c.overflow,
                                                    box_size=c.box_size)
    else:
        out, labels = edit_sampling.alter_batch_edits(c.kind, images, keys, region=c.region,
                                                      p_altered=c.p_altered,
                                                      overflow=c.overflow, box_size=c.box_size)
    if "kind" not in labels:
        labels = {**labels, "kind": jnp.full(ids.shape, KIND_ORDER.index(c.kind), jnp.int32)}
    return (as_saved(c, out) if jpeg_roundtrip else out), labels


def as_saved(corruption: CorruptionConfig, images: jax.Array) -> jax.Array:
    """images uint8[B, H, W, 3] as the run saves them: the on-device JPEG round trip at
    corruption.jpeg_quality, or unchanged when it is 0 (off)."""
    if not corruption.jpeg_quality:
        return images
    return jpeg.jpeg_roundtrip_batch(images, corruption.jpeg_quality)
