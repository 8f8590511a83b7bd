"""Exports an altered dataset in the seed's format: images/NNNNN.jpg + labels.csv, plus masks.

    python -m scripts.make_dataset --out DIR [--config NAME] [--set KEY=VALUE]... [--quality 75]

Loads the config's clean source (data.*), alters every image once with corruption.* (any
kind and region, "mix" too) using the per-example key the trainer uses
(alteration.alter_examples), and writes JPEGs (quality 75 = Pillow's default, what the seed
saved with), each image's mask of changed pixels as masks/NNNNN.png (1-bit; all black for
an image left clean) and a labels.csv with x (row), y (column), r (pixels), discolor_ratio and
img_path (relative), an `altered` column when some images were left clean, then mask_path
(relative), kind (its name) and jpeg_change: how much the alteration changed its region in
the files written (mean |difference| in grey levels between the clean and the altered image,
both saved as JPEG at --quality; 0 for a clean image; `seed_csv.saved_change`), which
`scripts.evaluate` splits its detection AUC by. The last line of stdout is {"out", "n", "csv"}.

A held-out benchmark for a localiser_mix run (photos it never trained on: landscapes from
another seed than the run's 42, plus --held-out-photos):

    python -m scripts.make_dataset --config localiser_mix --out heldout --held-out-photos \
        --set seed=7 --set data.num_images=196 --set data.image_size=800 \
        --set corruption.p_altered=0.5 --set corruption.mix_weights=

(mix_weights empty: every kind, also those localiser_mix does not train on.)
"""
from __future__ import annotations

import argparse
import json
import sys

from experiments.cli import add_debug_flag, guarded

# Heavy imports (jax, the library) happen inside the functions: grain's worker processes
# re-import this module when the folder/CSV decoders start, and need none of them.

CHUNK_BYTES = 256 << 20  # images altered per device call: bounds memory at any size


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.make_dataset",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--config", default="cnn_lowlr", help="named config (default cnn_lowlr)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. data.num_images=20 (repeatable)")
    p.add_argument("--quality", type=int, default=75, help="JPEG quality (default 75)")
    p.add_argument("--held-out-photos", action="store_true",
                   help="add the held-out package photos (anomaly_jax.package_photos; never "
                        "trained on), resized to data.image_size, after the config's images")
    add_debug_flag(p)
    return p.parse_args(argv)


def build_config(name: str, overrides: list[str]):
    from anomaly_jax.config import apply_overrides

    from experiments.configs import get_config
    return apply_overrides(get_config(name), overrides)


def alter_all(config, images):
    """(uint8[N, H, W, 3] altered, labels as numpy: center float32[N, 2], half_size int32[N],
    ratio float32[N], altered bool[N], mask bool[N, H, W], kind int32[N] (into KIND_ORDER))."""

    import jax
    import numpy as np

    from anomaly_jax.alteration import alter_examples
    from anomaly_jax.steps import RunKeys

    c = config.corruption
    n, height, width = images.shape[:3]
    chunk = max(1, min(n, CHUNK_BYTES // (height * width * 3)))

    # The trainer's own per-example keys: the export holds the alterations a run trains on.
    corrupt_key = RunKeys.from_seed(config.seed).corrupt

    @jax.jit
    def alter(batch, ids):
        # The files are written as JPEG below: no on-device round trip before that.
        out, labels = alter_examples(c, batch, corrupt_key, ids, None, jpeg_roundtrip=False)
        return out, {k: labels[k] for k in ("center", "half_size", "ratio", "altered", "mask",
                                            "kind")}

    outs, labels = [], []
    for start in range(0, n, chunk):
        ids = np.arange(start, start + chunk, dtype=np.int32)
        valid = min(chunk, n - start)
        # The last chunk is padded to the same shape: one compilation for the whole export.
        batch = images[np.minimum(ids, n - 1)]
        out, lab = jax.device_get(alter(batch, ids))
        outs.append(out[:valid])
        labels.append({k: v[:valid] for k, v in lab.items()})
    return (np.concatenate(outs),
            {k: np.concatenate([lab[k] for lab in labels]) for k in labels[0]})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return guarded(lambda: _main(args), debug=args.debug)


def _main(args: argparse.Namespace) -> int:
    from anomaly_jax.config import KIND_ORDER
    from anomaly_jax.data import load_image_set
    from anomaly_jax.seed_csv import write_seed_format

    config = build_config(args.config, args.set)
    image_set = load_image_set(config.data, config.seed)
    clean = image_set.images
    what = f"{len(image_set.names)} {config.data.source} images"
    if args.held_out_photos:
        import numpy as np

        from anomaly_jax import package_photos
        names, photos = package_photos.held_out_at(config.data.image_size)
        clean = np.concatenate([clean, photos])
        what += f" + {len(names)} held-out package photos ({', '.join(names) or 'none installed'})"
    print(f"altering {what} ({config.corruption.kind}) at {config.data.image_size}px",
          file=sys.stderr)
    images, labels = alter_all(config, clean)
    # The CSV names kinds; the labels index KIND_ORDER.
    kinds = [KIND_ORDER[k] for k in labels["kind"]]
    csv_path = write_seed_format(args.out, images, {**labels, "kind": kinds},
                                 quality=args.quality, clean=clean)
    print(json.dumps({"out": args.out, "n": int(images.shape[0]), "csv": csv_path}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
