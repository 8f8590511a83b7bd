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

`measure_corrupt`, `measure_landscapes` and `measure_jpeg` time the on-device alteration,
landscape generation and JPEG round trip (`--stage corrupt`); `row` and `format_table` make the
profiler's table (the figures named in COLUMNS).

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
import jax.numpy as jnp
import numpy as np

from anomaly_jax import alteration, cost_model
from anomaly_jax.config import Config


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


# ----------------------------------------------------------------------------- corrupt stage


def corrupt_fn(config: Config, donate: bool, batching: str = "auto") -> Callable:
    """(images uint8[B,H,W,3], key) -> (altered images, small labels), the sampler inside the
    jit as in the train step. The mask label is not returned, so XLA does not build it.
    batching: `alteration.alter_examples`'s ("vmap": the accelerator's schedule anywhere)."""
    c = config.corruption

    def alter(images, key):
        # The trainer's way: keys from (key, example id); no JPEG (its own row measures it).
        ids = jnp.arange(images.shape[0], dtype=jnp.int32)
        out, labels = alteration.alter_examples(c, images, key, ids, jpeg_roundtrip=False,
                                                batching=batching)
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


def corrupt_gpu_ceilings(config: Config, batch: int) -> dict[str, Any]:
    """An ESTIMATE, not a measurement: the roofline ceiling of the corrupt stage's accelerator
    schedule (batching "vmap", donated) on each GPU of `cost_model.GPU_PEAKS`, from XLA's cost
    analysis of that program compiled for THIS backend (nothing runs).

    FLOPs are elementwise and integer, so the FP32 (CUDA core) peak bounds them, not tensor
    cores. XLA:CPU's bytes count every operand of every fused op - an upper bound on HBM
    traffic (XLA:GPU fuses more) - and no roofline sees kernel launches, so a real GPU will
    be slower than these ceilings; only a GPU run says by how much.
    Returns {"bytes_per_image", "flops_per_image", "ceilings": {gpu name: images/s}}.
    """
    size = config.data.image_size
    images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8)
    compiled = corrupt_fn(config, True, "vmap").lower(images, jax.random.key(0)).compile()
    cost = cost_model.cost_per_device(compiled.cost_analysis())
    if cost["flops"] is None or cost["bytes"] is None:
        return {"bytes_per_image": None, "flops_per_image": None, "ceilings": {}}
    ceilings = {name: round(cost_model.ceiling_images_per_s(
                    cost["flops"], cost["bytes"], batch, peak.fp32_flops,
                    peak.hbm_bytes_per_s), 1)
                for name, peak in cost_model.GPU_PEAKS}
    return {"bytes_per_image": cost["bytes"] / batch, "flops_per_image": cost["flops"] / batch,
            "ceilings": ceilings}


def measure_landscapes(size: int, n: int, steps: int) -> float | None:
    from anomaly_jax.synthetic import landscapes

    # Called as is: it is a chain of separately jitted stages, and wrapping it in one more
    # jax.jit lets XLA:CPU fuse them into a much slower program (recomputation per pixel).
    fn = landscapes
    base = jax.random.key(1)

    def step(i):
        jax.block_until_ready(fn(jax.random.fold_in(base, i), n, size, size))
        return i + 1

    seconds, _ = time_calls(step, 0, steps, warmup=1)
    return n / seconds


def measure_jpeg(images: np.ndarray, quality: int, repeats: int) -> tuple[float, float]:
    """(ours, Pillow) images/s of a JPEG round trip at `quality`: ours jitted over the whole
    batch with the input donated; Pillow's save + open one image at a time, as a pipeline
    writing and reading JPEGs would. Medians over `repeats`, compile excluded."""
    import io

    from PIL import Image

    from anomaly_jax.jpeg import jpeg_roundtrip_batch
    fn = jax.jit(jpeg_roundtrip_batch, donate_argnums=0)
    q = jnp.int32(quality)
    jax.block_until_ready(fn(jax.device_put(images), q))  # compile
    ours, peer = [], []
    for _ in range(repeats):
        batch = jax.block_until_ready(jax.device_put(images))
        t0 = time.perf_counter()
        jax.block_until_ready(fn(batch, q))
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for image in images:
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, "JPEG", quality=quality)
            buf.seek(0)
            with Image.open(buf) as im:
                np.asarray(im.convert("RGB"))
        peer.append(time.perf_counter() - t0)
    n = len(images)
    return n / statistics.median(ours), n / statistics.median(peer)


# ----------------------------------------------------------------------------- the table


COLUMNS = (  # (figure key, heading, format)
    ("images_per_s", "img/s", "{:.1f}"), ("ms_per_step", "ms/step", "{:.1f}"),
    ("seconds", "s", "{:.2f}"), ("compile_s", "compile s", "{:.1f}"),
    ("peak_memory_mb", "peak MB", "{:.0f}"), ("gflop_per_step", "GFLOP/step", "{:.2f}"),
    ("gb_per_step", "GB/step", "{:.3f}"), ("tflop_per_s", "TFLOP/s", "{:.3f}"),
    ("gb_per_s", "GB/s", "{:.1f}"), ("mfu", "MFU", "{:.1%}"), ("hbm_share", "HBM", "{:.1%}"),
    ("peer_images_per_s", "peer img/s", "{:.1f}"), ("peer_seconds", "peer s", "{:.2f}"),
    ("ratio", "ratio", "{:.2f}x"),
)


def megabytes(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


def row(name: str, figures: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A table row: the figures named in COLUMNS (None shows as n/a, absent as blank)."""
    out = {"row": name}
    out.update({key: figures[key] for key, _, _ in COLUMNS if key in figures})
    out.update(extra)
    return out


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows as aligned text; only the columns some row fills are shown."""
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]

    def cell(r: dict[str, Any], key: str, fmt: str) -> str:
        if key not in r:
            return ""
        return "n/a" if r[key] is None else fmt.format(r[key])

    table = [["row"] + [head for _, head, _ in cols]]
    table += [[r["row"]] + [cell(r, key, fmt) for key, _, fmt in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(line, widths))) for line in table)
