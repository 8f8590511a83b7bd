"""Timing helpers for the throughput profiler (`scripts/profile_throughput.py`): medians of
synchronised calls, the machine's load and device, so every stage is timed one way; and the
input pipeline's throughput (`measure_input`, the profiler's `--stage input`).

`measure_input` figures:
    decode_images_per_s         files -> uint8[n, S, S, 3] through the grain worker pipeline
                                (`load_image_set`'s path), worker start-up included;
    decode_steady_images_per_s  the same after the first image arrived (start-up excluded);
    sequential_images_per_s     one Pillow decode after another in this process: what the seed's
                                DataLoader (num_workers=0) does every epoch;
    cached_images_per_s         batches of 10 gathered by index from the decoded array and put on
                                the default device (host->device copy included): the per-step
                                cost once the set is decoded once.
  Without a data folder, n procedural landscapes are written as quality-75 JPEGs to a temp
  folder.

Every timed function must return its device arrays; they are `block_until_ready`-ed, so a
figure is device time, not dispatch time.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any, Callable

import jax


def device_name() -> str:
    devs = jax.devices()
    return f"{devs[0].platform}:{devs[0].device_kind} x{len(devs)}"


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


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


def median_run_seconds(run_once: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of `run_once()` (which must synchronise the device) over `repeats`
    runs, after `warmup` untimed runs."""
    for _ in range(warmup):
        run_once()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_once()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ----------------------------------------------------------------------------- input pipeline

CACHED_BATCH = 10
CACHED_SECONDS = 1.0  # measure the cached path for about this long


def _synthetic_jpegs(folder: str, n: int, size: int) -> list[str]:
    import jax
    import numpy as np
    from PIL import Image

    from anomaly_jax import synthetic

    images = np.asarray(synthetic.generate("landscapes", jax.random.key(0), n, size, size))
    paths = []
    for i, image in enumerate(images):
        paths.append(os.path.join(folder, f"{i:05d}.jpg"))
        Image.fromarray(image).save(paths[-1], "JPEG", quality=75)
    return paths


def _time_decode(paths: list[str], size: int, workers: int) -> tuple[float, float, int]:
    """(total seconds, seconds to the first image, images) through the grain pipeline."""
    from anomaly_jax import decoding

    first = None
    t0 = time.perf_counter()
    for count, _ in enumerate(decoding.iter_decoded(paths, size, workers=workers), start=1):
        if first is None:
            first = time.perf_counter() - t0
    return time.perf_counter() - t0, first, count


def _cached_rate(images, batch_size: int) -> float:
    import jax
    import numpy as np

    rng = np.random.default_rng(0)
    jax.device_put(images[:batch_size]).block_until_ready()  # first-transfer set-up
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < CACHED_SECONDS:
        ids = rng.integers(0, len(images), batch_size)
        jax.device_put(images[ids]).block_until_ready()
        count += batch_size
    return count / (time.perf_counter() - t0)


def measure_input(data_dir: str | None, size: int = 800, n: int = 40,
                  workers: int = -1) -> dict:
    """Decode and cached-batch throughput (see the module docstring); returns the figures."""
    import jax
    import numpy as np

    from anomaly_jax import decoding
    from anomaly_jax.errors import DataError

    with tempfile.TemporaryDirectory() as tmp:
        if data_dir:
            paths = decoding.list_image_files(data_dir)[:n]
            if not paths:
                raise DataError(f"no image files in {data_dir}")
        else:
            paths = _synthetic_jpegs(tmp, n, size)
        workers_used = min(decoding.resolve_workers(workers), len(paths))
        t_seq = time.perf_counter()
        decoded = np.stack([decoding.decode_image(p, size) for p in paths])
        t_seq = time.perf_counter() - t_seq
        total, first, count = _time_decode(paths, size, workers)
    steady = (count - 1) / (total - first) if count > 1 and total > first else float("nan")
    return {
        "source": data_dir or "synthetic landscapes (JPEG q75)",
        "size": size, "n": count, "workers": workers_used,
        "decode_images_per_s": round(count / total, 2),
        "decode_first_image_s": round(first, 3),
        "decode_steady_images_per_s": round(steady, 2),
        "sequential_images_per_s": round(len(paths) / t_seq, 2),
        "cached_images_per_s": round(_cached_rate(decoded, CACHED_BATCH), 2),
        "cached_batch": CACHED_BATCH,
        "device": str(jax.devices()[0]),
        "cpus": os.cpu_count(),
    }
