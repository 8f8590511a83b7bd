"""How visible is each labelled square's edge? An oracle that knows where the square is.

    python -m scripts.edge_visibility --csv ../shared/seed1_dev/labels.csv
        [--per-image rows.csv]

For every row of a seed-format CSV (x = row, y = column, r in the stored image's pixels), reads
the photo at its stored size and scores the square's four edges with `physics.edge_visibility`:
each edge's median log step (about log(ratio) when the gain step is there) and its z against
the 36 lines parallel to it. `z_all` = sum(|z|) / 2, the four edges' z combined as if
independent (|z|: a wrapped edge steps down, far below its neighbours, and is as visible as a
plain one is above them). A locator searches millions of candidate squares, so a square whose
z_all is a few units sits at the noise floor of anything that reads its edges; use it to tell
"the model missed a visible square" from "there is little to see".

Prints one row per photo (stderr) and, last on stdout, one JSON line: n, the quartiles of
z_all, and how many photos reach z_all >= 4, 8 and 16. Errors are one line.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys

from experiments.cli import add_debug_flag, guarded


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.edge_visibility",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", required=True, help="a seed-format labels.csv")
    p.add_argument("--per-image", help="also write the rows to this CSV")
    add_debug_flag(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return guarded(lambda: _main(args), debug=args.debug)


def _main(args: argparse.Namespace) -> int:
    import numpy as np

    from anomaly_jax import decoding, physics, seed_csv
    from anomaly_jax.errors import DataError

    rows = seed_csv.read_csv_rows(args.csv)
    out = []
    for row in rows:
        height, width = decoding.header_size(row.path)
        if height != width:
            raise DataError(f"{row.path}: {width}x{height}, expected a square image (the "
                            "seed format's labels are pixels of a square photo)")
        image = decoding.decode_image(row.path, height)
        seen = physics.edge_visibility(image, (round(row.x), round(row.y)), round(row.r))
        z_all = float(np.nansum(np.abs(seen["z"])) / 2.0)
        out.append({"img_path": row.path, "r": round(row.r), "ratio": row.ratio,
                    **{f"step_{n}": round(float(s), 4) for n, s in
                       zip(("top", "bottom", "left", "right"), seen["step"])},
                    **{f"z_{n}": round(float(z), 2) for n, z in
                       zip(("top", "bottom", "left", "right"), seen["z"])},
                    "z_all": round(z_all, 2)})
        print(f"{row.path}  r={round(row.r)}  ratio={row.ratio}  z=" +
              " ".join(f"{float(z):6.1f}" for z in seen["z"]) + f"  z_all={z_all:6.1f}",
              file=sys.stderr)
    if args.per_image and out:
        with open(args.per_image, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(out[0]))
            writer.writeheader()
            writer.writerows(out)
    z = np.array([o["z_all"] for o in out]) if out else np.zeros(0)
    summary = {"n": len(out), "csv": args.csv}
    if out:
        summary.update({"z_all_quartiles": [round(float(q), 2) for q in
                                            np.percentile(z, [25, 50, 75])],
                        **{f"z_all_ge_{t}": int((z >= t).sum()) for t in (4, 8, 16)}})
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
