"""The arguments every square-locating script shares: which locator (a trained localiser run
or the physics baseline), which checkpoint, which image size - parsed and checked one way.

Used by scripts.evaluate, scripts.predict and scripts.detection_auc.
"""
from __future__ import annotations

import argparse
from typing import Any

from experiments.cli import add_debug_flag, guarded

DEFAULT_PHYSICS_SIZE = 800


def add_locator_args(p: argparse.ArgumentParser, *, workdir_help: str,
                     size_help: str, size_default: int | None = None) -> None:
    """--method, --workdir, --step, --size and --debug on parser `p`."""
    p.add_argument("--method", choices=("model", "physics"), default="model",
                   help="model: a trained run (--workdir); physics: the no-training baseline")
    p.add_argument("--workdir", help=workdir_help)
    p.add_argument("--step", type=int, help="checkpoint step (default: the best)")
    p.add_argument("--size", type=int, default=size_default, help=size_help)
    add_debug_flag(p)


def locator_usage_error(args: argparse.Namespace) -> str | None:
    """The one-line problem with the shared arguments, or None."""
    if args.method == "model" and not args.workdir:
        return "--workdir: required with --method model (or use --method physics)"
    if args.method == "physics" and args.workdir:
        return "--workdir: not used by --method physics (it needs no trained run)"
    if args.method == "physics" and args.step is not None:
        return "--step: only with --method model"
    if args.size is not None and args.size < 16:
        return f"--size {args.size}: expected at least 16"
    return None


def load_locator(args: argparse.Namespace, tool: str) -> tuple[Any, Any, int | None]:
    """(config, model, step) of --workdir's localiser run for --method model; (None, None,
    None) for --method physics. Raises the library's user errors (missing run, bad checkpoint,
    a run of a seed model, which `tool` cannot use)."""
    if args.method != "model":
        return None, None, None
    from anomaly_jax import models
    from anomaly_jax.errors import ConfigError
    from anomaly_jax.train import restore_params
    config, model, step = restore_params(args.workdir, args.step)
    if not models.is_dense(config.model.name):
        raise ConfigError(f"{args.workdir} is a {config.model.name} run; {tool} needs a "
                          "localiser run (model.name=localiser) or --method physics")
    if config.model.target != "edges":
        raise ConfigError(f"{args.workdir} is a model.target={config.model.target} localiser "
                          f"run (a per-pixel mask, no square); {tool} needs an edge-target "
                          "run (model.target=edges) or --method physics")
    return config, model, step


def run_locator_script(args: argparse.Namespace, body, usage=None) -> int:
    """The main of a square-locating script: `usage(args)` (default `locator_usage_error`),
    a problem being a one-line exit 2, then `body(args)`, both under `experiments.cli.guarded`."""
    from anomaly_jax.errors import ConfigError

    def checked() -> int:
        problem = (usage or locator_usage_error)(args)
        if problem:
            raise ConfigError(problem)
        return body(args)

    return guarded(checked, debug=args.debug)
