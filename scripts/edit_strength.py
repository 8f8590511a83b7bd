"""How strongly each alteration kind changes a photo once it is saved as JPEG: the signal a
detector has to work with.

    python -m scripts.edit_strength [--size 800] [--landscapes 16] [--seed 7] [--region free]
        [--quality 75]

For every kind of KIND_ORDER: --landscapes procedural landscapes (from jax.random.key(--seed))
and the held-out package photos (`package_photos.held_out_at`), each altered once
(`alteration.alter_examples`, corruption.kind=K, --region, p_altered=1, keys from --seed);
clean and altered both through the same JPEG round trip at --quality (`jpeg`); then, inside
each image's mask, `metrics.mask_change`: the mean absolute difference in grey levels and the
share of the mask's pixels the edit changed at all (before JPEG). A kind whose difference is a
grey level or two (smudge on smooth content) leaves a detector little to see at any size.

Prints a table (stderr); the last stdout line is JSON {kind: {source: {"mean_abs_diff",
"median_abs_diff", "changed", "images"}}} plus the settings.
"""
from __future__ import annotations

import argparse
import json
import sys

from experiments.cli import add_debug_flag, guarded

CHUNK = 8  # images per device call: bounds memory at 800x800


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.edit_strength",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=800, help="image side (default 800)")
    p.add_argument("--landscapes", type=int, default=16, help="landscapes (default 16)")
    p.add_argument("--seed", type=int, default=7, help="landscapes and alteration seed")
    p.add_argument("--region", choices=("square", "free"), default="free")
    p.add_argument("--quality", type=int, default=75, help="JPEG quality (0 = no JPEG)")
    add_debug_flag(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return guarded(lambda: _main(args), debug=args.debug)


def _main(args: argparse.Namespace) -> int:
    import functools

    import jax
    import numpy as np

    from anomaly_jax import jpeg, metrics, package_photos, synthetic
    from anomaly_jax.alteration import alter_examples
    from anomaly_jax.config import KIND_ORDER, CorruptionConfig
    from anomaly_jax.errors import ConfigError

    if args.size < 16 or args.landscapes < 0 or not 0 <= args.quality <= 100:
        raise ConfigError("--size >= 16, --landscapes >= 0 and --quality in 0..100 expected")
    names, photos = package_photos.held_out_at(args.size)
    sources = {"landscapes": np.asarray(synthetic.generate(
        "landscapes", jax.random.key(args.seed), args.landscapes, args.size, args.size)),
        "package_photos": photos}

    @functools.partial(jax.jit, static_argnames="kind")
    def strength(images, ids, kind):
        c = CorruptionConfig(kind=kind, region=args.region, p_altered=1.0)
        altered, labels = alter_examples(c, images, jax.random.key(args.seed), ids,
                                         jpeg_roundtrip=False)
        changed = metrics.mask_change(images, altered, labels["mask"])[1]
        if args.quality:
            images = jpeg.jpeg_roundtrip_batch(images, args.quality)
            altered = jpeg.jpeg_roundtrip_batch(altered, args.quality)
        return metrics.mask_change(images, altered, labels["mask"])[0], changed

    result = {}
    print(f"{'kind':10s} {'source':15s} {'images':>6s} {'mean |diff|':>11s} {'median':>7s} "
          f"{'changed':>7s}   (grey levels inside the mask after JPEG q{args.quality})",
          file=sys.stderr)
    for kind in KIND_ORDER:
        result[kind] = {}
        for source, images in sources.items():
            if len(images) == 0:
                continue
            diffs, changed = [], []
            for start in range(0, len(images), CHUNK):
                ids = np.arange(start, start + CHUNK, dtype=np.int32)
                batch = images[np.minimum(ids, len(images) - 1)]  # one shape: one compile
                d, c = jax.device_get(strength(batch, ids, kind))
                valid = min(CHUNK, len(images) - start)
                diffs.append(d[:valid])
                changed.append(c[:valid])
            d, c = np.concatenate(diffs), np.concatenate(changed)
            row = {"mean_abs_diff": float(d.mean()), "median_abs_diff": float(np.median(d)),
                   "changed": float(c.mean()), "images": int(len(d))}
            result[kind][source] = row
            print(f"{kind:10s} {source:15s} {row['images']:6d} {row['mean_abs_diff']:11.2f} "
                  f"{row['median_abs_diff']:7.2f} {row['changed']:7.2f}", file=sys.stderr)
    print(json.dumps({**result, "size": args.size, "region": args.region,
                      "quality": args.quality, "seed": args.seed, "package_photos": names}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
