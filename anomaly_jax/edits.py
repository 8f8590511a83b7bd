"""Issue 12's edit alterations: local edits of a region (`anomaly_jax.regions`) of one image.

Five kinds, each a pure apply function on one image uint8[H, W, 3] with explicit parameters
(drawn per example by `anomaly_jax.edit_sampling`):

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

The samplers drawing each kind's parameters per example and the batch entry points
(`alter_batch_edits`, `alter_batch_mix`) are in `anomaly_jax.edit_sampling`.

What a researcher may change: smudge's sigma range (`SMUDGE_SIGMA_800` and its floors), the
fixed-point precision, and new kinds (an apply function here, then a sampler and an entry in
`edit_sampling`'s tables and in `anomaly_jax.config`'s EDIT_KINDS and CorruptionConfig.kind -
appended, so old kind indices keep meaning).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from anomaly_jax.config import EDIT_KINDS, KIND_ORDER, MIX_KIND, CorruptionConfig, choices
from anomaly_jax.config import SEED_KINDS as OLD_KINDS
from anomaly_jax.example_labels import check_image
from anomaly_jax.push_pull import push_pull_fill
from anomaly_jax.regions import SHAPES

Array = jax.Array

# The kinds are named once, in anomaly_jax.config; the `kind` label of `alter_batch_mix`
# indexes KIND_ORDER (the old kinds, then the edits): every config kind but "mix".
assert KIND_ORDER == OLD_KINDS + EDIT_KINDS
assert KIND_ORDER == tuple(k for k in choices(CorruptionConfig, "kind") if k != MIX_KIND)

# Smudge sigma in pixels at 800 px, scaled by min(H, W)/800; floors keep it visible (and
# varying) on small test images: lo >= 1, hi >= 2.
SMUDGE_SIGMA_800 = (1.5, 4.0)
SMUDGE_SIGMA_FLOOR = (1.0, 2.0)


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
    check_image(image, 3, "edits.smudge")
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


def erase(image: Array, mask: Array, *, window: tuple[Array, tuple[int, int]] | None = None
          ) -> Array:
    """Replaces the region with a smooth fill from its surroundings: `push_pull_fill` of the
    pixels outside the mask in 1/256 grey levels, rounded half up.

    image: uint8[H, W, 3]; mask: bool[H, W]. A mask covering the whole image fills black.
    Returns uint8[H, W, 3]; with window = (origin int32[2], (h, w) static), only that window
    of it, uint8[h, w, 3]: the fill still reads the whole image, but XLA computes its last,
    full-resolution level only inside the window (`edit_loop`: twice as fast per image).
    """
    check_image(image, 3, "edits.erase")
    _check_mask(image, mask, "erase")
    filled = push_pull_fill(image.astype(jnp.int32) * LEVEL, ~mask)
    if window is not None:
        (row, col), (h, w) = window
        filled = lax.dynamic_slice(filled, (row, col, 0), (h, w, 3))
        image = lax.dynamic_slice(image, (row, col, 0), (h, w, 3))
        mask = lax.dynamic_slice(mask, (row, col), (h, w))
    out = jnp.clip((filled + LEVEL // 2) // LEVEL, 0, 255)
    return _select(mask, out.astype(jnp.uint8), image)


# ----------------------------------------------------------------------------- stretch

STRETCH_CLIP = (0.25, 4.0)  # factors beyond are clipped (keeps the fixed point in int32)


def _stretch_bits(n: int) -> int:
    """Fractional bits F of source positions along an axis of n pixels: the most (at most 23)
    with 5 * (n + 1) * 2**F < 2**31, the bound on |position| * 2**F (see `_stretch_axis`)."""
    return min(23, int(math.floor(math.log2((2**31 - 1) / (5 * (n + 1))))))


def _stretch_axis(x: Array, axis: int, c: Array, factor: Array, origin: Array | int = 0,
                  n_total: int | None = None) -> Array:
    """uint8 array x resampled along `axis` at c - 1/2 + (p - c + 1/2) / factor, linear.

    x may be a window of a larger image: `origin` is the image index of x's first pixel along
    `axis` and n_total the image's length there (default: x is the whole axis). Positions,
    their clamp to [0, n_total - 1] and the fixed point follow the image, so a window that
    holds every pixel read gives exactly the image's values.
    Positions in fixed point with F fractional bits: 2 (p - c) + 1 is an integer and
    q = round(2**(F-1) / factor) <= 2**(F+1), so |position| * 2**F <= (n + 4 n) 2**F < 2**31;
    the interpolation a (2**F - t) + b t <= 255 * 2**F < 2**31.
    """
    n = x.shape[axis]
    n_total = n if n_total is None else n_total
    bits = _stretch_bits(n_total)
    c = jnp.clip(jnp.asarray(c, jnp.int32), 0, n_total)
    q = jnp.round(float(2 ** (bits - 1)) / factor).astype(jnp.int32)
    p = jnp.asarray(origin, jnp.int32) + jnp.arange(n, dtype=jnp.int32)
    pos = (2 * c - 1) * (1 << (bits - 1)) + (2 * (p - c) + 1) * q
    i0 = pos >> bits  # arithmetic shift: floor, also below 0
    t = pos & ((1 << bits) - 1)

    def read(i):  # image index -> x's values there (clamped to the image, then to x)
        local = jnp.clip(jnp.clip(i, 0, n_total - 1) - origin, 0, n - 1)
        return jnp.take(x, local, axis=axis).astype(jnp.int32)

    a, b = read(i0), read(i0 + 1)
    shape = [1] * x.ndim
    shape[axis] = n
    t = t.reshape(shape)
    return ((a * ((1 << bits) - t) + b * t + (1 << (bits - 1))) >> bits).astype(jnp.uint8)


def stretch(image: Array, mask: Array, center: Array, factor: Array, axis: Array, *,
            origin: Array | None = None, full_shape: tuple[int, int] | None = None) -> Array:
    """Magnifies the content by `factor` along `axis` about the region's centre, linear.

    image: uint8[H, W, 3]; mask: bool[H, W]; center: int32[2] (row, col) - the square
    [c-r, c+r) is centred on the pixel corner c, i.e. pixel coordinate c - 1/2;
    factor: float32[] clipped to STRETCH_CLIP (> 1 stretches); axis: int32[] 0 (rows:
    vertical) or 1 (columns), or a Python int (then only that axis is computed). Inside the
    mask, out[p] = image sampled at
    centre + (p - centre) / factor along `axis` (the other coordinate unchanged), linear
    interpolation between the two nearest pixels, positions clamped to the image; fixed point
    (positions to 2**-19 pixel or finer at 800 px), rounded half up. Returns uint8[H, W, 3].
    A window: `image` and `mask` cut from a larger image of static `full_shape` (H, W) at
    `origin` int32[2], center in that image's coordinates; exact when the window holds every
    pixel the region reads (`edit_loop.extent`).
    """
    check_image(image, 3, "edits.stretch")
    _check_mask(image, mask, "stretch")
    center = jnp.asarray(center, jnp.int32)
    origin = jnp.zeros(2, jnp.int32) if origin is None else jnp.asarray(origin, jnp.int32)
    full_shape = image.shape[:2] if full_shape is None else full_shape
    factor = jnp.clip(jnp.asarray(factor, jnp.float32), *STRETCH_CLIP)
    def along(a):
        return _stretch_axis(image, a, center[a], factor, origin[a], full_shape[a])

    if isinstance(axis, int):  # static (edit_loop groups by it): one axis only
        return _select(mask, along(axis), image)
    # Traced: both axes are resampled and one is selected.
    return _select(mask, jnp.where(axis == 0, along(0), along(1)), image)


# ----------------------------------------------------------------------------- copy / splice


def splice(image: Array, donor: Array, mask: Array, offset: Array) -> Array:
    """Pastes donor pixels into the region: out[y, x] = donor[y + dy, x + dx] inside the mask.

    image, donor: uint8[H, W, 3]; mask: bool[H, W]; offset: int32[2] (dy, dx). Source
    coordinates are clamped into the image (the samplers keep the source square inside, so
    the clamp only matters for hand-made offsets). Exact: no arithmetic on pixel values.
    Returns uint8[H, W, 3].
    """
    check_image(image, 3, "edits.splice")
    check_image(donor, 3, "edits.splice")
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


