"""Metrics as sums that add up across steps and devices, then finish into means and rates.

Steps return *sums* (never means) with a `count`, so that padded examples weigh zero,
per-device results can be `psum`-ed, and an epoch is the plain sum of its steps. `finish`
turns the totals into the figures of metrics.jsonl and summary.json (`loss`, `distance`, `accuracy`, ...).
"""
from __future__ import annotations

from collections.abc import Mapping

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


def add(a: Mapping[str, jax.Array] | None, b: Mapping[str, jax.Array]) -> dict:
    """Element-wise sum of two metric-sum dicts (`a` may be None for the first)."""
    return dict(b) if a is None else {k: a[k] + b[k] for k in b}


def finish(sums: Mapping[str, float]) -> dict[str, float]:
    """Totals -> means and rates. Precision/recall are 0 when undefined (no positives)."""
    s = {k: float(np.asarray(v)) for k, v in sums.items()}
    n = max(s.get("count", 0.0), 1.0)
    out = {"loss": s["loss"] / n}
    if "distance" in s:
        out["distance"] = s["distance"] / n
        out["hit_rate"] = s["hits"] / n
        out["middle_distance"] = s["middle_distance"] / n
    if "correct" in s:
        out["accuracy"] = s["correct"] / n
        out["precision"] = s["true_pos"] / s["pred_pos"] if s["pred_pos"] else 0.0
        out["recall"] = s["true_pos"] / s["actual_pos"] if s["actual_pos"] else 0.0
    return out
