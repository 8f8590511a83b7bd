"""Evaluates a trained localisation run on a seed-format dataset (labels.csv + JPEGs).

    python -m scripts.evaluate --workdir runs/cnn_lowlr --csv ../shared/seed1_dev/labels.csv
        [--step N] [--per-image out.csv] [--draw DIR]

Loads the best checkpoint (or --step N), resizes the images to the run's data.image_size,
predicts each centre and compares it with the label. --draw writes each image with the
true (green) and predicted (red) squares, like seed 1's "9_with_box" figure. The last line
of standard output is one JSON object: n, mean_distance (normalised, the seed's metric),
median_distance, mean_distance_px (at the images' original size), hit_rate (share of
predicted centres inside the true square), and the same for always predicting the middle.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="a run directory with checkpoints/")
    p.add_argument("--csv", required=True, help="seed-format labels.csv")
    p.add_argument("--step", type=int, help="checkpoint step (default: the best)")
    p.add_argument("--per-image", metavar="OUT_CSV", help="write one row per image here")
    p.add_argument("--draw", metavar="DIR", help="write images with both squares drawn here")
    p.add_argument("--batch", type=int, default=8, help="images per forward pass")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np
    from PIL import Image

    from anomaly_jax import data, models, report
    from anomaly_jax.errors import USER_ERRORS, exit_code
    from anomaly_jax.evaluation import localisation_report, predict_centers
    from anomaly_jax.train import restore_params

    try:
        config, model, step = restore_params(args.workdir, args.step)
        if config.model.name == "white_box_net":
            print(f"error: {args.workdir} is a detection run (white_box_net); evaluate "
                  "scores localisation runs", file=sys.stderr)
            return 2
        data_config = dataclasses.replace(config.data, source="csv", csv=args.csv)
        images = data.load_image_set(data_config, config.seed)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return exit_code(e)
    targets = images.targets
    # Original sizes (height, width) from the file headers, for distances in pixels.
    sizes = np.array([Image.open(p).size[::-1] for p in images.names], np.float32)
    features = targets["features"] if models.uses_features(config.model.name) else None
    pred = predict_centers(model, images.images, features, batch=args.batch)
    result, rows = localisation_report(pred, targets["center"], targets["half_size_norm"],
                                       sizes)
    print(f"checkpoint step {step} of {args.workdir} on {len(rows)} images from {args.csv}",
          file=sys.stderr)
    print(f"  model : mean distance {result['mean_distance']:.4f} "
          f"(median {result['median_distance']:.4f}, {result['mean_distance_px']:.1f} px), "
          f"hit rate {result['hit_rate']:.3f}", file=sys.stderr)
    print(f"  middle: mean distance {result['middle_mean_distance']:.4f} "
          f"(median {result['middle_median_distance']:.4f}, "
          f"{result['middle_mean_distance_px']:.1f} px), "
          f"hit rate {result['middle_hit_rate']:.3f}", file=sys.stderr)
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
            drawn = report.draw_squares(original, targets["center"][i], pred[i], half)
            drawn.save(os.path.join(args.draw, os.path.splitext(os.path.basename(name))[0]
                                    + "_with_box.png"))
        result["drawn"] = args.draw
    result.update(workdir=args.workdir, step=step, csv=args.csv,
                  skipped_images=len(images.skipped))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
