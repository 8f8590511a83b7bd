"""The landscape's parameters and scene, rendered on the coarse grid: sky, clouds, ridges,
foreground, water and lighting, as planar float32 colour at step s.

The parameters are drawn in
`anomaly_jax.landscape_params`; the full-resolution pass that turns this into uint8 pixels is in
`anomaly_jax.synthetic`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from anomaly_jax.value_noise import _NUM_RIDGES, _hash_uniform
from anomaly_jax.landscape_params import _coarse_shape, _mix, _shift, _smoothstep, _step

Array = jax.Array

# Margin of the grain plane: each image reads its grain from an H x W window at a random
# offset below this.
_GRAIN_PAD = 64


# Fixed point: coarse values are stored as value * 2**_FRAC_BITS in int16.
_FRAC_BITS = 3


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


# Grain amplitude (fraction of full scale) -> int16 factor on the grain plane's int8 values,
# so that the grain's standard deviation is about 0.41 * 255 * amplitude levels (the plane's
# standard deviation is about 54).
_GRAIN_GAIN = 2000.0

