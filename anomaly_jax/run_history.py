"""The run's history on disk: metrics.jsonl (one JSON record per epoch), its console line,
and what a resume or a restart does to it.

`train.train_and_evaluate` is the only writer; `report.read_metrics` reads the file back.
A record is {"epoch", "step", "train_loss", "val_<figure>"..., "val_by_kind" (kind "mix"),
"train_images_per_s", "wall_s", "train_s", "val_s"}.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any

import jax

from anomaly_jax import metrics


def write_file(path: str, text: str, mode: str = "w") -> None:
    """Writes (or appends) whole text and flushes it; a refused write names the file."""
    try:
        with open(path, mode) as f:
            f.write(text)
            f.flush()
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None


# The validation figures an epoch record keeps (as val_<name>), whichever of them the task's
# `metrics.finish` produced: detection, square localisation, or the mask metrics.
VAL_FIGURES = ("loss", "accuracy", "precision", "recall", "distance", "hit_rate",
               "middle_distance", "pixel_f1", "pixel_iou", "pixel_auc", "image_auc")


def epoch_record(epoch: int, step: int, train_sums: Mapping, val: Mapping | None,
                 images_per_s: float, wall_s: float) -> dict:
    """The epoch's record: the train loss of its summed sums (fetched from the device here,
    once per epoch), the validation figures `val` holds, the throughput and the wall time."""
    train = metrics.finish(jax.device_get(train_sums))
    record = {"epoch": epoch, "step": step, "train_loss": train["loss"]}
    if val is not None:
        record.update({f"val_{k}": val[k] for k in VAL_FIGURES if k in val})
        if "by_kind" in val:  # {kind: {pixel_f1, ..., image_auc}} (kind "mix")
            record["val_by_kind"] = {kind: {k: v for k, v in figures.items() if k != "loss"}
                                     for kind, figures in val["by_kind"].items()}
    record.update(train_images_per_s=images_per_s, wall_s=wall_s)
    return record


def format_record(record: Mapping[str, Any]) -> str:
    """One line for the console; per-kind rows (val_by_kind) as kind:pixel_f1/image_auc."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    parts = []
    for k, v in record.items():
        if isinstance(v, Mapping):
            v = " ".join(f"{kind}:{fmt(f.get('pixel_f1'))}/{fmt(f.get('image_auc'))}"
                         for kind, f in v.items())
            k = f"{k}(f1/auc)"
        parts.append(f"{k}={fmt(v)}")
    return "  ".join(parts)


def truncate(path: str, epochs_done: int) -> None:
    """Keeps the first `epochs_done` epoch lines, the history of the checkpoint restored: a
    resumed run rewrites the rest. A torn line (a crash mid-append) is dropped with a warning."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                print(f"{path}: line {number} is torn (a crash while it was written); dropped",
                      file=sys.stderr)
                continue
            if record.get("epoch", 0) <= epochs_done:
                kept.append(json.dumps(record) + "\n")
    with open(path, "w") as f:
        f.writelines(kept)


def set_aside(path: str) -> None:
    """A run starting from step 0 never appends to an older run's history: an existing
    metrics.jsonl (its checkpoints were deleted) is kept as metrics.jsonl.old."""
    if os.path.exists(path) and os.path.getsize(path):
        os.replace(path, path + ".old")
        print(f"{path}: no checkpoint to resume from; the previous history is kept as "
              f"{os.path.basename(path)}.old", file=sys.stderr)
