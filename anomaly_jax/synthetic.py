"""Procedural clean images made on the device: landscapes, solid colours, black.

The embedded default data set, so that every config runs on a fresh machine with no downloads.

* `landscapes` - photo-like landscapes: a sky gradient whose hue follows a time of day, a sun
  glow, fBm clouds seen in perspective, one to three fBm mountain ridges (or a tree line) with
  atmospheric perspective, snow and slope shading, a foreground of vegetation and/or water
  that reflects the scene, global lighting (exposure, white balance, contrast, vignette) and
  fine texture and grain. Texture and edges exist at every scale, and bright skies reach 255, which
  matters for seed 1's wrapping discolor (its "neon" patches).
* `solid` - one uniformly random colour per image (seed 2's "solid" data set).
* `black` - all zeros (seed 2's "black" data set).
* `generate` - dispatch on the `data.source` name.

Every image is drawn from its own key (`jax.random.split(key, n)[i]`), so image i does not
depend on n nor on how the batch is chunked.

How it stays cheaper than decoding a JPEG of the same size (scripts/bench_synthetic.py):

1. All the structure (sky, clouds, ridges, land, water reflection, lighting) is rendered in
   float32 on a coarse grid of at most `_MAX_LOW_SIDE` samples a side (step s, a power of
   two: 8 for 800 px, 1 up to 128 px): sample i sits on full-resolution row i * s. Images
   are planar there. Value noise is a sum of octaves, each a grid of hashed random nodes
   interpolated by broadcasts and reshapes (no gathers, no matmuls). Parameters come from
   one hashed draw per image (no threefry: it dominated the compile time).
2. The coarse colour (x 8, int16) is interpolated along x to full width.
3. One int16 pass at full resolution interpolates along y, adds texture and grain, rounds and
   casts to uint8. Texture below s pixels comes from a window, at an offset drawn per image,
   of a fixed plane (white noise plus 2, 4 and 8 px value noise, mostly luminance) built once
   per size with numpy: hashing every pixel cost more than the rest of the pass. Its
   amplitude is set per row (sky smooth, ground rough).

Each step is its own jitted function, called in turn by `landscapes_from_keys`: XLA on CPU
drops `optimization_barrier`, and fused across steps it recomputes every producer per
consumer element (20x slower). So call `landscapes` from outside `jax.jit`; inside one it
still gives the same bytes, only slower.

What a researcher may change: the palettes below (`_SKY_PALETTES`, `_LAND_PALETTES`,
`_ROCK_PALETTES`), the ranges in `_UNIFORM_PARAMS`, `_MAX_LOW_SIDE` (a larger grid is
sharper and slower; detail below s pixels comes only from the grain plane), `_GRAIN_GAIN`,
and `_CHUNK_LOW_PIXELS` (memory per chunk; results do not depend on it).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from anomaly_jax.config import SYNTHETIC_SOURCES

Array = jax.Array

SOURCES = SYNTHETIC_SOURCES  # the sources this module makes (defined in the config schema)

# Longest side of the coarse grid the structure is rendered on (the step s is the smallest
# power of two that fits the image in it).
_MAX_LOW_SIDE = 128
# Coarse-grid samples rendered per chunk by `landscapes_from_keys` (25 images at 800 px):
# bounds memory (about 200 bytes of float intermediates per sample, plus the chunk's output)
# and keeps the intermediates near the cache (64 images at 800 px ran slower per image than
# 16), without changing any result.
_CHUNK_LOW_PIXELS = 1 << 18
# Octaves of value noise; octave l has about 3 * 2**l cells across the longer side.
_OCTAVES = 6
# Margin of the grain plane: each image reads its grain from an H x W window at a random
# offset below this.
_GRAIN_PAD = 64
# Fixed point: coarse values are stored as value * 2**_FRAC_BITS in int16.
_FRAC_BITS = 3

# Sky palettes, display values in [0, 1]: zenith, horizon, sun colour (rows of 3).
_SKY_PALETTES = np.array(
    [
        [[0.16, 0.38, 0.78], [0.78, 0.89, 1.00], [1.00, 0.98, 0.92]],  # clear day
        [[0.05, 0.27, 0.70], [0.62, 0.80, 0.97], [1.00, 1.00, 0.95]],  # deep blue
        [[0.30, 0.42, 0.72], [1.00, 0.80, 0.52], [1.00, 0.88, 0.60]],  # golden hour
        [[0.14, 0.14, 0.36], [1.00, 0.52, 0.30], [1.00, 0.70, 0.40]],  # sunset
        [[0.52, 0.56, 0.62], [0.90, 0.91, 0.93], [1.00, 1.00, 1.00]],  # overcast
        [[0.40, 0.60, 0.82], [0.95, 0.92, 0.85], [1.00, 0.97, 0.88]],  # hazy morning
        [[0.10, 0.20, 0.42], [0.55, 0.70, 0.85], [0.95, 0.95, 1.00]],  # cold dusk
    ],
    np.float32,
)
# Vegetation palettes: dark, light, dry (mixed by texture).
_LAND_PALETTES = np.array(
    [
        [[0.10, 0.22, 0.06], [0.42, 0.62, 0.18], [0.62, 0.60, 0.30]],  # meadow
        [[0.03, 0.10, 0.04], [0.16, 0.32, 0.12], [0.30, 0.34, 0.18]],  # forest
        [[0.30, 0.10, 0.03], [0.85, 0.50, 0.15], [0.55, 0.40, 0.20]],  # autumn
        [[0.40, 0.32, 0.22], [0.80, 0.70, 0.50], [0.60, 0.55, 0.40]],  # dry / sand
        [[0.18, 0.20, 0.12], [0.45, 0.48, 0.30], [0.55, 0.52, 0.45]],  # scrub
    ],
    np.float32,
)
# Rock colours of the mountains, before atmospheric haze.
_ROCK_PALETTES = np.array(
    [
        [0.32, 0.30, 0.30],
        [0.40, 0.32, 0.24],
        [0.22, 0.26, 0.30],
        [0.20, 0.28, 0.16],
        [0.45, 0.42, 0.38],
    ],
    np.float32,
)
_WATER_COLOURS = np.array(
    [[0.05, 0.18, 0.28], [0.05, 0.25, 0.30], [0.10, 0.22, 0.35], [0.12, 0.18, 0.16]],
    np.float32,
)
_NUM_RIDGES = 3


# ----------------------------------------------------------------------------- noise


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


# The noise is made in three steps, each its own compiled function so that XLA materialises
# every step (fused together, it re-hashed the nodes for every sample, 20x slower): hashed
# nodes of every octave and field in one array; per octave, all fields' nodes interpolated
# along x at once (small arrays); per field, along y - an outer axis, so the big loop is
# plain broadcasts - and octaves summed. Few, large kernels keep the compile time down.


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


# ----------------------------------------------------------------------------- helpers


def _smoothstep(lo: Array | float, hi: Array | float, x: Array) -> Array:
    t = jnp.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _mix(a: Array, b: Array, t: Array) -> Array:
    return a + (b - a) * t


def _shift(a: Array, k: int, axis: int) -> Array:
    """a moved k places towards higher indices along `axis`, the first entry repeated."""
    k = min(k, a.shape[axis] - 1)
    if k <= 0:
        return a
    a = jnp.moveaxis(a, axis, 0)
    out = jnp.concatenate([jnp.repeat(a[:1], k, axis=0), a[:-k]], axis=0)
    return jnp.moveaxis(out, 0, axis)


def _step(height: int, width: int) -> int:
    """Full-resolution pixels per coarse sample: the smallest power of two that fits."""
    s = 1
    while max(height, width) > s * _MAX_LOW_SIDE:
        s *= 2
    return s


def _coarse_shape(height: int, width: int) -> tuple[int, int]:
    """(h, w) of the coarse grid: one sample per s pixels plus the closing node."""
    s = _step(height, width)
    return -(-height // s) + 1, -(-width // s) + 1


# ----------------------------------------------------------------------------- parameters


def _key_seed(key: Array) -> Array:
    """uint32[]: a hash of all the words of a typed PRNG key (key data is already random;
    hashing it avoids threefry, whose compile time dominated this module's)."""
    words = jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
    seed = jnp.uint32(0x243F6A88)
    for i in range(words.shape[0]):
        seed = _hash(seed ^ words[i])
    return seed


# Scalar parameters drawn uniformly in [lo, hi): (name, count, lo, hi). Drawn in one
# vectorised op (one compiled kernel, where a dict of separately drawn scalars made ~50).
_UNIFORM_PARAMS = (
    ("sky_gamma", 1, 0.5, 1.6),
    ("horizon_y", 1, 0.38, 0.68),  # fraction of the height
    ("sun_x", 1, 0.0, 1.0),
    ("sun_y", 1, -0.1, 0.8),  # fraction of the sky height above the horizon
    ("sun_glow", 1, 0.0, 0.6),
    ("sun_size", 1, 0.08, 0.3),
    ("cloud_cover", 1, -0.7, 0.9),  # threshold on the cloud field
    ("cloud_soft", 1, 0.15, 0.8),
    ("cloud_bright", 1, 0.85, 1.2),
    ("cloud_shadow", 1, 0.45, 0.8),
    ("cloud_persistence", 1, 0.45, 0.65),
    ("num_ridges", 1, 1.0, _NUM_RIDGES + 1.0),
    ("ridge_top", 1, 0.12, 0.7),  # highest ridge above the horizon, fraction of sky height
    ("ridge_rough", _NUM_RIDGES, 0.45, 0.65),
    ("ridge_amp", _NUM_RIDGES, 0.7, 1.6),
    ("haze", 1, 0.25, 0.75),  # atmospheric perspective of the farthest ridge
    ("snow_depth", 1, 0.1, 0.5),
    ("land_contrast", 1, 2.0, 7.0),
    ("land_dry", 1, -1.0, 1.0),
    ("land_persistence", 1, 0.55, 0.75),
    # Share of the foreground covered by water, from the horizon down: 0 land, 1 all water.
    ("water", 1, 0.3, 1.2),
    ("water_reflect", 1, 0.45, 0.85),
    ("exposure", 1, 0.85, 1.3),
    ("white_balance", 3, 0.92, 1.08),
    ("contrast", 1, -0.2, 0.8),
    ("saturation", 1, 0.75, 1.3),
    ("vignette", 1, 0.0, 0.45),
    ("light_slope", 1, -0.25, 0.25),
    ("grain", 1, 0.6, 1.4),
    ("sky_blend", 1, 0.0, 1.0),
    # Coin flips: below the threshold means yes.
    ("p_glow", 1, 0.0, 1.0),
    ("p_snow", 1, 0.0, 1.0),
    ("p_treeline", 1, 0.0, 1.0),
    ("p_water", 1, 0.0, 1.0),
)
# Palette picks: (table, rows). All tables padded to 9 columns and stacked, so the seven
# picks are one gather.
_PICKS = ("sky", "sky", "rock", "rock", "rock", "land", "water")


def _pick_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float32[R, 9] stacked palettes, first row and row count of each pick's table)."""
    tables = {
        "sky": _SKY_PALETTES.reshape(-1, 9),
        "rock": _ROCK_PALETTES,
        "land": _LAND_PALETTES.reshape(-1, 9),
        "water": _WATER_COLOURS,
    }
    names = list(tables)
    padded = [np.pad(tables[k], ((0, 0), (0, 9 - tables[k].shape[1]))) for k in names]
    starts = np.cumsum([0] + [t.shape[0] for t in padded])[:-1]
    first = np.array([starts[names.index(k)] for k in _PICKS], np.int32)
    count = np.array([tables[k].shape[0] for k in _PICKS], np.int32)
    return np.concatenate(padded), first, count


def _sample_raw(seed: Array) -> Array:
    """float32[P]: one image's uniform draws (scaled to their ranges) and jittered palette
    picks, from its seed uint32[]. `_unpack` derives the scene parameters from it. Steps pass
    this one vector: XLA compiled each of ~50 separate parameters as its own kernel."""
    n_uniform = sum(c for _, c, _, _ in _UNIFORM_PARAMS)
    n_pick = len(_PICKS)
    bits = _hash(jnp.arange(n_uniform + 4 * n_pick, dtype=jnp.uint32) ^ seed)
    u = (bits >> 8).astype(jnp.float32) * (1.0 / (1 << 24))
    lo = np.concatenate([np.full(c, l, np.float32) for _, c, l, _ in _UNIFORM_PARAMS])
    hi = np.concatenate([np.full(c, h, np.float32) for _, c, _, h in _UNIFORM_PARAMS])
    vals = lo + (hi - lo) * u[:n_uniform]
    # Each pick: a random row of its table, jittered multiplicatively per colour channel.
    table, first, count = _pick_table()
    rows = jnp.minimum((u[n_uniform : n_uniform + n_pick] * count).astype(jnp.int32), count - 1) + first
    jitter = 0.85 + 0.3 * u[n_uniform + n_pick :].reshape(n_pick, 3)
    picks = jnp.asarray(table)[rows] * jnp.tile(jitter, (1, 3))  # [picks, 9]
    return jnp.concatenate([vals, picks.reshape(-1)])


def _unpack(raw: Array, seed: Array) -> dict[str, Array]:
    """Scene parameters (scalars and small vectors) from `_sample_raw(seed)`."""
    p, i = {}, 0
    for name, count, _, _ in _UNIFORM_PARAMS:
        p[name] = raw[i] if count == 1 else raw[i : i + count]
        i += count
    picks = raw[i:].reshape(len(_PICKS), 9)
    # Mostly one sky palette, sometimes a blend of two: more variety than a fixed list.
    sky = _mix(picks[0], picks[1], p.pop("sky_blend") ** 3).reshape(3, 3)
    p.update(zenith=sky[0], horizon=sky[1], sun_colour=sky[2])
    p["rock"] = picks[2:5, :3]
    p["land"] = picks[5].reshape(3, 3)
    p["water_colour"] = picks[6, :3]
    p["sun_glow"] = p["sun_glow"] * (p.pop("p_glow") < 0.7)
    p["num_ridges"] = jnp.minimum(p["num_ridges"].astype(jnp.int32), _NUM_RIDGES)
    p["snow"] = p.pop("p_snow") < 0.45
    p["treeline"] = p.pop("p_treeline") < 0.35
    p["water"] = jnp.where(p.pop("p_water") < 0.45, p["water"], 0.0)
    p["seeds"] = _param_seeds(seed)
    return p


def _param_seeds(seed: Array) -> Array:
    """uint32[8]: seeds of the noise fields and grain of one image."""
    return _hash(jnp.arange(8, dtype=jnp.uint32) + jnp.uint32(0x1000) ^ seed)


# ----------------------------------------------------------------------------- scene parts
# Lengths below are in coarse samples: hs = height / s rows make the image's height. Images
# are planar, float32[3, h, w]: per-pixel maps [h, w] then broadcast over the outer channel
# axis, which XLA's CPU loops handle far better than a trailing axis of 3.


def _c(colour: Array) -> Array:
    """float32[3] -> [3, 1, 1], to broadcast against planar images."""
    return colour[:, None, None]


def _sky(p: dict[str, Array], field: Array, yy: Array, xx: Array, hz: Array, hs: float, ws: float) -> Array:
    """float32[3, h, w]: gradient, sun glow and perspective clouds above the horizon row hz.

    field: float32[2, 2h, w] cloud noise (density, lighting), read in perspective."""
    t = jnp.clip(yy / hz, 0.0, 1.0) ** p["sky_gamma"]
    sky = _mix(_c(p["zenith"]), _c(p["horizon"]), t)
    sun_row = hz * (1.0 - p["sun_y"])
    dist = jnp.sqrt((xx - p["sun_x"] * ws) ** 2 + (yy - sun_row) ** 2) / max(hs, ws)
    glow = p["sun_glow"] * jnp.exp(-dist / p["sun_size"]) + 0.6 * p["sun_glow"] * jnp.exp(-dist / 0.015)
    sky = sky + glow * _c(p["sun_colour"])

    # Clouds: a field twice as tall as the sky, its rows read faster towards the horizon so
    # that clouds flatten with distance.
    ch = field.shape[1]
    tt = jnp.clip(yy[:, 0] / hz, 0.0, 1.0)
    rows = jnp.clip(hz * (tt + 1.25 * tt * tt), 0, ch - 1).astype(jnp.int32)
    field = jnp.take(field, rows, axis=1)
    density = _smoothstep(p["cloud_cover"], p["cloud_cover"] + p["cloud_soft"], field[0])
    density = density * _smoothstep(1.0, 0.7, tt)[:, None]
    # Lit tops, shadowed bases: the density a little above each sample darkens it.
    above = _shift(density, max(1, round(0.0075 * hs)), 0)
    lit = jnp.clip(0.5 + 0.35 * field[1] - 0.8 * (density - above), 0, 1)
    cloud = p["cloud_bright"] * _mix(_c(p["cloud_shadow"] * p["horizon"]), _c(p["sun_colour"]), lit)
    return _mix(sky, cloud, density)


def _crests(p: dict[str, Array], profiles: Array, hz: Array, hs: float) -> Array:
    """float32[_NUM_RIDGES, w]: top row of each ridge, far to near; the nearest may be a tree
    line - a low rolling edge plus one spike per tree. profiles: float32[_NUM_RIDGES + 1, w]."""
    w = profiles.shape[1]
    near = np.linspace(0.0, 1.0, _NUM_RIDGES, dtype=np.float32)[:, None]
    top = p["ridge_top"] * (1.0 - 0.5 * near)
    # tanh keeps crests inside the sky without the flat tops a clip would cut.
    shape = (0.5 + 0.5 * jnp.tanh(0.2 + 0.9 * p["ridge_amp"][:, None] * profiles[:-1])) ** 1.3
    crests = hz - hz * top * shape
    period = 2
    trees = 0.4 + 0.6 * jnp.abs(_hash_uniform(p["seeds"][3], (w // period + 1,)))
    x = np.arange(w)
    tri = 1.0 - np.abs(2.0 * ((x % period) + 0.5) / period - 1.0)
    tree_line = hz - hz * (0.04 + 0.03 * profiles[-1]) - 0.025 * hs * trees[x // period] * tri
    return crests.at[-1].set(jnp.where(p["treeline"], tree_line, crests[-1]))


def _ridges(
    p: dict[str, Array], img: Array, tex: Array, profiles: Array, yy: Array, hz: Array, hs: float
) -> tuple[Array, Array]:
    """Composites far-to-near mountain ridges (the nearest may be a tree line) over `img`.

    img: float32[3, h, w]; tex: float32[h, w] rock texture; profiles:
    float32[_NUM_RIDGES + 1, w] crest noise (the last for a tree line). Returns (image
    float32[3, h, w], grain amplitude float32[h, w]).
    """
    h, w = tex.shape
    # Bump shading: horizontal slope of the rock texture lit from the sun's side.
    side = jnp.where(p["sun_x"] > 0.5, 1.0, -1.0)
    bump = side * (tex - _shift(tex, 1, 1))
    crests = _crests(p, profiles, hz, hs)
    slopes = jnp.gradient(crests, axis=1) if w > 1 else jnp.zeros_like(crests)
    lean = 0.35 * side * jnp.tanh(slopes * 0.3)

    detail = jnp.full((h, w), 0.006)
    for k in range(_NUM_RIDGES):
        # Ridge 0 is the farthest and highest; nearer ridges sit lower and are less hazy.
        enabled = k >= _NUM_RIDGES - p["num_ridges"]
        near = k / max(_NUM_RIDGES - 1, 1)
        crest = crests[k][None, :]
        is_tree = jnp.logical_and(p["treeline"], k == _NUM_RIDGES - 1)
        cover = jnp.clip(yy - crest + 0.5, 0.0, 1.0) * enabled  # 1 sample anti-aliasing
        shade = jnp.clip(1.0 + lean[k] + 0.6 * bump, 0.4, 1.6)
        depth_below = (yy - crest) / jnp.maximum(hz - crest, 1.0)
        rock = _c(p["rock"][k]) * ((0.75 + 0.25 * tex) * shade)
        snowy = jnp.logical_and(p["snow"], jnp.logical_not(is_tree))
        snow_line = p["snow_depth"] * (1.0 + 0.6 * tex) * (1.0 - near * 0.7)
        snow = snowy * _smoothstep(snow_line, snow_line - 0.08, depth_below)
        rock = _mix(rock, (0.9 * shade + 0.1) * _c(p["sun_colour"]), snow)
        trees = _c(p["land"][0]) * ((0.7 + 0.5 * tex) * (0.85 + 0.3 * bump))
        surface = jnp.where(is_tree, trees, rock)
        haze = p["haze"] * (1.0 - near) ** 1.5 + 0.35 * _smoothstep(0.3, 1.0, depth_below) * p["haze"]
        surface = _mix(surface, _c(p["horizon"]), jnp.clip(haze, 0.0, 0.95))
        img = _mix(img, surface, cover)
        detail = _mix(detail, 0.01 + 0.02 * (1.0 - haze), cover)
    return img, detail


def _foreground(
    p: dict[str, Array], upper: Array, f: Array, yy: Array, hz: Array, hs: float
) -> tuple[Array, Array, Array]:
    """Land and water below the horizon; upper: float32[3, h, w] sky and ridges; f:
    float32[4, h, w] land textures and ripples.

    Returns (colour float32[3, h, w], grain amplitude float32[h, w], mask float32[h, w]
    that is 1 below the horizon).
    """
    h = upper.shape[1]
    below = jnp.clip(yy - hz + 0.5, 0.0, 1.0)
    # Perspective depth in [0, 1]: 0 at the horizon, 1 at the bottom row.
    depth = jnp.clip((yy - hz) / jnp.maximum(hs - hz, 1.0), 0.0, 1.0)

    # Far ground shows only fine detail, near ground the large clumps too.
    tex = f[0] * (0.25 + 0.75 * depth) + f[1] * (0.5 + 0.5 * depth)
    m = jax.nn.sigmoid(p["land_contrast"] * tex)
    dark, light, dry = _c(p["land"][0]), _c(p["land"][1]), _c(p["land"][2])
    land = _mix(dark, light, m)
    land = _mix(land, dry, _smoothstep(0.2, 1.2, f[2] + p["land_dry"]) * 0.8)
    land = land * (0.75 + 0.35 * depth)  # nearer ground in fuller light
    land = _mix(land, _c(p["horizon"]), p["haze"] * 0.5 * (1.0 - depth) ** 3)

    # Water: the scene above mirrored about the horizon, smeared by ripples.
    rows = jnp.clip(2.0 * hz - yy[:, 0] - 1.0, 0, h - 1).astype(jnp.int32)
    ripple = f[3]
    offset = jnp.clip((0.005 + 0.025 * depth[:, :1]) * hs * jnp.abs(ripple), 0, h).astype(jnp.int32)
    refl_rows = jnp.clip(rows[:, None] - offset, 0, h - 1)
    refl = jnp.take_along_axis(upper, jnp.broadcast_to(refl_rows, upper.shape), axis=1)
    fresnel = p["water_reflect"] * (1.0 - 0.6 * depth)
    water = _mix(_c(p["water_colour"]), refl * 0.9, fresnel)
    water = water * (1.0 + 0.12 * ripple)
    shore = hz + p["water"] * (hs - hz) * (1.0 + 0.15 * f[2, :1])  # [1, w]
    is_water = jnp.clip(shore - yy, 0.0, 1.0)
    colour = _mix(land, water, is_water)
    # Land's fine texture lives below one coarse sample, so its grain is the strongest.
    detail = _mix(0.016 + 0.04 * depth, 0.008 + 0.014 * depth, is_water)
    return colour, detail, below


def _light(p: dict[str, Array], img: Array, yy: Array, xx: Array, hs: float, ws: float) -> Array:
    """Exposure, white balance, sunward light slope, saturation, contrast, vignette.

    img: float32[3, h, w]."""
    img = img * (p["exposure"] * _c(p["white_balance"]))
    img = img * (1.0 + p["light_slope"] * (xx / ws - 0.5))
    grey = (img[0] + img[1] + img[2]) * (1.0 / 3.0)
    img = grey + (img - grey) * p["saturation"]
    x = jnp.clip(img, 0.0, 1.0)
    img = img + p["contrast"] * (x * x * (3.0 - 2.0 * x) - x)
    r2 = ((yy / hs - 0.5) ** 2 + (xx / ws - 0.5) ** 2) * 2.0
    return img * (1.0 - p["vignette"] * r2)


def _grid_coords(height: int, width: int) -> tuple[Array, Array, float, float]:
    """(yy float32[h, 1], xx float32[1, w], hs, ws): coarse sample positions in samples, and
    the image's height and width in samples. Sample i sits on pixel row i * s (centre + 0.5)."""
    s = _step(height, width)
    h, w = _coarse_shape(height, width)
    yy = jnp.arange(h, dtype=jnp.float32)[:, None] + 0.5 / s
    xx = jnp.arange(w, dtype=jnp.float32)[None, :] + 0.5 / s
    return yy, xx, height / s, width / s


def _upper(p: dict[str, Array], fields: list[Array], height: int, width: int) -> tuple[Array, Array]:
    """(float32[3, h, w] sky and ridges, float32[h, w] their grain amplitude) of one image.

    fields: float32 [5, h, w] textures, [2, 2h, w] clouds, [4, 1, w] crest profiles."""
    tex, cloud, profiles = fields
    yy, xx, hs, ws = _grid_coords(height, width)
    hz = p["horizon_y"] * hs
    sky = _sky(p, cloud, yy, xx, hz, hs, ws)
    return _ridges(p, sky, tex[0], profiles[:, 0], yy, hz, hs)


def _coarse(
    p: dict[str, Array], tex: Array, upper: Array, detail_up: Array, height: int, width: int
) -> tuple[Array, Array, Array]:
    """One landscape on the coarse grid: `upper` (see `_upper`) with the foreground, lit,
    in fixed point.

    tex: float32[5, h, w] texture noise. Returns (colour int16[h, w, 3] with `_FRAC_BITS`
    fractional bits, grain amplitude int16[h] per row, grain offset int32[2]: (row, column)
    of the image's window in the grain plane).
    """
    s = _step(height, width)
    yy, xx, hs, ws = _grid_coords(height, width)
    hz = p["horizon_y"] * hs
    ground, detail_lo, below = _foreground(p, upper, tex[1:], yy, hz, hs)
    img = _mix(upper, ground, below)
    detail = _mix(detail_up, detail_lo, below) * p["grain"]
    img = _light(p, img, yy, xx, hs, ws)

    one = float(1 << _FRAC_BITS)
    colour = jnp.clip(img * (255.0 * one) + 0.5, 0.0, 256.0 * one - 1.0).astype(jnp.int16)
    # One grain amplitude per row (sky, ridges and ground lie mostly in horizontal bands): a
    # full map would need its own full-width interpolation, as costly as the colour's.
    amp = jnp.clip(jnp.mean(detail, axis=1) * _GRAIN_GAIN + 0.5, 0.0, 255.0).astype(jnp.int16)
    seed = p["seeds"][6]
    room = _GRAIN_PAD - s + 1
    offset = jnp.stack([seed % room, (seed >> 16) % room]).astype(jnp.int32)
    return jnp.transpose(colour, (1, 2, 0)), amp, offset


# ----------------------------------------------------------------------------- full resolution

# Grain amplitude (fraction of full scale) -> int16 factor on the grain plane's int8 values,
# so that the grain's standard deviation is about 0.41 * 255 * amplitude levels (the plane's
# standard deviation is about 54).
_GRAIN_GAIN = 2000.0
_GRAIN_SHIFT = 6


def _value_noise_np(rows: int, cols: int, cell: int, salt: int) -> np.ndarray:
    """float32[rows, cols] bilinear value noise with `cell`-pixel cells, unit variance (numpy)."""
    ky, kx = rows // cell + 2, cols // cell + 2
    grid = _hash_np(np.arange(ky * kx, dtype=np.uint64) ^ salt).reshape(ky, kx)
    grid = grid.astype(np.float64) / 2.0**31 - 1.0
    out = grid
    for axis, n in ((0, rows), (1, cols)):
        pos = (np.arange(n) + 0.5) / cell
        i = pos.astype(np.int64)
        f = (pos - i).reshape((-1, 1) if axis == 0 else (1, -1))
        lo, hi = np.take(out, i, axis=axis), np.take(out, i + 1, axis=axis)
        out = lo + (hi - lo) * f
    return (out / out.std()).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _grain_plane(rows: int, cols: int) -> np.ndarray:
    """int8[rows, cols * 3]: fixed texture and grain, built once per size with numpy.

    Per pixel a luminance value shared by its three channels - white noise plus value noise
    with 2, 4 and 8 pixel cells, i.e. texture at the scales below one coarse sample - and a
    little chroma noise. Standard deviation about 54 (luminance 52, chroma 12)."""
    bits = _hash_np(np.arange(rows * cols, dtype=np.uint64) ^ 0x5EED6A1D).reshape(rows, cols)
    byte = lambda i: ((bits >> np.uint32(8 * i)) & 0xFF).astype(np.float32)
    white = (byte(0) + byte(1) - 255.0) / 104.5  # triangular, unit variance
    lum = 0.6 * white
    for cell, weight in ((2, 0.5), (4, 0.45), (8, 0.4)):
        lum = lum + weight * _value_noise_np(rows, cols, cell, 0xC0FFEE + cell)
    lum = lum * (52.0 / lum.std())
    c1, c2 = (byte(2) - 127.5) / 6.0, (byte(3) - 127.5) / 6.0
    grain = lum[..., None] + np.stack([c1, c2, 0.5 * (c1 + c2)], axis=-1)
    return np.clip(np.round(grain), -127, 127).astype(np.int8).reshape(rows, cols * 3)


def _widen(colour: Array, width: int, s: int) -> Array:
    """int16[B, h, w, 3] -> int16[B, h, width * 3]: linear interpolation along x.

    Fixed point, so the pass is int16 throughout (a fraction `a / s` is a multiply and a
    shift). A transposed version, broadcasting over an outer axis, measured the same."""
    b, h, w, c = colour.shape
    a = jnp.arange(s, dtype=jnp.int16).reshape(1, 1, 1, s, 1)
    lo, hi = colour[:, :, :-1, None], colour[:, :, 1:, None]
    out = lo + (((hi - lo) * a) >> (s.bit_length() - 1))
    return out.reshape(b, h, (w - 1) * s * c)[:, :, : width * c]


def _finish(wide: Array, amp: Array, offsets: Array, height: int, width: int, s: int) -> Array:
    """uint8[B, height, width, 3]: interpolation along y, grain, rounding - one int16 pass.

    wide: int16[B, h, width * 3] colour; amp: int16[B, h] grain amplitude per coarse row;
    offsets: int32[B, 2] grain window of each image.
    """
    b, h, w3 = wide.shape
    rows = (h - 1) * s
    plane = jnp.asarray(_grain_plane(rows + _GRAIN_PAD, width + _GRAIN_PAD))
    grain = jax.vmap(lambda o: jax.lax.dynamic_slice(plane, (o[0], o[1] * 3), (rows, w3)))(offsets)
    shift = s.bit_length() - 1
    a = jnp.arange(s, dtype=jnp.int16).reshape(1, 1, s, 1)
    colour = wide[:, :-1, None] + (((wide[:, 1:, None] - wide[:, :-1, None]) * a) >> shift)
    a = a[..., 0]
    amp = (amp[:, :-1, None] + (((amp[:, 1:, None] - amp[:, :-1, None]) * a) >> shift))[..., None]
    noise = (grain.reshape(b, h - 1, s, w3).astype(jnp.int16) * amp) >> _GRAIN_SHIFT
    out = (colour + noise + (1 << (_FRAC_BITS - 1))) >> _FRAC_BITS
    out = jnp.clip(out, 0, 255).astype(jnp.uint8)
    return out.reshape(b, rows, width, 3)[:, :height]


# The pipeline's steps, each compiled on its own: XLA on CPU drops optimization barriers, and
# fused across these steps it recomputes each producer for every consumer element (hashes,
# interpolations, the whole scene under a reflection gather): 5-20x slower.


@functools.partial(jax.jit, static_argnames=("height", "width"))
def _step_nodes(keys: Array, height: int, width: int) -> tuple[Array, Array, Array, Array]:
    """From keys: key[B], per image: seed uint32[B], parameter draws float32[B, P] (see
    `_sample_raw`), octave amplitudes float32[B, channels, _OCTAVES], noise nodes float32[B, N]."""
    h, w = _coarse_shape(height, width)

    def one(key: Array):
        seed = _key_seed(key)
        raw = _sample_raw(seed)
        p = _unpack(raw, seed)
        persistence = jnp.stack(
            [0.7, p["land_persistence"], 0.6, 0.6, 0.6, p["cloud_persistence"], 0.5, *p["ridge_rough"], 0.8]
        )
        first = jnp.array([1.0, 0.0, _OCTAVES - 3.0, 1.0, 2.0, 0.0, 2.0] + [0.0] * (_NUM_RIDGES + 1))
        return seed, raw, _octave_amps(persistence, first), _noise_nodes(p["seeds"][0], h, w)

    return jax.vmap(one)(keys)


@functools.partial(jax.jit, static_argnames=("height", "width"))
def _step_cols(nodes: Array, amps: Array, height: int, width: int) -> list[Array]:
    h, w = _coarse_shape(height, width)
    return jax.vmap(lambda n, a: _noise_cols(n, a, h, w))(nodes, amps)


@functools.partial(jax.jit, static_argnames=("height", "width"))
def _step_fields(cols: list[Array], height: int, width: int) -> list[Array]:
    h, w = _coarse_shape(height, width)
    return [jax.vmap(lambda c, i=i: _noise_field(c, i, h, w))(cols) for i in range(len(_FIELDS))]


@functools.partial(jax.jit, static_argnames=("height", "width"))
def _step_upper(seed: Array, raw: Array, fields: list[Array], height: int, width: int) -> tuple[Array, Array]:
    return jax.vmap(lambda sd, q, f: _upper(_unpack(q, sd), f, height, width))(seed, raw, fields)


# Separate from `_step_upper`: fused, the water's reflection gather recomputed the whole sky
# and ridges for every sample it read.
@functools.partial(jax.jit, static_argnames=("height", "width"))
def _step_coarse(seed: Array, raw: Array, tex: Array, upper: Array, detail: Array, height: int, width: int):
    def one(sd, q, t, u, d):
        return _coarse(_unpack(q, sd), t, u, d, height, width)

    return jax.vmap(one)(seed, raw, tex, upper, detail)


@functools.partial(jax.jit, static_argnames=("height", "width"))
def _step_widen(colour: Array, height: int, width: int) -> Array:
    return _widen(colour, width, _step(height, width))


@functools.partial(jax.jit, static_argnames=("height", "width"))
def _step_finish(wide: Array, amp: Array, offsets: Array, height: int, width: int) -> Array:
    return _finish(wide, amp, offsets, height, width, _step(height, width))


def _render(keys: Array, height: int, width: int) -> Array:
    """uint8[B, height, width, 3] from keys: key[B], one image per key."""
    seed, raw, amps, nodes = _step_nodes(keys, height, width)
    fields = _step_fields(_step_cols(nodes, amps, height, width), height, width)
    upper, detail = _step_upper(seed, raw, fields, height, width)
    colour, amp, offsets = _step_coarse(seed, raw, fields[0], upper, detail, height, width)
    return _step_finish(_step_widen(colour, height, width), amp, offsets, height, width)


# ----------------------------------------------------------------------------- public API


def _chunk(height: int, width: int) -> int:
    h, w = _coarse_shape(height, width)
    return max(1, _CHUNK_LOW_PIXELS // (h * w))


def landscapes_from_keys(keys: Array, height: int, width: int, chunk: int = 0) -> Array:
    """uint8[B, height, width, 3]: image i drawn from keys[i] alone (keys: key[B]).

    Renders `chunk` images at a time (0: as many as fit in `_CHUNK_LOW_PIXELS`), which bounds
    memory and changes no result. Each step is jitted; call this from outside a jit.
    """
    n = keys.shape[0]
    chunk = chunk or _chunk(height, width)
    if n <= chunk:
        return _render(keys, height, width)
    # The last chunk is padded with repeats so that every chunk has one shape (one compile).
    pad = -n % chunk
    keys = jnp.concatenate([keys, jnp.repeat(keys[-1:], pad, axis=0)]) if pad else keys
    out = [_render(keys[i : i + chunk], height, width) for i in range(0, n + pad, chunk)]
    return jnp.concatenate(out)[:n]


def _check_size(n: int, height: int, width: int) -> None:
    if n < 0 or height < 1 or width < 1:
        raise ValueError(f"synthetic images: expected n >= 0 and height, width >= 1, got n={n}, {height}x{width}")


def landscapes(key: Array, n: int, height: int, width: int) -> Array:
    """uint8[n, height, width, 3]: procedural landscape photos; image i from split(key, n)[i]."""
    _check_size(n, height, width)
    return landscapes_from_keys(jax.random.split(key, n), height, width)


@functools.partial(jax.jit, static_argnames=("n", "height", "width"))
def _solid(key: Array, n: int, height: int, width: int) -> Array:
    colours = jax.vmap(lambda k: jax.random.randint(k, (3,), 0, 256))(jax.random.split(key, n))
    return jnp.broadcast_to(colours.astype(jnp.uint8)[:, None, None, :], (n, height, width, 3))


def solid(key: Array, n: int, height: int, width: int) -> Array:
    """uint8[n, height, width, 3]: one uniform random colour per image (seed 2's "solid")."""
    _check_size(n, height, width)
    return _solid(key, n, height, width)


def black(n: int, height: int, width: int) -> Array:
    """uint8[n, height, width, 3] of zeros (seed 2's "black")."""
    _check_size(n, height, width)
    return jnp.zeros((n, height, width, 3), jnp.uint8)


def generate(source: str, key: Array, n: int, height: int, width: int) -> Array:
    """uint8[n, height, width, 3] from the synthetic source named by config `data.source`."""
    if source == "landscapes":
        return landscapes(key, n, height, width)
    if source == "solid":
        return solid(key, n, height, width)
    if source == "black":
        return black(n, height, width)
    raise ValueError(f"data.source={source!r}: expected one of {', '.join(map(repr, SOURCES))}")
