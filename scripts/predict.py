"""Finds the altered square in photos that have no labels.

    python -m scripts.predict --workdir runs/localiser PHOTO_OR_FOLDER
        [--step N] [--size N] [--draw OUT_DIR] [--csv OUT.csv]
    python -m scripts.predict --method physics PHOTO_OR_FOLDER [--size 800] [--draw OUT_DIR]

Decodes each photo (a folder: every image file under it, recursively, as
`decoding.list_image_files` finds them; EXIF orientation applied; an unreadable file is skipped
with one warning line on stderr naming it and the reason), resizes it to S x S (S: the run's
data.image_size, or --size; --method physics: --size, default 800), and locates one square
with `evaluation.locate_squares` - the dense localiser of a trained run (model.name
"localiser"), or the physics baseline with no training.

Writes one CSV row per photo, `img_path,x,y,r,score`, to stdout (or to --csv): x = centre row,
y = centre column, r = half-size, in pixels of the ORIGINAL photo (x scaled by H/S, y by W/S,
r by H/S: the seed's convention that r is normalised by the height), rounded to integers;
score = the detection score (higher: more likely altered; only comparable within one method
and size).

--draw OUT_DIR writes one PNG per photo, S high and 2S wide: on the left the resized photo
with the predicted square (red), on the right the evidence map - the maximum over the four
edge maps (top, bottom, left, right), `evaluation.evidence_maps`: the model's evidence or
the physics baseline's - at the same S x S, min-max scaled and coloured with matplotlib's
"inferno" (bright: evidence for a square's edge).

The last line of standard output is one JSON object: n (photos located), skipped
(unreadable), csv (the file, or null for stdout), drawn (PNGs written), draw_dir, method,
workdir, step, size. With rows on stdout they come first, the JSON last. Errors are one line.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys

from scripts.locator_args import (DEFAULT_PHYSICS_SIZE, add_locator_args, load_locator,
                                  run_locator_script)
CHUNK = 16  # photos decoded and held at once (bounds memory)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photos", metavar="PHOTO_OR_FOLDER", help="an image file or a folder")
    add_locator_args(p, workdir_help="a localiser run directory with checkpoints/",
                     size_help=f"side the photos are resized to (default: the run's "
                               f"data.image_size; physics: {DEFAULT_PHYSICS_SIZE})")
    p.add_argument("--csv", metavar="OUT_CSV", help="write the rows here instead of stdout")
    p.add_argument("--draw", metavar="OUT_DIR",
                   help="write each photo with its square and evidence map here (PNG)")
    return p.parse_args(argv)


def _photo_paths(target: str) -> tuple[list[str], str | None]:
    """(image paths, the folder they are under or None for a single file)."""
    from anomaly_jax import decoding
    from anomaly_jax.errors import DataError
    if os.path.isdir(target):
        paths = decoding.list_image_files(target, name_others=True)
        if not paths:
            raise DataError(f"no image files ({'/'.join(decoding.IMAGE_EXTENSIONS)}) in "
                            f"folder {target}")
        return paths, target
    if not os.path.exists(target):
        raise FileNotFoundError(f"no such photo or folder: {target}")
    return [target], None


def _heat(evidence):
    """float32[S, S] -> uint8[S, S, 3]: min-max scaled, matplotlib's "inferno"."""
    import matplotlib
    import numpy as np
    lo, hi = float(evidence.min()), float(evidence.max())
    unit = (evidence - lo) / (hi - lo) if hi > lo else np.zeros_like(evidence)
    return (matplotlib.colormaps["inferno"](unit)[..., :3] * 255).round().astype(np.uint8)


def _pixels(value, original: int, size: int) -> int:
    """A boundary coordinate or length in the S x S image -> pixels of the original side."""
    return int(round(float(value) * original / size))


def _draw_name(path: str, folder: str | None) -> str:
    """A PNG name unique within the input: the path under the folder, '/' -> '__'."""
    rel = os.path.relpath(path, folder) if folder else os.path.basename(path)
    return os.path.splitext(rel)[0].replace(os.sep, "__") + "_square.png"


def main(argv: list[str] | None = None) -> int:
    return run_locator_script(parse_args(argv), _main)


def _main(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from anomaly_jax import decoding, report
    from anomaly_jax.evaluation import evidence_maps, locate_squares

    config, model, step = load_locator(args, "predict")
    if model is not None:
        size = args.size or config.data.image_size
    else:
        size = args.size or DEFAULT_PHYSICS_SIZE
    paths, folder = _photo_paths(args.photos)

    if args.draw:
        os.makedirs(args.draw, exist_ok=True)
    out = open(args.csv, "w", newline="") if args.csv else sys.stdout
    writer = csv.writer(out)
    n, skipped, drawn = 0, 0, 0
    chunk: list[tuple[str, np.ndarray, tuple[int, int]]] = []

    def flush():
        nonlocal n, drawn
        batch = np.stack([image for _, image, _ in chunk])
        found = locate_squares(model, batch)
        evidence = evidence_maps(model, batch) if args.draw else None
        if n == 0:
            writer.writerow(["img_path", "x", "y", "r", "score"])
        for k, (path, image, (height, width)) in enumerate(chunk):
            row, col = found["center"][k]
            half = found["half_size"][k]
            # Boundary coordinates scale exactly: resized boundary i is original i * H / S.
            writer.writerow([path, _pixels(row, height, size), _pixels(col, width, size),
                             _pixels(half, height, size), f"{float(found['score'][k]):.6g}"])
            if evidence is not None:
                boxed = report.draw_squares(image, None, (row / size, col / size),
                                            float(half), float(half))
                canvas = np.concatenate([np.asarray(boxed), _heat(evidence[k])], axis=1)
                Image.fromarray(canvas).save(os.path.join(args.draw,
                                                          _draw_name(path, folder)))
                drawn += 1
        n += len(chunk)
        chunk.clear()

    try:
        # Threads in this process (workers=0): Pillow releases the GIL while decoding.
        decoded = decoding.iter_decoded(paths, size, workers=0)
        for i, (image, hw, reason) in enumerate(decoded):
            path = paths[i]
            if reason:
                print(f"warning: skipping unreadable image {path}: {reason}", file=sys.stderr)
                skipped += 1
                continue
            chunk.append((path, image, hw))
            if len(chunk) == CHUNK:
                flush()
        if chunk:
            flush()
    finally:
        if args.csv:
            out.close()
        else:
            out.flush()
    if n == 0:
        print(f"error: no readable image in {args.photos} ({skipped} unreadable)",
              file=sys.stderr)
        return 2
    print(f"{args.method} at {size}x{size}: located {n} photos, skipped {skipped}"
          + (f", wrote {args.csv}" if args.csv else "")
          + (f", drew {drawn} PNGs in {args.draw}" if args.draw else ""), file=sys.stderr)
    print(json.dumps({"n": n, "skipped": skipped, "csv": args.csv, "drawn": drawn,
                      "draw_dir": args.draw, "method": args.method, "workdir": args.workdir,
                      "step": step, "size": size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
