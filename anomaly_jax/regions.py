"""Region masks for the alterations of `anomaly_jax.edits`: where an edit may change pixels.

Two shapes, both placed by seed 1's square sampler (`corruptions._sample_square`, reused so a
region's centre and size follow exactly the same distribution as discolor's square):

* `square` - the square rows [row-r, row+r), columns [col-r, col+r): the same pixels as
             `corruptions.discolor` alters (built from `corruptions._square_spans`).
* `free`   - a free-form blob in the spirit of DRAEM's Perlin-noise masks: smooth value noise
             (a random grid of 4..8 cells a side over the square, bilinearly interpolated)
             thresholded against the distance to the centre, so the blob is irregular but
             lumped around the centre. It lies inside the square (the square is its bounding
             box, so its area is at most 4r^2) and always holds the centre pixel (row, col)
             when the square is not empty (r >= 1).

Everything is traced: centre, half-size, the cell counts and the noise are arrays, so one
compiled function serves every region. Randomness comes only from the key passed in (typed
or raw uint32[2], as in `corruptions`).

What a researcher may change: the blob's look - `CELLS_MIN`/`CELLS_MAX` (coarser or finer
lobes) and `RADIAL_WEIGHT` (how strongly the blob is pulled towards a disc); the square itself
is seed 1's and should stay as it is.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from anomaly_jax.corruptions import _sample_square, _square_spans, _typed_key

Array = jax.Array
SHAPES = ("square", "free")

# Value-noise cells across the square, drawn per example and per axis in [MIN, MAX].
CELLS_MIN = 4
CELLS_MAX = 8
# A pixel is in the blob when noise > RADIAL_WEIGHT * d, d = its distance to the centre in
# units of r. With the noise mostly in [0.3, 0.7] the blob reaches about 0.4..0.9 r: lobed,
# not a disc, sometimes with a detached lobe (as DRAEM's masks), and, the noise being < 1,
# never farther than r / RADIAL_WEIGHT from the centre (and never outside the square).
RADIAL_WEIGHT = 0.8


def square_mask(height: int, width: int, center: Array, half_size: Array) -> Array:
    """bool[H, W]: the square rows [row-r, row+r) x cols [col-r, col+r), clipped to the image.

    center: int32[2] (row, col); half_size: int32[] (r); height, width: static ints.
    Exactly the pixels `corruptions.discolor(image, center, half_size, ...)` alters (negative
    starts clamped to 0, as there).
    """
    rows_in, cols_in = _square_spans((height, width), center, half_size)
    return rows_in[:, None] & cols_in[None, :]


def _lerp_axis(n: int, start: Array, size: Array, cells: Array) -> tuple[Array, Array]:
    """For pixels 0..n-1 along one axis: (node index int32[n], fraction float32[n]) into a grid
    of `cells` cells spread over [start, start + size) (pixel centres at i + 0.5)."""
    pos = (jnp.arange(n, dtype=jnp.float32) + 0.5 - start) / size  # 0..1 across the square
    g = jnp.clip(pos, 0.0, 1.0) * cells.astype(jnp.float32)
    idx = jnp.clip(jnp.floor(g).astype(jnp.int32), 0, cells - 1)
    return idx, g - idx.astype(jnp.float32)


def free_mask(key: Array, height: int, width: int, center: Array, half_size: Array) -> Array:
    """bool[H, W]: a free-form blob inside the square of (center, half_size); see the module doc.

    key: PRNG key; center: int32[2]; half_size: int32[]. Contains the centre pixel whenever
    half_size >= 1 and the centre lies in the image; empty when half_size <= 0.
    """
    k_cells, k_grid = jax.random.split(_typed_key(key))
    center = jnp.asarray(center, jnp.int32)
    r = jnp.asarray(half_size, jnp.int32)
    box = square_mask(height, width, center, r)
    cells = jax.random.randint(k_cells, (2,), CELLS_MIN, CELLS_MAX + 1, jnp.int32)
    # A fixed-size grid (static shape); only its first cells+1 nodes per axis are read.
    grid = jax.random.uniform(k_grid, (CELLS_MAX + 1, CELLS_MAX + 1), jnp.float32)
    rf = jnp.maximum(r, 1).astype(jnp.float32)  # r = 0: any finite value, the box is empty
    cf = center.astype(jnp.float32)
    i0, ty = _lerp_axis(height, cf[0] - rf, 2.0 * rf, cells[0])
    j0, tx = _lerp_axis(width, cf[1] - rf, 2.0 * rf, cells[1])
    ty, tx = ty[:, None], tx[None, :]
    a = grid[i0[:, None], j0[None, :]]
    b = grid[i0[:, None], j0[None, :] + 1]
    c = grid[i0[:, None] + 1, j0[None, :]]
    d = grid[i0[:, None] + 1, j0[None, :] + 1]
    noise = (a * (1 - tx) + b * tx) * (1 - ty) + (c * (1 - tx) + d * tx) * ty
    # The square [c-r, c+r) is centred on the pixel corner at c, so distances are measured
    # from there to pixel centres.
    dy = (jnp.arange(height, dtype=jnp.float32) + 0.5 - cf[0]) / rf
    dx = (jnp.arange(width, dtype=jnp.float32) + 0.5 - cf[1]) / rf
    dist = jnp.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)
    blob = noise > RADIAL_WEIGHT * dist
    centre = (jnp.arange(height)[:, None] == center[0]) & (jnp.arange(width)[None, :] == center[1])
    return box & (blob | centre)


def sample_region(key: Array, height: int, width: int, shape: str = "square") -> dict[str, Array]:
    """A region: {center int32[2], half_size int32[], mask bool[H, W]}.

    shape: "square" | "free" (static). The key is split into (square, noise): the centre and
    half-size are seed 1's (`corruptions._sample_square` on the first half), so the same key
    places a square and a free region on the same square; the noise half shapes the blob.
    """
    if shape not in SHAPES:
        raise ValueError(f"regions: unknown shape {shape!r}; expected one of {SHAPES}")
    k_square, k_noise = jax.random.split(_typed_key(key))
    center, half_size = _sample_square(k_square, height, width)
    if shape == "square":
        mask = square_mask(height, width, center, half_size)
    else:
        mask = free_mask(k_noise, height, width, center, half_size)
    return {"center": center, "half_size": half_size, "mask": mask}
