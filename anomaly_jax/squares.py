"""The structured square decoder: an exhaustive search over every axis-aligned square.

Seed 1's alteration is a square `image[x-r:x+r, y-r:y+r]` (rows [x-r, x+r), columns
[y-r, y+r)). Whatever produces per-pixel evidence for the square's four edges (the physics
baseline in `anomaly_jax.physics`, or the learned localiser in `anomaly_jax.localiser`), the
answer is decoded here the same way: score every candidate (x, y, r) within a prior by the sum
of its edge evidence and take the best. Prefix sums along each edge direction make a
candidate O(1), so the search over all ~10^8 candidates of an 800x800 photo is a scan over r
of a few whole-array slices.

Edge evidence is four maps on the pixel *boundaries*, `edges: float32[4, H+1, W+1]`,
channels in the order `EDGE_NAMES`:

* `top[i, j]`    evidence that the boundary above row i (between rows i-1 and i) at column j
                 is the square's top edge (i in [0, H], j in [0, W) - column W unused);
* `bottom[i, j]` the same boundary as the square's bottom edge (the square ends at row i-1);
* `left[i, j]`   the boundary left of column j (between columns j-1 and j) at row i is the
                 square's left edge (i in [0, H) - row H unused, j in [0, W]);
* `right[i, j]`  the same boundary as the square's right edge.

score(x, y, r) = (sum over the square's perimeter of its four edges' evidence) / (8r)**power.
`power=0` is the plain sum, right for log-likelihood ratios (the learned model); `power=0.5`
divides by the standard deviation of a sum of 8r unit-variance noise terms, a z-score, right
for the physics baseline's bounded step evidence.

What a researcher may change: the prior (`SquarePrior`), and `power`. Evidence functions live
with whoever makes the evidence.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

EDGE_NAMES = ("top", "bottom", "left", "right")


@dataclasses.dataclass(frozen=True)
class SquarePrior:
    """Where a square may be: centre rows/cols in [lo, hi] (inclusive), half-size in
    [r_min, r_max] and the whole square inside the image (r <= distance to every border)."""
    height: int
    width: int
    row_lo: int
    row_hi: int
    col_lo: int
    col_hi: int
    r_min: int
    r_max: int

    @classmethod
    def seed(cls, height: int, width: int) -> "SquarePrior":
        """Seed 1's sampling range scaled by size/800, exactly as
        `corruptions._sample_square`: centre in [H/8, H - H/8], r >= 30*min(H, W)/800."""
        r_min = max(1, 30 * min(height, width) // 800)
        return cls(height, width, height // 8, height - height // 8, width // 8,
                   width - width // 8, r_min, min(height, width) // 2)

    @classmethod
    def anywhere(cls, height: int, width: int, r_min: int = 1) -> "SquarePrior":
        """Any square inside the image with half-size >= r_min."""
        return cls(height, width, r_min, height - r_min, r_min, width - r_min, r_min,
                   min(height, width) // 2)


def _prefix(a: jax.Array, axis: int, pad: int) -> jax.Array:
    """Exclusive prefix sums along `axis` (a leading zero), zero-padded by `pad` on all sides
    so that every slice of the search stays in bounds (out-of-image candidates are masked)."""
    c = jnp.cumsum(a, axis=axis, dtype=jnp.float32)
    zero = [(0, 0), (0, 0)]
    zero[axis] = (1, 0)
    c = jnp.pad(c, zero)
    # Beyond the end the running sum stays at its total (edge), before the start at 0.
    widths = [(pad, pad), (pad, pad)]
    return jnp.pad(c, widths, mode="edge")


def score_maps(edges: jax.Array, prior: SquarePrior, power: float = 0.0
               ) -> tuple[jax.Array, jax.Array]:
    """The best score and half-size at every candidate centre.

    edges: float32[4, H+1, W+1] (see the module docstring).
    Returns (score float32[R, C], half_size int32[R, C]) over centres
    rows prior.row_lo..row_hi and cols prior.col_lo..col_hi; a centre with no valid square
    scores -inf.
    """
    h, w = prior.height, prior.width
    if edges.shape != (4, h + 1, w + 1):
        raise ValueError(f"squares: expected edges float32[4, {h + 1}, {w + 1}] for the prior, "
                         f"got {list(edges.shape)}")
    pad = prior.r_max + 1
    top, bottom, left, right = (edges[k].astype(jnp.float32) for k in range(4))
    # Horizontal edges sum along columns; vertical edges along rows.
    top_c, bottom_c = _prefix(top, 1, pad), _prefix(bottom, 1, pad)
    left_c, right_c = _prefix(left, 0, pad), _prefix(right, 0, pad)
    n_rows = prior.row_hi - prior.row_lo + 1
    n_cols = prior.col_hi - prior.col_lo + 1
    rows = jnp.arange(prior.row_lo, prior.row_hi + 1, dtype=jnp.int32)[:, None]
    cols = jnp.arange(prior.col_lo, prior.col_hi + 1, dtype=jnp.int32)[None, :]
    reach = jnp.minimum(jnp.minimum(rows, h - rows), jnp.minimum(cols, w - cols))

    def window(c, row0, col0):
        # c[row0 + i, col0 + j] for the centre grid; +pad maps image to padded coordinates.
        return lax.dynamic_slice(c, (row0 + pad, col0 + pad), (n_rows, n_cols))

    def body(carry, r):
        best, best_r = carry
        x0, y0 = prior.row_lo, prior.col_lo
        s_top = window(top_c, x0 - r, y0 + r) - window(top_c, x0 - r, y0 - r)
        s_bottom = window(bottom_c, x0 + r, y0 + r) - window(bottom_c, x0 + r, y0 - r)
        s_left = window(left_c, x0 + r, y0 - r) - window(left_c, x0 - r, y0 - r)
        s_right = window(right_c, x0 + r, y0 + r) - window(right_c, x0 - r, y0 + r)
        total = (s_top + s_bottom + s_left + s_right) / (8.0 * r.astype(jnp.float32)) ** power
        total = jnp.where(r <= reach, total, -jnp.inf)
        better = total > best
        return (jnp.where(better, total, best), jnp.where(better, r, best_r)), None

    init = (jnp.full((n_rows, n_cols), -jnp.inf, jnp.float32),
            jnp.full((n_rows, n_cols), prior.r_min, jnp.int32))
    radii = jnp.arange(prior.r_min, prior.r_max + 1, dtype=jnp.int32)
    (best, best_r), _ = lax.scan(body, init, radii)
    return best, best_r


def best_square(edges: jax.Array, prior: SquarePrior, power: float = 0.0
                ) -> dict[str, jax.Array]:
    """The highest-scoring square: {center int32[2] (row, col), half_size int32[], score
    float32[]}. Ties go to the first in (row, col, r) order."""
    best, best_r = score_maps(edges, prior, power)
    flat = jnp.argmax(best.reshape(-1))
    i, j = jnp.divmod(flat, best.shape[1])
    return {"center": jnp.stack([i + prior.row_lo, j + prior.col_lo]).astype(jnp.int32),
            "half_size": best_r[i, j], "score": best[i, j]}


@functools.partial(jax.jit, static_argnames=("prior", "power"))
def best_squares(edges: jax.Array, prior: SquarePrior, power: float = 0.0
                 ) -> dict[str, jax.Array]:
    """`best_square` for a batch edges float32[B, 4, H+1, W+1], one image at a time
    (`lax.map`: the per-centre maps of a whole batch would not fit comfortably)."""
    return lax.map(lambda e: best_square(e, prior, power), edges)


def square_edges_target(center: jax.Array, half_size: jax.Array, height: int, width: int,
                        enabled: jax.Array | bool = True) -> jax.Array:
    """The four edge maps a perfect detector would give for one square: bool[4, H+1, W+1].

    center: int32[2]; half_size: int32[]. The square is clipped to the image; an edge lying
    outside the image is absent. `enabled` False gives all-False maps (a clean image).
    """
    x, y = center[0], center[1]
    r = half_size
    i = jnp.arange(height + 1, dtype=jnp.int32)[:, None]
    j = jnp.arange(width + 1, dtype=jnp.int32)[None, :]
    row0, row1 = jnp.maximum(x - r, 0), jnp.minimum(x + r, height)
    col0, col1 = jnp.maximum(y - r, 0), jnp.minimum(y + r, width)
    in_cols = (j >= col0) & (j < col1)
    in_rows = (i >= row0) & (i < row1)
    top = (i == x - r) & (x - r >= 0) & in_cols
    bottom = (i == x + r) & (x + r <= height) & in_cols
    left = (j == y - r) & (y - r >= 0) & in_rows
    right = (j == y + r) & (y + r <= width) & in_rows
    return jnp.stack([top, bottom, left, right]) & enabled


def brute_force_best(edges: np.ndarray, prior: SquarePrior, power: float = 0.0
                     ) -> tuple[tuple[int, int], int, float]:
    """A direct numpy loop over every candidate, for tests: ((row, col), r, score)."""
    top, bottom, left, right = (np.asarray(e, np.float64) for e in edges)
    best = ((0, 0), 0, -np.inf)
    for x in range(prior.row_lo, prior.row_hi + 1):
        for y in range(prior.col_lo, prior.col_hi + 1):
            reach = min(x, prior.height - x, y, prior.width - y)
            for r in range(prior.r_min, min(prior.r_max, reach) + 1):
                s = (top[x - r, y - r:y + r].sum() + bottom[x + r, y - r:y + r].sum()
                     + left[x - r:x + r, y - r].sum() + right[x - r:x + r, y + r].sum())
                s /= (8.0 * r) ** power
                if s > best[2]:
                    best = ((x, y), r, s)
    return best
