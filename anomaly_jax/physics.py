"""The physics baseline: find a gain-altered square with no training.

A gain `ratio` on a square adds log(ratio) (0.05-0.14 for the seed's 1.05-1.15) to the log
intensity of every pixel inside it, in all three channels at once. So along the square's four
straight, axis-aligned edges the log image steps up going in and down going out, by the same
amount in R, G and B. Natural edges are neither straight over long runs, nor equal in the
three channels, nor of one sign along a whole side.

Evidence (`edge_evidence`), per pixel boundary:

1. `step`: the log-intensity difference across the boundary between the means of `width`
   pixels on either side (JPEG q75 smears a step over a pixel or two; `width=2` keeps most of
   it and halves the noise of a one-pixel difference);
2. channel agreement: the median of the three channels' steps (a gain moves all three
   together; an edge between two colours rarely does);
3. clipped to [-clip, clip] (clip ~ the largest gain step, log 1.15 = 0.14), and zero where
   |step| > `too_big` (0.25): a gain of at most 1.15 cannot make a larger step, so a strong
   natural edge - or the border of a framed photo - is no evidence at all. A square is found
   by *consistency* along its whole perimeter, not by crossing one contrasty edge;
4. signed by the edge's orientation: up going into the square (top/left), down going out
   (bottom/right);
5. the wrap flip: where `v * ratio` passed 255 the seed's uint8 rule wrapped the pixel to a
   dark value, so bright pixels just inside the square step *down* by a lot. A step that is
   both large (below -`wrap_step` in log) and from a bright outside (>= `wrap_bright`) into a
   dark inside is counted as the full +clip for the "into the square" orientation.

The decoder (`anomaly_jax.squares`) then scores each candidate by the z-score of its
perimeter sum (`power=0.5`). The best square's score doubles as an "altered or not" score.

What a researcher may change: the constants of `PhysicsParams`. On seed1_dev (40 photos) the
defaults give hit rate 0.675; without the too_big rule 0.525, with neither too_big nor the
wrap rule 0.45
(`python -m scripts.evaluate --method physics --csv ../shared/seed1_dev/labels.csv`).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from anomaly_jax import squares


@dataclasses.dataclass(frozen=True)
class PhysicsParams:
    width: int = 2  # pixels averaged on each side of a boundary
    clip: float = 0.15  # |evidence| cap per boundary pixel, in log intensity
    wrap_step: float = 1.0  # a log drop this large from a bright pixel reads as a wrap
    wrap_bright: float = 200.0  # grey level the outside pixel must reach for a wrap
    too_big: float = 0.25  # a step larger than any gain (log 1.15 = 0.14) is no evidence


def side_means(log_img: jax.Array, axis: int, width: int) -> tuple[jax.Array, jax.Array]:
    """Means of `width` pixels before and after every boundary along `axis` (H or W).

    log_img: float32[..., H, W, C] -> (before, after), each float32 with the boundary count
    (n+1) along `axis` (boundary b lies between pixels b-1 and b); pixels beyond the image
    repeat the border pixel. The one home of "the step across a pixel boundary", used by
    this baseline's evidence and by the localiser's fixed front end.
    """
    n = log_img.shape[axis]
    pad = [(0, 0)] * log_img.ndim
    pad[axis] = (width, width)
    p = jnp.pad(log_img, pad, mode="edge")
    c = jnp.cumsum(p, axis=axis)
    c = jnp.concatenate([jnp.zeros_like(_take(c, 0, 1, axis)), c], axis=axis)
    # Boundary b (0..n) sits before padded index b + width.
    before = (_take(c, width, n + 1, axis) - _take(c, 0, n + 1, axis)) / width
    after = (_take(c, 2 * width, n + 1, axis) - _take(c, width, n + 1, axis)) / width
    return before, after


def _take(a: jax.Array, start: int, size: int, axis: int) -> jax.Array:
    """a[start:start+size] along `axis` (static bounds)."""
    return jax.lax.slice_in_dim(a, start, start + size, axis=axis)


def _oriented(before: jax.Array, after: jax.Array, bright_before: jax.Array,
              bright_after: jax.Array, p: PhysicsParams) -> tuple[jax.Array, jax.Array]:
    """(evidence for "the square starts after this boundary", "...ends before it")."""
    step = jnp.median(after - before, axis=-1)
    step_c = jnp.where(jnp.abs(step) <= p.too_big, jnp.clip(step, -p.clip, p.clip), 0.0)
    # A wrap going in: bright outside (before), much darker inside (after); going out, mirrored.
    wrap_in = (step < -p.wrap_step) & bright_before
    wrap_out = (step > p.wrap_step) & bright_after
    into = jnp.where(wrap_in, p.clip, step_c)
    out_of = jnp.where(wrap_out, p.clip, -step_c)
    return into, out_of


def edge_evidence(image: jax.Array, params: PhysicsParams = PhysicsParams()) -> jax.Array:
    """Gain-step evidence for the four edges of a square: image uint8[H, W, 3] ->
    float32[4, H+1, W+1] in `squares.EDGE_NAMES` order, each value in [-clip, clip]."""
    h, w = image.shape[:2]
    v = image.astype(jnp.float32)
    log_img = jnp.log(v + 1.0)
    bright = jnp.min(v, axis=-1, keepdims=True) >= params.wrap_bright
    bright_f = bright.astype(jnp.float32)
    # Rows: boundaries between rows (top/bottom edges), shape [H+1, W].
    before, after = side_means(log_img, 0, params.width)
    b_before, b_after = side_means(bright_f, 0, 1)
    top, bottom = _oriented(before, after, b_before[..., 0] > 0.5, b_after[..., 0] > 0.5, params)
    # Columns: boundaries between columns (left/right edges), shape [H, W+1].
    before, after = side_means(log_img, 1, params.width)
    b_before, b_after = side_means(bright_f, 1, 1)
    left, right = _oriented(before, after, b_before[..., 0] > 0.5, b_after[..., 0] > 0.5, params)
    horizontal = jnp.pad(jnp.stack([top, bottom]), ((0, 0), (0, 0), (0, 1)))
    vertical = jnp.pad(jnp.stack([left, right]), ((0, 0), (0, 1), (0, 0)))
    return jnp.concatenate([horizontal, vertical])


@functools.partial(jax.jit, static_argnames=("prior", "params"))
def locate(images: jax.Array, prior: squares.SquarePrior,
           params: PhysicsParams = PhysicsParams()) -> dict[str, jax.Array]:
    """The best square in each image: images uint8[B, H, W, 3] -> {center int32[B, 2],
    half_size int32[B], score float32[B]} (score: the perimeter z-score, also a detection
    score)."""
    def one(image):
        return squares.best_square(edge_evidence(image, params), prior, power=0.5)
    return jax.lax.map(one, images)


# ----------------------------------------------------------------- how visible is a square?

VISIBILITY_OFFSETS = 20  # parallel lines compared on each side of an edge
VISIBILITY_GAP = 2  # lines this close to the edge share its JPEG-smeared step: not compared


def edge_visibility(image: np.ndarray, center: tuple[int, int], half_size: int,
                    width: int = PhysicsParams.width) -> dict[str, np.ndarray]:
    """How far each edge of a known square stands out from the lines parallel to it.

    image: uint8[H, W, 3]; center (row, col) and half_size in pixels (the square is rows
    [x-r, x+r), cols [y-r, y+r)). For each edge (`squares.EDGE_NAMES` order) and each offset
    d in [-VISIBILITY_OFFSETS, VISIBILITY_OFFSETS], the line d pixels from the edge scores the
    median along the line of this baseline's per-boundary step (the median over R, G, B of the
    log step between `width`-pixel means), signed so that a gain step into the square is
    positive. A line that leaves the image scores NaN.

    Returns {"step": float64[4] (the edge's own score: about log(ratio) when the step is
    there), "z": float64[4] (the edge's score minus the mean of the lines further than
    VISIBILITY_GAP from it, over their standard deviation: how an ideal straight-line detector
    that knew where to look would see it)}. An oracle for analysis, not a locator: a square
    whose four z are a few units is at the noise floor of any method reading its edges.
    """
    h, w = image.shape[:2]
    log_img = jnp.log(jnp.asarray(image, jnp.float32) + 1.0)  # as `edge_evidence`
    # The step across every row boundary [H+1, W] and column boundary [H, W+1].
    steps = [np.asarray(jnp.median(after - before, axis=-1))
             for before, after in (side_means(log_img, axis, width) for axis in (0, 1))]
    x, y, r = int(center[0]), int(center[1]), int(half_size)
    offsets = np.arange(-VISIBILITY_OFFSETS, VISIBILITY_OFFSETS + 1)
    scores = np.full((4, offsets.size), np.nan)
    # (boundary index along the perpendicular axis, sign, axis, span along the edge)
    edges = ((x - r, 1, 0, (y - r, y + r)), (x + r, -1, 0, (y - r, y + r)),
             (y - r, 1, 1, (x - r, x + r)), (y + r, -1, 1, (x - r, x + r)))
    for k, (boundary, sign, axis, (lo, hi)) in enumerate(edges):
        n = (h, w)[axis]
        lo, hi = max(lo, 0), min(hi, (w, h)[axis])
        for i, d in enumerate(offsets):
            b = boundary + d
            # Lines whose `width` pixels on either side leave the image (side_means would
            # repeat the border pixel there) are not compared.
            if b - width < 0 or b + width > n or hi <= lo:
                continue
            line = steps[axis][b, lo:hi] if axis == 0 else steps[axis][lo:hi, b]
            scores[k, i] = sign * np.median(line)
    far = np.abs(offsets) > VISIBILITY_GAP
    others = scores[:, far]
    with np.errstate(invalid="ignore"):
        # A floor on the spread: parallel lines in a flat (e.g. saturated) area all score
        # exactly 0, and an edge there is then very visible, not infinitely so.
        spread = np.maximum(np.nanstd(others, axis=1), 1e-4)
        z = (scores[:, VISIBILITY_OFFSETS] - np.nanmean(others, axis=1)) / spread
    return {"step": scores[:, VISIBILITY_OFFSETS], "z": z}
