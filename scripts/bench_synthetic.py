"""Time the procedural landscapes against Pillow decoding a JPEG of the same size.

    python -m scripts.bench_synthetic [--size 800] [--n 16] [--repeats 7] [--module anomaly_jax.synthetic]

Our side: `landscapes(key, n, size, size)` with a fresh key per call, block_until_ready,
after one warm-up call that is timed as the compile time (trace + compile + one run, minus
the median run). Peer side: Pillow decoding a quality-75 JPEG (4:2:0, as Pillow saves by
default) of one of the generated images into a numpy array, n times per repeat. The two sides
alternate repeat by repeat, so both see the same load on a shared machine. Figures are
ms per image: median, and min-max over the repeats.
--module picks another implementation with the same `landscapes` (e.g. an older copy on
PYTHONPATH) for before/after comparisons.
Last stdout line: JSON {landscapes_ms_per_image, jpeg_decode_ms_per_image, ratio, compile_s, ...}.
"""
from __future__ import annotations

import argparse
import importlib
import io
import json
import statistics
import sys
import time

import jax
import numpy as np
from PIL import Image


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=800, help="image side, px")
    parser.add_argument("--n", type=int, default=16, help="images per landscapes call (and JPEG decodes per repeat)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats of each side")
    parser.add_argument("--quality", type=int, default=75, help="JPEG quality of the peer's file")
    parser.add_argument("--module", default="anomaly_jax.synthetic", help="module providing landscapes(key, n, h, w)")
    return parser.parse_args(argv)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def spread(ms: list[float]) -> str:
    return f"median {statistics.median(ms):7.2f}  min {min(ms):7.2f}  max {max(ms):7.2f}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    landscapes = importlib.import_module(args.module).landscapes
    n, size = args.n, args.size
    key = jax.random.key(0)

    start = time.perf_counter()
    first = np.asarray(jax.block_until_ready(landscapes(key, n, size, size)))
    first_s = time.perf_counter() - start
    data = jpeg_bytes(first[0], args.quality)
    decoded = decode(data)
    assert decoded.shape == (size, size, 3), decoded.shape

    ours, peer = [], []
    for r in range(args.repeats):
        k = jax.random.fold_in(key, r + 1)
        start = time.perf_counter()
        jax.block_until_ready(landscapes(k, n, size, size))
        ours.append((time.perf_counter() - start) / n * 1e3)
        start = time.perf_counter()
        for _ in range(n):
            decode(data)
        peer.append((time.perf_counter() - start) / n * 1e3)

    ours_ms, peer_ms = statistics.median(ours), statistics.median(peer)
    compile_s = max(0.0, first_s - ours_ms * n / 1e3)
    log(f"{args.module}.landscapes, {n} x {size}x{size} per call, {args.repeats} repeats (ms/image):")
    log(f"  landscapes   {spread(ours)}")
    log(f"  JPEG decode  {spread(peer)}   (Pillow, q{args.quality}, {len(data)} bytes)")
    log(f"  ratio landscapes / JPEG decode: {ours_ms / peer_ms:.2f}   compile: {compile_s:.2f} s")
    print(json.dumps({
        "landscapes_ms_per_image": round(ours_ms, 3),
        "jpeg_decode_ms_per_image": round(peer_ms, 3),
        "ratio": round(ours_ms / peer_ms, 3),
        "compile_s": round(compile_s, 2),
        "landscapes_ms_min_max": [round(min(ours), 3), round(max(ours), 3)],
        "jpeg_decode_ms_min_max": [round(min(peer), 3), round(max(peer), 3)],
        "size": size,
        "n": n,
        "module": args.module,
    }))


if __name__ == "__main__":
    main()
