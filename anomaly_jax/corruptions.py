"""Image alterations and their parameter samplers, run on the device inside the train step.

Three alterations (the seeds' rules):

* `discolor`  - seed 1: a square of side 2r centred on (row, col) multiplied by a ratio.
* `white_box` - seed 2: a pure-white square drawn as Pillow's `rectangle([c, r, c+s, r+s])`.
* `scramble`  - seed 1's unused variant: the square's rows shuffled.

Every function is pure, jittable and vmappable, takes and returns uint8 images, and takes its
parameters as traced arrays, so one compiled step serves any parameter values (and different
values per image in one vmapped batch). Randomness comes only from the JAX key passed in;
keys may be typed (`jax.random.key`) or raw `uint32[2]` (`jax.random.PRNGKey`).

`alter_batch(kind, images, keys)` is what the trainer calls: one key per image, so an image's
alteration depends only on its own key, never on the batch it travels in or the device count.

What a researcher may change: the sampling ranges in `sample_*` (they follow the seeds, scaled
by size/800), and new kinds (add a sampler, an apply function and an entry in `_KINDS`).

Every apply function is a single elementwise pass whose masks are built from a row vector and
a column vector (`rows_in[:, None] & cols_in[None, :]`), so XLA fuses mask, arithmetic and
select into one loop over the pixels; called inside a jit whose input is donated (or on an
intermediate such as a gathered batch) it runs in place.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from anomaly_jax.config import SEED_KINDS, CorruptionConfig, choices
from anomaly_jax.example_labels import (altered_coin, check_image, check_keys, example_labels,
                                        typed_key)

Array = jax.Array
KINDS = SEED_KINDS  # the kinds implemented here (the rest of CorruptionConfig.kind: edits)
OVERFLOWS = choices(CorruptionConfig, "overflow")

# Fixed-point discolor: out = (v * m + BIAS) >> SHIFT with m = round(ratio * 2**SHIFT).
#
# Bounds (uint32): v <= 255 and ratio is clipped to [0, MAX_RATIO] = [0, 4], so
# m <= 2**24 and v*m + 2**(SHIFT-1) + BIAS <= 255 * 2**24 + 2**21 + 256 = 4_280_287_488
# < 2**32: no overflow in either mode.
#
# Exactness: let ratio32 be the float32 ratio. ratio32 * 2**22 is exact (a power of two) and
# below 2**24, so m = round(ratio32 * 2**22) is the nearest integer: |m - ratio32*2**22| <= 1/2,
# hence v*m = v*ratio32*2**22 + e with |e| <= 127.5, and
#     out = floor(v*ratio32 + d),  d = (e + BIAS) / 2**22  in  [3.1e-5, 9.2e-5].
# So for any ratio the result is floor(v*ratio) except where v*ratio lies within 9.2e-5 below
# an integer. For the seed's two-decimal ratios k/100 the result is exact for every v: with
# the float32 error of k/100 (|ratio32 - k/100| < 6e-8, times 2**22 < 0.25) we get
# |m - k*2**22/100| <= 0.75, |e| <= 192; v*k/100 = q + f/100 with integer f in [0, 99], and
#     v*m + BIAS = 2**22 * (q + f/100) + e + BIAS,   0 < e + BIAS <= 448 < 2**22/100 = 41943,
# so the shift gives exactly q for every f (f = 0: a product that is mathematically an integer
# does not fall just below it; f = 99: it does not reach q + 1). The same argument with
# 2**21 added shows clip mode gives exactly floor(v*k/100 + 1/2) = (2*v*k + 100) // 200.
SHIFT = 22
ONE = 1 << SHIFT
BIAS = 256
MAX_RATIO = 4.0
# The seed's eleven ratios 1.05, 1.06, ..., 1.15 as the float32 nearest to each.
RATIO_GRID = (np.arange(105, 116) / 100).astype(np.float32)


# ----------------------------------------------------------------------------- helpers


def _check_overflow(overflow: str) -> None:
    if overflow not in OVERFLOWS:
        raise ValueError(f"corruptions: overflow={overflow!r}; expected one of {OVERFLOWS}")


def _span(n: int, start: Array, stop: Array, enabled: Array | bool = True) -> Array:
    """bool[n]: indices in [max(start, 0), stop) - numpy slicing minus its negative-index wrap."""
    idx = jnp.arange(n, dtype=jnp.int32)
    return (idx >= jnp.maximum(start, 0)) & (idx < stop) & enabled


def _square_spans(
    shape: tuple[int, ...], center: Array, half_size: Array, enabled: Array | bool = True
) -> tuple[Array, Array]:
    """(rows_in bool[H], cols_in bool[W]) of the square [row-r:row+r, col-r:col+r]."""
    center = jnp.asarray(center, jnp.int32)
    r = jnp.asarray(half_size, jnp.int32)
    rows_in = _span(shape[0], center[0] - r, center[0] + r, enabled)
    cols_in = _span(shape[1], center[1] - r, center[1] + r)
    return rows_in, cols_in


def _box_spans(
    shape: tuple[int, ...], top_left: Array, size: int, enabled: Array | bool = True
) -> tuple[Array, Array]:
    """(rows_in, cols_in) of Pillow's rectangle([c, r, c+size, r+size]): both corners inclusive."""
    top_left = jnp.asarray(top_left, jnp.int32)
    rows_in = _span(shape[0], top_left[0], top_left[0] + size + 1, enabled)
    cols_in = _span(shape[1], top_left[1], top_left[1] + size + 1)
    return rows_in, cols_in


# ----------------------------------------------------------------------------- alterations


def _discolor(
    image: Array, rows_in: Array, cols_in: Array, ratio: Array, overflow: str
) -> Array:
    m = jnp.round(jnp.clip(jnp.asarray(ratio, jnp.float32), 0.0, MAX_RATIO) * ONE)
    m = m.astype(jnp.uint32)
    # The mask rides in the multiplier: outside the square the factor is 1.0 in fixed point,
    # and (v * 2**22 + BIAS) >> 22 == v, so there is no separate select over the pixels.
    factor = jnp.where(rows_in[:, None] & cols_in[None, :], m, jnp.uint32(ONE))[:, :, None]
    prod = image.astype(jnp.uint32) * factor
    if overflow == "wrap":
        out = ((prod + BIAS) >> SHIFT) & 255
    else:
        out = jnp.minimum((prod + (ONE // 2 + BIAS)) >> SHIFT, 255)
    return out.astype(jnp.uint8)


def discolor(
    image: Array, center: Array, half_size: Array, ratio: Array, overflow: str = "wrap"
) -> Array:
    """Multiplies the square image[row-r:row+r, col-r:col+r, :] by `ratio` (seed 1).

    image: uint8[H, W, C]; center: int32[2] (row, col); half_size: int32[] (r);
    ratio: float32[] in [0, 4] (clipped there; the seed uses 1.05..1.15).
    overflow: "wrap" -> floor(v * ratio) mod 256, the seed's numpy float->uint8 assignment;
              "clip" -> min(floor(v * ratio + 1/2), 255), i.e. rounded half up, then saturated.
    Both are computed in 22-bit fixed point (see the comment above SHIFT): exact for every
    two-decimal ratio; for other ratios they can differ from the real-number rule only where
    v * ratio is within 1e-4 below an integer (or a half-integer, for clip).
    Parts of the square beyond the image are ignored as numpy slicing does, except that a
    negative start is clamped to 0 (numpy would wrap it around and usually select nothing).
    Returns uint8[H, W, C].
    """
    check_image(image, 3, "corruptions.discolor")
    _check_overflow(overflow)
    rows_in, cols_in = _square_spans(image.shape, center, half_size)
    return _discolor(image, rows_in, cols_in, ratio, overflow)


def _white_box(image: Array, rows_in: Array, cols_in: Array) -> Array:
    inside = (rows_in[:, None] & cols_in[None, :])[:, :, None]
    return jnp.where(inside, jnp.uint8(255), image)


def white_box(image: Array, top_left: Array, size: int = 16) -> Array:
    """Draws a white square as Pillow's ImageDraw.rectangle([c, r, c+size, r+size]) does (seed 2).

    image: uint8[H, W, C]; top_left: int32[2] (row, col); size: static int. Both corners are
    inclusive, so size 16 paints 17x17 pixels; parts beyond the image are clipped.
    Returns uint8[H, W, C].
    """
    check_image(image, 3, "corruptions.white_box")
    return _white_box(image, *_box_spans(image.shape, top_left, size))


def _scramble(image: Array, rows_in: Array, cols_in: Array, key: Array) -> Array:
    h = image.shape[0]
    idx = jnp.arange(h, dtype=jnp.int32)
    # Sort key: random 31-bit values for rows in the square, 2**31 + index for the rest, so the
    # square's rows come first in random order and the others keep their order. 32 random bits
    # make ties (resolved by index, still a permutation) about 1e-4 likely at 800 rows.
    bits = jax.random.bits(typed_key(key), (h,), jnp.uint32) >> 1
    sort_key = jnp.where(rows_in, bits, jnp.uint32(1 << 31) + idx.astype(jnp.uint32))
    shuffled = jnp.argsort(sort_key, stable=True).astype(jnp.int32)
    first = jnp.argmax(rows_in).astype(jnp.int32)  # first row of the square (any, if empty)
    src = jnp.where(rows_in, shuffled[jnp.clip(idx - first, 0, h - 1)], idx)
    moved = jnp.take(image, src, axis=0)
    return jnp.where((rows_in[:, None] & cols_in[None, :])[:, :, None], moved, image)


def scramble(image: Array, center: Array, half_size: Array, key: Array) -> Array:
    """Randomly permutes the rows of the square [row-r:row+r, col-r:col+r] (seed 1's scramble).

    Only the square's columns move: each row segment of the square goes to another row of the
    square, so every column segment keeps its multiset of pixels and the outside is unchanged.
    image: uint8[H, W, C]; center: int32[2]; half_size: int32[]; key: PRNG key (typed or raw).
    Beyond-border parts and negative starts are handled as in `discolor`. Returns uint8[H, W, C].
    """
    check_image(image, 3, "corruptions.scramble")
    rows_in, cols_in = _square_spans(image.shape, center, half_size)
    return _scramble(image, rows_in, cols_in, key)


# ----------------------------------------------------------------------------- samplers


def _sample_square(key: Array, height: int, width: int) -> tuple[Array, Array]:
    """Seed 1's centre and half-size, scaled by size/800: at 800, row/col in [100, 700] and
    r = max(30, randint(0, min distance to an edge))."""
    k_center, k_r = jax.random.split(typed_key(key))
    lo = jnp.array([height // 8, width // 8], jnp.int32)
    hi = jnp.array([height - height // 8, width - width // 8], jnp.int32)
    center = jax.random.randint(k_center, (2,), lo, hi + 1, jnp.int32)
    reach = jnp.minimum(
        jnp.minimum(center[0], height - center[0]), jnp.minimum(center[1], width - center[1])
    )
    r_min = 30 * min(height, width) // 800
    half_size = jnp.maximum(r_min, jax.random.randint(k_r, (), 0, reach, jnp.int32))
    return center, half_size


def sample_discolor(key: Array, height: int, width: int) -> dict[str, Array]:
    """Seed 1's discolor parameters: {center int32[2], half_size int32[], ratio float32[]}.

    ratio is uniform in [1.05, 1.15] rounded to 2 decimals: the 11 values 1.05..1.15, the two
    end values half as likely as the others.
    """
    k_square, k_ratio = jax.random.split(typed_key(key))
    center, half_size = _sample_square(k_square, height, width)
    hundredths = jnp.round(jax.random.uniform(k_ratio, (), jnp.float32, 105.0, 115.0))
    # A table, not hundredths / 100: XLA turns the division into a multiply by 0.01, which
    # misses the float32 nearest to k/100 by one ulp for some k.
    ratio = jnp.asarray(RATIO_GRID)[hundredths.astype(jnp.int32) - 105]
    return {"center": center, "half_size": half_size, "ratio": ratio}


def sample_white_box(key: Array, height: int, width: int, size: int = 16) -> dict[str, Array]:
    """Seed 2's box: {top_left int32[2]} uniform in [0, H-size-1] x [0, W-size-1] (64: [0, 47])."""
    hi = jnp.array([height - size, width - size], jnp.int32)
    return {"top_left": jax.random.randint(typed_key(key), (2,), 0, hi, jnp.int32)}


def sample_scramble(key: Array, height: int, width: int) -> dict[str, Array]:
    """Scramble parameters: {center, half_size} as for discolor, and the shuffle's `key`."""
    k_square, k_shuffle = jax.random.split(typed_key(key))
    center, half_size = _sample_square(k_square, height, width)
    return {"center": center, "half_size": half_size, "key": k_shuffle}


# ----------------------------------------------------------------------------- batches


def _alter_discolor(image, key, enabled, overflow, box_size):
    p = sample_discolor(key, *image.shape[:2])
    rows_in, cols_in = _square_spans(image.shape, p["center"], p["half_size"], enabled)
    out = _discolor(image, rows_in, cols_in, p["ratio"], overflow)
    return out, p["center"], p["half_size"], p["ratio"], rows_in, cols_in


def _alter_white_box(image, key, enabled, overflow, box_size):
    p = sample_white_box(key, *image.shape[:2], size=box_size)
    rows_in, cols_in = _box_spans(image.shape, p["top_left"], box_size, enabled)
    out = _white_box(image, rows_in, cols_in)
    center = p["top_left"] + box_size // 2  # the middle pixel of the (size+1)-wide square
    return out, center, jnp.int32(box_size // 2), jnp.float32(1.0), rows_in, cols_in


def _alter_scramble(image, key, enabled, overflow, box_size):
    p = sample_scramble(key, *image.shape[:2])
    rows_in, cols_in = _square_spans(image.shape, p["center"], p["half_size"], enabled)
    out = _scramble(image, rows_in, cols_in, p["key"])
    return out, p["center"], p["half_size"], jnp.float32(1.0), rows_in, cols_in


_KINDS: dict[str, Callable[..., tuple]] = {
    "discolor": _alter_discolor,
    "white_box": _alter_white_box,
    "scramble": _alter_scramble,
}
assert tuple(_KINDS) == KINDS


def alter_one(
    kind: str, image: Array, key: Array, *, p_altered: float = 1.0, overflow: str = "wrap",
    box_size: int = 16,
) -> tuple[Array, dict[str, Array]]:
    """`alter_batch` for one image uint8[H, W, C] and one key; labels without the batch axis.

    The key is split into (params, coin): params feeds `sample_<kind>`, coin decides (with
    probability p_altered) whether the image is altered at all.
    """
    if kind not in _KINDS:
        raise ValueError(f"corruptions: unknown kind {kind!r}; expected one of {KINDS}")
    _check_overflow(overflow)
    check_image(image, 3, "corruptions.alter_one")
    k_params, k_coin = jax.random.split(typed_key(key))
    altered = altered_coin(k_coin, p_altered)
    out, center, half_size, ratio, rows_in, cols_in = _KINDS[kind](
        image, k_params, altered, overflow, box_size
    )
    mask = rows_in[:, None] & cols_in[None, :]  # all False for a clean image (spans disabled)
    return out, example_labels(image.shape, center, half_size, ratio, mask, altered)


def alter_batch(
    kind: str, images: Array, keys: Array, *, p_altered: float = 1.0, overflow: str = "wrap",
    box_size: int = 16,
) -> tuple[Array, dict[str, Any]]:
    """Alters each image with parameters drawn from its own key.

    kind: "discolor" | "white_box" | "scramble" (static); images: uint8[B, H, W, 3];
    keys: B typed keys (key[B]) or raw uint32[B, 2]; p_altered, overflow, box_size: static.
    Returns (images uint8[B, H, W, 3], labels) with labels:
      center float32[B, 2]   (row/H, col/W) - the seed's (x/800, y/800); for white_box the
                             middle pixel of the drawn square,
      half_size int32[B]     pixels (white_box: box_size // 2),
      half_size_norm float32[B]  half_size / H,
      ratio float32[B]       the discolor ratio, 1.0 for the other kinds,
      mask bool[B, H, W]     the altered region (all False for images left clean),
      altered bool[B]        whether the image was altered (probability p_altered).
    Clean images keep the other labels at their sampled values. Unused labels (e.g. mask) cost
    nothing inside a jit: XLA drops what is not returned.
    """
    if kind not in _KINDS:
        raise ValueError(f"corruptions: unknown kind {kind!r}; expected one of {KINDS}")
    keys = check_keys(images, keys, "corruptions.alter_batch")

    def one(image, key):
        return alter_one(
            kind, image, key, p_altered=p_altered, overflow=overflow, box_size=box_size
        )

    return jax.vmap(one)(images, keys)
