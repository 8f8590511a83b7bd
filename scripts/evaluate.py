"""Evaluates a localiser on a seed-format dataset (labels.csv + JPEGs): a trained run, or the
physics baseline that needs no training.

    python -m scripts.evaluate --workdir runs/cnn_lowlr --csv ../shared/seed1_dev/labels.csv
        [--step N] [--per-image out.csv] [--draw DIR] [--sheet SHEET.png]
    python -m scripts.evaluate --workdir runs/localiser --csv LABELS.csv [--size N]
    python -m scripts.evaluate --method physics --csv LABELS.csv [--size 800]
    python -m scripts.evaluate --workdir runs/localiser_mix --csv HELD_OUT/labels.csv

--method model (the default) loads the best checkpoint of --workdir (or --step N) and resizes
the images to the run's data.image_size. A seed model (seed_cnn, fusion_*) regresses the
centre; the dense localiser (model.name "localiser") and --method physics locate a whole
square with `evaluation.locate_squares`, whose score is also a detection score. --method
physics needs no run: it resizes the images to --size (default 800). --size also runs a
localiser run at another size (seed models only take their own).

--draw writes each image with the true (green) and predicted (red) squares, like seed 1's
"9_with_box" figure (the predicted square has the true square's size for seed models, its own
for the localiser and physics). --sheet writes all the images in one contact sheet, each
captioned hit/miss and its distance. --per-image writes one CSV row per image (pred_half_size,
in pixels of the original, and score too for the localiser and physics).

The last line of standard output is one JSON object: n, mean_distance (normalised, the seed's
metric), median_distance, mean_distance_px (at the images' original size), hit_rate (share of
predicted centres inside the true square), the same for always predicting the middle
(middle_*), method, and for the localiser / physics mean_score (and auc when the CSV has an
`altered` column with both clean and altered images). Errors are one line on stderr.

A model.target=mask run (`localiser_mix`) predicts the altered pixels, not a square: it is
scored on a CSV with masks (`scripts.make_dataset`'s mask_path and kind columns), and the JSON
holds n, n_altered, n_clean, pixel_f1, pixel_iou (at probability 0.5), pixel_auc, image_auc
(the image score of the altered images against the clean ones) and by_kind: the same per
kind, each kind's altered images against every clean image, with n its altered images, and,
when the CSV has make_dataset's jpeg_change column, by_change: the image AUC of the altered
images that changed their region by < 4, 4-16 and >= 16 grey levels in the files, each
against every clean image (`evaluation.image_auc_by_change`).
A mask run trained on corruption.region=square also decodes each altered image's square from
its mask (`localiser.mask_evidence`, the same exhaustive search) and adds "square": the
localisation figures above on the altered images. --per-image writes img_path, kind,
altered, score, pixel_f1 (and jpeg_change).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys

import numpy as np

from scripts.locator_args import DEFAULT_PHYSICS_SIZE, add_locator_args, run_locator_script


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_locator_args(p, workdir_help="a run directory with checkpoints/ (--method model)",
                     size_help=f"side the images are resized to (physics: default "
                               f"{DEFAULT_PHYSICS_SIZE}; localiser runs: default the run's "
                               "data.image_size; not for seed models)")
    p.add_argument("--csv", required=True, help="seed-format labels.csv")
    p.add_argument("--per-image", metavar="OUT_CSV", help="write one row per image here")
    p.add_argument("--draw", metavar="DIR", help="write images with both squares drawn here")
    p.add_argument("--sheet", metavar="PNG",
                   help="write one contact sheet of every image with both squares and hit/miss")
    p.add_argument("--batch", type=int, default=8, help="images per forward pass (seed models)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_locator_script(parse_args(argv), _main)


def _main(args: argparse.Namespace) -> int:
    from PIL import Image

    from anomaly_jax import data, models, report
    from anomaly_jax.config import DataConfig, is_detection
    from anomaly_jax.evaluation import (localisation_report, locate_squares, predict_centers,
                                        roc_auc)
    from anomaly_jax.train import restore_params

    model, step, dense = None, None, True
    if args.method == "model":
        config, model, step = restore_params(args.workdir, args.step)
        if is_detection(config):
            print(f"error: {args.workdir} is a detection run ({config.model.name}); evaluate "
                  "scores localisation runs", file=sys.stderr)
            return 2
        dense = models.is_dense(config.model.name)
        if config.model.target == "mask":
            return _evaluate_masks(args, config, model, step)
        if args.size is not None and not dense:
            print(f"error: --size: {config.model.name} takes only its own input size "
                  f"({config.data.image_size}); --size is for localiser runs and "
                  "--method physics", file=sys.stderr)
            return 2
        data_config = dataclasses.replace(config.data, source="csv", csv=args.csv)
        if args.size is not None:
            data_config = dataclasses.replace(data_config, image_size=args.size)
        seed = config.seed
    else:
        data_config = DataConfig(source="csv", csv=args.csv,
                                 image_size=args.size or DEFAULT_PHYSICS_SIZE)
        seed = 0  # unused by a CSV source
    images = data.load_image_set(data_config, seed)
    targets = images.targets
    size = data_config.image_size
    sizes = _original_sizes(images.names)
    found = None
    if dense:
        # model None: the physics baseline. Centres in pixels of the size x size image.
        found = locate_squares(model, images.images)
        pred = found["center"].astype(np.float32) / np.float32(size)
        # Half-size in pixels of the original, by the row scale (as labels' r / H).
        pred_half = found["half_size"].astype(np.float32) * sizes[:, 0] / size
    else:
        features = targets["features"] if models.uses_features(config.model.name) else None
        pred = predict_centers(model, images.images, features, batch=args.batch)
    result, rows = localisation_report(pred, targets["center"], targets["half_size_norm"],
                                       sizes)
    result["method"] = args.method
    if found is not None:
        result["mean_score"] = float(np.mean(found["score"]))
        for row, half, score in zip(rows, pred_half, found["score"]):
            row.update(pred_half_size=float(half), score=float(score))
        altered = targets.get("altered")
        if altered is not None and altered.any() and not altered.all():
            result["auc"] = roc_auc(found["score"], altered)
    who = (f"checkpoint step {step} of {args.workdir}" if args.method == "model"
           else "physics baseline")
    print(f"{who} at {size}x{size} on {len(rows)} images from {args.csv}", file=sys.stderr)
    label = "model " if args.method == "model" else "physics"
    print(f"  {label}: mean distance {result['mean_distance']:.4f} "
          f"(median {result['median_distance']:.4f}, {result['mean_distance_px']:.1f} px), "
          f"hit rate {result['hit_rate']:.3f}"
          + (f", mean score {result['mean_score']:.3f}" if found is not None else ""),
          file=sys.stderr)
    print(f"  middle : mean distance {result['middle_mean_distance']:.4f} "
          f"(median {result['middle_median_distance']:.4f}, "
          f"{result['middle_mean_distance_px']:.1f} px), "
          f"hit rate {result['middle_hit_rate']:.3f}", file=sys.stderr)
    if "auc" in result:
        print(f"  detection AUC (score, altered column): {result['auc']:.3f}", file=sys.stderr)
    if args.per_image:
        with open(args.per_image, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["img_path", *rows[0]])
            writer.writeheader()
            for name, row in zip(images.names, rows):
                writer.writerow({"img_path": name, **row})
    if args.draw:
        os.makedirs(args.draw, exist_ok=True)
        for i, name in enumerate(images.names):
            original = np.asarray(Image.open(name).convert("RGB"))
            half = float(targets["half_size_norm"][i] * sizes[i, 0])
            drawn = report.draw_squares(original, targets["center"][i], pred[i], half,
                                        None if found is None else float(pred_half[i]))
            drawn.save(os.path.join(args.draw, os.path.splitext(os.path.basename(name))[0]
                                    + "_with_box.png"))
        result["drawn"] = args.draw
    if args.sheet:
        tiles, captions = [], []
        for i, name in enumerate(images.names):
            original = np.asarray(Image.open(name).convert("RGB"))
            half = float(targets["half_size_norm"][i] * sizes[i, 0])
            tiles.append(report.draw_squares(original, targets["center"][i], pred[i], half,
                                             None if found is None else float(pred_half[i])))
            captions.append(f"{os.path.basename(name)}  {'hit' if rows[i]['hit'] else 'miss'}"
                            f"  d={rows[i]['distance']:.3f}")
        os.makedirs(os.path.dirname(os.path.abspath(args.sheet)), exist_ok=True)
        report.contact_sheet(tiles, captions=captions).save(args.sheet)
        result["sheet"] = args.sheet
    result.update(workdir=args.workdir, step=step, csv=args.csv, image_size=size,
                  skipped_images=len(images.skipped))
    print(json.dumps(result))
    return 0


def _original_sizes(paths) -> np.ndarray:
    """float32[N, 2]: each image's original (height, width) as decoding sees it, from its file
    header (for distances in pixels of the originals)."""
    from anomaly_jax.decoding import header_size
    return np.array([header_size(p) for p in paths], np.float32).reshape(-1, 2)


def _evaluate_masks(args: argparse.Namespace, config, model, step: int) -> int:
    """A mask-target run (issue 12) on a CSV with masks (`scripts.make_dataset`'s export):
    pixel F1/IoU/AUC and image AUC, overall and per kind (`evaluation.score_masks`)."""
    from anomaly_jax import data
    from anomaly_jax.config import KIND_ORDER
    from anomaly_jax.errors import ConfigError
    from anomaly_jax.evaluation import image_auc_by_change, localisation_report, score_masks
    from anomaly_jax.squares import SquarePrior

    if args.draw or args.sheet:
        raise ConfigError("--draw/--sheet: draw squares, and a model.target=mask run predicts "
                          "no square; use --per-image for its scores")
    data_config = dataclasses.replace(config.data, source="csv", csv=args.csv,
                                      image_size=args.size or config.data.image_size)
    images = data.load_image_set(data_config, config.seed)
    targets = images.targets
    if "mask" not in targets:
        raise ConfigError(f"{args.csv}: no mask_path column; a model.target=mask run is scored "
                          "against label masks - export a set with python -m "
                          "scripts.make_dataset")
    altered = targets.get("altered", np.ones(len(images.names), bool))
    kind = targets.get("kind")
    # Trained on squares: the structured decoder too (`localiser.mask_evidence`), from the
    # same forward pass, scored like a square localiser on the altered images.
    size = data_config.image_size
    on_squares = config.corruption.region == "square"
    got = score_masks(model, images.images, targets["mask"], altered, kind,
                      prior=SquarePrior.seed(size, size) if on_squares else None)
    n_altered = int(altered.sum())
    result = {"n": len(images.names), "n_altered": n_altered,
              "n_clean": len(images.names) - n_altered, **got["overall"],
              "by_kind": got["by_kind"]}
    if "jpeg_change" in targets:
        result["by_change"] = image_auc_by_change(got["score"], altered,
                                                  targets["jpeg_change"])
    square = None
    if on_squares and n_altered:
        center = got["square"]["center"][altered].astype(np.float32) / np.float32(size)
        square, _ = localisation_report(center, targets["center"][altered],
                                        targets["half_size_norm"][altered],
                                        _original_sizes(np.array(images.names)[altered]))
        result["square"] = square
    result.update(method="model", workdir=args.workdir, step=step, csv=args.csv,
                  image_size=data_config.image_size, skipped_images=len(images.skipped))

    def fmt(value):
        return "  n/a" if value is None else f"{value:.3f}"

    print(f"checkpoint step {step} of {args.workdir} at {data_config.image_size}x"
          f"{data_config.image_size} on {result['n']} images ({n_altered} altered) from "
          f"{args.csv}", file=sys.stderr)
    print(f"  {'kind':10s} {'altered':>7s} {'pixel F1':>8s} {'IoU':>6s} {'px AUC':>6s} "
          f"{'image AUC':>9s}", file=sys.stderr)
    for name, row in [("all", {**got["overall"], "n": n_altered}), *got["by_kind"].items()]:
        print(f"  {name:10s} {row['n']:7d} {fmt(row['pixel_f1']):>8s} "
              f"{fmt(row['pixel_iou']):>6s} {fmt(row['pixel_auc']):>6s} "
              f"{fmt(row['image_auc']):>9s}", file=sys.stderr)
    if "by_change" in result:
        print("  image AUC by the edit's change in the files (grey levels in its mask):  "
              + ";  ".join(f"{name}: {fmt(row['image_auc'])} ({row['n']} images)"
                           for name, row in result["by_change"].items()), file=sys.stderr)
    if square is not None:
        print(f"  square decoded from the mask ({n_altered} altered images): mean distance "
              f"{square['mean_distance']:.4f} (median {square['median_distance']:.4f}), hit "
              f"rate {square['hit_rate']:.3f}; middle {square['middle_mean_distance']:.4f}, "
              f"{square['middle_hit_rate']:.3f}", file=sys.stderr)
    if args.per_image:
        with open(args.per_image, "w", newline="") as f:
            writer = csv.writer(f)
            change = targets.get("jpeg_change")
            writer.writerow(["img_path", "kind", "altered", "score", "pixel_f1"]
                            + ([] if change is None else ["jpeg_change"]))
            for i, name in enumerate(images.names):
                writer.writerow([name, "" if kind is None else KIND_ORDER[kind[i]],
                                 int(altered[i]), float(got["score"][i]),
                                 float(got["pixel_f1"][i])]
                                + ([] if change is None else [float(change[i])]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
