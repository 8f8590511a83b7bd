"""Throughput profiler: images/s of each stage of the pipeline, next to the peers, in one run.

    python -m scripts.profile_throughput --stage corrupt
    python -m scripts.profile_throughput --stage corrupt --config whitebox_black --set corruption.kind=scramble

Stages live in STAGES (name -> function(config, args) -> dict of figures); `--stage all` runs
them in order. Claims are ratios measured in this one invocation, on this one machine (our
side first, then the peer, back to back), or absolute figures on a named GPU (DESIGN.md §4).
Human-readable lines go to stderr; the last stdout line is one JSON object of figures.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from anomaly_jax import corruptions
from anomaly_jax.config import Config, ConfigError, apply_overrides

REPO = pathlib.Path(__file__).resolve().parents[1]
PEERS = REPO.parent / "shared" / "peers"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def device_name() -> str:
    devs = jax.devices()
    return f"{devs[0].platform}:{devs[0].device_kind} x{len(devs)}"


def time_calls(step: Callable[[Any], Any], state: Any, steps: int, warmup: int = 2) -> tuple[float, Any]:
    """Median seconds of `state = step(state)` after `warmup` calls (compile included there)."""
    for _ in range(warmup):
        state = jax.block_until_ready(step(state))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state = jax.block_until_ready(step(state))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), state


def run_peer(script: str, *flags: str) -> dict[str, Any] | None:
    """Runs ../shared/peers/<script> with this Python; its last stdout line is JSON."""
    path = PEERS / script
    if not path.is_file():
        log(f"peers not found ({path})")
        return None
    done = subprocess.run([sys.executable, str(path), *flags], capture_output=True, text=True)
    if done.returncode != 0:
        log(f"peer {script} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- stage: corrupt


def corrupt_fn(config: Config, donate: bool) -> Callable:
    """(images uint8[B,H,W,3], key) -> (altered images, small labels), the sampler inside the
    jit as in the train step. The mask label is not returned, so XLA does not build it."""
    c = config.corruption

    def alter(images, key):
        keys = jax.random.split(key, images.shape[0])
        out, labels = corruptions.alter_batch(
            c.kind, images, keys, p_altered=c.p_altered, overflow=c.overflow, box_size=c.box_size
        )
        return out, {k: labels[k] for k in ("center", "half_size", "ratio", "altered")}

    return jax.jit(alter, donate_argnums=(0,) if donate else ())


def measure_corrupt(config: Config, batch: int, steps: int, donate: bool) -> float:
    """images/s of alter_batch on a batch of random uint8 images, fresh keys every call."""
    size = config.data.image_size
    fn = corrupt_fn(config, donate)
    images = jnp.asarray(
        np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    )
    base = jax.random.key(config.seed)

    def step(state):
        imgs, _, i = state
        # Donated: the altered batch is the next call's input, altered in place. Not donated:
        # the same input every call, a fresh output buffer each time. The state carries the
        # output so that time_calls waits for it.
        out, labels = fn(imgs, jax.random.fold_in(base, i))
        return (out if donate else imgs), (out, labels), i + 1

    seconds, _ = time_calls(step, (images, None, 0), steps)
    return batch / seconds


def measure_landscapes(size: int, n: int, steps: int) -> float | None:
    try:
        from anomaly_jax.synthetic import landscapes
    except ImportError as e:
        log(f"  landscapes: skipped (anomaly_jax.synthetic.landscapes not available: {e})")
        return None
    fn = jax.jit(landscapes, static_argnums=(1, 2, 3))
    base = jax.random.key(1)

    def step(i):
        jax.block_until_ready(fn(jax.random.fold_in(base, i), n, size, size))
        return i + 1

    seconds, _ = time_calls(step, 0, steps, warmup=1)
    return n / seconds


def stage_corrupt(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    c, size, batch = config.corruption, config.data.image_size, args.batch
    steps = args.steps or 10
    gb_per_image = 2 * size * size * 3 / 1e9  # one read + one write of every pixel
    log(f"corrupt: {c.kind} overflow={c.overflow} p_altered={c.p_altered} on {batch} images "
        f"of {size}x{size}, {steps} timed calls, device {device_name()}")
    ips = measure_corrupt(config, batch, steps, donate=True)
    log(f"  ours, batch donated (in place): {ips:10.1f} images/s  {ips * gb_per_image:6.2f} GB/s")
    ips_copy = measure_corrupt(config, batch, steps, donate=False)
    log(f"  ours, not donated (new output): {ips_copy:10.1f} images/s  "
        f"{ips_copy * gb_per_image:6.2f} GB/s")
    peer = None
    if args.peers:
        if c.kind != "discolor":
            log("  numpy peer: skipped (it implements discolor only)")
        else:
            result = run_peer("numpy_discolor.py", "--n", str(batch), "--size", str(size))
            peer = result and result["images_per_s"]
            if peer:
                log(f"  numpy peer (numpy_discolor.py, best of 3): {peer:10.1f} images/s  "
                    f"{peer * gb_per_image:6.2f} GB/s")
                log(f"  ratio ours/numpy: {ips / peer:.2f}x (not donated: {ips_copy / peer:.2f}x)")
    # After the peer, so that ours and the peer's figures are taken back to back.
    n_land = min(batch, 16)
    land = measure_landscapes(size, n_land, max(3, steps // 3))
    if land is not None:
        log(f"  landscapes({n_land}, {size}x{size}):  {land:10.1f} images/s  "
            f"{land * size * size * 3 / 1e9:6.2f} GB/s written")
    return {
        "stage": "corrupt", "kind": c.kind, "overflow": c.overflow, "batch": batch,
        "image_size": size,
        "images_per_s": round(ips, 1),
        "gb_per_s": round(ips * gb_per_image, 2),
        "images_per_s_not_donated": round(ips_copy, 1),
        "device": device_name(),
        "peer_numpy_images_per_s": peer,
        "ratio_vs_numpy": round(ips / peer, 2) if peer else None,
        "landscapes_images_per_s": round(land, 2) if land is not None else None,
    }


# ----------------------------------------------------------------------------- registry


def not_implemented(name: str) -> Callable[[Config, argparse.Namespace], dict[str, Any]]:
    def stage(config: Config, args: argparse.Namespace) -> dict[str, Any]:
        log(f"{name}: not implemented yet")
        return {}

    return stage


STAGES: dict[str, Callable[[Config, argparse.Namespace], dict[str, Any]]] = {
    "corrupt": stage_corrupt,
    "input": not_implemented("input"),
    "train": not_implemented("train"),
    "eval": not_implemented("eval"),
    "epoch": not_implemented("epoch"),
}


def load_config(name: str, overrides: list[str]) -> Config:
    from experiments.configs import get_config

    return apply_overrides(get_config(name), overrides)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m scripts.profile_throughput", description=__doc__.split("\n")[0]
    )
    p.add_argument("--stage", choices=[*STAGES, "all"], default="all")
    p.add_argument("--config", default="cnn_highlr", help="named config (experiments/configs.py)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set corruption.overflow=clip")
    p.add_argument("--steps", type=int, default=0, help="timed calls per figure (0: stage default)")
    p.add_argument("--batch", type=int, default=64, help="images per call (corrupt stage)")
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the peers in ../shared/peers in this invocation")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as e:
        sys.exit(f"profile_throughput: {e}")
    figures: dict[str, Any] = {"config": config.name}
    for name in STAGES if args.stage == "all" else [args.stage]:
        figures.update(STAGES[name](config, args))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
