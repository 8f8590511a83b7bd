"""Issue 12's edit alterations: local edits of a region (`anomaly_jax.regions`) of one image.

Five kinds, each a pure apply function on one image uint8[H, W, 3] with explicit parameters
and a sampler `sample_<kind>(key, height, width, region)` drawing them per example:

* `smudge`    - Gaussian blur inside the region, feathered at its rim (sigma per example).
* `erase`     - the region replaced by a smooth fill continued from its surroundings
                (push-pull: a pyramid of masked averages, pulled back with bilinear upsampling).
* `stretch`   - the region's content magnified by a factor along one axis about its centre.
* `copy_move` - a patch of the same image, from a source square elsewhere, pasted in.
* `splice`    - a patch of another image (the batch neighbour) pasted in.

The label `mask` of every kind is exactly the region: pixels outside it are bit-identical to
the input (every apply function ends with `where(mask, edited, image)`), pixels inside may or
may not change (a smudge of a flat area, a copy from an identical patch change nothing).

Every function is jittable and vmappable with parameters as traced arrays (sigma, factor, axis,
offsets, region), so one compiled step serves every parameter value; only shapes and the
static arguments named in the docstrings (kind, region shape, blur radius) specialise it.
Pixel arithmetic is integer fixed point (see the comment above LEVEL), so results are the
same bits eagerly, under jit, vmapped or not, and on any backend.
Randomness comes only from the key passed in (typed or raw uint32[2], as in `corruptions`).

`alter_batch_edits(kind, images, keys)` mirrors `corruptions.alter_batch` (same key split,
same labels), and also accepts the old kinds, so `region="free"` works for them too;
`alter_batch_mix(images, keys, weights)` draws a kind per example over `KIND_ORDER`.

What a researcher may change: the sampling ranges (`SMUDGE_SIGMA_800` and its floors,
`STRETCH_FACTORS`, the offset rules in `sample_copy_move` / `sample_splice`), the region's
look (`anomaly_jax.regions`), and new kinds (a sampler, an apply function, an entry in
`_EDIT_APPLY` / `_SAMPLERS` and in `anomaly_jax.config`'s EDIT_KINDS and CorruptionConfig.kind -
appended, so old kind indices keep meaning).
"""
from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from anomaly_jax import corruptions
from anomaly_jax.config import EDIT_KINDS, KIND_ORDER, MIX_KIND, CorruptionConfig, choices
from anomaly_jax.config import SEED_KINDS as OLD_KINDS
from anomaly_jax.corruptions import _check_image, _typed_key
from anomaly_jax.regions import SHAPES, free_mask, sample_region

Array = jax.Array

# The kinds are named once, in anomaly_jax.config; the `kind` label of `alter_batch_mix`
# indexes KIND_ORDER (the old kinds, then the edits): every config kind but "mix".
assert KIND_ORDER == OLD_KINDS + EDIT_KINDS
assert KIND_ORDER == tuple(k for k in choices(CorruptionConfig, "kind") if k != MIX_KIND)

# Smudge sigma in pixels at 800 px, scaled by min(H, W)/800; floors keep it visible (and
# varying) on small test images: lo >= 1, hi >= 2.
SMUDGE_SIGMA_800 = (1.5, 4.0)
SMUDGE_SIGMA_FLOOR = (1.0, 2.0)
STRETCH_FACTORS = (1.1, 1.6)
# Salt folded into the example key for the draws `corruptions.alter_one` does not make (the
# mix's kind, the old kinds' free mask). Large, so it cannot meet a small split counter.
_EXTRA_SALT = 0x5EED_12


# ----------------------------------------------------------------------------- helpers


def _check_region(region: str) -> None:
    if region not in SHAPES:
        raise ValueError(f"edits: region={region!r}; expected one of {SHAPES}")


def _check_mask(image: Array, mask: Array, name: str) -> None:
    if mask.shape != image.shape[:2] or mask.dtype != jnp.bool_:
        raise ValueError(
            f"edits.{name}: expected mask bool{list(image.shape[:2])}, "
            f"got {mask.dtype}{list(mask.shape)}"
        )


def _select(mask: Array, edited: Array, image: Array) -> Array:
    # The one place an edit touches the output: outside the mask it is the input, bit for bit.
    return jnp.where(mask[:, :, None], edited, image)


# Smudge, erase and stretch compute in integer fixed point, not float32: XLA contracts a*b + c
# into one fused multiply-add (and turns x / y into x * (1/y)) inside a jit but not op by op,
# so float results rounded to uint8 differ between eager, jit and other backends at the odd
# pixel. Integers give the same bits everywhere; the only float step left is exp() in the
# blur taps, quantised to integers straight away.
LEVEL = 256  # intermediate pixel values in 1/256 grey levels


def _round_div(num: Array, den: Array) -> Array:
    """Unsigned integer num / den rounded half up."""
    return (num + den // 2) // den


# ----------------------------------------------------------------------------- smudge


def smudge_sigma_range(height: int, width: int) -> tuple[float, float]:
    """(lo, hi) of the sampled sigma in pixels: SMUDGE_SIGMA_800 scaled by min(H, W)/800,
    floored at SMUDGE_SIGMA_FLOOR (64 px: (1, 2); 800 px: (1.5, 4))."""
    s = min(height, width) / 800
    return (max(SMUDGE_SIGMA_FLOOR[0], SMUDGE_SIGMA_800[0] * s),
            max(SMUDGE_SIGMA_FLOOR[1], SMUDGE_SIGMA_800[1] * s))


def smudge_radius(height: int, width: int) -> int:
    """The static kernel radius for an image size: ceil(3 * the largest sampled sigma)."""
    return math.ceil(3 * smudge_sigma_range(height, width)[1])


def tap_bits(radius: int) -> int:
    """Bits of the centre tap (2**bits): the most that keep the tap sum <= 2**16, which keeps
    every uint32 product in `gaussian_blur_fixed` below 2**32 (255 * 256 * 2**16 < 2**32)."""
    return int(math.floor(math.log2(2**16 / (2 * radius + 1))))


def gaussian_taps(sigma: Array, radius: int) -> Array:
    """uint32[2*radius+1]: round(2**tap_bits * exp(-k^2 / (2 sigma^2))), k in [-radius, radius].

    sigma is traced, radius static: one compile serves every sigma. Unnormalised (the blur
    divides by their sum), so a sigma above radius/3 just loses its tails beyond the radius.
    Written without a division or an add of a product, so XLA cannot rewrite it per context.
    """
    k = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    inv = 1.0 / jnp.maximum(jnp.asarray(sigma, jnp.float32), 0.05)
    g = jnp.exp((k * inv) * (k * inv) * -0.5)
    return jnp.round(g * float(2 ** tap_bits(radius))).astype(jnp.uint32)


def _conv_axis(x: Array, taps: Array, axis: int, scale: int) -> Array:
    """uint32: round(scale * sum_k taps[k] x[i+k-r] / sum(taps)) along `axis`, edges
    replicated (numpy pad mode 'edge'). Needs scale * max(x) * sum(taps) < 2**32."""
    radius = (taps.shape[0] - 1) // 2
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    xp = jnp.pad(x, pad, mode="edge")
    acc = taps[0] * lax.slice_in_dim(xp, 0, n, axis=axis)
    for k in range(1, 2 * radius + 1):
        acc = acc + taps[k] * lax.slice_in_dim(xp, k, k + n, axis=axis)
    return _round_div(acc * jnp.uint32(scale), jnp.sum(taps))


def gaussian_blur_fixed(x: Array, sigma: Array, radius: int, scale: int = LEVEL) -> Array:
    """Separable Gaussian blur of x uint[H, W, ...] over its first two axes -> uint32[H, W, ...]:
    `scale` times the blurred value, rounded half up.

    x: unsigned ints with max(x) * scale <= 255 * 256 (no uint32 overflow); taps
    `gaussian_taps(sigma, radius)`; edges replicated (the border pixel repeated outwards);
    rows first, rounded to 1/scale, then columns: within about 1/scale of the exact blur with
    the quantised taps.
    """
    taps = gaussian_taps(sigma, radius)
    rows = _conv_axis(x.astype(jnp.uint32), taps, 0, scale)
    return _conv_axis(rows, taps, 1, 1)


def smudge(image: Array, mask: Array, sigma: Array, radius: int | None = None) -> Array:
    """Blurs the region: out = image + w * (blur(image) - image) inside the mask.

    image: uint8[H, W, 3]; mask: bool[H, W]; sigma: float32[] pixels (traced);
    radius: static kernel radius, default `smudge_radius(H, W)`.
    The blend weight w = blur(mask) * mask feathers the rim (about 1/2 on the mask's edge, 1
    deep inside) and is 0 outside, so the smudge never leaks out of the mask. The blur reads
    pixels outside the mask too (a real smudge drags the surroundings in). Fixed point
    (`gaussian_blur_fixed`: image to 1/256 level, weight to 2**-15), rounded half up; within
    about 0.1 grey level of the float64 formula before rounding. Returns uint8[H, W, 3].
    """
    _check_image(image, 3, "smudge")
    _check_mask(image, mask, "smudge")
    if radius is None:
        radius = smudge_radius(*image.shape[:2])
    one = 1 << 15
    blurred = gaussian_blur_fixed(image, sigma, radius, LEVEL)  # <= 255 * 256
    weight = gaussian_blur_fixed(mask.astype(jnp.uint32), sigma, radius, one)  # <= 2**15
    weight = jnp.where(mask, weight, 0)[:, :, None]
    x = image.astype(jnp.uint32) * LEVEL
    # A convex combination: at most 2**15 * 255 * 256 + 2**22 < 2**31, no overflow.
    out = ((one - weight) * x + weight * blurred + (1 << 22)) >> 23
    return _select(mask, out.astype(jnp.uint8), image)


# ----------------------------------------------------------------------------- erase


def _push(c: Array, w: Array) -> tuple[Array, Array]:
    """One pyramid level up: 2x2 blocks (odd sizes padded with unknown pixels) -> the mean of
    their known children's values c' int32[h', w', C] (rounded half up, 0 where none is known)
    and whether any is known, w' bool[h', w']."""
    h, wd = w.shape
    ph, pw = h % 2, wd % 2
    c = jnp.pad(jnp.where(w[:, :, None], c, 0), ((0, ph), (0, pw), (0, 0)))
    w = jnp.pad(w, ((0, ph), (0, pw)))
    h2, w2 = (h + ph) // 2, (wd + pw) // 2
    count = w.astype(jnp.int32).reshape(h2, 2, w2, 2).sum(axis=(1, 3))[:, :, None]
    total = c.reshape(h2, 2, w2, 2, -1).sum(axis=(1, 3))
    c2 = jnp.where(count > 0, (2 * total + count) // jnp.maximum(2 * count, 1), 0)
    return c2, count[:, :, 0] > 0


def _up2_axis(f: Array, axis: int, n_out: int) -> Array:
    """2x upsampling along `axis` times 4 (pixel centres aligned, edges replicated), cropped to
    n_out: out[2k] = 3 f[k] + f[k-1], out[2k+1] = 3 f[k] + f[k+1] - bilinear, unnormalised."""
    n = f.shape[axis]
    prev = jnp.concatenate(
        [lax.slice_in_dim(f, 0, 1, axis=axis), lax.slice_in_dim(f, 0, n - 1, axis=axis)], axis
    )
    nxt = jnp.concatenate(
        [lax.slice_in_dim(f, 1, n, axis=axis), lax.slice_in_dim(f, n - 1, n, axis=axis)], axis
    )
    both = jnp.stack([3 * f + prev, 3 * f + nxt], axis=axis + 1)
    shape = f.shape[:axis] + (2 * n,) + f.shape[axis + 1 :]
    return lax.slice_in_dim(both.reshape(shape), 0, n_out, axis=axis)


def push_pull_fill(values: Array, known: Array) -> Array:
    """Fills int32[H, W, C] where known bool[H, W] is False from where it is True (push-pull).

    Push: halve to 1x1, each level's value the mean of its 2x2 block's known children (a block
    is known when any child is). Pull: from the top down, f = c where known, else the bilinear
    2x upsampling of the coarser f (rounded half up). Known pixels come back exactly; unknown
    ones get a smooth blend of the nearest known ones at every scale. Integer arithmetic
    throughout (values up to 2**26 / 16); static shapes: log2 levels.
    """
    levels = [(values, known)]
    while levels[-1][1].shape != (1, 1):
        levels.append(_push(*levels[-1]))
    f = levels[-1][0]
    for c, w in reversed(levels[:-1]):
        up = (_up2_axis(_up2_axis(f, 0, c.shape[0]), 1, c.shape[1]) + 8) >> 4
        f = jnp.where(w[:, :, None], c, up)
    return f


def erase(image: Array, mask: Array) -> Array:
    """Replaces the region with a smooth fill from its surroundings: `push_pull_fill` of the
    pixels outside the mask in 1/256 grey levels, rounded half up.

    image: uint8[H, W, 3]; mask: bool[H, W]. A mask covering the whole image fills black.
    Returns uint8[H, W, 3].
    """
    _check_image(image, 3, "erase")
    _check_mask(image, mask, "erase")
    filled = push_pull_fill(image.astype(jnp.int32) * LEVEL, ~mask)
    out = jnp.clip((filled + LEVEL // 2) // LEVEL, 0, 255)
    return _select(mask, out.astype(jnp.uint8), image)


# ----------------------------------------------------------------------------- stretch

STRETCH_CLIP = (0.25, 4.0)  # factors beyond are clipped (keeps the fixed point in int32)


def _stretch_bits(n: int) -> int:
    """Fractional bits F of source positions along an axis of n pixels: the most (at most 23)
    with 5 * (n + 1) * 2**F < 2**31, the bound on |position| * 2**F (see `_stretch_axis`)."""
    return min(23, int(math.floor(math.log2((2**31 - 1) / (5 * (n + 1))))))


def _stretch_axis(x: Array, axis: int, c: Array, factor: Array) -> Array:
    """uint8 array x resampled along `axis` at c - 1/2 + (p - c + 1/2) / factor, linear.

    Positions in fixed point with F fractional bits: 2 (p - c) + 1 is an integer and
    q = round(2**(F-1) / factor) <= 2**(F+1), so |position| * 2**F <= (n + 4 n) 2**F < 2**31;
    the interpolation a (2**F - t) + b t <= 255 * 2**F < 2**31.
    """
    n = x.shape[axis]
    bits = _stretch_bits(n)
    c = jnp.clip(jnp.asarray(c, jnp.int32), 0, n)
    q = jnp.round(float(2 ** (bits - 1)) / factor).astype(jnp.int32)
    p = jnp.arange(n, dtype=jnp.int32)
    pos = (2 * c - 1) * (1 << (bits - 1)) + (2 * (p - c) + 1) * q
    i0 = pos >> bits  # arithmetic shift: floor, also below 0
    t = pos & ((1 << bits) - 1)
    a = jnp.take(x, jnp.clip(i0, 0, n - 1), axis=axis).astype(jnp.int32)
    b = jnp.take(x, jnp.clip(i0 + 1, 0, n - 1), axis=axis).astype(jnp.int32)
    shape = [1] * x.ndim
    shape[axis] = n
    t = t.reshape(shape)
    return ((a * ((1 << bits) - t) + b * t + (1 << (bits - 1))) >> bits).astype(jnp.uint8)


def stretch(image: Array, mask: Array, center: Array, factor: Array, axis: Array) -> Array:
    """Magnifies the content by `factor` along `axis` about the region's centre, linear.

    image: uint8[H, W, 3]; mask: bool[H, W]; center: int32[2] (row, col) - the square
    [c-r, c+r) is centred on the pixel corner c, i.e. pixel coordinate c - 1/2;
    factor: float32[] clipped to STRETCH_CLIP (> 1 stretches); axis: int32[] 0 (rows:
    vertical) or 1 (columns). Inside the mask, out[p] = image sampled at
    centre + (p - centre) / factor along `axis` (the other coordinate unchanged), linear
    interpolation between the two nearest pixels, positions clamped to the image; fixed point
    (positions to 2**-19 pixel or finer at 800 px), rounded half up. Returns uint8[H, W, 3].
    """
    _check_image(image, 3, "stretch")
    _check_mask(image, mask, "stretch")
    center = jnp.asarray(center, jnp.int32)
    factor = jnp.clip(jnp.asarray(factor, jnp.float32), *STRETCH_CLIP)
    # Both axes are resampled and one is selected, so `axis` stays a traced value.
    out = jnp.where(axis == 0, _stretch_axis(image, 0, center[0], factor),
                    _stretch_axis(image, 1, center[1], factor))
    return _select(mask, out, image)


# ----------------------------------------------------------------------------- copy / splice


def splice(image: Array, donor: Array, mask: Array, offset: Array) -> Array:
    """Pastes donor pixels into the region: out[y, x] = donor[y + dy, x + dx] inside the mask.

    image, donor: uint8[H, W, 3]; mask: bool[H, W]; offset: int32[2] (dy, dx). Source
    coordinates are clamped into the image (the samplers keep the source square inside, so
    the clamp only matters for hand-made offsets). Exact: no arithmetic on pixel values.
    Returns uint8[H, W, 3].
    """
    _check_image(image, 3, "splice")
    _check_image(donor, 3, "splice")
    _check_mask(image, mask, "splice")
    if donor.shape != image.shape:
        raise ValueError(f"edits.splice: donor {list(donor.shape)} != image {list(image.shape)}")
    height, width = image.shape[:2]
    offset = jnp.asarray(offset, jnp.int32)
    rows = jnp.clip(jnp.arange(height, dtype=jnp.int32) + offset[0], 0, height - 1)
    cols = jnp.clip(jnp.arange(width, dtype=jnp.int32) + offset[1], 0, width - 1)
    patch = jnp.take(jnp.take(donor, rows, axis=0), cols, axis=1)
    return _select(mask, patch, image)


def copy_move(image: Array, mask: Array, offset: Array) -> Array:
    """`splice` with the image as its own donor: out[y, x] = image[y + dy, x + dx] in the mask.

    image: uint8[H, W, 3]; mask: bool[H, W]; offset: int32[2]. Returns uint8[H, W, 3].
    """
    return splice(image, image, mask, offset)


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


def _sample_with_region(key: Array, height: int, width: int, region: str
                        ) -> tuple[dict[str, Array], Array]:
    # Every edit splits its key the same way, so one key places the same region for any kind.
    k_region, k_params = jax.random.split(_typed_key(key))
    return sample_region(k_region, height, width, region), k_params


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

_EDIT_APPLY = {
    "smudge": lambda image, donor, p: smudge(image, p["mask"], p["sigma"]),
    "erase": lambda image, donor, p: erase(image, p["mask"]),
    "stretch": lambda image, donor, p: stretch(image, p["mask"], p["center"], p["factor"],
                                               p["axis"]),
    "copy_move": lambda image, donor, p: copy_move(image, p["mask"], p["offset"]),
    "splice": lambda image, donor, p: splice(image, donor, p["mask"], p["offset"]),
}
assert tuple(_SAMPLERS) == tuple(_EDIT_APPLY) == EDIT_KINDS


# ----------------------------------------------------------------------------- batches

# A branch: (image, donor, k_params, k_extra) -> (out uint8[H, W, 3], center int32[2],
# half_size int32[], ratio float32[], mask bool[H, W]); identical signatures for lax.switch.


def _edit_branch(kind, region, image, donor, k_params, k_extra):
    p = _SAMPLERS[kind](k_params, *image.shape[:2], region)
    out = _EDIT_APPLY[kind](image, donor, p)
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
    key = _typed_key(key)
    k_params, k_coin = jax.random.split(key)
    k_kind, k_extra = jax.random.split(jax.random.fold_in(key, _EXTRA_SALT))
    return k_params, k_coin, k_kind, k_extra


def _finish(image, altered, out, center, half_size, ratio, mask):
    height, width = image.shape[:2]
    labels = {
        "center": center.astype(jnp.float32) / jnp.array([height, width], jnp.float32),
        "half_size": jnp.asarray(half_size, jnp.int32),
        "half_size_norm": jnp.asarray(half_size, jnp.float32) / height,
        "ratio": jnp.asarray(ratio, jnp.float32),
        "mask": mask & altered,
        "altered": altered,
    }
    return jnp.where(altered, out, image), labels


def _coin(k_coin: Array, p_altered: float) -> Array:
    if p_altered >= 1.0:
        return jnp.bool_(True)
    return jax.random.uniform(k_coin, ()) < p_altered


def _check_batch(images: Array, keys: Array, name: str) -> Array:
    _check_image(images, 4, name)
    keys = _typed_key(keys)
    if keys.shape != images.shape[:1]:
        raise ValueError(
            f"edits.{name}: expected one key per image ({images.shape[0]}), "
            f"got keys of shape {list(keys.shape)}"
        )
    return keys


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
    _check_image(image, 3, "alter_one_edit")
    k_params, k_coin, _, k_extra = _keys(key)
    altered = _coin(k_coin, p_altered)
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
    keys = _check_batch(images, keys, "alter_batch_edits")

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


def alter_one_mix(
    image: Array, donor: Array, key: Array, weights: dict[str, float], *, region: str = "square",
    p_altered: float = 1.0, overflow: str = "wrap", box_size: int = 16,
) -> tuple[Array, dict[str, Array]]:
    """`alter_batch_mix` for one image, its donor and one key; labels without the batch axis."""
    _check_region(region)
    _check_image(image, 3, "alter_one_mix")
    thresholds = jnp.asarray(mix_thresholds(weights))
    k_params, k_coin, k_kind, k_extra = _keys(key)
    altered = _coin(k_coin, p_altered)
    kind = jnp.sum(jax.random.uniform(k_kind, ()) >= thresholds).astype(jnp.int32)
    branches = [_branch(k, region, overflow, box_size) for k in KIND_ORDER]
    result = lax.switch(kind, branches, image, donor, k_params, k_extra)
    out, labels = _finish(image, altered, *result)
    labels["kind"] = kind
    return out, labels


def alter_batch_mix(
    images: Array, keys: Array, weights: dict[str, float], region: str = "square",
    p_altered: float = 1.0, *, overflow: str = "wrap", box_size: int = 16,
) -> tuple[Array, dict[str, Any]]:
    """Alters each image with a kind drawn from its own key with probabilities ~ weights.

    weights: {kind: weight >= 0} over KIND_ORDER (missing kinds weigh 0; static - bind it with
    functools.partial under jit); other arguments as `alter_batch_edits`. The example's kind
    comes from a key folded off its own, so its parameters and coin are exactly those
    `alter_batch_edits(kind, ...)` would draw for the same key. Under vmap lax.switch becomes a
    select, so every branch runs for every image (cost ~ the sum of all kinds).
    Returns (images, labels): the labels of `alter_batch_edits` plus kind int32[B], an index
    into KIND_ORDER (drawn for clean images too).
    """
    keys = _check_batch(images, keys, "alter_batch_mix")
    mix_thresholds(weights)  # fail before tracing on bad weights

    def one(image, donor, key):
        return alter_one_mix(image, donor, key, weights, region=region, p_altered=p_altered,
                             overflow=overflow, box_size=box_size)

    return jax.vmap(one)(images, donors(images), keys)
