"""Per-example parameters for the edits of `anomaly_jax.edits`, and altering a batch with them:
one kind (`alter_batch_edits`) or a kind drawn per example (`alter_batch_mix`).

`alter_batch_edits(kind, images, keys)` mirrors `corruptions.alter_batch` (same key split,
same labels, `anomaly_jax.example_labels`), and also accepts the seeds' kinds, so
`region="free"` works for them too; `alter_batch_mix(images, keys, weights)` draws a kind per
example over KIND_ORDER. Each sampler `sample_<kind>(key, height, width, region)` draws the
region (`anomaly_jax.regions`) and the kind's parameters from the example's key only.
Both batch functions here are the vmap schedule; `anomaly_jax.edit_loop` gives the same bits
by loops over the images on windows (the CPU default of `alteration.alter_examples`); both
apply each edit through `anomaly_jax.edit_windows`.

What a researcher may change: the sampling ranges (`STRETCH_FACTORS`, smudge's in
`anomaly_jax.edits`, the offset rules in `sample_copy_move` / `sample_splice`) and, with a new
kind, its sampler and its entry in `_SAMPLERS` (and its entries in `edit_windows`).
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from anomaly_jax import corruptions
from anomaly_jax.config import EDIT_KINDS, KIND_ORDER
from anomaly_jax.config import SEED_KINDS as OLD_KINDS
from anomaly_jax.edit_windows import EDIT_APPLY, EDIT_SOURCE
from anomaly_jax.edits import _check_region, _select, smudge_sigma_range
from anomaly_jax.example_labels import (altered_coin, check_image, check_keys, example_labels,
                                        typed_key)
from anomaly_jax.regions import free_mask, sample_region

Array = jax.Array

STRETCH_FACTORS = (1.1, 1.6)
# Salt folded into the example key for the draws `corruptions.alter_one` does not make (the
# mix's kind, the old kinds' free mask). Large, so it cannot meet a small split counter.
_EXTRA_SALT = 0x5EED_12


# ----------------------------------------------------------------------------- samplers


def _offset_bounds(n: int, c: Array, r: Array) -> tuple[Array, Array]:
    """Offsets d keeping the source span [c-r+d, c+r+d) inside [0, n): d in [lo, hi]."""
    return r - c, n - c - r


def _uniform_int(key: Array, lo: Array, hi: Array) -> Array:
    """int32[] uniform in [lo, hi] (traced bounds); lo when the range is empty."""
    return jnp.where(hi >= lo, jax.random.randint(key, (), lo, jnp.maximum(hi, lo) + 1), lo)


def _free_offset(key: Array, height: int, width: int, center: Array, half_size: Array) -> Array:
    """int32[2]: uniform over the offsets keeping the source square inside the image
    (0 on an axis where the square is wider than the image)."""
    k0, k1 = jax.random.split(key)
    lo0, hi0 = _offset_bounds(height, center[0], half_size)
    lo1, hi1 = _offset_bounds(width, center[1], half_size)
    d0 = jnp.where(hi0 >= lo0, _uniform_int(k0, lo0, hi0), 0)
    d1 = jnp.where(hi1 >= lo1, _uniform_int(k1, lo1, hi1), 0)
    return jnp.stack([d0, d1]).astype(jnp.int32)


def _separated_offset(key: Array, height: int, width: int, center: Array, half_size: Array
                      ) -> Array:
    """int32[2]: a source square inside the image that does not overlap the target square.

    Disjoint squares of side 2r need |d| >= 2r on at least one axis: pick such an axis (at
    random when both have room), draw d there uniformly from [lo, -2r] u [2r, hi], and the
    other axis from its whole range. When neither axis has room (a square over most of the
    image) fall back to `_free_offset`: overlapping, possibly 0 (then nothing changes).
    """
    k_axis, k_sep, k_other, k_fallback = jax.random.split(key, 4)
    r = half_size
    seps, fulls = [], []
    for axis, n in ((0, height), (1, width)):
        lo, hi = _offset_bounds(n, center[axis], r)
        n_neg = jnp.maximum(0, jnp.minimum(hi, -2 * r) - lo + 1)  # [lo, min(hi, -2r)]
        start_pos = jnp.maximum(lo, 2 * r)
        n_pos = jnp.maximum(0, hi - start_pos + 1)  # [max(lo, 2r), hi]
        u = _uniform_int(jax.random.fold_in(k_sep, axis), 0, n_neg + n_pos - 1)
        seps.append((n_neg + n_pos > 0, jnp.where(u < n_neg, lo + u, start_pos + u - n_neg)))
        fulls.append(jnp.where(hi >= lo, _uniform_int(jax.random.fold_in(k_other, axis), lo, hi),
                               0))
    (ok0, sep0), (ok1, sep1) = seps
    coin = jax.random.bernoulli(k_axis)
    use0 = ok0 & (coin | ~ok1)  # separate along rows: else along columns if ok1
    offset = jnp.where(use0, jnp.stack([sep0, fulls[1]]), jnp.stack([fulls[0], sep1]))
    fallback = _free_offset(k_fallback, height, width, center, half_size)
    return jnp.where(ok0 | ok1, offset, fallback).astype(jnp.int32)


def region_key(key: Array) -> Array:
    """The key an edit's sampler gives `regions.sample_region` (from the edit's params key):
    every edit splits its key the same way, so one key places the same region for any kind."""
    return jax.random.split(typed_key(key))[0]


def _sample_with_region(key: Array, height: int, width: int, region: str
                        ) -> tuple[dict[str, Array], Array]:
    k_params = jax.random.split(typed_key(key))[1]
    return sample_region(region_key(key), height, width, region), k_params


def sample_smudge(key: Array, height: int, width: int, region: str = "square"
                  ) -> dict[str, Array]:
    """{center int32[2], half_size int32[], mask bool[H, W], sigma float32[]}: the region of
    `regions.sample_region` and sigma uniform in `smudge_sigma_range(H, W)`."""
    p, k = _sample_with_region(key, height, width, region)
    lo, hi = smudge_sigma_range(height, width)
    p["sigma"] = jax.random.uniform(k, (), jnp.float32, lo, hi)
    return p


def sample_erase(key: Array, height: int, width: int, region: str = "square"
                 ) -> dict[str, Array]:
    """{center int32[2], half_size int32[], mask bool[H, W]}: erase has no other parameter."""
    p, _ = _sample_with_region(key, height, width, region)
    return p


def sample_stretch(key: Array, height: int, width: int, region: str = "square"
                   ) -> dict[str, Array]:
    """{center, half_size, mask, factor float32[] uniform in STRETCH_FACTORS,
    axis int32[] 0 or 1 with probability 1/2 each}."""
    p, k = _sample_with_region(key, height, width, region)
    k_factor, k_axis = jax.random.split(k)
    p["factor"] = jax.random.uniform(k_factor, (), jnp.float32, *STRETCH_FACTORS)
    p["axis"] = jax.random.randint(k_axis, (), 0, 2, jnp.int32)
    return p


def sample_copy_move(key: Array, height: int, width: int, region: str = "square"
                     ) -> dict[str, Array]:
    """{center, half_size, mask, offset int32[2]}: the source square (target moved by offset)
    inside the image and, where the image has room, not overlapping the target square."""
    p, k = _sample_with_region(key, height, width, region)
    p["offset"] = _separated_offset(k, height, width, p["center"], p["half_size"])
    return p


def sample_splice(key: Array, height: int, width: int, region: str = "square"
                  ) -> dict[str, Array]:
    """{center, half_size, mask, offset int32[2]}: the source square in the donor anywhere
    inside the image (offset 0 allowed: the donor is another image)."""
    p, k = _sample_with_region(key, height, width, region)
    p["offset"] = _free_offset(k, height, width, p["center"], p["half_size"])
    return p


_SAMPLERS = {
    "smudge": sample_smudge,
    "erase": sample_erase,
    "stretch": sample_stretch,
    "copy_move": sample_copy_move,
    "splice": sample_splice,
}
assert tuple(_SAMPLERS) == EDIT_KINDS


# ----------------------------------------------------------------------------- batches

# A branch: (image, donor, k_params, k_extra) -> (out uint8[H, W, 3], center int32[2],
# half_size int32[], ratio float32[], mask bool[H, W]); identical signatures for lax.switch.


def _edit_branch(kind, region, image, donor, k_params, k_extra):
    p = _SAMPLERS[kind](k_params, *image.shape[:2], region)
    source = donor if EDIT_SOURCE[kind] == "donor" else image
    zero = jnp.zeros(2, jnp.int32)
    out = EDIT_APPLY[kind](image, source, p["mask"], p, zero, zero, image.shape[:2])
    return out, p["center"], p["half_size"], jnp.float32(1.0), p["mask"]


def _old_branch(kind, region, overflow, box_size, image, donor, k_params, k_extra):
    # corruptions' own helper, so with region="square" an old kind is exactly alter_batch's.
    out, center, half_size, ratio, rows_in, cols_in = corruptions._KINDS[kind](
        image, k_params, True, overflow, box_size
    )
    center = jnp.asarray(center, jnp.int32)
    half_size = jnp.asarray(half_size, jnp.int32)
    if region == "square":
        mask = rows_in[:, None] & cols_in[None, :]
    else:
        # white_box's (top_left + size//2, size//2) square lies inside its drawn box, so the
        # blob only ever keeps pixels the box painted.
        mask = free_mask(k_extra, *image.shape[:2], center, half_size)
        out = _select(mask, out, image)
    return out, center, half_size, jnp.asarray(ratio, jnp.float32), mask


def _branch(kind, region, overflow, box_size):
    if kind in OLD_KINDS:
        return functools.partial(_old_branch, kind, region, overflow, box_size)
    return functools.partial(_edit_branch, kind, region)


def _keys(key: Array) -> tuple[Array, Array, Array, Array]:
    """(params, coin, kind, extra) keys: params and coin exactly as `corruptions.alter_one`."""
    key = typed_key(key)
    k_params, k_coin = jax.random.split(key)
    k_kind, k_extra = jax.random.split(jax.random.fold_in(key, _EXTRA_SALT))
    return k_params, k_coin, k_kind, k_extra


def _finish(image, altered, out, center, half_size, ratio, mask):
    labels = example_labels(image.shape, center, half_size, ratio, mask & altered, altered)
    return jnp.where(altered, out, image), labels


def donors(images: Array) -> Array:
    """uint8[B, H, W, 3]: splice's donor of example i is images[(i - 1) % B] (jnp.roll by 1).

    Inherent to splice: its result depends on the batch neighbour's content (its parameters
    still come only from the example's own key). With B = 1 an image is its own donor.
    """
    return jnp.roll(images, 1, axis=0)


def alter_one_edit(
    kind: str, image: Array, donor: Array, key: Array, *, region: str = "square",
    p_altered: float = 1.0, overflow: str = "wrap", box_size: int = 16,
) -> tuple[Array, dict[str, Array]]:
    """`alter_batch_edits` for one image uint8[H, W, 3], its donor uint8[H, W, 3] (read by
    splice only) and one key; labels without the batch axis."""
    if kind not in KIND_ORDER:
        raise ValueError(f"edits: unknown kind {kind!r}; expected one of {KIND_ORDER}")
    _check_region(region)
    check_image(image, 3, "edit_sampling.alter_one_edit")
    k_params, k_coin, _, k_extra = _keys(key)
    altered = altered_coin(k_coin, p_altered)
    result = _branch(kind, region, overflow, box_size)(image, donor, k_params, k_extra)
    return _finish(image, altered, *result)


def alter_batch_edits(
    kind: str, images: Array, keys: Array, *, region: str = "square", p_altered: float = 1.0,
    overflow: str = "wrap", box_size: int = 16,
) -> tuple[Array, dict[str, Any]]:
    """Alters each image with parameters drawn from its own key, like `corruptions.alter_batch`.

    kind: one of KIND_ORDER (static) - the five edits, or an old kind (then with region
    "square" the result equals `corruptions.alter_batch`'s, and "free" keeps its change only
    on a blob inside its square); images: uint8[B, H, W, 3]; keys: key[B] or uint32[B, 2];
    region: "square" | "free"; p_altered, overflow, box_size (old kinds): static.
    The key is split as in `corruptions.alter_one`: (params, coin). splice reads the batch
    neighbour (`donors`).
    Returns (images uint8[B, H, W, 3], labels) with labels as `corruptions.alter_batch`:
      center float32[B, 2] (row/H, col/W), half_size int32[B], half_size_norm float32[B],
      ratio float32[B] (1.0 for the edits), mask bool[B, H, W] (the region; all False for
      clean images), altered bool[B]. Clean images come back bit-identical.
    """
    keys = check_keys(images, keys, "edit_sampling.alter_batch_edits")

    def one(image, donor, key):
        return alter_one_edit(kind, image, donor, key, region=region, p_altered=p_altered,
                              overflow=overflow, box_size=box_size)

    return jax.vmap(one)(images, donors(images), keys)


def mix_thresholds(weights: dict[str, float]) -> np.ndarray:
    """float32[len(KIND_ORDER) - 1]: cumulative probabilities; the kind is the number of them
    at or below a uniform u in [0, 1). A zero weight repeats a threshold, so its kind can never
    be drawn (nor a trailing one: the last threshold before it is exactly 1)."""
    unknown = set(weights) - set(KIND_ORDER)
    if unknown:
        raise ValueError(f"edits: unknown kinds {sorted(unknown)}; expected some of {KIND_ORDER}")
    w = np.array([float(weights.get(k, 0.0)) for k in KIND_ORDER], np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"edits: weights must be finite, >= 0 and not all 0; got {weights}")
    cum = np.cumsum(w)
    # Divided by cum[-1], not w.sum() (summed in another order): trailing zero weights then
    # get thresholds of exactly 1.0.
    return (cum[:-1] / cum[-1]).astype(np.float32)


def draw_kind(k_kind: Array, weights: dict[str, float]) -> Array:
    """int32[]: the example's kind, an index into KIND_ORDER drawn with probabilities ~ weights
    from its kind key (`_keys`)."""
    thresholds = jnp.asarray(mix_thresholds(weights))
    return jnp.sum(jax.random.uniform(k_kind, ()) >= thresholds).astype(jnp.int32)


def active_kinds(weights: dict[str, float]) -> tuple[list[str], Array]:
    """(the kinds that can be drawn, int32[len(KIND_ORDER)]: a kind's index among them).

    Branches only for those: under vmap every branch runs for every image, so a zero weight
    must cost nothing (compile time included). A zero-weight kind is never drawn; its table
    entry is a placeholder.
    """
    active = [k for k in KIND_ORDER if weights.get(k, 0.0) > 0]
    return active, jnp.asarray([active.index(k) if k in active else 0 for k in KIND_ORDER])


def alter_one_mix(
    image: Array, donor: Array, key: Array, weights: dict[str, float], *, region: str = "square",
    p_altered: float = 1.0, overflow: str = "wrap", box_size: int = 16,
) -> tuple[Array, dict[str, Array]]:
    """`alter_batch_mix` for one image, its donor and one key; labels without the batch axis."""
    _check_region(region)
    check_image(image, 3, "edit_sampling.alter_one_mix")
    k_params, k_coin, k_kind, k_extra = _keys(key)
    altered = altered_coin(k_coin, p_altered)
    kind = draw_kind(k_kind, weights)
    active, branch_of = active_kinds(weights)
    branches = [_branch(k, region, overflow, box_size) for k in active]
    result = lax.switch(branch_of[kind], branches, image, donor, k_params, k_extra)
    out, labels = _finish(image, altered, *result)
    labels["kind"] = kind
    return out, labels


def alter_batch_mix(
    images: Array, keys: Array, weights: dict[str, float], region: str = "square",
    p_altered: float = 1.0, *, overflow: str = "wrap", box_size: int = 16,
) -> tuple[Array, dict[str, Any]]:
    """Alters each image with a kind drawn from its own key with probabilities ~ weights.

    weights: {kind: weight >= 0} over KIND_ORDER (missing kinds weigh 0; static - bind it with
    functools.partial under jit); other arguments as `alter_batch_edits`. The example's kind comes from a key folded off its own, so its parameters and coin are exactly
    those `alter_batch_edits(kind, ...)` would draw for the same key.
    Returns (images, labels): the labels of `alter_batch_edits` plus kind int32[B], an index
    into KIND_ORDER (drawn for clean images too).
    """
    keys = check_keys(images, keys, "edit_sampling.alter_batch_mix")
    mix_thresholds(weights)  # fail before tracing on bad weights

    def one(image, donor, key):
        return alter_one_mix(image, donor, key, weights, region=region, p_altered=p_altered,
                             overflow=overflow, box_size=box_size)

    return jax.vmap(one)(images, donors(images), keys)
