"""Detection ROC AUC ("was this photo altered?") on photos the model never trained on.

    python -m scripts.detection_auc --workdir runs/localiser [--step N]
        [--size 800] [--landscapes 16] [--copies 4] [--seed 7] [--quality 75]
    python -m scripts.detection_auc --method physics [--size 800] ...

The photos:

* the held-out package photos (`package_photos.split(available())[1]`: real photos shipped in
  the scikit-image / scikit-learn wheels that `data.package_photos` never adds to training),
  centre-cropped to a square and resized to --size with Pillow's BICUBIC (none when neither
  package is installed);
* --landscapes procedural landscapes made at --size from `jax.random.key(--seed)`: with a
  seed other than the run's (refused when equal), so not the images the run trained on.

Each photo is used `copies` times altered - seed 1's discolor (`corruptions.alter_batch`,
overflow "wrap", ratio 1.05-1.15 and square as sampled there) with a different key per copy
(keys: `jax.random.split(jax.random.key(--seed + 1), n_photos * copies)`) - and `copies` times
clean. The clean copies are IDENTICAL (no alteration, and the JPEG round trip below is
deterministic), so each clean photo is scored once and its score counts `copies` times; every
photo thus weighs the same in both classes. All images then go through a JPEG q75 round trip
(`jpeg.jpeg_roundtrip_batch`, the seed's saving) and are scored by
`evaluation.locate_squares` (the run's dense localiser, or the physics baseline).

Prints a table (stderr) per source, and the last line of standard output is one JSON object:
auc, auc_package_photos, auc_landscapes (null when the source is empty), n_photos, n_clean,
n_altered, hit_rate (predicted centre inside the true square, altered copies), mean_distance
(normalised), mean_score_clean, mean_score_altered, and the settings. Errors are one line.
"""
from __future__ import annotations

import argparse
import json
import sys

from scripts.locator_args import (add_locator_args, load_locator, locator_usage_error,
                                  run_locator_script)

DEFAULT_SIZE = 800


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.detection_auc", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_locator_args(p, workdir_help="a localiser run directory with checkpoints/",
                     size_help=f"side every photo is resized to (default {DEFAULT_SIZE})",
                     size_default=DEFAULT_SIZE)
    p.add_argument("--landscapes", type=int, default=16,
                   help="procedural landscapes added to the package photos (default 16)")
    p.add_argument("--copies", type=int, default=4,
                   help="altered (and clean) copies per photo (default 4)")
    p.add_argument("--seed", type=int, default=7,
                   help="landscape seed (alteration keys: seed + 1); must differ from the "
                        "run's seed (default 7)")
    p.add_argument("--quality", type=int, default=75, help="JPEG quality (default 75)")
    p.add_argument("--no-package-photos", action="store_true",
                   help="landscapes only")
    return p.parse_args(argv)


def _usage_error(args: argparse.Namespace) -> str | None:
    problem = locator_usage_error(args)
    if problem:
        return problem
    if args.landscapes < 0 or args.copies < 1:
        return "--landscapes must be >= 0 and --copies >= 1"
    if not 1 <= args.quality <= 100:
        return f"--quality {args.quality}: expected 1..100"
    return None


def make_examples(photos, copies: int, key, quality: int):
    """photos uint8[P, S, S, 3] -> (clean uint8[P, S, S, 3], altered uint8[P * copies, S, S,
    3], labels of the altered: center float32[P * copies, 2] (row/S, col/S), half_size_norm
    float32[P * copies]), both JPEG round-tripped. Altered copy c of photo p is row
    p * copies + c, altered with key split(key, P * copies)[p * copies + c]."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from anomaly_jax import corruptions, jpeg

    @jax.jit
    def clean_one(image):
        return jpeg.jpeg_roundtrip_batch(image[None], quality)[0]

    @jax.jit
    def altered_of(image, keys):
        batch = jnp.broadcast_to(image, (keys.shape[0], *image.shape))
        out, labels = corruptions.alter_batch("discolor", batch, keys, overflow="wrap")
        return (jpeg.jpeg_roundtrip_batch(out, quality), labels["center"],
                labels["half_size_norm"])

    keys = jax.random.split(key, len(photos) * copies).reshape(len(photos), copies)
    clean, altered, center, half = [], [], [], []
    for photo, photo_keys in zip(photos, keys):  # one photo at a time bounds memory
        clean.append(np.asarray(clean_one(photo)))
        a, c, h = jax.device_get(altered_of(photo, photo_keys))
        altered.append(a)
        center.append(c)
        half.append(h)
    return (np.stack(clean), np.concatenate(altered),
            {"center": np.concatenate(center), "half_size_norm": np.concatenate(half)})


def main(argv: list[str] | None = None) -> int:
    return run_locator_script(parse_args(argv), _main, _usage_error)


def _main(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from anomaly_jax import package_photos, synthetic
    from anomaly_jax.evaluation import localisation_report, locate_squares, roc_auc

    config, model, step = load_locator(args, "detection_auc")
    if model is not None:
        if config.seed == args.seed and config.data.source == "landscapes":
            print(f"error: --seed {args.seed} is the run's own seed: its landscapes are "
                  "the ones it trained on; pick another", file=sys.stderr)
            return 2

    s = args.size
    try:
        names, pkg = (([], np.zeros((0, s, s, 3), np.uint8)) if args.no_package_photos
                      else package_photos.held_out_at(s))
    except ValueError as e:  # a package ships a different file than the one checked
        print(f"error: {e}", file=sys.stderr)
        return 2
    land = np.asarray(synthetic.generate("landscapes", jax.random.key(args.seed),
                                         args.landscapes, s, s))
    photos = np.concatenate([pkg, land])
    source = np.array(["package_photos"] * len(pkg) + ["landscapes"] * len(land))
    if len(photos) == 0:
        print("error: no photos (no package photos installed and --landscapes 0)",
              file=sys.stderr)
        return 2
    clean, altered, labels = make_examples(photos, args.copies,
                                           jax.random.key(args.seed + 1), args.quality)
    # One locate_squares call for everything: each call compiles once.
    found = locate_squares(model, np.concatenate([clean, altered]))
    p = len(photos)
    clean_score = np.repeat(found["score"][:p], args.copies)  # identical copies, scored once
    altered_score = found["score"][p:]
    scores = np.concatenate([clean_score, altered_score])
    positive = np.concatenate([np.zeros(p * args.copies, bool), np.ones(p * args.copies, bool)])
    photo_source = np.repeat(source, args.copies)
    of_source = np.concatenate([photo_source, photo_source])
    pred = found["center"][p:].astype(np.float32) / np.float32(s)
    located, rows = localisation_report(pred, labels["center"], labels["half_size_norm"],
                                       np.full((len(pred), 2), s, np.float32))
    hits = np.array([r["hit"] for r in rows])

    table = [("source", "photos", "clean", "altered", "AUC", "score clean", "score altered",
              "hit rate")]
    result = {}
    for name in ("package_photos", "landscapes", "all"):
        sel = np.ones_like(of_source, bool) if name == "all" else of_source == name
        alt_sel = np.ones(len(pred), bool) if name == "all" else photo_source == name
        if not sel.any():
            result[f"auc_{name}"] = None
            continue
        auc = roc_auc(scores[sel], positive[sel])
        result["auc" if name == "all" else f"auc_{name}"] = auc
        table.append((name, str(int(sel.sum()) // (2 * args.copies)),
                      str(int((sel & ~positive).sum())), str(int((sel & positive).sum())),
                      f"{auc:.3f}", f"{np.mean(scores[sel & ~positive]):.3f}",
                      f"{np.mean(scores[sel & positive]):.3f}", f"{np.mean(hits[alt_sel]):.3f}"))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    who = f"checkpoint step {step} of {args.workdir}" if model is not None else "physics"
    print(f"detection AUC, {who}, {s}x{s}, JPEG q{args.quality}, {args.copies} altered and "
          f"{args.copies} identical clean copies per photo; held-out package photos: "
          f"{', '.join(names) or 'none'}", file=sys.stderr)
    for r in table:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)), file=sys.stderr)

    result.update(
        n_photos=p, n_package_photos=len(pkg), n_landscapes=len(land),
        n_clean=int((~positive).sum()), n_altered=int(positive.sum()),
        clean_copies_identical=True, hit_rate=located["hit_rate"],
        mean_distance=located["mean_distance"],
        mean_score_clean=float(np.mean(clean_score)),
        mean_score_altered=float(np.mean(altered_score)),
        method=args.method, workdir=args.workdir, step=step, size=s, copies=args.copies,
        seed=args.seed, quality=args.quality, package_photos=names)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
