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
compiled function serves every region. The blob is computed in integers (see `free_mask`), so
a key gives the same mask eagerly, under jit and on any backend. Randomness comes only from the key passed in (typed
or raw uint32[2], as in `corruptions`).

What a researcher may change: the blob's look - `CELLS_MIN`/`CELLS_MAX` (coarser or finer
lobes) and `RADIAL_WEIGHT` (how strongly the blob is pulled towards a disc); the square itself
is seed 1's and should stay as it is.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from anomaly_jax.config import CorruptionConfig, choices
from anomaly_jax.corruptions import _sample_square, _square_spans
from anomaly_jax.example_labels import typed_key

Array = jax.Array
SHAPES = choices(CorruptionConfig, "region")  # ("square", "free")

# Value-noise cells across the square, drawn per example and per axis in [MIN, MAX].
CELLS_MIN = 4
CELLS_MAX = 8
# A pixel is in the blob when noise > RADIAL_WEIGHT * d, d = its distance to the centre in
# units of r. With the noise mostly in [0.3, 0.7] the blob reaches about 0.4..0.9 r: lobed,
# not a disc, sometimes with a detached lobe (as DRAEM's masks), and, the noise being < 1,
# never farther than r / RADIAL_WEIGHT from the centre (and never outside the square).
# Keep the denominator small: the comparison is exact in float32 while
# denominator * NOISE_ONE * 4r < 2**24 (r < 820 for 5); beyond, still the same bits everywhere.
RADIAL_WEIGHT = (4, 5)  # 4/5 = 0.8 as (numerator, denominator): compared in integers


def square_mask(height: int, width: int, center: Array, half_size: Array) -> Array:
    """bool[H, W]: the square rows [row-r, row+r) x cols [col-r, col+r), clipped to the image.

    center: int32[2] (row, col); half_size: int32[] (r); height, width: static ints.
    Exactly the pixels `corruptions.discolor(image, center, half_size, ...)` alters (negative
    starts clamped to 0, as there).
    """
    rows_in, cols_in = _square_spans((height, width), center, half_size)
    return rows_in[:, None] & cols_in[None, :]


NOISE_ONE = 1 << 10  # noise values are integers in [0, NOISE_ONE): 1.0 in fixed point


def _cell_position(n: int, center: Array, r: Array, cells: Array) -> tuple[Array, Array]:
    """(node index int32[n], remainder int32[n]) of pixels 0..n-1 along an axis: `cells` cells
    spread over the square [c - r, c + r) (pixel centres at i + 1/2), clamped at its ends.

    The pixel's position in the square is (2i + 1 - 2c + 2r) / (4r) cells, so the node index
    and the remainder (in units of 1/(4r) cell) come from one integer division per pixel of
    the axis (not per pixel of the image).
    """
    i = jnp.arange(n, dtype=jnp.int32)
    den = 4 * r
    num = jnp.clip(2 * i + 1 - 2 * center + 2 * r, 0, den) * cells
    idx = jnp.minimum(num // den, cells - 1)
    return idx, num - idx * den


def _lerp_rows(grid: Array, n: int, center: Array, r: Array, cells: Array) -> Array:
    """int32[n, nodes]: the grid's columns linearly interpolated at pixel rows 0..n-1 (see
    `_cell_position`), rounded half up to integers."""
    idx, rem = _cell_position(n, center, r, cells)
    den = 4 * r
    g0, g1 = grid[idx], grid[idx + 1]
    return (g0 * (den - rem)[:, None] + g1 * rem[:, None] + den // 2) // den


def _lerp_columns_scaled(rows: Array, n: int, center: Array, r: Array, cells: Array) -> Array:
    """int32[H, n]: rows int32[H, nodes] linearly interpolated at pixel columns 0..n-1, NOT
    divided: in units of 1/(4r) (each value is at most max(rows) * 4r).

    A sum over the nodes of rows[:, k] times a per-column weight (non-zero for the two nodes
    around the column), i.e. a product of [H, nodes] and [nodes, n] matrices, where a gather
    and a per-pixel division by 4r measured 200 masks/s at 800x800 on 2 CPU cores.
    """
    idx, rem = _cell_position(n, center, r, cells)
    den = 4 * r
    nodes = jnp.arange(rows.shape[1], dtype=jnp.int32)[:, None]
    weight = (jnp.where(nodes == idx[None, :], den - rem[None, :], 0)
              + jnp.where(nodes == idx[None, :] + 1, rem[None, :], 0))  # [nodes, n]
    # A dot, not broadcast multiply-adds: XLA fuses elementwise producers into every consumer,
    # and erase (whose push-pull reads the mask at several places, per channel) recomputed the
    # blob each time - 3x the cost of erase itself. A dot is computed once. Exact in int32.
    return jnp.dot(rows, weight, preferred_element_type=jnp.int32)


def free_mask(key: Array, height: int, width: int, center: Array, half_size: Array) -> Array:
    """bool[H, W]: a free-form blob inside the square of (center, half_size); see the module doc.

    key: PRNG key; center: int32[2]; half_size: int32[]. Contains the centre pixel whenever
    half_size >= 1 and the centre lies in the image; empty when half_size <= 0.
    Integer arithmetic (and float32 only in single products and one comparison), so the
    same key gives the same mask eagerly, under jit and on any backend.
    """
    k_cells, k_grid = jax.random.split(typed_key(key))
    center = jnp.asarray(center, jnp.int32)
    r = jnp.asarray(half_size, jnp.int32)
    box = square_mask(height, width, center, r)
    r = jnp.maximum(r, 1)  # r = 0: any positive value, the box is empty anyway
    cells = jax.random.randint(k_cells, (2,), CELLS_MIN, CELLS_MAX + 1, jnp.int32)
    # A fixed-size grid (static shape); only its first cells+1 nodes per axis are read.
    grid = jax.random.randint(k_grid, (CELLS_MAX + 1, CELLS_MAX + 1), 0, NOISE_ONE, jnp.int32)
    rows = _lerp_rows(grid, height, center[0], r, cells[0])  # [H, CELLS_MAX + 1]
    scaled = _lerp_columns_scaled(rows, width, center[1], r, cells[1])  # noise * 4r
    # noise / NOISE_ONE > (a / b) |p - c| / r with RADIAL_WEIGHT = (a, b), p - c = (DY, DX)/2
    # (the square is centred on the pixel corner c) and noise = scaled / (4r), squared:
    # (b scaled)^2 > (2 a NOISE_ONE)^2 (DY^2 + DX^2). b * scaled and DY^2 + DX^2 are exact
    # float32 integers for r < 820 (b * 1023 * 4r < 2**24; larger r rounds, the same way
    # everywhere); the squares and the scale are single products, so no rounding can depend
    # on how XLA fuses them. The rounding of the old per-pixel noise / 4r is gone with it.
    dy = (2 * (jnp.arange(height, dtype=jnp.int32) - center[0]) + 1).astype(jnp.float32)
    dx = (2 * (jnp.arange(width, dtype=jnp.int32) - center[1]) + 1).astype(jnp.float32)
    a, b = RADIAL_WEIGHT
    lhs = (b * scaled).astype(jnp.float32)
    blob = lhs * lhs > float((2 * a * NOISE_ONE) ** 2) * (dy[:, None] ** 2 + dx[None, :] ** 2)
    centre = (jnp.arange(height)[:, None] == center[0]) & (jnp.arange(width)[None, :] == center[1])
    return box & (blob | centre)


def mask_in_window(key: Array, shape: str, center: Array, half_size: Array, origin: Array,
                   size: tuple[int, int]) -> Array:
    """bool[h, w]: the mask of the region drawn from `key`, on the window of static size
    (h, w) whose top-left pixel is `origin` int32[2] (row, col) in the image.

    key: the key given to `sample_region`; center int32[2], half_size int32[]: the region it
    placed (image coordinates). Both shapes depend only on a pixel's offset from the centre,
    so the window's mask is exactly `sample_region(...)["mask"]` cut to the window whenever the
    window holds the square's part inside the image (what `edit_loop` guarantees): an edit on
    a window gets its mask without building the whole image's.
    """
    if shape not in SHAPES:
        raise ValueError(f"regions: unknown shape {shape!r}; expected one of {SHAPES}")
    _, k_noise = jax.random.split(typed_key(key))
    local = jnp.asarray(center, jnp.int32) - jnp.asarray(origin, jnp.int32)
    if shape == "square":
        return square_mask(*size, local, half_size)
    return free_mask(k_noise, *size, local, half_size)


def whole_mask(key: Array, shape: str, center: Array, half_size: Array, height: int,
               width: int) -> Array:
    """bool[H, W]: `mask_in_window` on the whole image - the mask `sample_region` returns."""
    return mask_in_window(key, shape, center, half_size, jnp.zeros(2, jnp.int32), (height, width))


def sample_region(key: Array, height: int, width: int, shape: str = "square") -> dict[str, Array]:
    """A region: {center int32[2], half_size int32[], mask bool[H, W]}.

    shape: "square" | "free" (static). The key is split into (square, noise): the centre and
    half-size are seed 1's (`corruptions._sample_square` on the first half), so the same key
    places a square and a free region on the same square; the noise half shapes the blob
    (`whole_mask`).
    """
    if shape not in SHAPES:
        raise ValueError(f"regions: unknown shape {shape!r}; expected one of {SHAPES}")
    k_square, _ = jax.random.split(typed_key(key))
    center, half_size = _sample_square(k_square, height, width)
    mask = whole_mask(key, shape, center, half_size, height, width)
    return {"center": center, "half_size": half_size, "mask": mask}
