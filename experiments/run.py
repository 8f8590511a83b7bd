"""Runs one named experiment: python -m experiments.run --config NAME [--set KEY=VALUE]...

Parses flags and calls `anomaly_jax.train.train_and_evaluate(config, workdir)`. Running the
same command on the same --workdir resumes where it stopped; --fresh starts over. The last
line of standard output is the run's summary as one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from experiments.configs import CONFIGS, describe, get_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="list the named configs and exit")
    p.add_argument("--config", help=f"one of: {', '.join(CONFIGS)}")
    p.add_argument("--workdir", help="run directory (default runs/NAME)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--fresh", action="store_true",
                   help="delete the workdir's checkpoints and metrics and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name in CONFIGS:
            print(describe(get_config(name)))
        return 0
    if not args.config:
        print("error: --config NAME is required (or --list)", file=sys.stderr)
        return 2
    # Imported here so that --list and --help answer without starting JAX.
    from anomaly_jax import report
    from anomaly_jax.errors import USER_ERRORS, exit_code
    from anomaly_jax.config import apply_overrides
    from anomaly_jax.train import train_and_evaluate

    try:
        config = apply_overrides(get_config(args.config), args.overrides)
        workdir = args.workdir or os.path.join("runs", config.name)
        summary = train_and_evaluate(config, workdir, fresh=args.fresh,
                                     progress=not args.no_progress)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return exit_code(e)
    run = report.read_run(workdir)
    summary["plot"] = report.plot_curves([run], os.path.join(workdir, "learning_curves.png"),
                                         title=config.name)
    summary["workdir"] = workdir
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
