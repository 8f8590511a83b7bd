"""What the profiler's modules share: where the peers and seed 1's photos are, the log, the
key of a stage's table rows, and running a peer script of ../shared/peers in a subprocess.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
from typing import Any

from anomaly_jax.config import Config, apply_overrides

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PEERS = SHARED / "peers"
SEED1_DEV = SHARED / "seed1_dev"
ROWS = "_rows"  # key of a stage's table rows in its result (removed before the JSON)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_peer_lines(script: str, *flags: str) -> list[dict[str, Any]] | None:
    """Runs ../shared/peers/<script> with this Python; returns its stdout JSON lines."""
    path = PEERS / script
    if not path.is_file():
        log(f"  peers not found ({path}): no peer figure")
        return None
    done = subprocess.run([sys.executable, str(path), *flags], capture_output=True, text=True,
                          cwd=str(PEERS))
    if done.returncode != 0:
        log(f"  peer {script} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
        return None
    lines = []
    for line in done.stdout.splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    if not lines:
        log(f"  peer {script} printed no JSON line")
        return None
    return lines


def run_peer(script: str, *flags: str) -> dict[str, Any] | None:
    """Runs ../shared/peers/<script> with this Python; its last stdout line is JSON."""
    lines = run_peer_lines(script, *flags)
    return lines[-1] if lines else None


def user_set(args: argparse.Namespace, key: str) -> bool:
    return any(item.partition("=")[0].strip() == key for item in args.overrides)


def with_defaults(config: Config, args: argparse.Namespace, defaults: dict[str, str]) -> Config:
    """`config` with `defaults` (dotted key -> value) applied where the user did not --set them."""
    return apply_overrides(config, [f"{k}={v}" for k, v in defaults.items()
                                    if not user_set(args, k)])
