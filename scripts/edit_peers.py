"""The peer the profiler measures issue 12's edits against: each edit done the usual way, one
image at a time on the host with numpy and Pillow (`python -m scripts.profile_throughput
--stage corrupt --peers --set corruption.kind=K`).

Same work as `anomaly_jax.edits` (a region of about the same size, the same kind of filter),
not the same pixels: a peer is timed, not compared. Parameters are drawn with numpy per image,
as a data-loader worker would.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
from PIL import Image, ImageFilter

from anomaly_jax.config import EDIT_KINDS


def _region(rng: np.random.Generator, size: int) -> tuple[int, int, int]:
    """(row, col, r): the seed's square prior (centre in [H/8, 7H/8], r >= 30 at 800)."""
    row, col = rng.integers(size // 8, size - size // 8, 2)
    reach = min(row, col, size - row, size - col)
    return int(row), int(col), int(max(30 * size // 800, rng.integers(0, max(reach, 1))))


def _paste(image: np.ndarray, patch: np.ndarray, row: int, col: int, r: int) -> None:
    image[row - r:row + r, col - r:col + r] = patch


def smudge(image, donor, rng):
    row, col, r = _region(rng, image.shape[0])
    box = (col - r, row - r, col + r, row + r)
    sigma = rng.uniform(1.5, 4.0) * image.shape[0] / 800
    region = Image.fromarray(image).crop(box)
    blurred = region.filter(ImageFilter.GaussianBlur(sigma))
    feather = Image.new("L", region.size, 0)
    feather.paste(255, (2, 2, region.size[0] - 2, region.size[1] - 2))
    feather = feather.filter(ImageFilter.GaussianBlur(sigma))
    _paste(image, np.asarray(Image.composite(blurred, region, feather)), row, col, r)
    return image


def erase(image, donor, rng):
    row, col, r = _region(rng, image.shape[0])
    known = np.ones(image.shape[:2], np.float32)
    known[row - r:row + r, col - r:col + r] = 0
    radius = r  # a blur wide enough to reach the middle of the hole from its rim
    num = np.asarray(Image.fromarray((image * known[..., None]).astype(np.uint8)).filter(
        ImageFilter.BoxBlur(radius)), np.float32)
    den = np.asarray(Image.fromarray((known * 255).astype(np.uint8)).filter(
        ImageFilter.BoxBlur(radius)), np.float32)[..., None] / 255
    fill = np.clip(num / np.maximum(den, 1e-3), 0, 255).astype(np.uint8)
    _paste(image, fill[row - r:row + r, col - r:col + r], row, col, r)
    return image


def stretch(image, donor, rng):
    row, col, r = _region(rng, image.shape[0])
    factor, axis = rng.uniform(1.1, 1.6), int(rng.integers(0, 2))
    region = Image.fromarray(image[row - r:row + r, col - r:col + r])
    side = 2 * r
    grown = (int(side * factor), side) if axis == 1 else (side, int(side * factor))
    big = np.asarray(region.resize(grown, Image.BILINEAR))
    top, left = (big.shape[0] - side) // 2, (big.shape[1] - side) // 2
    _paste(image, big[top:top + side, left:left + side], row, col, r)
    return image


def copy_move(image, donor, rng):
    row, col, r = _region(rng, image.shape[0])
    src_row, src_col, _ = _region(rng, image.shape[0])
    src_row = int(np.clip(src_row, r, image.shape[0] - r))
    src_col = int(np.clip(src_col, r, image.shape[1] - r))
    _paste(image, image[src_row - r:src_row + r, src_col - r:src_col + r].copy(), row, col, r)
    return image


def splice(image, donor, rng):
    row, col, r = _region(rng, image.shape[0])
    _paste(image, donor[row - r:row + r, col - r:col + r], row, col, r)
    return image


PEERS = {"smudge": smudge, "erase": erase, "stretch": stretch, "copy_move": copy_move,
         "splice": splice}
assert tuple(PEERS) == EDIT_KINDS


def images_per_s(kind: str, images: np.ndarray, repeats: int = 3) -> float:
    """Median images/s of `kind` (or "mix": the five in turn) over uint8[N, S, S, 3], one image
    at a time, each on a fresh copy (as a loader would alter a decoded image)."""
    kinds = EDIT_KINDS if kind == "mix" else (kind,)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i, image in enumerate(images):
            PEERS[kinds[i % len(kinds)]](image.copy(), images[i - 1], rng)
        times.append(time.perf_counter() - t0)
    return len(images) / statistics.median(times)
