"""The profiler's stages that time the real steps (`--stage train`, `--stage eval`): the run
built as `anomaly_jax.run_setup` builds it, ahead-of-time compiled, timed per K steps per
dispatch, with XLA's cost analysis, next to the torch peer. Registered in
scripts.profile_throughput's STAGES.
"""
from __future__ import annotations

import argparse
import glob
import os
import time
from typing import Any, Callable

import jax
import numpy as np

from anomaly_jax.cost_model import (compiled_memory_bytes, cost_per_device, device_peak,
                                    peak_memory_bytes, step_figures)
from anomaly_jax.profiling import (device_name, load_average, megabytes, median_run_seconds,
                                   row)
from anomaly_jax.config import Config, is_detection
from anomaly_jax.errors import ConfigError
from scripts.profile_common import ROWS, log, run_peer, with_defaults


# ----------------------------------------------------------------------------- the real steps


def bench_config(config: Config, args: argparse.Namespace) -> Config:
    """Train/eval stages: two batches of images unless --set data.num_images=... (how many
    images there are does not change the time of a step, only the set-up's)."""
    return with_defaults(config, args, {"data.num_images": str(2 * config.train.batch_size)})


def get_run(config: Config, args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """(Run, host state, TrainStepper, pmapped eval fn) of `config`, set up once per invocation
    (the train and eval stages share it)."""
    from anomaly_jax import run_setup

    if config not in args.runs:
        t0 = time.perf_counter()
        run, state = run_setup.setup(config)
        stepper, eval_fn = run_setup.compiled_steps(run)
        args.runs[config] = (run, state, stepper, eval_fn)
        log(f"  setup: {len(run.image_set.names)} images of {config.data.source}, cache "
            f"{run.cache}, {len(run.devices)} device(s), {time.perf_counter() - t0:.1f} s")
    return args.runs[config]


TARGET_RUN_S = 2.0  # seconds of work per timed run when --steps is not given


def auto_steps(step_s: float, args: argparse.Namespace) -> int:
    """Steps per timed run: --steps, else about TARGET_RUN_S worth of steps of `step_s`
    seconds (1..256), so that the stage takes seconds on a GPU and a minute or two on a CPU."""
    if args.steps:
        return args.steps
    return max(1, min(256, round(TARGET_RUN_S / step_s)))


def k_list(config: Config, args: argparse.Namespace) -> list[int]:
    """K values (steps per dispatch) to time: --k, else 1, the config's K, and 8 for the small
    dispatch-bound white_box_net. K=1 is always compiled: it gives the per-step cost."""
    if args.k:
        try:
            ks = {int(k) for k in args.k.split(",")}
        except ValueError:
            raise ConfigError(f"--k {args.k!r}: expected comma-separated integers") from None
        if min(ks) < 1:
            raise ConfigError(f"--k {args.k!r}: every K must be at least 1")
    else:
        ks = {config.train.steps_per_dispatch}
        if is_detection(config):  # the small, dispatch-bound model: K=8 measured too
            ks.add(8)
    return sorted(ks | {1})


def trace_steps(directory: str, step: Callable[[], Any], n: int = 3) -> list[str]:
    """A jax.profiler trace of `n` calls of `step` (each synchronised, each in a
    StepTraceAnnotation "train"); returns the *.xplane.pb files written under `directory`."""
    os.makedirs(directory, exist_ok=True)
    jax.profiler.start_trace(directory, create_perfetto_trace=True)
    try:
        for i in range(n):
            with jax.profiler.StepTraceAnnotation("train", step_num=i):
                step()
    finally:
        jax.profiler.stop_trace()
    files = sorted(glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True))
    if not files:
        log(f"  trace: no *.xplane.pb was written under {directory}")
        return []
    perfetto = sorted(glob.glob(os.path.join(directory, "**", "*.json.gz"), recursive=True))
    log(f"  trace: {n} train steps in {files[-1]}")
    log(f"    TensorBoard: pip install tensorboard tensorboard-plugin-profile; "
        f"tensorboard --logdir {directory}  (Profile tab)")
    if perfetto:
        log(f"    Perfetto: open https://ui.perfetto.dev and load {perfetto[-1]}")
    return files


def stage_train(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    """The real pmapped K-step train function of anomaly_jax.train on random train-split ids,
    for each K of k_list; the torch peer on the same shapes."""
    from anomaly_jax import parallel, run_setup

    config = bench_config(config, args)
    run, state, stepper, _ = get_run(config, args)
    batch, size, model = config.train.batch_size, config.data.image_size, config.model.name
    ks, headline = k_list(config, args), config.train.steps_per_dispatch
    log(f"train: {model} ({config.model.dtype}) {size}x{size}, batch {batch}, K in {ks}, "
        f"median of {args.repeats} runs, device {device_name()}, load {load_average()}")
    rng = np.random.default_rng(config.seed)
    held = {"state": parallel.replicate(state, run.devices)}  # donated and replaced each call

    def draw(k: int) -> np.ndarray:
        return rng.choice(run.splits["train"], (k, batch))

    def dispatch(host_ids: list[np.ndarray]) -> None:
        sums = None
        for ids in host_ids:  # as the loop does: only ids travel with a device cache
            batch_dev = run_setup.device_batch(run, ids, run_setup.stream_images(run, ids))
            held["state"], sums = stepper(held["state"], batch_dev)
        jax.block_until_ready((held["state"], sums))

    figures: dict[str, Any] = {"model": model, "batch": batch, "image_size": size,
                               "dtype": config.model.dtype, "device": device_name()}
    rows, cost, per_k, steps = [], None, {}, None
    for k in ks:
        before = stepper.compile_s
        compiled = stepper.compile(held["state"], run_setup.device_batch(run, draw(k)))
        compile_s = stepper.compile_s - before
        if k == 1:  # XLA counts a scan body once, whatever K: take the per-step cost at K=1
            cost = cost_per_device(compiled.cost_analysis())
        dispatch([draw(k)])  # warm-up: first call of the executable
        if steps is None:  # K=1 comes first: its step time sets the steps per run for all K
            t0 = time.perf_counter()
            dispatch([draw(k)])
            steps = auto_steps((time.perf_counter() - t0) / k, args)
        host_ids = [draw(k) for _ in range(max(1, round(steps / k)))]
        seconds = median_run_seconds(lambda: dispatch(host_ids), args.repeats, warmup=0)
        fig = step_figures(seconds / (len(host_ids) * k), batch, cost, config.model.dtype,
                           device_peak())
        fig.update(compile_s=round(compile_s, 2), steps_per_run=len(host_ids) * k,
                   xla_memory_mb=megabytes(compiled_memory_bytes(compiled)))
        per_k[k] = fig
        figures[f"k{k}_images_per_s"] = fig["images_per_s"]
        if k == headline:
            figures.update(fig)
    figures.update(k=headline, repeats=args.repeats, peak_memory_mb=megabytes(peak_memory_bytes()))
    peer = None
    if args.peers:
        script = "torch_white_box_net.py" if model == "white_box_net" else "torch_seed_cnn.py"
        if model not in ("white_box_net", "seed_cnn"):
            log(f"  note: the peer {script} is the plain seed CNN, not {model}")
        result = run_peer(script, "--size", str(size), "--batch", str(batch),
                          "--steps", str(max(3, steps * args.repeats)))
        peer = result and result.get("images_per_s")
    figures["peer_torch_images_per_s"] = peer
    for k, fig in per_k.items():
        ratio = round(fig["images_per_s"] / peer, 3) if peer else None
        figures[f"k{k}_ratio_vs_torch"] = ratio
        if k == headline:
            figures["ratio_vs_torch"] = ratio
        rows.append(row(f"train {model} {size}px b{batch} K={k}", fig,
                        peak_memory_mb=figures["peak_memory_mb"], peer_images_per_s=peer,
                        ratio=ratio))
    if args.trace:
        figures["trace_files"] = trace_steps(args.trace, lambda: dispatch([draw(headline)]))
    figures[ROWS] = rows
    return figures


def stage_eval(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    """The pmapped eval step (alteration + forward + metric sums) on full batches of the
    validation split, compiled ahead of time."""
    from anomaly_jax import parallel, run_setup

    config = bench_config(config, args)
    run, state, _, eval_fn = get_run(config, args)
    batch, size = config.train.batch_size, config.data.image_size
    log(f"eval: {config.model.name} {size}x{size}, batch {batch}, median of {args.repeats} "
        f"runs, load {load_average()}")
    params = parallel.replicate(state["params"], run.devices)
    split = run.splits["val"] if len(run.splits.get("val", [])) else run.splits["train"]
    rng = np.random.default_rng(config.seed + 1)
    weight = np.ones((1, batch), np.float32)

    def device_batch() -> dict[str, jax.Array]:
        ids = rng.choice(split, (1, batch))
        return run_setup.device_batch(run, ids, run_setup.stream_images(run, ids), weight)

    t0 = time.perf_counter()
    compiled = eval_fn.lower(params, device_batch(), run.tables, run.keys).compile()
    compile_s = time.perf_counter() - t0

    def evaluate(n: int) -> None:
        out = None
        for _ in range(n):
            out = compiled(params, device_batch(), run.tables, run.keys)
        jax.block_until_ready(out)

    evaluate(1)  # warm-up
    t0 = time.perf_counter()
    evaluate(1)
    steps = auto_steps(time.perf_counter() - t0, args)
    seconds = median_run_seconds(lambda: evaluate(steps), args.repeats, warmup=0)
    fig = step_figures(seconds / steps, batch, cost_per_device(compiled.cost_analysis()),
                       config.model.dtype, device_peak())
    fig.update(compile_s=round(compile_s, 2), steps_per_run=steps,
               xla_memory_mb=megabytes(compiled_memory_bytes(compiled)),
               peak_memory_mb=megabytes(peak_memory_bytes()), batch=batch, image_size=size)
    fig[ROWS] = [row(f"eval {config.model.name} {size}px b{batch}", fig)]
    return fig


