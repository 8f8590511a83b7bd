"""The datasets: image sources, package-photo tiles, splits, and where decoded images live.

Sources (DataConfig.source):
  "landscapes" | "solid" | "black"  procedural images from `anomaly_jax.synthetic` (no files);
  "folder"                          every image file under `data.dir`, recursively;
  "csv"                             a seed-format labels.csv (`seed_csv`) plus its images.

A dataset that fits in memory is decoded once (`load_image_set(..., decode=True)`, decoding in
grain worker processes) into one uint8[N, S, S, 3] array; only ids travel per step after that.
A larger one is streamed: `decode=False` gives a `loader` (id -> uint8[S, S, 3]) that
`pipeline.batch_iterator` calls inside grain worker processes with prefetch.

Elsewhere: `anomaly_jax.decoding` (reading image files with Pillow, and its decoding choices),
`anomaly_jax.seed_csv` (the seed-format CSV, read and write), `anomaly_jax.pipeline` (the
grain batch iterator).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from anomaly_jax.config import KIND_ORDER, SYNTHETIC_SOURCES, DataConfig, choices
from anomaly_jax.decoding import (IMAGE_EXTENSIONS, FileLoader, _read_files, _warn_skipped,
                                  decode_mask, list_image_files)
from anomaly_jax.errors import DataError, UnreadableImage
from anomaly_jax.seed_csv import _row_error, one_row_per_image, read_csv_rows

# Host RAM fraction / device memory fraction a decoded dataset may take (resolve_cache).
HOST_FRACTION, DEVICE_FRACTION, CPU_DEVICE_LIMIT = 0.5, 0.25, 2 << 30


@dataclasses.dataclass
class ImageSet:
    """A dataset as the trainer sees it.

    images: uint8[N, S, S, 3] decoded once, or None when streaming (use `loader`).
    names: a file path per example, or f"{source}:{i}" for synthetic sources.
    targets: source "csv" only, else None:
      center float32[N, 2]     (x / H, y / W) of the original image (the seed's x/800, y/800),
      half_size_norm float32[N]  r / H,
      ratio float32[N]         discolor_ratio,
      features float32[N, 2]   raw (r, discolor_ratio), as the seed's fusion models got them,
      altered bool[N]          only when the CSV has an `altered` column (make_dataset exports
                               with p_altered < 1),
      mask bool[N, S, S]       only with a `mask_path` column: the changed pixels, resized to
                               S with nearest-neighbour (N * S * S bytes of host memory),
      kind int32[N]            only with a `kind` column: the index into config.KIND_ORDER,
                               as the `kind` label of `alteration.alter_examples`,
      jpeg_change float32[N]   only with a `jpeg_change` column: how much the alteration
                               changed its region in the files (`seed_csv.saved_change`).
    skipped: (file, reason) for every unreadable image left out.
    loader: id -> uint8[S, S, 3] decode of names[id], for streaming (None for synthetic sets).
    """
    images: np.ndarray | None
    names: list[str]
    targets: dict[str, np.ndarray] | None
    skipped: list[tuple[str, str]]
    loader: Callable[[int], np.ndarray] | None
    # int32[N, 2]: the real (height, width) in the top-left of each padded image, when the
    # images are not all full-size (package photos added as tiles); None = all full-size.
    valid_hw: np.ndarray | None = None


# ----------------------------------------------------------------------------- sources


def _load_folder(config: DataConfig, decode: bool) -> ImageSet:
    paths = list_image_files(config.dir, name_others=True)
    if not paths:
        raise DataError(f"no image files ({'/'.join(IMAGE_EXTENSIONS)}) in folder {config.dir}")
    images, _, reasons = _read_files(paths, config.image_size, decode=decode, apply_exif=True,
                                     workers=config.workers)
    skipped = [(p, r) for p, r in zip(paths, reasons) if r]
    _warn_skipped(skipped)
    names = [p for p, r in zip(paths, reasons) if not r]
    if not names:
        raise DataError(f"no readable image in folder {config.dir}: all {len(paths)} files "
                        f"were unreadable (first: {skipped[0][0]}: {skipped[0][1]})")
    loader = None if decode else FileLoader(tuple(names), config.image_size, True)
    return ImageSet(images, names, None, skipped, loader)


def _load_csv(config: DataConfig, decode: bool) -> ImageSet:
    csv_path = config.csv
    rows = read_csv_rows(csv_path)
    unique = one_row_per_image(csv_path, rows)
    # Labels index the stored pixel array, so EXIF orientation is not applied
    # (anomaly_jax.decoding's docstring).
    images, sizes, reasons = _read_files([r.path for r in unique], config.image_size,
                                         decode=decode, apply_exif=False,
                                         workers=config.workers)
    read = {row.path: (size, reason) for row, size, reason in zip(unique, sizes, reasons)}
    # Every row is checked, a dropped repeat too: its label is wrong even if never used.
    for row in rows:
        (height, width), reason = read[row.path]
        if not reason and not (0 <= row.x < height and 0 <= row.y < width):
            raise _row_error(csv_path, row.row, row.line,
                             f"centre (x={row.x:g}, y={row.y:g}) is outside the "
                             f"{height}x{width} image {row.path}")
    kept = [(row, *size) for row, size, reason in zip(unique, sizes, reasons) if not reason]
    rows = unique
    skipped = [(row.path, reason) for row, reason in zip(rows, reasons) if reason]
    _warn_skipped(skipped)
    if not kept:
        raise DataError(f"no readable image in {csv_path}: all {len(rows)} were unreadable "
                        f"(first: {skipped[0][0]}: {skipped[0][1]})")
    f32 = lambda values: np.asarray(values, np.float32)  # noqa: E731
    x, y, r, ratio, h, w = (f32(v) for v in zip(*[
        (row.x, row.y, row.r, row.ratio, height, width) for row, height, width in kept]))
    targets = {
        "center": np.stack([x / h, y / w], axis=1),
        "half_size_norm": r / h,
        "ratio": ratio,
        "features": np.stack([r, ratio], axis=1),
    }
    if rows[0].altered is not None:
        targets["altered"] = np.array([row.altered for row, _, _ in kept], bool)
    if rows[0].mask_path is not None:
        targets["mask"] = _read_masks(csv_path, kept, config.image_size)
    if rows[0].kind is not None:
        targets["kind"] = np.array([KIND_ORDER.index(row.kind) for row, _, _ in kept],
                                   np.int32)
    if rows[0].jpeg_change is not None:
        targets["jpeg_change"] = f32([row.jpeg_change for row, _, _ in kept])
    names = [row.path for row, _, _ in kept]
    loader = None if decode else FileLoader(tuple(names), config.image_size, False)
    return ImageSet(images, names, targets, skipped, loader)


def _read_masks(csv_path: str, kept: list, size: int) -> np.ndarray:
    """bool[K, size, size]: the mask of each kept (row, H, W). An unreadable mask, or one of
    another size than its image, is a DataError naming the row and file: unlike an
    unreadable image, it would silently turn a labelled example into a wrong one."""
    masks = np.empty((len(kept), size, size), bool)
    for k, (row, height, width) in enumerate(kept):
        try:
            masks[k], hw = decode_mask(row.mask_path, size)
        except UnreadableImage as e:
            raise _row_error(csv_path, row.row, row.line,
                             f"unreadable mask {row.mask_path}: {e.reason}") from None
        if hw != (height, width):
            raise _row_error(csv_path, row.row, row.line,
                             f"mask {row.mask_path} is {hw[0]}x{hw[1]}, its image "
                             f"{row.path} {height}x{width}")
    return masks


def _load_synthetic(config: DataConfig, seed: int) -> ImageSet:
    import jax  # here, not at the top: grain workers import this module and never need it

    from anomaly_jax import synthetic
    size = config.image_size
    images = np.asarray(synthetic.generate(config.source, jax.random.key(seed),
                                           config.num_images, size, size))
    if images.dtype != np.uint8 or images.shape != (config.num_images, size, size, 3):
        raise DataError(f"synthetic.generate({config.source!r}) returned {images.dtype}"
                        f"{list(images.shape)}; expected uint8[{config.num_images}, {size}, "
                        f"{size}, 3]")
    names = [f"{config.source}:{i}" for i in range(config.num_images)]
    return ImageSet(images, names, None, [], None)


def load_image_set(config: DataConfig, seed: int, *, decode: bool = True) -> ImageSet:
    """The dataset `config` names, decoded once (decode=True) or ready to stream.

    Synthetic sources are always generated in memory (from jax.random.key(seed)); "folder" and
    "csv" decode with `config.workers` grain worker processes (-1: min(cpus, 8); 0: threads in
    this process). Unreadable files are skipped with one warning each (ImageSet.skipped).
    Raises DataError (one line, naming the folder/CSV/row) for anything else that is wrong.
    """
    if config.image_size < 1:
        raise DataError(f"data.image_size={config.image_size}: expected a positive size")
    if config.source in SYNTHETIC_SOURCES:
        return _load_synthetic(config, seed)
    if config.source == "folder":
        if not config.dir:
            raise DataError("data.dir: required when data.source='folder'")
        return _load_folder(config, decode)
    if config.source == "csv":
        if not config.csv:
            raise DataError("data.csv: required when data.source='csv'")
        return _load_csv(config, decode)
    raise DataError(f"data.source={config.source!r}: expected one of "
                    f"{', '.join(choices(DataConfig, 'source'))}")


def photo_tiles(photo: np.ndarray, size: int, min_side: int) -> list[tuple[np.ndarray, tuple]]:
    """A photo at native scale cut into equal tiles of at most size x size, each zero-padded
    to uint8[size, size, 3], with its real (height, width); tiles under min_side are dropped."""
    h, w = photo.shape[:2]
    rows, cols = -(-h // size), -(-w // size)
    th, tw = -(-h // rows), -(-w // cols)
    tiles = []
    for a in range(0, h, th):
        for b in range(0, w, tw):
            tile = photo[a:a + th, b:b + tw]
            if min(tile.shape[:2]) < min_side:
                continue
            padded = np.zeros((size, size, 3), np.uint8)
            padded[:tile.shape[0], :tile.shape[1]] = tile
            tiles.append((padded, tile.shape[:2]))
    return tiles


def add_package_photos(image_set: ImageSet, size: int, min_side: int) -> tuple[ImageSet, int]:
    """`image_set` with the training split of `anomaly_jax.package_photos` appended as native-
    scale tiles (see `photo_tiles`); returns the new set and how many tiles were added.

    The set must be decoded (images not None). Held-out photos (package_photos.HELD_OUT) are
    never added: they score detection on photos the model did not train on.
    """
    from anomaly_jax import package_photos
    if image_set.images is None:
        raise DataError("data.package_photos: needs a decoded dataset (data.cache=device or "
                        "host), not a streamed one")
    train_names, _ = package_photos.split(package_photos.available())
    n, s = len(image_set.names), image_set.images.shape[1]
    valid = (image_set.valid_hw if image_set.valid_hw is not None
             else np.full((n, 2), s, np.int32))
    images, names, hw = [image_set.images], list(image_set.names), [valid]
    for name in train_names:
        for k, (tile, tile_hw) in enumerate(photo_tiles(package_photos.load(name), size,
                                                        min_side)):
            images.append(tile[None])
            names.append(f"package_photos:{name}:{k}")
            hw.append(np.array([tile_hw], np.int32))
    added = len(names) - n
    return dataclasses.replace(image_set, images=np.concatenate(images), names=names,
                               valid_hw=np.concatenate(hw).astype(np.int32)), added


# ----------------------------------------------------------------------------- splits, cache


def split_ids(n: int, val_fraction: float, test_fraction: float, seed: int
              ) -> dict[str, np.ndarray]:
    """{"train", "val", "test"} -> sorted int32 ids, a partition of range(n).

    One permutation from np.random.default_rng(seed); val takes its first floor(n * val)
    ids, test the next floor(n * test), train the rest. With seed 42 and test 0 this is
    exactly the split of the seed-1 peer pipeline (rng.permutation, val = order[:n // 5]).
    """
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise DataError(f"val_fraction={val_fraction}, test_fraction={test_fraction}: "
                        "expected non-negative fractions summing to less than 1")
    n_val = int(math.floor(n * val_fraction + 1e-9))
    n_test = int(math.floor(n * test_fraction + 1e-9))
    if n - n_val - n_test < 1:
        raise DataError(f"{n} examples leave no training example after the val/test split")
    order = np.random.default_rng(seed).permutation(n)
    parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test],
             "train": order[n_val + n_test:]}
    return {k: np.sort(v).astype(np.int32) for k, v in
            (("train", parts["train"]), ("val", parts["val"]), ("test", parts["test"]))}


def resolve_cache(requested: str, n_bytes: int, *, device_bytes_free: int | None,
                  host_bytes_free: int) -> str:
    """Where the decoded dataset lives: "device" | "host" | "stream".

    "auto": device if n_bytes fits in a quarter of the device's free memory (a CPU backend,
    device_bytes_free=None, counts as fitting below 2 GiB), else host if it fits in half the
    free host RAM, else stream. Anything but "auto" is returned as asked.
    """
    if requested in ("device", "host", "stream"):
        return requested
    if requested != "auto":
        raise DataError(f"data.cache={requested!r}: expected auto, device, host or stream")
    if device_bytes_free is None:
        fits_device = n_bytes < CPU_DEVICE_LIMIT
    else:
        fits_device = n_bytes <= DEVICE_FRACTION * device_bytes_free
    if fits_device:
        return "device"
    if n_bytes <= HOST_FRACTION * host_bytes_free:
        return "host"
    return "stream"
