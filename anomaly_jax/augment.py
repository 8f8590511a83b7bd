"""Training examples for the dense localiser, made on the device inside the train step.

One example from one clean image and one key (`crop_example`):

1. a random crop of `crop` x `crop` pixels at native scale, inside the image's valid region
   (clean images of different sizes share one padded table; `valid_hw` says how much is real),
   optionally cut larger and shrunk by a random factor in [min_scale, 1];
2. random flips and a transpose (a square stays a square);
3. exposure and gamma jitter, *before* the alteration, so that bright areas exist and wrap
   under the seed's uint8 rule as they did in seed 1's photos; optionally decoy frames (flat
   bands on the crop's sides, as framed photos have), whose straight edges are not a square's;
4. with probability `p_altered`, a discolor square (ratio uniform in [1.05, 1.15], seed 1's
   wrap rule) placed so that it meets the crop, with a log-uniform half-size, so crops show
   edges, corners and whole squares of every size the seed drew (30..350 px at 800);
5. the JPEG round trip at `jpeg_quality` (0 = off), as the seed's photos were saved.

Returns the image and its per-pixel edge targets (`localiser.edge_targets`). Everything is
pure and vmappable; the key decides every random choice. The mask target (issue 12) takes
steps 1-3 only (`clean_crop`) and alters the crops with `alteration.alter_examples`.

What a researcher may change: the jitter ranges and the half-size range in `CropParams`.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from anomaly_jax import corruptions, jpeg, localiser


@dataclasses.dataclass(frozen=True)
class CropParams:
    crop: int = 128
    p_altered: float = 0.8
    ratio_range: tuple[float, float] = (1.05, 1.15)
    half_size_range: tuple[float, float] = (8.0, 360.0)
    exposure_range: tuple[float, float] = (0.8, 1.4)
    gamma_range: tuple[float, float] = (0.7, 1.4)
    overflow: str = "wrap"
    jpeg_quality: int = 75
    # Crops are shrunk by a factor drawn in [min_scale, 1] (antialiased): photos resized down
    # to 800x800, as seed 1's were, pack more texture per pixel than native-scale ones.
    min_scale: float = 1.0
    # Decoys: with this probability, flat-coloured bands (black, white or any colour, up to a
    # third of the crop) on some of its sides - the frames and borders real photos have.
    # Their long straight edges must not read as a square's.
    p_frame: float = 0.0

    @property
    def window(self) -> int:
        """Side of the region cut from the clean image before it is shrunk to `crop`."""
        return int(math.ceil(self.crop / self.min_scale))


def random_crop(image: jax.Array, valid_hw: jax.Array, key: jax.Array, crop: int) -> jax.Array:
    """uint8[S, S, 3] (real content in [:h, :w], h, w >= crop) -> uint8[crop, crop, 3]."""
    k_row, k_col = jax.random.split(key)
    row = jax.random.randint(k_row, (), 0, valid_hw[0] - crop + 1)
    col = jax.random.randint(k_col, (), 0, valid_hw[1] - crop + 1)
    return jax.lax.dynamic_slice(image, (row, col, 0), (crop, crop, 3))


def shrink(image: jax.Array, key: jax.Array, crop: int, min_scale: float) -> jax.Array:
    """uint8[S, S, 3] -> uint8[crop, crop, 3]: the top-left crop/scale pixels shrunk by a
    factor `scale` uniform in [min_scale, 1] (triangle filter, antialiased)."""
    scale = jax.random.uniform(key, (), jnp.float32, min_scale, 1.0)
    out = jax.image.scale_and_translate(
        image.astype(jnp.float32), (crop, crop, 3), (0, 1), jnp.stack([scale, scale]),
        jnp.zeros(2, jnp.float32), method="linear", antialias=True)
    return jnp.clip(jnp.round(out), 0, 255).astype(jnp.uint8)


def add_frame(image: jax.Array, key: jax.Array, p_frame: float) -> jax.Array:
    """uint8[C, C, 3] -> uint8[C, C, 3] with, with probability p_frame, a flat band on each
    side independently (probability 1/2, width uniform in [1, C/3]), one colour for all."""
    c = image.shape[0]
    k_on, k_sides, k_width, k_kind, k_colour = jax.random.split(key, 5)
    on = jax.random.uniform(k_on, ()) < p_frame
    sides = jax.random.bernoulli(k_sides, 0.5, (4,)) & on
    width = jax.random.randint(k_width, (4,), 1, c // 3 + 1)
    kind = jax.random.randint(k_kind, (), 0, 3)  # black, white, any colour
    colour = jnp.where(kind == 0, 0, jnp.where(
        kind == 1, 255, jax.random.randint(k_colour, (3,), 0, 256))).astype(jnp.uint8)
    idx = jnp.arange(c)
    rows = (sides[0] & (idx < width[0])) | (sides[1] & (idx >= c - width[1]))
    cols = (sides[2] & (idx < width[2])) | (sides[3] & (idx >= c - width[3]))
    band = rows[:, None] | cols[None, :]
    return jnp.where(band[..., None], colour, image)


def flip_transpose(image: jax.Array, key: jax.Array) -> jax.Array:
    """One of the 8 symmetries of the square, uniformly: uint8[C, C, 3] -> uint8[C, C, 3]."""
    bits = jax.random.bernoulli(key, 0.5, (3,))
    image = jnp.where(bits[0], image[::-1], image)
    image = jnp.where(bits[1], image[:, ::-1], image)
    return jnp.where(bits[2], jnp.swapaxes(image, 0, 1), image)


def exposure_gamma(image: jax.Array, key: jax.Array, exposure_range, gamma_range) -> jax.Array:
    """255 * exposure * (v/255) ** gamma, rounded and saturated: uint8 -> uint8."""
    k_e, k_g = jax.random.split(key)
    exposure = jax.random.uniform(k_e, (), jnp.float32, *exposure_range)
    gamma = jax.random.uniform(k_g, (), jnp.float32, *gamma_range)
    v = image.astype(jnp.float32) * (1.0 / 255.0)
    out = 255.0 * exposure * jnp.power(v, gamma)
    return jnp.clip(jnp.round(out), 0, 255).astype(jnp.uint8)


def sample_crop_square(key: jax.Array, crop: int, half_size_range) -> tuple[jax.Array, jax.Array]:
    """(center int32[2], half_size int32[]): r log-uniform, the square meeting the crop."""
    k_r, k_c = jax.random.split(key)
    lo, hi = half_size_range
    r = jnp.exp(jax.random.uniform(k_r, (), jnp.float32, jnp.log(lo), jnp.log(hi)))
    r = jnp.round(r).astype(jnp.int32)
    # Centre within r - 2 of the crop on each axis: at least two rows/cols of it are inside.
    lo_c = -r + 2
    hi_c = crop + r - 2
    center = jax.random.randint(k_c, (2,), lo_c, hi_c + 1).astype(jnp.int32)
    return center, r


def clean_crop(image: jax.Array, valid_hw: jax.Array, key: jax.Array, p: CropParams
               ) -> jax.Array:
    """Steps 1-3 (crop, shrink, flips, exposure/gamma, frames): uint8[C, C, 3], not altered.

    The mask target (`dense_steps.dense_train_inputs`) alters these crops with any kind; the edge
    target's `crop_example` continues from here with its discolor square.
    """
    keys = jax.random.split(key, 7)  # the same split as crop_example's: its keys 0-2 and 6
    if p.min_scale < 1.0:
        x = shrink(random_crop(image, valid_hw, keys[0], p.window), keys[6], p.crop,
                   p.min_scale)
    else:
        x = random_crop(image, valid_hw, keys[0], p.crop)
    x = flip_transpose(x, keys[1])
    x = exposure_gamma(x, keys[2], p.exposure_range, p.gamma_range)
    if p.p_frame > 0:
        # Before the alteration, as a framed photo's border is altered with the rest.
        x = add_frame(x, jax.random.fold_in(keys[1], 1), p.p_frame)
    return x


def crop_example(image: jax.Array, valid_hw: jax.Array, key: jax.Array, p: CropParams
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One training example: (image uint8[C, C, 3], targets bool[C, C, 4], altered bool[])."""
    keys = jax.random.split(key, 7)
    x = clean_crop(image, valid_hw, key, p)
    center, r = sample_crop_square(keys[3], p.crop, p.half_size_range)
    ratio = jax.random.uniform(keys[4], (), jnp.float32, *p.ratio_range)
    altered = jax.random.uniform(keys[5], ()) < p.p_altered
    # A ratio of exactly 1 leaves every pixel as it was (see corruptions.discolor).
    x = corruptions.discolor(x, center, r, jnp.where(altered, ratio, 1.0), p.overflow)
    if p.jpeg_quality:
        x = jpeg.jpeg_roundtrip(x, p.jpeg_quality)
    targets = localiser.edge_targets(center, r, altered, p.crop, p.crop)
    return x, targets, altered
