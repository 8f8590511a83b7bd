"""The CPU schedule of an edited batch: loops over the images that alter each one on a
window around its region, in place. Same bits as `edit_sampling.alter_batch_edits` /
`alter_batch_mix` (their vmap schedule), at a cost that follows each image's own edit.

Why: under vmap every image pays for every pixel (static shapes) and, in a mix, for every
kind (lax.switch under vmap is a select). A CPU runs the images one after another anyway, so
here each pays only for its own:
* its kind and its window: an edit reads and writes only within `edit_windows.edit_extent`
  of its region's centre, so it runs on the smallest of a few static window sides
  (`window_sides`: n, n/2, n/4, ... so at most 4x the area it needs) that holds those
  pixels. The images are grouped by (kind, side) and each group is one `lax.fori_loop` over
  its members (a dynamic trip count) whose body is that kind's edit on that window;
* in place: the batch and its masks are the loops' carry and only the window is written
  back (dynamic_update_slice), so a donated batch is never copied - except for splice, whose
  donor (the previous image as it came in, `edit_sampling.donors`) is read from the input.
Not a lax.switch per image: XLA copies the whole batch into and out of every conditional
branch that receives it, one copy per image (measured: 45-57 images/s for every kind).
The window gives the whole image's bits: the region's mask depends only on offsets from the
centre (`regions.mask_in_window`); smudge's blur reads at most its radius beyond the region
and its edge replication only matters at the image border, where the window's edge is the
image's; stretch's positions and clamp follow the image (`edits.stretch(origin=...)`);
copy_move and splice read a window of their source of the same size; erase reads its whole
image (the push-pull fill) but computes and writes only the window of its result. The seeds'
kinds (sized to the image: scramble draws one sort key per image row) always take the whole
image. tests/test_edit_loop.py checks loop == vmap.

What a researcher may change: WINDOW_MIN and SIDES_PER_OCTAVE (compile time grows with the
number of sides, the waste with their spacing: see docs/PERFORMANCE.md).
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from anomaly_jax.config import EDIT_KINDS, KIND_ORDER
from anomaly_jax.edit_sampling import (_SAMPLERS, _branch, _keys, active_kinds, alter_batch_mix,
                                       mix_thresholds, region_key)
from anomaly_jax.edit_windows import EDIT_APPLY, EDIT_SOURCE, EDIT_STATIC, edit_extent
from anomaly_jax.edits import _check_region
from anomaly_jax.example_labels import check_keys
from anomaly_jax.regions import mask_in_window, whole_mask

Array = jax.Array

# No window side below this: a smaller window saves too few pixels to pay for its compiled
# loop (every side is one more loop per kind to compile). At 800 px no edit needs one anyway
# (the seed's r >= 30: at least 60 px).
WINDOW_MIN = 64
SIDES_PER_OCTAVE = 1  # window sides n, n/2, n/4, ...: at most 4x the area an edit needs

BATCHINGS = ("auto", "vmap", "loop")


def batching(choice: str = "auto", image_side: int | None = None) -> str:
    """"vmap" or "loop" for an edited batch (`alteration.alter_examples`) of images whose larger
    side is `image_side`; "auto": "loop" on CPU when a window smaller than the image exists
    (image_side > WINDOW_MIN), else "vmap".

    Measured on 2 CPU cores, 64 images of 800x800 (`scripts.profile_throughput --stage
    corrupt`, docs/PERFORMANCE.md), against the vmap schedule (and, for the mix, the lax.map
    one it replaces; runs move by up to 25% on this machine): smudge 77 -> 320-440 images/s,
    stretch 352 -> 1595-1613, copy_move 793 -> 3190-3350, erase 112 -> 184-235, the mix
    311 -> 450-506 (free regions 187 -> 385-438); splice about even. It compiles slower (one
    loop per kind and window side: the free mix at 800 px ~39 s against ~7 s), which is all
    it would bring on images of WINDOW_MIN px or less (the 8-kind mix at 64 px: 12.8 s
    against 5.3 s to compile, for a run of a few ms).
    On a GPU vmap stays the default until measured there: a loop launches each image's
    kernels one after another, which small images (training crops) cannot fill a GPU with.
    """
    if choice not in BATCHINGS:
        raise ValueError(f"edits: batching={choice!r}; expected one of {BATCHINGS}")
    if choice == "auto":
        windows = image_side is None or image_side > WINDOW_MIN
        return "loop" if jax.default_backend() == "cpu" and windows else "vmap"
    return choice


def window_sides(n: int) -> tuple[int, ...]:
    """The static window sides for an image whose larger side is n: n and
    ceil(n / 2^(k / SIDES_PER_OCTAVE)) down to WINDOW_MIN, ascending (800: 100, 200, 400, 800;
    128: 64, 128; 64 and below: n)."""
    sides = {n}
    k = 1
    while (side := math.ceil(n * 2 ** (-k / SIDES_PER_OCTAVE))) >= WINDOW_MIN:
        sides.add(side)
        k += 1
    return tuple(sorted(sides))


def window_origin(center: Array, size: tuple[int, int], shape: tuple[int, int]) -> Array:
    """int32[2]: the top-left pixel of the window of static `size` centred on `center` and
    moved inside the image `shape`. It holds the rows/columns [c - e, c + e) that lie in the
    image whenever the side is at least 2e (or the image's)."""
    half = jnp.array([size[0] // 2, size[1] // 2], jnp.int32)
    hi = jnp.array([shape[0] - size[0], shape[1] - size[1]], jnp.int32)
    return jnp.clip(jnp.asarray(center, jnp.int32) - half, 0, hi)


def _cut(batch: Array, i: Array, origin: Array, size: tuple[int, int]) -> Array:
    """batch[i, o0:o0+h, o1:o1+w] (uint8[h, w, 3] or bool[h, w])."""
    start = (i, origin[0], origin[1]) + (0,) * (batch.ndim - 3)
    return lax.dynamic_slice(batch, start, (1, *size) + batch.shape[3:])[0]


def _paste(batch: Array, i: Array, origin: Array, window: Array) -> Array:
    start = (i, origin[0], origin[1]) + (0,) * (batch.ndim - 3)
    return lax.dynamic_update_slice(batch, window[None], start)


def _edit_window(kind, region, size, p, shape, originals, carry, i, k_params):
    """Edit image i of the carry (images, masks) on a window of static `size`, in place.
    p: the image's parameters as drawn by its sampler, but the mask (cut here per window),
    with the group's static value (`EDIT_STATIC`) in place of the drawn one."""
    images, masks = carry
    origin = window_origin(p["center"], size, shape)
    window = _cut(images, i, origin, size)
    k_region = region_key(k_params)
    source, source_origin = window, origin
    if EDIT_SOURCE[kind] == "whole":  # read before anything is written back: untouched
        source = images[i]
        # It reads its whole-image mask (as the sampler draws it); the window's is cut from
        # that one rather than built a second time.
        p = {**p, "mask": whole_mask(k_region, region, p["center"], p["half_size"], *shape)}
        mask = lax.dynamic_slice(p["mask"], origin, size)
    else:
        mask = mask_in_window(k_region, region, p["center"], p["half_size"], origin, size)
        if EDIT_SOURCE[kind] is not None:
            hi = jnp.array([shape[0] - size[0], shape[1] - size[1]], jnp.int32)
            source_origin = jnp.clip(origin + jnp.asarray(p["offset"], jnp.int32), 0, hi)
            if EDIT_SOURCE[kind] == "image":  # not edited yet: each image is edited once
                source = _cut(images, i, source_origin, size)
            else:  # the donor as it came in (`edit_sampling.donors`)
                source = _cut(originals, (i - 1) % originals.shape[0], source_origin, size)
    out = EDIT_APPLY[kind](window, source, mask, p, origin, source_origin, shape)
    return _paste(images, i, origin, out), _paste(masks, i, origin, mask)


def _edit_whole(kind, region, overflow, box_size, carry, i, k_params, k_extra):
    """Alter image i of the carry with `edit_sampling`'s own branch, on the whole image."""
    images, masks = carry
    # No donor: splice, the only kind reading one, is local.
    out, _, _, _, mask = _branch(kind, region, overflow, box_size)(images[i], images[i],
                                                                   k_params, k_extra)
    zero = jnp.zeros(2, jnp.int32)
    return _paste(images, i, zero, out), _paste(masks, i, zero, mask)


def _window_side(kind: str, p: dict[str, Array], shape: tuple[int, int],
                 sides: tuple[int, ...]) -> Array:
    """int32[]: the index in `sides` of the smallest window holding the edit's pixels."""
    need = 2 * edit_extent(kind, p, *shape)
    return jnp.sum(need > jnp.asarray(sides[:-1], jnp.int32)).astype(jnp.int32)


def alter_batch_loop(
    images: Array, keys: Array, weights: dict[str, float], region: str = "square",
    p_altered: float = 1.0, *, overflow: str = "wrap", box_size: int = 16,
) -> tuple[Array, dict[str, Any]]:
    """`edit_sampling.alter_batch_mix(images, keys, weights, ...)` by the loop schedule: the
    same images and labels (kind included), bit for bit. A single kind is weights {kind: 1}:
    then it equals `alter_batch_edits(kind, ...)` plus the kind label.

    images: uint8[B, H, W, 3] (donate them: they are edited in place, except that with splice
    drawn the donors are read from a copy); keys: key[B] or uint32[B, 2]; weights, region,
    p_altered, overflow, box_size: static, as there.

    The images are grouped by (kind, window side) and each group is one loop whose body is
    that kind's edit on that window: a lax.switch would do the same per image, but XLA copies
    the whole batch in and out of a conditional branch (one copy per image).
    """
    keys = check_keys(images, keys, "edit_loop.alter_batch_loop")
    _check_region(region)
    mix_thresholds(weights)  # fail before tracing on bad weights
    n_images, height, width = images.shape[:3]
    shape = (height, width)
    sides = window_sides(max(shape))
    # Every label but the mask from the vmap schedule itself: it reads only the keys, and XLA
    # drops its pixel work (its images and masks are not used).
    _, labels = alter_batch_mix(images, keys, weights, region, p_altered, overflow=overflow,
                                box_size=box_size)
    k_params, _, _, k_extra = jax.vmap(_keys)(keys)

    # One group per (kind, window side[, static value]), whole-image kinds one group each; the
    # last: the clean images.
    active, _ = active_kinds(weights)
    groups, group, drawn_params = [], jnp.full(n_images, -1, jnp.int32), {}
    for kind in active:
        drawn = labels["altered"] & (labels["kind"] == KIND_ORDER.index(kind))
        if kind in EDIT_KINDS:
            # Every image's parameters for this kind, drawn once: they choose its window and
            # feed its edit. Not the mask (never read, so XLA drops it): windows cut their own.
            params = jax.vmap(lambda k, kind=kind: _SAMPLERS[kind](k, *shape, region))(k_params)
            params = drawn_params[kind] = {k: v for k, v in params.items() if k != "mask"}
            index = jax.vmap(lambda p, kind=kind: _window_side(kind, p, shape, sides))(params)
            name, values = EDIT_STATIC.get(kind, (None, (None,)))
            if name is not None:  # groups (side, value): index * len(values) + value's index
                index = index * len(values) + jnp.searchsorted(jnp.asarray(values), params[name])
            group = jnp.where(drawn, len(groups) + index, group)
            groups += [(kind, (min(s, height), min(s, width)), {} if name is None else {name: v})
                       for s in sides for v in values]
        else:
            group = jnp.where(drawn, len(groups), group)
            groups.append((kind, None, {}))
    group = jnp.where(group < 0, len(groups), group)
    order = jnp.argsort(group, stable=True).astype(jnp.int32)
    starts = jnp.concatenate([jnp.zeros(1, jnp.int32),
                              jnp.cumsum(jnp.bincount(group, length=len(groups) + 1))])

    carry = (images, jnp.zeros((n_images, height, width), bool))
    for g, (kind, size, static) in enumerate(groups):
        def body(j, carry, kind=kind, size=size, static=static):
            i = order[j]
            if size is None:
                return _edit_whole(kind, region, overflow, box_size, carry, i,
                                   k_params[i], k_extra[i])
            p = {**{k: v[i] for k, v in drawn_params[kind].items()}, **static}
            return _edit_window(kind, region, size, p, shape, images, carry, i, k_params[i])

        carry = lax.fori_loop(starts[g], starts[g + 1], body, carry)
    out, masks = carry
    return out, {**labels, "mask": masks}
