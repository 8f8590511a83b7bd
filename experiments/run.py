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

from experiments.cli import add_debug_flag, guarded
from experiments.configs import CONFIGS, describe, get_config

DEFAULT_COMPILE_CACHE = "~/.cache/anomaly_jax/xla"


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
    g = p.add_argument_group(
        "several processes (one per host; with none of these, a SLURM or Open MPI job of "
        "several tasks is detected by JAX); to try it on one machine: experiments.launch")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    g.add_argument("--num-processes", type=int, metavar="N")
    g.add_argument("--process-id", type=int, metavar="I")
    p.add_argument("--compile-cache", metavar="DIR", default=None,
                   help="JAX's persistent compilation cache (default $JAX_COMPILATION_CACHE_DIR"
                        f" or {DEFAULT_COMPILE_CACHE}); 'off' disables it")
    add_debug_flag(p)
    return p.parse_args(argv)


def use_compile_cache(directory: str | None) -> str | None:
    """Turns on JAX's persistent compilation cache, so that a rerun or a resume does not pay
    compilation again. Returns the directory (None when off)."""
    import jax
    directory = directory or os.environ.get("JAX_COMPILATION_CACHE_DIR") or DEFAULT_COMPILE_CACHE
    if directory == "off":
        return None
    directory = os.path.expanduser(directory)
    jax.config.update("jax_compilation_cache_dir", directory)
    return directory


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
    from anomaly_jax import parallel
    state = {"several": False}

    def on_error(error: BaseException) -> None:
        parallel.mark_done()  # the others stop on the same error, not on a lost peer

    try:
        return guarded(lambda: _run(args, state), debug=args.debug, on_error=on_error)
    except Exception as e:  # noqa: BLE001 -- only the lost-peer case is handled here
        if not (state["several"] and parallel.lost_peer(e)):
            raise
        # Another process of the run died: say so in one line and leave at once (a normal
        # exit would wait at JAX's shutdown barrier for the dead process, then abort).
        print(parallel.peer_lost_message(str(e)), file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)


def _run(args: argparse.Namespace, state: dict) -> int:
    from anomaly_jax import parallel, report
    from anomaly_jax.config import apply_overrides
    from anomaly_jax.train import train_and_evaluate

    config = apply_overrides(get_config(args.config), args.overrides)
    # Before anything touches a device.
    state["several"] = parallel.initialize(args.coordinator, args.num_processes,
                                           args.process_id)
    use_compile_cache(args.compile_cache)
    workdir = args.workdir or os.path.join("runs", config.name)
    summary = train_and_evaluate(config, workdir, fresh=args.fresh,
                                 progress=not args.no_progress)
    if parallel.is_writer():
        run = report.read_run(workdir)
        summary["plot"] = report.plot_curves([run], os.path.join(workdir, "learning_curves.png"),
                                             title=config.name)
    summary["workdir"] = workdir
    print(json.dumps(summary))
    parallel.mark_done()
    return 0


if __name__ == "__main__":
    sys.exit(main())
