"""Scoring a trained localiser on labelled, already-altered images (e.g. seed 1's photos).

`predict_centers` runs a seed model in fixed-size jitted batches; `locate_squares` runs the
dense localiser or the physics baseline (no model) and decodes one square per image;
`localisation_report` turns predictions into the figures `scripts/evaluate.py` prints, next
to the always-predict-the-middle baseline, in normalised units (the seed's metric) and in
pixels of the originals. `roc_auc` scores detection. `score_masks` scores a mask-target
localiser (issue 12) on images with their label masks, overall and per alteration kind;
`image_auc_by_change` splits its detection by how visible each edit is in the files.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from anomaly_jax import localiser, metrics, physics, squares
from anomaly_jax.config import KIND_ORDER


def predict_centers(model: nnx.Module, images: np.ndarray, features: np.ndarray | None,
                    *, batch: int = 8) -> np.ndarray:
    """images: uint8[N,H,W,3], features: float32[N,2] (fusion models) or None
    -> predicted centres float32[N,2].

    The last batch is padded to full size so that there is one compilation.
    """
    graphdef, params = nnx.split(model)

    @jax.jit
    def forward(params, x, feats):
        x = x.astype(jnp.float32) * (1.0 / 255.0)
        return nnx.merge(graphdef, params)(x, feats)

    n = len(images)
    out = []
    for start in range(0, n, batch):
        idx = np.minimum(np.arange(start, start + batch), n - 1)
        feats = None if features is None else features[idx].astype(np.float32)
        pred = forward(params, images[idx], feats)
        out.append(np.asarray(pred)[: min(batch, n - start)])
    return np.concatenate(out).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _locator(graphdef: nnx.GraphDef | None, prior: squares.SquarePrior, evidence: bool):
    """A jitted (params, images) -> squares (or evidence maps) function, compiled once per
    model structure and prior (params are an argument, so new weights do not recompile)."""
    if not evidence:  # the decoders' own entry points, with their own normalisation
        if graphdef is None:
            return jax.jit(lambda params, x: physics.locate(x, prior))
        return jax.jit(lambda params, x: localiser.decode(nnx.merge(graphdef, params)(x), prior))
    if graphdef is None:
        def edges(params, x):
            return jax.vmap(physics.edge_evidence)(x)
    else:
        def edges(params, x):
            return jax.vmap(localiser.edge_evidence)(nnx.merge(graphdef, params)(x))
    # One map per image: the strongest of the four edges at each pixel boundary.
    return jax.jit(lambda params, x: jnp.max(edges(params, x), axis=1)[:, :-1, :-1])


def _split(model: nnx.Module | None):
    return (None, None) if model is None else nnx.split(model)


def locate_squares(model: nnx.Module | None, images: np.ndarray,
                   prior: squares.SquarePrior | None = None) -> dict[str, np.ndarray]:
    """One square per image, by the dense localiser (`model`) or, with model=None, by the
    physics baseline.

    images: uint8[N, H, W, 3] (one size; any H, W). prior: default seed 1's, scaled to H, W.
    Returns {"center" int32[N, 2] (row, col) pixels, "half_size" int32[N], "score"
    float32[N]} - the score is also an "altered or not" detection score (higher: altered).
    Images go one at a time: the model's activations at 800x800 are ~40 MB per channel set.
    """
    images = np.asarray(images)
    h, w = images.shape[1:3]
    graphdef, params = _split(model)
    run = _locator(graphdef, prior or squares.SquarePrior.seed(h, w), False)
    found = [jax.device_get(run(params, images[i:i + 1])) for i in range(len(images))]
    return {k: np.concatenate([f[k] for f in found]) for k in ("center", "half_size", "score")}


def evidence_maps(model: nnx.Module | None, images: np.ndarray) -> np.ndarray:
    """What the decoder sees, for pictures: images uint8[N, H, W, 3] -> float32[N, H, W], the
    strongest of the four edge-evidence maps at each pixel (model logits or physics steps)."""
    images = np.asarray(images)
    h, w = images.shape[1:3]
    graphdef, params = _split(model)
    run = _locator(graphdef, squares.SquarePrior.seed(h, w), True)
    return np.concatenate([jax.device_get(run(params, images[i:i + 1]))
                           for i in range(len(images))])


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (ties count half): scores float[N], positive bool[N]."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("roc_auc: needs both positive and negative examples")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


# Grey levels (mean |difference| inside the mask, in the saved files) that split the altered
# images for `image_auc_by_change`: under ~4 an edit is within JPEG q75's own noise on these
# photos; 16 and more is plainly visible when pointed out.
CHANGE_EDGES = (4.0, 16.0)


def image_auc_by_change(score: np.ndarray, altered: np.ndarray, change: np.ndarray,
                        edges: tuple[float, ...] = CHANGE_EDGES) -> dict[str, dict]:
    """Detection split by how much each edit changed its image: {"<4": {"n", "image_auc"},
    "4-16": ..., ">=16": ...} for edges (4, 16). A row is the altered images whose `change`
    falls in its range - their scores the positives - against every clean image, as the
    per-kind rows; image_auc is None where a row has no altered or no clean image.

    score float[N] (the image score), altered bool[N], change float[N] (grey levels, e.g. the
    CSV's jpeg_change column: `seed_csv.saved_change`).
    """
    score, change = np.asarray(score, np.float64), np.asarray(change, np.float64)
    altered = np.asarray(altered, bool)
    bounds = (-np.inf, *edges, np.inf)
    rows = {}
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        name = (f"<{hi:g}" if lo == -np.inf else f">={lo:g}" if hi == np.inf
                else f"{lo:g}-{hi:g}")
        chosen = altered & (change >= lo) & (change < hi)
        n = int(chosen.sum())
        use = chosen | ~altered
        auc = roc_auc(score[use], chosen[use]) if n and (~altered).any() else None
        rows[name] = {"n": n, "image_auc": auc}
    return rows


def localisation_report(pred: np.ndarray, center: np.ndarray, half_size_norm: np.ndarray,
                        sizes: np.ndarray) -> tuple[dict[str, float], list[dict]]:
    """Figures for predictions against labels, and per-image rows.

    pred, center: float32[N,2] normalised (row, col); half_size_norm: float32[N] (r / H);
    sizes: float32[N,2] original (H, W). A hit is a predicted centre inside the true square
    (in pixels of the original, so non-square images are handled).
    """
    result: dict[str, float] = {"n": int(len(pred))}
    rows = [{} for _ in range(len(pred))]
    half_px = half_size_norm * sizes[:, 0]
    for prefix, guess in (("", pred), ("middle_", np.full_like(center, 0.5))):
        dist = np.asarray(metrics.center_distance(jnp.asarray(guess), jnp.asarray(center)))
        offset_px = np.abs(guess - center) * sizes
        dist_px = np.sqrt(np.sum(np.square(offset_px), axis=-1))
        hit = np.all(offset_px <= half_px[:, None], axis=-1)
        result.update({
            f"{prefix}mean_distance": float(np.mean(dist)),
            f"{prefix}median_distance": float(np.median(dist)),
            f"{prefix}mean_distance_px": float(np.mean(dist_px)),
            f"{prefix}hit_rate": float(np.mean(hit)),
        })
        for row, d, dpx, h in zip(rows, dist, dist_px, hit):
            row.update({f"{prefix}distance": float(d), f"{prefix}distance_px": float(dpx),
                        f"{prefix}hit": bool(h)})
    for row, p, c in zip(rows, pred, center):
        row.update(pred_row=float(p[0]), pred_col=float(p[1]), true_row=float(c[0]),
                   true_col=float(c[1]))
    return result, rows


@functools.lru_cache(maxsize=16)
def _mask_scorer(graphdef: nnx.GraphDef, prior: squares.SquarePrior | None):
    """A jitted (params, image[1], mask[1], altered[1], kind[1]) -> (sums, score[1], square)
    for one image: the validation's own metric sums (`metrics.mask_sums`, per kind too) and,
    with a prior, the square decoded from the same logits (else None); compiled once per
    model structure, prior and image size."""
    def run(params, x, mask, altered, kind):
        logits = nnx.merge(graphdef, params)(x)
        prob = localiser.mask_prob(logits)
        score = localiser.image_score(prob)
        weight = jnp.ones(1, jnp.float32)
        sums = metrics.mask_sums(prob, mask, score, altered, weight)
        sums.update(metrics.mask_sums_by_kind(prob, mask, score, altered, weight, kind,
                                              KIND_ORDER))
        square = None if prior is None else localiser.decode(logits, prior)
        return sums, score, square
    return jax.jit(run)


def score_masks(model: nnx.Module, images: np.ndarray, mask: np.ndarray, altered: np.ndarray,
                kind: np.ndarray | None = None, prior: squares.SquarePrior | None = None
                ) -> dict:
    """Scores a mask-target localiser (model.target="mask") on labelled images.

    images: uint8[N, H, W, 3]; mask: bool[N, H, W], the altered pixels; altered: bool[N];
    kind: int32[N] indexes config.KIND_ORDER (None: no per-kind rows); prior: also decode
    each image's square from its mask logits (`localiser.decode`, for a run on squares).
    Returns {"overall": pixel_f1, pixel_iou, pixel_auc, image_auc (`metrics.finish`, None
    where a class is missing), "by_kind": {kind: the same, its altered images against every
    clean one, and "n" its altered images} (only kinds with altered images), "score":
    float32[N] (the image score, `localiser.image_score`), "pixel_f1": float32[N] (each
    image's own, 0 where it has no positives predicted or true), and with a prior "square":
    {center int32[N, 2], half_size int32[N], score float32[N]}}. One image per call: at
    800x800 the net's activations are large, and any N then needs one compilation.
    """
    images, mask = np.asarray(images), np.asarray(mask, bool)
    altered = np.asarray(altered, bool)
    per_kind = kind is not None
    kind = np.asarray(kind, np.int32) if per_kind else np.zeros(len(images), np.int32)
    graphdef, params = nnx.split(model)
    run = _mask_scorer(graphdef, prior)
    total, scores, f1, found = None, [], [], []
    for i in range(len(images)):
        sums, score, square = jax.device_get(run(params, images[i:i + 1], mask[i:i + 1],
                                                 altered[i:i + 1], kind[i:i + 1]))
        total = metrics.add(total, sums)
        scores.append(score[0])
        f1.append(metrics.finish({k: v for k, v in sums.items() if "/" not in k})["pixel_f1"])
        found.append(square)
    overall = metrics.finish({k: v for k, v in total.items() if "/" not in k})
    by_kind = {}
    if per_kind:
        by_kind = metrics.finish_by_kind({k: v for k, v in total.items() if "/" in k})
        for name, row in by_kind.items():
            row["n"] = int(total[f"{name}/count"])
    result = {"overall": overall, "by_kind": by_kind,
              "score": np.asarray(scores, np.float32), "pixel_f1": np.asarray(f1, np.float32)}
    if prior is not None:
        result["square"] = {k: np.concatenate([f[k] for f in found])
                            for k in ("center", "half_size", "score")}
    return result
