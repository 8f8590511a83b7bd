"""Time the on-device JPEG round trip against Pillow encoding + decoding the same images.

    python -m scripts.bench_jpeg [--size 800] [--batch 16] [--quality 75] [--repeats 7]

Ours: `jax.jit(jpeg_roundtrip_batch, donate_argnums=0)` on a uint8[batch, size, size, 3] batch
of procedural landscapes, quality passed as a traced int32. Each repeat copies the batch to a
fresh device buffer first (untimed: donation consumes it), then times the call to
block_until_ready. One warm-up call beforehand is reported as the compile time (trace +
compile + one run, minus the median run) and excluded from the throughput. Pillow: the same
images one at a time, `save(buf, "JPEG", quality=q)` then `Image.open(...).convert("RGB")`
into numpy. The two sides alternate repeat by repeat, so both see the same machine load.
Figures: images per second from the median repeat (min-max over the repeats alongside).

Last stdout line: JSON {images_per_s, pillow_images_per_s, ratio, ...}; ratio = ours / Pillow.
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from anomaly_jax import synthetic
from anomaly_jax.jpeg import jpeg_roundtrip_batch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=800, help="image side, px")
    parser.add_argument("--batch", type=int, default=16, help="images per batch (and Pillow round trips per repeat)")
    parser.add_argument("--quality", type=int, default=75, help="JPEG quality")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats of each side")
    return parser.parse_args(argv)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pillow_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    n, size = args.batch, args.size
    log(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} device(s)); "
        f"{n} x {size}x{size} images, quality {args.quality}")
    images = np.asarray(synthetic.landscapes(jax.random.key(0), n, size, size))
    quality = jnp.int32(args.quality)
    fn = jax.jit(jpeg_roundtrip_batch, donate_argnums=0)

    start = time.perf_counter()
    jax.block_until_ready(fn(jax.device_put(images), quality))
    first_s = time.perf_counter() - start

    ours, peer = [], []
    for _ in range(args.repeats):
        batch = jax.block_until_ready(jax.device_put(images))
        start = time.perf_counter()
        jax.block_until_ready(fn(batch, quality))
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        for img in images:
            pillow_roundtrip(img, args.quality)
        peer.append(time.perf_counter() - start)

    ours_s, peer_s = statistics.median(ours), statistics.median(peer)
    result = {
        "images_per_s": round(n / ours_s, 2),
        "pillow_images_per_s": round(n / peer_s, 2),
        "ratio": round(peer_s / ours_s, 3),
        "ms_per_image": round(ours_s / n * 1e3, 3),
        "pillow_ms_per_image": round(peer_s / n * 1e3, 3),
        "compile_s": round(first_s - ours_s, 3),
        "size": size,
        "batch": n,
        "quality": args.quality,
        "repeats": args.repeats,
        "platform": jax.devices()[0].platform,
    }
    print(f"{'side':<28}{'images/s':>10}{'ms/image':>10}{'min ms':>9}{'max ms':>9}")
    for name, times in ((f"jax jit (batch {n}, donated)", ours), ("pillow save+open, 1 by 1", peer)):
        med = statistics.median(times)
        print(f"{name:<28}{n / med:>10.2f}{med / n * 1e3:>10.2f}{min(times) / n * 1e3:>9.2f}{max(times) / n * 1e3:>9.2f}")
    print(f"ratio (ours / pillow, images/s): {result['ratio']:.3f}; compile {result['compile_s']:.2f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
