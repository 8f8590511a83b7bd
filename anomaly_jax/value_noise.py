"""Value noise for the procedural landscapes: hashed random nodes on grids of cells,
interpolated by broadcasts and reshapes (no gathers, no matmuls), summed over octaves.

Used by `anomaly_jax.landscape_scene` (clouds, ridges, texture fields); see
`anomaly_jax.synthetic` for how the pieces make an image.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# Octaves of value noise; octave l has about 3 * 2**l cells across the longer side.
_OCTAVES = 6


_NUM_RIDGES = 3


def _hash(x: Array) -> Array:
    """uint32 -> uint32 avalanche hash (lowbias32); cheap counter-based randomness."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _hash_np(x: np.ndarray) -> np.ndarray:
    """numpy twin of `_hash` (uint32 in, uint32 out)."""
    x = x.astype(np.uint64) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return (x ^ (x >> 16)).astype(np.uint32)


def _hash_uniform(seed: Array, shape: tuple[int, ...]) -> Array:
    """float32[shape] uniform in [-1, 1), a pure function of (seed uint32[], position)."""
    idx = jnp.arange(math.prod(shape), dtype=jnp.uint32).reshape(shape)
    bits = _hash(idx ^ _hash(seed))
    return (bits >> 8).astype(jnp.float32) * (2.0 / (1 << 24)) - 1.0


def _upsample(g: Array, axis: int, cell: int, size: int, offset: int, smooth: bool) -> Array:
    """g: [..., K, ...] along `axis` -> [..., size, ...]: K-1 cells of `cell` samples each.

    Node k lands on sample k * cell - offset; between nodes the weight of the next node is
    t = j / cell (linear) or its smoothstep (value noise without creases). Built from
    broadcasts and a reshape, so XLA fuses it without gathers; results do not depend on the
    other axes' sizes.
    """
    if cell == 1:
        return jax.lax.slice_in_dim(g, offset, offset + size, axis=axis)
    t = np.arange(cell, dtype=np.float64) / cell
    t = (t * t * (3.0 - 2.0 * t) if smooth else t).astype(np.float32)
    shape = [1] * (g.ndim + 1)
    shape[axis + 1] = cell
    t = jnp.asarray(t.reshape(shape))
    lo = jnp.expand_dims(jax.lax.slice_in_dim(g, 0, g.shape[axis] - 1, axis=axis), axis + 1)
    hi = jnp.expand_dims(jax.lax.slice_in_dim(g, 1, g.shape[axis], axis=axis), axis + 1)
    out = lo + (hi - lo) * t
    out = out.reshape(g.shape[:axis] + (-1,) + g.shape[axis + 1 :])
    return jax.lax.slice_in_dim(out, offset, offset + size, axis=axis)


def _cells(side: int) -> tuple[int, ...]:
    """Cell size in samples of each octave, coarsest first (about 3 * 2**l cells a side)."""
    # Nothing finer than 2 samples: white noise between samples would be interpolated into a
    # visible lattice of diamonds; the grain plane carries the texture below that.
    return tuple(max(2, round(side / (3 * 2**level))) for level in range(_OCTAVES))


# Noise fields of one image, value noise (fBm) on the coarse grid: (name, channels, rows).
# Rows are in coarse-grid heights h; the crest profiles are one row.
_FIELDS = (
    ("tex", 5, 1),  # rock; land clumps, fine detail, dryness; ripples
    ("cloud", 2, 2),  # density, lighting: twice the sky's height, read in perspective
    ("ridge", _NUM_RIDGES + 1, 0),  # crest profiles of the ridges and of a tree line
)


def _octaves(h: int, w: int) -> list[tuple[int, int, int]]:
    """Static layout of the noise octaves on an [h, w] grid: (cell, offset, kx) each.

    Every field shares the cells (in samples) and the column nodes. Octaves are offset from
    each other so that their nodes do not pile up on sample 0."""
    out = []
    for level, cell in enumerate(_cells(max(h, w))):
        offset = (level * 5) % cell
        out.append((cell, offset, -(-(w + offset) // cell) + 1))
    return out


def _field_rows(h: int, w: int) -> list[list[tuple[int, int, int]]]:
    """Per octave, per field: (first node row, channels, node rows ky) in that octave's
    stacked node array [sum of channels * ky, kx]."""
    out = []
    for cell, offset, _ in _octaves(h, w):
        start, fields = 0, []
        for _, channels, rows in _FIELDS:
            ky = 2 if rows == 0 else -(-(rows * h + offset) // cell) + 1
            fields.append((start, channels, ky))
            start += channels * ky
        out.append(fields)
    return out


def _channel_of_row(h: int, w: int) -> list[np.ndarray]:
    """Per octave: int32[rows] index into the stacked channels of `_FIELDS` of each node row."""
    out = []
    for fields in _field_rows(h, w):
        base, rows = 0, []
        for (_, channels, ky), (_, c, _) in zip(fields, _FIELDS):
            rows.append(base + np.repeat(np.arange(channels), ky))
            base += c
        out.append(np.concatenate(rows).astype(np.int32))
    return out


def _noise_nodes(seed: Array, h: int, w: int) -> Array:
    """float32[N] uniform in [-1, 1): the nodes of every octave, stacked."""
    size = sum((f[-1][0] + f[-1][1] * f[-1][2]) * kx for f, (_, _, kx) in zip(_field_rows(h, w), _octaves(h, w)))
    return _hash_uniform(seed, (size,))


def _noise_cols(nodes: Array, amps: Array, h: int, w: int) -> list[Array]:
    """float32[rows, w] per octave: nodes scaled by their octave amplitude and interpolated
    along x. amps: float32[channels of all fields, _OCTAVES]."""
    out, start = [], 0
    for level, ((cell, offset, kx), fields, channel) in enumerate(
        zip(_octaves(h, w), _field_rows(h, w), _channel_of_row(h, w))
    ):
        rows = channel.shape[0]
        grid = nodes[start : start + rows * kx].reshape(rows, kx) * amps[channel, level][:, None]
        start += rows * kx
        out.append(_upsample(grid, 1, cell, w, offset, True))
    return out


def _noise_field(cols: list[Array], field: int, h: int, w: int) -> Array:
    """float32[channels, rows * h (or 1), w]: field `field` of `_FIELDS`, octaves summed."""
    _, channels, rows = _FIELDS[field]
    out = None
    for (cell, offset, _), fields, c in zip(_octaves(h, w), _field_rows(h, w), cols):
        start, _, ky = fields[field]
        grid = c[start : start + channels * ky].reshape(channels, ky, w)
        if rows == 0:
            octave = grid[:, :1]
        else:
            octave = _upsample(grid, 1, cell, rows * h, offset, True)
        out = octave if out is None else out + octave
    return out


def _octave_amps(persistence: Array, first: Array) -> Array:
    """float32[C, _OCTAVES]: persistence**level from octave `first` on, unit power overall.

    persistence, first: float32[C].
    """
    level = jnp.arange(_OCTAVES, dtype=jnp.float32)
    amps = persistence[:, None] ** level * (level >= first[:, None])
    # A uniform [-1, 1) value has variance 1/3; interpolation lowers it further.
    return amps * jnp.sqrt(3.0) / jnp.sqrt(jnp.sum(amps**2, axis=1, keepdims=True))

