"""A landscape's parameters, one hashed draw per image (`_sample_raw`, `_unpack`: time of day,
palettes, ridge count, horizon, lighting ...), and the coarse grid's geometry (step s, shape)
with the small helpers the scene uses.

The scene that these parameters drive is `anomaly_jax.landscape_scene`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from anomaly_jax.value_noise import _NUM_RIDGES, _hash

Array = jax.Array

# Longest side of the coarse grid the structure is rendered on (the step s is the smallest
# power of two that fits the image in it).
_MAX_LOW_SIDE = 128


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

