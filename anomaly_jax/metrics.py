"""Metrics as sums that add up across steps and devices, then finish into means and rates.

Steps return *sums* (never means) with a `count`, so that padded examples weigh zero,
per-device results can be `psum`-ed, and an epoch is the plain sum of its steps. `finish`
turns the totals into the figures of metrics.jsonl and summary.json (`loss`, `distance`, `accuracy`, ...).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def center_distance(pred: jax.Array, center: jax.Array) -> jax.Array:
    """Euclidean distance between normalised centres: float32[B,2] x2 -> float32[B]."""
    return jnp.sqrt(jnp.sum(jnp.square(pred.astype(jnp.float32) - center), axis=-1))


def localisation_sums(pred: jax.Array, center: jax.Array, half_size_norm: jax.Array,
                      weight: jax.Array) -> dict[str, jax.Array]:
    """Sums for a localisation batch.

    pred, center: float32[B,2] (row, col) / side; half_size_norm: float32[B];
    weight: float32[B], 0 for padding. `hits` counts predictions inside the true square;
    `middle_distance` is the always-predict-the-middle baseline on the same examples.
    """
    dist = center_distance(pred, center)
    sq_err = jnp.mean(jnp.square(pred.astype(jnp.float32) - center), axis=-1)
    inside = jnp.all(jnp.abs(pred - center) <= half_size_norm[:, None], axis=-1)
    middle = center_distance(jnp.full_like(center, 0.5), center)
    return {
        "loss": jnp.sum(sq_err * weight),
        "distance": jnp.sum(dist * weight),
        "hits": jnp.sum(inside * weight),
        "middle_distance": jnp.sum(middle * weight),
        "count": jnp.sum(weight),
    }


def detection_sums(logits: jax.Array, altered: jax.Array, weight: jax.Array
                   ) -> dict[str, jax.Array]:
    """Sums for a detection batch: logits float32[B,2], altered bool[B], weight float32[B]."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    label = altered.astype(jnp.int32)
    nll = -jnp.take_along_axis(logp, label[:, None], axis=-1)[:, 0]
    predicted = jnp.argmax(logits, axis=-1) == 1
    return {
        "loss": jnp.sum(nll * weight),
        "correct": jnp.sum((predicted == altered) * weight),
        "true_pos": jnp.sum((predicted & altered) * weight),
        "pred_pos": jnp.sum(predicted * weight),
        "actual_pos": jnp.sum(altered * weight),
        "count": jnp.sum(weight),
    }


AUC_BINS = 256  # score histogram bins for the summable ROC AUCs (scores in [0, 1])


def _histogram(scores: jax.Array, weight: jax.Array) -> jax.Array:
    """Weighted histogram of scores in [0, 1] over AUC_BINS equal bins: float32[AUC_BINS]."""
    index = jnp.clip((scores * AUC_BINS).astype(jnp.int32), 0, AUC_BINS - 1)
    return jnp.zeros(AUC_BINS, jnp.float32).at[index.reshape(-1)].add(weight.reshape(-1))


def mask_sums(prob: jax.Array, mask: jax.Array, image_score: jax.Array, altered: jax.Array,
              weight: jax.Array, threshold: float = 0.5) -> dict[str, jax.Array]:
    """Sums for a batch of predicted masks (issue 12's metrics), all summable over steps and
    devices.

    prob: float32[B, H, W] in [0, 1], the predicted probability that a pixel was altered;
    mask: bool[B, H, W], the pixels that were; image_score: float32[B] in [0, 1], the
    "altered or not" score; altered: bool[B]; weight: float32[B], 0 for padding.
    Pixel F1 and IoU (micro, over every pixel of the split) at `threshold`; pixel and image ROC
    AUCs from score histograms split by the truth (exact up to AUC_BINS-wide score bins).
    """
    w = weight[:, None, None]
    predicted = prob >= threshold
    pixel_w = jnp.broadcast_to(w, prob.shape)
    return {
        "pixel_tp": jnp.sum((predicted & mask) * w),
        "pixel_fp": jnp.sum((predicted & ~mask) * w),
        "pixel_fn": jnp.sum((~predicted & mask) * w),
        "pixel_pos_hist": _histogram(prob, pixel_w * mask),
        "pixel_neg_hist": _histogram(prob, pixel_w * ~mask),
        "image_pos_hist": _histogram(image_score, weight * altered),
        "image_neg_hist": _histogram(image_score, weight * ~altered),
        "count": jnp.sum(weight),
    }


def mask_change(clean: jax.Array, altered: jax.Array, mask: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
    """How much an alteration changed its region, per image: (mean absolute difference in
    grey levels over the mask's pixels and the three channels float32[B], share of the mask's
    pixels with any channel changed float32[B]); both 0 for an empty mask.

    clean, altered: uint8[B, H, W, 3] (e.g. both after the same JPEG round trip); mask:
    bool[B, H, W]. The signal left for a detector (`scripts.edit_strength`).
    """
    diff = jnp.abs(altered.astype(jnp.int32) - clean.astype(jnp.int32))
    pixels = jnp.maximum(jnp.sum(mask, axis=(1, 2)), 1).astype(jnp.float32)
    mean = jnp.sum(jnp.where(mask, jnp.sum(diff, axis=-1), 0), axis=(1, 2)) / (3.0 * pixels)
    changed = jnp.sum(mask & jnp.any(diff > 0, axis=-1), axis=(1, 2)) / pixels
    return mean, changed


def mask_sums_by_kind(prob: jax.Array, mask: jax.Array, image_score: jax.Array,
                      altered: jax.Array, weight: jax.Array, kind: jax.Array,
                      kind_names: tuple[str, ...], threshold: float = 0.5
                      ) -> dict[str, jax.Array]:
    """`mask_sums` for each alteration kind, keys "<kind>/<sum>" (kind: int32[B] indexes
    kind_names). A kind's row is its altered images - their pixels, and their scores as the
    positives of its image AUC - against every clean image as the negatives: a clean image
    has no kind (the one drawn for it was never applied), and sharing the negatives makes the
    kinds' AUCs comparable. `count` is the kind's altered images. `finish_by_kind` turns the
    sums into one row per kind."""
    clean_hist = _histogram(image_score, weight * ~altered)
    out = {}
    for index, name in enumerate(kind_names):
        sums = mask_sums(prob, mask, image_score, altered, weight * (kind == index) * altered,
                         threshold)
        sums["image_neg_hist"] = clean_hist
        out.update({f"{name}/{k}": v for k, v in sums.items()})
    return out


def finish_by_kind(sums: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """{kind: finish(its sums)} for the kinds with examples, from `mask_sums_by_kind` sums."""
    kinds: dict[str, dict] = {}
    for key, value in sums.items():
        name, _, field = key.partition("/")
        kinds.setdefault(name, {})[field] = value
    return {name: finish(group) for name, group in kinds.items()
            if float(np.asarray(group["count"])) > 0}


def histogram_auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """ROC AUC from score histograms of the positives and negatives (ties within a bin count
    half, as the Mann-Whitney statistic does); None when a class is empty."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    if pos.sum() == 0 or neg.sum() == 0:
        return None
    below = np.cumsum(neg) - neg
    return float(np.sum(pos * (below + 0.5 * neg)) / (pos.sum() * neg.sum()))


def add(a: Mapping[str, jax.Array] | None, b: Mapping[str, jax.Array]) -> dict:
    """Element-wise sum of two metric-sum dicts (`a` may be None for the first)."""
    return dict(b) if a is None else {k: a[k] + b[k] for k in b}


def finish(sums: Mapping[str, float]) -> dict[str, float]:
    """Totals -> means and rates. Precision/recall are 0 when undefined (no positives)."""
    hists = {k: np.asarray(v) for k, v in sums.items() if k.endswith("_hist")}
    s = {k: float(np.asarray(v)) for k, v in sums.items() if k not in hists}
    n = max(s.get("count", 0.0), 1.0)
    out = {"loss": s["loss"] / n} if "loss" in s else {}
    if "pixel_tp" in s:
        tp, fp, fn = s["pixel_tp"], s["pixel_fp"], s["pixel_fn"]
        out["pixel_f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        out["pixel_iou"] = tp / (tp + fp + fn) if tp + fp + fn else 0.0
        out["pixel_auc"] = histogram_auc(hists["pixel_pos_hist"], hists["pixel_neg_hist"])
        out["image_auc"] = histogram_auc(hists["image_pos_hist"], hists["image_neg_hist"])
    if "distance" in s:
        out["distance"] = s["distance"] / n
        out["hit_rate"] = s["hits"] / n
        out["middle_distance"] = s["middle_distance"] / n
    if "correct" in s:
        out["accuracy"] = s["correct"] / n
        out["precision"] = s["true_pos"] / s["pred_pos"] if s["pred_pos"] else 0.0
        out["recall"] = s["true_pos"] / s["actual_pos"] if s["actual_pos"] else 0.0
    return out
