"""Compares runs: python -m experiments.compare runs/* [--out compare.png]

Prints one table (final and best validation figures, the always-predict-the-middle baseline,
throughput) and writes one plot of the validation metric per epoch for all runs. The last
line of standard output is one JSON object with each run's figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from anomaly_jax import report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workdirs", nargs="+", help="run directories")
    p.add_argument("--out", default="compare.png", help="where to write the plot")
    args = p.parse_args(argv)
    missing = [d for d in args.workdirs if not os.path.exists(os.path.join(d, "metrics.jsonl"))]
    if missing:
        print(f"error: no metrics.jsonl in {', '.join(missing)}", file=sys.stderr)
        return 2
    runs = [report.read_run(d) for d in args.workdirs]
    print(report.comparison_table(runs))
    report.plot_curves(runs, args.out, title="validation per epoch")
    print(json.dumps({"plot": args.out, "runs": {
        r["name"]: (r["history"][-1] if r["history"] else None) for r in runs}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
