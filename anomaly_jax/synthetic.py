"""Procedural clean images made on the device: landscapes, solid colours, black.

This module holds the public entry points and the full-resolution pass; the landscape's value
noise is `anomaly_jax.value_noise`, its parameters `anomaly_jax.landscape_params`, its coarse
scene `anomaly_jax.landscape_scene`.

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

How it stays cheaper than decoding a JPEG of the same size (`python -m
scripts.profile_throughput --stage corrupt`, its landscapes row):

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

import jax
import jax.numpy as jnp
import numpy as np

from anomaly_jax.config import SYNTHETIC_SOURCES
from anomaly_jax.value_noise import (_FIELDS, _NUM_RIDGES, _OCTAVES, _hash_np, _noise_cols,
                                     _noise_field, _noise_nodes, _octave_amps)
from anomaly_jax.landscape_params import _coarse_shape, _key_seed, _sample_raw, _step, _unpack
from anomaly_jax.landscape_scene import _FRAC_BITS, _GRAIN_PAD, _coarse, _upper

Array = jax.Array

SOURCES = SYNTHETIC_SOURCES  # the sources this module makes (defined in the config schema)


# Coarse-grid samples rendered per chunk by `landscapes_from_keys` (25 images at 800 px):
# bounds memory (about 200 bytes of float intermediates per sample, plus the chunk's output)
# and keeps the intermediates near the cache (64 images at 800 px ran slower per image than
# 16), without changing any result.
_CHUNK_LOW_PIXELS = 1 << 18


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

