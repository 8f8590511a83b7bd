"""Input-pipeline throughput: cold JPEG decode through grain workers vs. batches from the cache.

    python -m scripts.bench_input [--data DIR] [--size 800] [--n 40] [--workers -1]

Figures (last stdout line, JSON):
  decode_images_per_s         files -> uint8[n, S, S, 3] through the grain worker pipeline
                              (`load_image_set`'s path), worker start-up included;
  decode_steady_images_per_s  the same after the first image arrived (start-up excluded);
  sequential_images_per_s     one Pillow decode after another in this process: what the seed's
                              DataLoader (num_workers=0) does every epoch;
  cached_images_per_s         batches of 10 gathered by index from the decoded array and put on
                              the default device (host->device copy included): the per-step
                              cost once the set is decoded once.
Without --data, n procedural landscapes are written as quality-75 JPEGs to a temp folder.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench_input",
                                description=__doc__.split("\n\n")[0])
    default_dir = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "seed1_dev")
    p.add_argument("--data", default=None,
                   help="folder of images (default: ../shared/seed1_dev if present, else "
                        "synthetic landscapes)")
    p.add_argument("--synthetic", action="store_true", help="ignore ../shared/seed1_dev")
    p.add_argument("--size", type=int, default=800)
    p.add_argument("--n", type=int, default=40, help="images (at most) to decode")
    p.add_argument("--workers", type=int, default=-1, help="grain workers; -1: min(cpus, 8)")
    a = p.parse_args(argv)
    data_dir = a.data
    if data_dir is None and not a.synthetic and os.path.isdir(default_dir):
        data_dir = os.path.normpath(default_dir)
    figures = measure_input(data_dir, a.size, a.n, a.workers)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
