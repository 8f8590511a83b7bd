"""Figures and tables from run directories: learning curves, run comparisons, drawn boxes.

Everything here reads the files a run writes (metrics.jsonl, summary.json) or plain arrays;
nothing here trains. Plots use matplotlib's Agg backend (no display needed).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw


def read_metrics(path: str) -> list[dict]:
    """The epoch records of a metrics.jsonl ([] when it does not exist yet)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_run(workdir: str) -> dict:
    """{"name", "history": [epoch records], "summary": dict | None} of a run directory."""
    history = read_metrics(os.path.join(workdir, "metrics.jsonl"))
    summary = None
    if os.path.exists(os.path.join(workdir, "summary.json")):
        with open(os.path.join(workdir, "summary.json")) as f:
            summary = json.load(f)
    name = (summary or {}).get("name") or os.path.basename(os.path.normpath(workdir))
    return {"name": name, "workdir": workdir, "history": history, "summary": summary}


# Validation metrics where higher is better (the rest: lower).
HIGHER_IS_BETTER = ("val_accuracy", "val_image_auc")


def val_metric(history: Sequence[Mapping]) -> str:
    """The run's validation metric: distance for localisation, accuracy for detection, image
    AUC for the localiser's mask target."""
    for metric in HIGHER_IS_BETTER:
        if any(metric in r for r in history):
            return metric
    return "val_distance"


def plot_curves(runs: Sequence[Mapping], out_png: str, title: str | None = None) -> str:
    """Per-epoch validation metric (and training loss) of several runs in one figure,
    like the seed's "Evaluation Matrix between 5 Models". Returns the PNG path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_val, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    metric = val_metric([r for run in runs for r in run["history"]])
    for run in runs:
        epochs = [r["epoch"] for r in run["history"]]
        ax_val.plot(epochs, [r.get(metric, np.nan) for r in run["history"]], marker="o",
                    ms=3, label=run["name"])
        ax_loss.plot(epochs, [r["train_loss"] for r in run["history"]], marker="o", ms=3,
                     label=run["name"])
    if metric == "val_distance":
        middles = [r["val_middle_distance"] for run in runs for r in run["history"]
                   if "val_middle_distance" in r]
        if middles:
            ax_val.axhline(middles[-1], color="grey", ls="--", lw=1,
                           label="always predict the middle")
    ax_val.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=title or "validation")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="training loss")
    ax_loss.set_yscale("log")
    for ax in (ax_val, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def comparison_table(runs: Sequence[Mapping]) -> str:
    """A plain-text table: one row per run with its final and best validation figures."""
    rows = [("run", "epochs", "final val", "best val", "middle baseline", "img/s", "wall s")]
    for run in runs:
        h = run["history"]
        metric = val_metric(h)
        better = max if metric in HIGHER_IS_BETTER else min
        values = [r[metric] for r in h if r.get(metric) is not None]
        middle = next((r["val_middle_distance"] for r in reversed(h)
                       if "val_middle_distance" in r), None)
        ips = [r["train_images_per_s"] for r in h]
        rows.append((run["name"], str(len(h)),
                     f"{values[-1]:.4f}" if values else "-",
                     f"{better(values):.4f}" if values else "-",
                     f"{middle:.4f}" if middle is not None else "-",
                     f"{np.median(ips):.1f}" if ips else "-",
                     f"{h[-1]['wall_s']:.1f}" if h else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def draw_squares(image: np.ndarray, true_center: Sequence[float] | None,
                 pred_center: Sequence[float] | None, half_size: float,
                 pred_half_size: float | None = None) -> Image.Image:
    """The image with the true square (green) and the predicted one (red) drawn on it.

    image: uint8[H,W,3]; centres are normalised (row, col), either may be None; half_size in
    pixels. The predicted square takes `pred_half_size` when given (the dense localiser
    predicts a size), else the true square's size (the seed models predict a centre only).
    """
    h, w = image.shape[:2]
    out = Image.fromarray(image)
    draw = ImageDraw.Draw(out)
    width = max(2, h // 200)
    pred_half = half_size if pred_half_size is None else pred_half_size
    # The prediction first, the truth on top of it.
    for center, colour, half in ((pred_center, (255, 0, 0), pred_half),
                                 (true_center, (0, 255, 0), half_size)):
        if center is None:
            continue
        row, col = center[0] * h, center[1] * w
        draw.rectangle([col - half, row - half, col + half, row + half],
                       outline=colour, width=width)
    return out


def contact_sheet(tiles: Sequence[Image.Image], columns: int = 8, thumb: int = 200,
                  captions: Sequence[str] | None = None) -> Image.Image:
    """Thumbnails (thumb x thumb) in a grid of `columns`, each with an optional caption."""
    rows = -(-len(tiles) // columns)
    caption_h = 14 if captions else 0
    sheet = Image.new("RGB", (columns * thumb, rows * (thumb + caption_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, tile in enumerate(tiles):
        x, y = (i % columns) * thumb, (i // columns) * (thumb + caption_h)
        sheet.paste(tile.convert("RGB").resize((thumb, thumb), Image.BICUBIC), (x, y))
        if captions:
            draw.text((x + 3, y + thumb + 1), captions[i], fill=(0, 0, 0))
    return sheet
