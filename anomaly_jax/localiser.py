"""The learned localiser: a full-resolution fully convolutional net that maps a photo to dense
evidence for the four edges of an altered square, decoded by the exhaustive square search.

Why this shape (issue 7): the seed's CNNs pool early and regress two numbers through a huge
dense layer; on 160 images they memorise and answer near the mean. The signal is local and
physical - a gain step of log(1.05..1.15) along four straight edges, equal in R, G and B - so:

* **a fixed, gain-invariant front end** (`input_features`): log intensity, in which a gain
  is an additive step wherever it lands, plus the one- and two-pixel log steps clipped to
  +-0.3, so that a 0.05-0.14 gain step is a large input and a natural edge ten times
  stronger is not ten times larger (with log intensity alone a first model barely learned:
  loss 0.070 -> 0.059 in 700 steps, against 0.072 -> 0.034 in 500 with these features);
* **full resolution throughout**: no pooling or stride; context comes from dilated 3x3 convs
  (dilations 1, 2, 4, 8, 16, 1: a 63-pixel receptive field, enough to see that an edge is
  straight and equal in the three channels, not enough to memorise a photo);
* **dense outputs**: four logit maps per pixel, "this pixel is the first/last row (top/bottom)
  or first/last column (left/right) inside the square"; trained with per-pixel binary
  cross-entropy, so crops of any size train it and whole photos of any size run through it;
* **structured decoding**: `edge_evidence` turns the logits into the boundary maps of
  `anomaly_jax.squares` and the search returns the best square within the prior; the answer
  is always a square and its centre is exact when the maps are right.

Shapes: `images: uint8[B, H, W, 3]` -> `logits: float32[B, H, W, 4]` (channels in
`squares.EDGE_NAMES` order).

Issue 12's second target (`model.target="mask"`, `OUTPUTS`): the same net with one output
map, the logit that a pixel was altered, for any kind and region shape; trained with
`mask_loss`, scored by `mask_prob` / `image_score` (no decoder: a free-form region is no
square). The model is used functionally like the seed models
(`nnx.split` / `nnx.merge`); its call signature matches them (features and dropout_key are
accepted and ignored).

What a researcher may change: `LocaliserNet`'s width and dilations, the front end,
`POS_WEIGHT`, and the evidence offset (see `edge_evidence`; re-measure it on held-out photos).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from anomaly_jax import metrics, physics, squares

DILATIONS = (1, 2, 4, 8, 16, 1)
WIDTH = 16
# Edge pixels are ~1% of a crop's pixels per map: weighting them up speeds learning. The
# decoder subtracts log(POS_WEIGHT) again so that the evidence is a log-likelihood ratio.
POS_WEIGHT = 10.0
# The mask target: altered pixels are ~2.2% of a `localiser_mix` crop's pixels (p_altered
# 0.8; free-form blobs of seed 1's square sampler at crop scale, 2.7% of an altered crop on
# average, median 1.2%; measured over 1024 crops). Weighted 5x they carry ~10% of the loss -
# enough to keep small regions from being ignored - while `mask_prob` >= 0.5 still means a
# posterior of >= 1/(1 + 5) ~ 0.17, not the ~0.02 a fully balanced weight (~44) would give,
# whose threshold would flood the pixel F1 with false positives.
MASK_POS_WEIGHT = 5.0
# Image score: the largest mean of `mask_prob` over a SCORE_POOL x SCORE_POOL window, so that
# one hot pixel (JPEG ringing, a specular highlight) does not make a photo "altered" but a
# region of a few pixels across does.
SCORE_POOL = 5
# Output maps per target (the values of config.ModelConfig.target).
OUTPUTS = {"edges": len(squares.EDGE_NAMES), "mask": 1}
# A pixel's evidence is clipped below: one occluded or wrapped pixel on a true edge must not
# veto the whole square.
EVIDENCE_FLOOR = -6.0
# Added to every pixel's log-odds before decoding: about minus the prior log-odds of an edge
# pixel in the training crops, which turns posterior log-odds into a likelihood ratio. Without
# it the per-pixel evidence is negative almost everywhere and the decoder prefers the smallest
# square. Chosen on held-out synthetic validation (24 unseen landscapes + the 4 held-out
# package photos, altered, JPEG q75) among 0, 2, 4, 6, 8, 10: hit rate 0.93, 0.93, 0.96, 0.96,
# 0.82, 0.29 for a 500-step model; 6 also had the lowest mean distance (0.007).
EVIDENCE_OFFSET = 6.0
# The mask target's prior log-odds, negated: altered pixels are ~2.2% of a training crop's
# (see MASK_POS_WEIGHT), -log(0.022 / 0.978) = 3.8. Turns the posterior into a likelihood
# ratio for `mask_evidence`, so that a square's score is positive where its pixels are more
# likely altered than not.
MASK_EVIDENCE_OFFSET = 3.8
DECODE_POWER = 0.0  # squares.best_square's normalisation: 0 = a plain sum of evidence


STEP_CLIP = 0.3  # log-intensity steps are clipped here (a gain step is at most 0.14)
IN_CHANNELS = 15


def log_intensity(images: jax.Array) -> jax.Array:
    """uint8[B, H, W, 3] -> float32[B, H, W, 3] in [0, 1]: log1p(v) / log(256)."""
    return jnp.log1p(images.astype(jnp.float32)) * (1.0 / math.log(256.0))


def input_features(images: jax.Array) -> jax.Array:
    """The fixed, gain-invariant front end: uint8[B, H, W, 3] -> float32[B, H, W, 15].

    Channels: log intensity (3, for context: brightness decides where a gain wraps); the
    log-intensity step to the next row and to the next column per channel (6), clipped to
    +-STEP_CLIP and scaled to +-1, so that a gain step (0.05-0.14) is a large input and a
    strong natural edge is no larger than a few gain steps; the same steps taken across two
    pixels on either side (6), which JPEG's smearing leaves larger than one-pixel steps.
    Like a forensics "constrained first layer", but fixed: the net need not learn to find a
    0.1 step under edges ten times larger.
    """
    log_v = jnp.log1p(images.astype(jnp.float32))

    def step(a, axis, k):
        # The step across the boundary after each pixel (between pixels i and i+1).
        before, after = physics.side_means(a, axis, k)
        diff = jax.lax.slice_in_dim(after - before, 1, a.shape[axis] + 1, axis=axis)
        return jnp.clip(diff, -STEP_CLIP, STEP_CLIP) * (1.0 / STEP_CLIP)

    feats = [log_v * (1.0 / math.log(256.0)),
             step(log_v, 1, 1), step(log_v, 2, 1), step(log_v, 1, 2), step(log_v, 2, 2)]
    return jnp.concatenate(feats, axis=-1)


class LocaliserNet(nnx.Module):
    """Stem 3x3 conv (3 -> WIDTH), residual dilated 3x3 blocks, 1x1 head (WIDTH -> outputs).

    outputs: the number of logit maps, `OUTPUTS[target]` (4 edges, or 1 mask).
    """

    def __init__(self, *, width: int = WIDTH, dilations: tuple[int, ...] = DILATIONS,
                 outputs: int = 4, dtype: str = "float32", rngs: nnx.Rngs):
        self.dtype = jnp.dtype(dtype)
        self.dilations = tuple(dilations)
        init = nnx.initializers.he_normal()
        self.stem = nnx.Param(init(rngs.params(), (3, 3, IN_CHANNELS, width)))
        self.stem_b = nnx.Param(jnp.zeros((width,)))
        self.blocks = nnx.List([nnx.Param(init(rngs.params(), (3, 3, width, width)) * 0.5)
                                for _ in dilations])
        self.blocks_b = nnx.List([nnx.Param(jnp.zeros((width,))) for _ in dilations])
        self.head = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(),
                                                                (1, 1, width, outputs)))
        # Start near the edge prior (~1% positives, weighted by POS_WEIGHT); the mask's
        # weighted prior, log(5 * 0.022 / 0.978) ~ -2.2, is near it too.
        self.head_b = nnx.Param(jnp.full((outputs,), -3.0))

    def _conv(self, x, w, b, dilation=1):
        y = lax.conv_general_dilated(
            x.astype(self.dtype), w.astype(self.dtype), (1, 1), "SAME",
            rhs_dilation=(dilation, dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + b.astype(self.dtype)

    def __call__(self, images: jax.Array, features: jax.Array | None = None, *,
                 dropout_key: jax.Array | None = None) -> jax.Array:
        """images: uint8[B, H, W, 3] (any H, W) -> logits float32[B, H, W, outputs]."""
        x = input_features(images)
        x = jax.nn.relu(self._conv(x, self.stem[...], self.stem_b[...]))
        for w, b, d in zip(self.blocks, self.blocks_b, self.dilations):
            x = x + jax.nn.relu(self._conv(x, w[...], b[...], d))
        return self._conv(x, self.head[...], self.head_b[...]).astype(jnp.float32)


# --------------------------------------------------------------------------- targets, loss


def edge_targets(center: jax.Array, half_size: jax.Array, altered: jax.Array,
                 height: int, width: int) -> jax.Array:
    """Per-pixel targets of one square: bool[H, W, 4] (top, bottom, left, right).

    center: int32[2] (row, col); half_size: int32[]; altered: bool[] (False: all zeros).
    The square covers rows [x-r, x+r), cols [y-r, y+r), clipped to the image; "top" marks
    its first row, "bottom" its last, "left"/"right" its first/last column. An edge beyond the
    image is absent.
    """
    x, y, r = center[0], center[1], half_size
    i = jnp.arange(height, dtype=jnp.int32)[:, None]
    j = jnp.arange(width, dtype=jnp.int32)[None, :]
    in_rows = (i >= x - r) & (i < x + r)
    in_cols = (j >= y - r) & (j < y + r)
    maps = jnp.stack([(i == x - r) & in_cols, (i == x + r - 1) & in_cols,
                      (j == y - r) & in_rows, (j == y + r - 1) & in_rows], axis=-1)
    return maps & altered


def edge_loss(logits: jax.Array, targets: jax.Array, weight: jax.Array) -> jax.Array:
    """Weighted binary cross-entropy summed over pixels and maps, per example.

    logits: float32[B, H, W, 4]; targets: bool[B, H, W, 4]; weight: float32[B] (0 for
    padding). Returns float32[B]: the mean over the example's pixel-maps, times its weight.
    Positives count POS_WEIGHT times.
    """
    t = targets.astype(jnp.float32)
    per_pixel = POS_WEIGHT * t * jax.nn.softplus(-logits) + (1.0 - t) * jax.nn.softplus(logits)
    return jnp.mean(per_pixel, axis=(1, 2, 3)) * weight


def visible_target(mask: jax.Array, altered: jax.Array, clean: jax.Array, min_change: float
                   ) -> tuple[jax.Array, jax.Array]:
    """The mask target as the saved images show it: (altered pixels bool[B, H, W], pixels left
    out of the loss bool[B, H, W]).

    mask: bool[B, H, W], the pixels the edit changed; altered, clean: uint8[B, H, W, 3], the
    examples and their clean originals, both as saved (the same JPEG round trip). An edit
    whose region changed by less than `min_change` grey levels on average
    (`metrics.mask_change`: mean |altered - clean| over its pixels and R, G, B - the
    `jpeg_change` of an exported set) has its whole mask left out: the label says it was
    edited, the saved image barely does (a smudge of sigma 2 on soft texture changes ~2
    levels, under JPEG q75's own noise), and trained as altered it teaches the net that such
    texture is altered - which it then finds in clean photos. Outside the mask everything
    stays a negative. Per edit, not per pixel: JPEG's requantisation makes single pixels of a
    faint edit differ by several levels (a per-pixel threshold of 4 levels, measured: visible
    edits' image AUC 0.85-0.89 against 0.95 without the faint kinds).
    """
    change, _ = metrics.mask_change(clean, altered, mask)
    visible = (change >= min_change)[:, None, None]
    return mask & visible, mask & ~visible


def mask_loss(logits: jax.Array, mask: jax.Array, weight: jax.Array,
              image_weight: float = 0.0, ignore: jax.Array | None = None) -> jax.Array:
    """`edge_loss` for the mask target: logits float32[B, H, W, 1], mask bool[B, H, W] (the
    altered pixels), weight float32[B] -> float32[B], the mean weighted binary cross-entropy
    over the example's pixels times its weight; positives count MASK_POS_WEIGHT times.
    ignore: bool[B, H, W] pixels that cost nothing (`visible_target`), still counted in the
    mean's denominator so that an example's loss keeps its scale; None = none.

    image_weight (static): plus, for an example with no altered pixel, that times
    softplus(`image_logit`) - the cross-entropy of its most confident window, which is what
    the image score reads: a clean example's worst false alarm is paid for in full, not as
    one pixel of thousands. Only clean examples: the same term asking an altered example's
    best window to fire (multiple-instance learning both ways) taught the net to fire on any
    busy texture where the edit was invisible (image AUC 0.632 against 0.682, README).
    """
    t = mask.astype(jnp.float32)
    z = logits[..., 0]
    per_pixel = (MASK_POS_WEIGHT * t * jax.nn.softplus(-z)
                 + (1.0 - t) * jax.nn.softplus(z))
    if ignore is not None:
        per_pixel = jnp.where(ignore, 0.0, per_pixel)
    loss = jnp.mean(per_pixel, axis=(1, 2))
    if image_weight:
        edited = mask if ignore is None else mask | ignore
        clean = ~jnp.any(edited, axis=(1, 2))
        loss = loss + image_weight * clean * jax.nn.softplus(image_logit(logits))
    return loss * weight


def image_logit(logits: jax.Array) -> jax.Array:
    """logits float32[B, H, W, 1] -> float32[B]: `image_score`'s window on the mask logit
    (its largest SCORE_POOL x SCORE_POOL mean), for the loss."""
    return _largest_window_mean(logits[..., 0])


def mask_prob(logits: jax.Array) -> jax.Array:
    """logits float32[B, H, W, 1] -> float32[B, H, W]: sigmoid of the mask logit (a score in
    [0, 1]; 0.5 is a posterior of 1 / (1 + MASK_POS_WEIGHT), see MASK_POS_WEIGHT)."""
    return jax.nn.sigmoid(logits[..., 0])


def image_score(prob: jax.Array) -> jax.Array:
    """prob float32[B, H, W] -> float32[B] in [0, 1]: the "altered or not" score, the largest
    SCORE_POOL x SCORE_POOL window mean of prob (windows inside the image: VALID padding)."""
    return _largest_window_mean(prob)


def _largest_window_mean(maps: jax.Array) -> jax.Array:
    """float32[B, H, W] -> float32[B]: the largest mean over a SCORE_POOL-square window."""
    k = SCORE_POOL
    pooled = lax.reduce_window(maps, 0.0, lax.add, (1, k, k), (1, 1, 1), "VALID") / (k * k)
    return jnp.max(pooled, axis=(1, 2))


def edge_evidence(logits: jax.Array) -> jax.Array:
    """Per-pixel logits float32[H, W, 4] -> boundary evidence float32[4, H+1, W+1] for
    `squares.best_square` (power 0: a sum of log-likelihood ratios).

    The logits of a model trained with `edge_loss` estimate log(POS_WEIGHT * P(edge)/P(not));
    subtracting log(POS_WEIGHT) and adding EVIDENCE_OFFSET (about minus the prior log-odds)
    gives a log-likelihood ratio per pixel, floored at EVIDENCE_FLOOR.
    """
    e = jnp.maximum(logits - math.log(POS_WEIGHT) + EVIDENCE_OFFSET, EVIDENCE_FLOOR)
    top, bottom, left, right = (e[..., k] for k in range(4))
    # Pixel rows -> boundaries: "first row inside is i" is boundary i; "last row inside is
    # i" is boundary i + 1 (likewise for columns).
    top = jnp.pad(top, ((0, 1), (0, 1)))
    bottom = jnp.pad(bottom, ((1, 0), (0, 1)))
    left = jnp.pad(left, ((0, 1), (0, 1)))
    right = jnp.pad(right, ((0, 1), (1, 0)))
    return jnp.stack([top, bottom, left, right])


def mask_evidence(logits: jax.Array) -> jax.Array:
    """Mask logits float32[H, W, 1] -> boundary evidence float32[4, H+1, W+1] whose square
    score (`squares.best_square`, power 0) is the sum over the square's pixels of their
    log-likelihood ratio: the mask target decoded as a square (a run on region=square).

    The area as a boundary sum: with P[i, j] the sum of row i's ratios left of column j, a
    square's pixels sum to the sum over its rows of P at its right edge minus P at its left
    edge - so `left` = -P, `right` = P, `top` = `bottom` = 0, and the same O(1)-per-candidate
    search serves both targets. The ratio is the logit minus log(MASK_POS_WEIGHT) (the
    weighted loss's shift) plus MASK_EVIDENCE_OFFSET (minus the prior log-odds).
    """
    llr = logits[..., 0] - math.log(MASK_POS_WEIGHT) + MASK_EVIDENCE_OFFSET
    prefix = jnp.pad(jnp.cumsum(llr, axis=1), ((0, 1), (1, 0)))  # P[i, j], row H unused
    zero = jnp.zeros_like(prefix)
    return jnp.stack([zero, zero, -prefix, prefix])


def decode(logits: jax.Array, prior: squares.SquarePrior) -> dict[str, jax.Array]:
    """The best square per image: logits float32[B, H, W, 4] (the edge target) or
    float32[B, H, W, 1] (the mask target, `mask_evidence`) -> {center int32[B, 2],
    half_size int32[B], score float32[B]} (score: the summed evidence, a detection score)."""
    evidence = mask_evidence if logits.shape[-1] == OUTPUTS["mask"] else edge_evidence
    return lax.map(lambda l: squares.best_square(evidence(l), prior, power=DECODE_POWER),
                   logits)
