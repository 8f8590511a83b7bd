"""Throughput profiler: images/s of each stage of the pipeline, next to the peers, in one run.

    python -m scripts.profile_throughput --config cnn_lowlr --stage all --peers
    python -m scripts.profile_throughput --config whitebox_photos --stage train --k 1,8
    python -m scripts.profile_throughput --stage train --trace /tmp/trace
    python -m scripts.profile_throughput --config localiser --stage locate
    python -m scripts.profile_throughput --stage corrupt --config whitebox_black --set corruption.kind=scramble

Stages (STAGES: name -> function(config, args) -> dict of figures; `all` runs them in order;
train and eval live in scripts/profile_steps.py, epoch in scripts/profile_epoch.py, what the stages share in
scripts/profile_common.py):
  input    cold JPEG decode (grain) vs. batches from the decoded-once cache
  corrupt  the on-device alteration alone, vs. the numpy peer; the JPEG round trip vs. Pillow;
           off a GPU, also the roofline ceiling of the GPU schedule on H100/H200 - an ESTIMATE
           from XLA's cost analysis (profiling.corrupt_gpu_ceilings), labelled as such
  train    the real pmapped train step (anomaly_jax.train), for each K of --k, vs. the torch peer
  eval     the pmapped eval step
  epoch    two epochs through train_and_evaluate on a seed-format folder, vs. the torch pipeline
  locate   one photo's square: the exhaustive search, the physics baseline, the localiser

Every timed figure is the median of --repeats timed runs, each of --steps steps, after
warm-up and ahead-of-time compilation, the device synchronised at the end of each run. FLOPs
and bytes per step come from XLA's cost analysis of the compiled step (per device); on a GPU
whose peak is in cost_model.GPU_PEAKS they give MFU and the share of memory bandwidth.

Claims are ratios measured in this one invocation, on this one machine (our side first, then
the peer, back to back), or absolute figures on a named GPU (docs/PERFORMANCE.md). The table goes to
stderr; the last stdout line is one JSON object with every stage's figures, keys prefixed by
the stage ("train_images_per_s", "epoch_seconds", "train_ratio_vs_torch", ...). A researcher
may add a stage (a function returning a dict, registered in STAGES) or a GPU to anomaly_jax.cost_model.GPU_PEAKS.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from anomaly_jax.profiling import (corrupt_gpu_ceilings, device_name, format_table, load_average,
                                   measure_corrupt,
                                   measure_input, measure_jpeg, measure_landscapes, row,
                                   time_calls)
from anomaly_jax.config import EDIT_KINDS, MIX_KIND, Config, apply_overrides
from anomaly_jax.errors import ConfigError
from scripts.profile_common import (ROWS, SEED1_DEV, log, run_peer)
from scripts.profile_epoch import stage_epoch
from scripts.profile_steps import stage_eval, stage_train

# ----------------------------------------------------------------------------- stage: corrupt


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
        if c.kind in EDIT_KINDS or c.kind == MIX_KIND:
            from scripts import edit_peers
            from anomaly_jax.synthetic import landscapes
            photos = np.asarray(landscapes(jax.random.key(3), min(batch, 16), size, size))
            peer = edit_peers.images_per_s(c.kind, photos)
            log(f"  numpy/Pillow peer (scripts/edit_peers.py, one image at a time, median of 3)"
                f": {peer:10.1f} images/s;  ratio ours/peer: {ips / peer:.2f}x")
        elif c.kind != "discolor":
            log(f"  numpy peer: skipped (none for {c.kind})")
        else:
            result = run_peer("numpy_discolor.py", "--n", str(batch), "--size", str(size))
            peer = result and result["images_per_s"]
            if peer:
                log(f"  numpy peer (numpy_discolor.py, best of 3): {peer:10.1f} images/s  "
                    f"{peer * gb_per_image:6.2f} GB/s")
                log(f"  ratio ours/numpy: {ips / peer:.2f}x (not donated: {ips_copy / peer:.2f}x)")
    estimate, backend = None, jax.devices()[0].platform
    if backend != "gpu":  # on a GPU the figures above are the measurement
        estimate = corrupt_gpu_ceilings(config, batch)
        if estimate["ceilings"]:
            h100, h200 = estimate["ceilings"]["h100"], estimate["ceilings"]["h200"]
            versus = f"; {h100 / peer:.0f}x / {h200 / peer:.0f}x the peer" if peer else ""
            log(f"  ESTIMATE, not measured: roofline ceiling of the vmap (GPU) schedule, "
                f"H100 SXM {h100:,.0f} / H200 {h200:,.0f} images/s{versus} (XLA:{backend} "
                f"cost analysis, {estimate['bytes_per_image'] / 1e6:.1f} MB per image: an "
                "upper bound on HBM traffic; launches not counted)")
    # After the peer, so that ours and the peer's figures are taken back to back.
    n_land = min(batch, 16)
    land = measure_landscapes(size, n_land, max(3, steps // 3))
    if land is not None:
        log(f"  landscapes({n_land}, {size}x{size}):  {land:10.1f} images/s  "
            f"{land * size * size * 3 / 1e9:6.2f} GB/s written")
    quality = c.jpeg_quality or 75
    n_jpeg = min(batch, 16)
    jpeg_images = np.asarray(
        np.random.default_rng(1).integers(0, 256, (n_jpeg, size, size, 3), dtype=np.uint8))
    if size >= 64:  # photo-like content: JPEG time depends on it (noise is the worst case)
        from anomaly_jax.synthetic import landscapes
        jpeg_images = np.asarray(landscapes(jax.random.key(2), n_jpeg, size, size))
    jpeg_ips, pillow_ips = measure_jpeg(jpeg_images, quality, max(3, steps // 3))
    log(f"  jpeg round trip q{quality} (b{n_jpeg}, donated): {jpeg_ips:10.1f} images/s; "
        f"Pillow save+open one by one: {pillow_ips:10.1f} images/s "
        f"({jpeg_ips / pillow_ips:.2f}x)")
    rows = [row(f"corrupt {c.kind} {size}px b{batch}, donated", {"images_per_s": ips,
                "gb_per_s": ips * gb_per_image}, peer_images_per_s=peer,
                ratio=ips / peer if peer else None),
            row(f"corrupt {c.kind} {size}px b{batch}, not donated",
                {"images_per_s": ips_copy, "gb_per_s": ips_copy * gb_per_image})]
    rows.append(row(f"jpeg round trip q{quality} {size}px b{n_jpeg}, donated",
                    {"images_per_s": jpeg_ips}, peer_images_per_s=pillow_ips,
                    ratio=jpeg_ips / pillow_ips))
    if land is not None:
        rows.append(row(f"landscapes {size}px x{n_land}", {"images_per_s": land}))
    return {
        ROWS: rows,
        "stage": "corrupt", "kind": c.kind, "overflow": c.overflow, "batch": batch,
        "image_size": size,
        "images_per_s": round(ips, 1),
        "gb_per_s": round(ips * gb_per_image, 2),
        "images_per_s_not_donated": round(ips_copy, 1),
        "device": device_name(),
        "peer_numpy_images_per_s": round(peer, 2) if peer else None,
        "ratio_vs_numpy": round(ips / peer, 2) if peer else None,
        "landscapes_images_per_s": round(land, 2) if land is not None else None,
        "jpeg_quality": quality,
        "jpeg_images_per_s": round(jpeg_ips, 2),
        "pillow_jpeg_images_per_s": round(pillow_ips, 2),
        "jpeg_ratio_vs_pillow": round(jpeg_ips / pillow_ips, 3),
        # An estimate from XLA's cost analysis (see profiling.corrupt_gpu_ceilings), not a
        # measurement; None on a GPU, where the figures above are measured.
        "gpu_ceiling_estimate": estimate,
    }


# ----------------------------------------------------------------------------- stage: input


def stage_input(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    """profiling.measure_input at the config's image size: grain decode vs. one decode after
    another (the seed's way, every epoch) vs. batches from the decoded cache."""

    data_dir = args.input_data or (str(SEED1_DEV) if SEED1_DEV.is_dir() else None)
    size = config.data.image_size
    log(f"input: {args.input_n} images from {data_dir or 'synthetic JPEGs'} at {size}px, "
        f"load {load_average()}")
    fig = measure_input(data_dir, size=size, n=args.input_n, workers=config.data.workers)
    seq = fig["sequential_images_per_s"]
    fig["ratio_decode_vs_sequential"] = round(fig["decode_images_per_s"] / seq, 3)
    fig["ratio_cached_vs_sequential"] = round(fig["cached_images_per_s"] / seq, 3)
    fig[ROWS] = [
        row(f"input decode, grain ({fig['workers']} workers)",
            {"images_per_s": fig["decode_images_per_s"]}, peer_images_per_s=seq,
            ratio=fig["ratio_decode_vs_sequential"]),
        row("input decode, sequential Pillow (seed's way)", {"images_per_s": seq}),
        row(f"input cached batches of {fig['cached_batch']} -> device",
            {"images_per_s": fig["cached_images_per_s"]}, peer_images_per_s=seq,
            ratio=fig["ratio_cached_vs_sequential"]),
    ]
    return fig


# ----------------------------------------------------------------------------- stage: locate


def stage_locate(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    """Finding one square in one photo at the config's size: the exhaustive square search
    alone, the physics baseline (evidence + search), and the dense localiser (forward +
    search; random weights: the cost does not depend on them). Per image, as
    `evaluation.locate_squares` runs them; median of `--repeats` calls after a warm-up."""
    from flax import nnx

    from anomaly_jax import localiser, physics, squares
    size = config.data.image_size
    prior = squares.SquarePrior.seed(size, size)
    image = np.asarray(jax.random.randint(jax.random.key(0), (1, size, size, 3), 60, 200),
                       np.uint8)
    edges = jnp.asarray(np.random.default_rng(0).normal(size=(4, size + 1, size + 1)),
                        jnp.float32)
    search = jax.jit(lambda e: squares.best_square(e, prior, 0.0))
    phys = jax.jit(lambda x: physics.locate(x, prior))
    model = localiser.LocaliserNet(width=config.model.width, rngs=nnx.Rngs(params=0))
    graphdef, params = nnx.split(model)
    dense = jax.jit(lambda p, x: localiser.decode(nnx.merge(graphdef, p)(x), prior))
    repeats = max(3, args.repeats)
    figures = {}
    for name, call in (("search", lambda: search(edges)), ("physics", lambda: phys(image)),
                       ("localiser", lambda: dense(params, image))):
        seconds, _ = time_calls(lambda _: call(), None, repeats, warmup=1)
        figures[name] = seconds
        log(f"  locate {name:10s} {size}px: {seconds * 1e3:8.1f} ms/image")
    n_candidates = sum((prior.row_hi - prior.row_lo + 1) * (prior.col_hi - prior.col_lo + 1)
                       for _ in range(prior.r_min, prior.r_max + 1))
    rows = [row(f"locate: square search alone {size}px ({n_candidates / 1e6:.1f} M candidates)",
                {"images_per_s": 1 / figures["search"], "seconds": figures["search"]}),
            row(f"locate: physics baseline {size}px",
                {"images_per_s": 1 / figures["physics"], "seconds": figures["physics"]}),
            row(f"locate: localiser width {config.model.width} {size}px",
                {"images_per_s": 1 / figures["localiser"], "seconds": figures["localiser"]})]
    return {ROWS: rows, "stage": "locate", "image_size": size, "device": device_name(),
            "search_s": round(figures["search"], 4), "physics_s": round(figures["physics"], 4),
            "localiser_s": round(figures["localiser"], 4), "candidates": n_candidates}


# ----------------------------------------------------------------------------- registry


STAGES: dict[str, Callable[[Config, argparse.Namespace], dict[str, Any]]] = {
    "input": stage_input,
    "corrupt": stage_corrupt,
    "train": stage_train,
    "eval": stage_eval,
    "epoch": stage_epoch,
    "locate": stage_locate,
}


def load_config(name: str, overrides: list[str]) -> Config:
    from experiments.configs import get_config

    return apply_overrides(get_config(name), overrides)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m scripts.profile_throughput", description=__doc__.split("\n")[0],
        epilog="Stages: " + ", ".join(STAGES) + ", all (every stage in that order).")
    p.add_argument("--stage", choices=[*STAGES, "all"], default="all")
    p.add_argument("--config", default="cnn_lowlr", help="named config (experiments/configs.py)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.steps_per_dispatch=8")
    p.add_argument("--steps", type=int, default=0,
                   help="steps per timed run (0: about 2 s worth, 1..256; corrupt: 10 calls)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed runs per figure (train/eval); the median is reported")
    p.add_argument("--k", default="", metavar="K1,K2",
                   help="train steps per dispatch to time (default: 1 and the config's K; "
                        "also 8 for white_box_net)")
    p.add_argument("--batch", type=int, default=64, help="images per call (corrupt stage)")
    p.add_argument("--input-data", default=None, metavar="DIR",
                   help="input stage: image folder (default ../shared/seed1_dev, else "
                        "synthetic JPEGs)")
    p.add_argument("--input-n", type=int, default=40, help="input stage: images to decode")
    p.add_argument("--trace", default=None, metavar="DIR",
                   help="train stage: write a jax.profiler trace of 3 steps to DIR")
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the peers in ../shared/peers in this invocation "
                        "(default on; --no-peers skips them)")
    args = p.parse_args(argv)
    if args.steps < 0 or args.repeats < 1:
        p.error("--steps must be >= 0 and --repeats >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the stages; prints the table (stderr) and the JSON line (stdout); returns it."""
    args = parse_args(argv)
    args.runs = {}  # set-ups shared between stages of this invocation
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as e:
        sys.exit(f"profile_throughput: {e}")
    figures: dict[str, Any] = {"config": config.name, "device": device_name(),
                               "load_avg_start": load_average()}
    rows: list[dict[str, Any]] = []
    for name in STAGES if args.stage == "all" else [args.stage]:
        try:
            result = STAGES[name](config, args)
        except ConfigError as e:
            sys.exit(f"profile_throughput: {name} stage: {e}")
        rows += result.pop(ROWS, [])
        result.pop("stage", None)
        figures.update({f"{name}_{key}": value for key, value in result.items()})
    figures["load_avg_end"] = load_average()
    if rows:
        log(f"\n{config.name} on {figures['device']}, load average {figures['load_avg_start']}"
            f" -> {figures['load_avg_end']}  (ratio: ours over the peer, >1 is faster)")
        log(format_table(rows))
    print(json.dumps(figures), flush=True)
    return figures


if __name__ == "__main__":
    main()
