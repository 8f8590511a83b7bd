"""Data layer: image sources, decoding, splits, and the grain batch pipeline.

Sources (DataConfig.source):
  "landscapes" | "solid" | "black"  procedural images from `anomaly_jax.synthetic` (no files);
  "folder"                          every image file under `data.dir`, recursively;
  "csv"                             a seed-format labels.csv (DESIGN §2.1) plus its images.

A dataset that fits in memory is decoded once (`load_image_set(..., decode=True)`, decoding in
grain worker processes) into one uint8[N, S, S, 3] array; only ids travel per step after that.
A larger one is streamed: `decode=False` gives a `loader` (id -> uint8[S, S, 3]) that
`batch_iterator` calls inside grain worker processes with prefetch.

Decoding choices (change them here, in `decode_image` / `_to_rgb`):
  * EXIF orientation is applied (`ImageOps.exif_transpose`) for "folder" images. Not for "csv"
    images: their labels are row/column indices of the stored pixel array (the seed wrote
    them from numpy arrays), so rotating the pixels would move the square away from its label.
  * Alpha is dropped, not composited: Pillow's `convert("RGB")`, exactly what the seed's
    `Image.open(p).convert("RGB")` did. 16-bit greys (I;16*, I) are scaled to 8 bits
    (v / 257, rounded) instead of Pillow's clip at 255; CMYK, P, L, 1, YCbCr go through Pillow.
  * Resizing to S x S uses `Image.BICUBIC`, Pillow's default for `resize` and therefore what
    the seed's `img.resize((size, size))` used; Pillow's resize widens the filter support
    when it shrinks, so the result is antialiased. An image already S x S is left untouched.
  * A file Pillow cannot read (empty, not an image, truncated, over Pillow's decompression-bomb
    limit, even the warning level) is skipped with one warning line and listed in
    `ImageSet.skipped`; a folder with no readable image is a `DataError`. When streaming
    (decode=False) only headers are checked up front, so damage deeper in a file (a truncated
    JPEG) surfaces when the batch holding it is decoded: UnreadableImage naming the file.

Batching (`batch_iterator`): epochs never mix; each epoch is a fresh permutation derived only
from (seed, epoch) by grain's index shuffle, so the same on every machine and for every worker
count. A global batch of `batch_size * shard_count` consecutive ids of that permutation is
cut into `shard_count` per-process slices, so the sequence of global batches does not depend
on how many processes share it.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from anomaly_jax.config import DataConfig

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SYNTHETIC_SOURCES = ("landscapes", "solid", "black")
CSV_COLUMNS = ("x", "y", "r", "discolor_ratio", "img_path")
# Where an img_path that does not exist is looked for by its basename, relative to the CSV's
# folder: the seed's own CSV held absolute paths from its authors' laptop.
CSV_FALLBACK_DIRS = ("", "images", "landscape_scrambled")
RESAMPLE = Image.BICUBIC
MAX_WORKERS = 8
NO_SHARED_MEMORY = 1 << 62  # grain's min_shm_size: no array is that large
# Host RAM fraction / device memory fraction a decoded dataset may take (resolve_cache).
HOST_FRACTION, DEVICE_FRACTION, CPU_DEVICE_LIMIT = 0.5, 0.25, 2 << 30


class DataError(ValueError):
    """Bad or missing data; the message is one line naming the file (and row) at fault."""


class UnreadableImage(DataError):
    """An image file Pillow cannot decode; `reason` says why (empty, truncated, ...)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason

    def __reduce__(self):  # keeps it picklable across grain worker processes
        return (UnreadableImage, (self.path, self.reason))


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
                               with p_altered < 1).
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


# ----------------------------------------------------------------------------- decoding


def _open(path: str) -> Image.Image:
    """Opens (header only) or raises UnreadableImage with the reason."""
    try:
        if os.path.getsize(path) == 0:
            raise UnreadableImage(path, "empty file (0 bytes)")
    except OSError as e:
        raise UnreadableImage(path, f"cannot read file ({e.strerror or e})") from None
    # Pillow only warns between 1x and 2x its pixel limit; an image that large is as
    # unusable here as one over 2x, so the warning counts as an error too.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise UnreadableImage(path, f"decompression bomb ({e})") from None
        except UnidentifiedImageError:
            raise UnreadableImage(path, "not an image Pillow can identify") from None
        except Exception as e:  # noqa: BLE001 - any failure means the file is unusable
            raise UnreadableImage(path, f"cannot open ({type(e).__name__}: {e})") from None


def _load(im: Image.Image, path: str) -> None:
    try:
        im.load()
    except Exception as e:  # noqa: BLE001 - OSError, SyntaxError, EOFError, zlib.error, ...
        text = str(e)
        if "truncated" in text:
            raise UnreadableImage(path, f"truncated image data ({text})") from None
        raise UnreadableImage(path, f"corrupt image data ({type(e).__name__}: {text})") from None


def _to_rgb(im: Image.Image, path: str) -> Image.Image:
    """Any Pillow mode -> RGB (alpha dropped; 16-bit greys scaled to 8 bits)."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16") or im.mode == "I":
        grey = np.clip(np.rint(np.asarray(im, np.float64) / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode == "F":
        grey = np.clip(np.rint(np.asarray(im, np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # Pillow's P -> RGB path warns about byte transparency
    try:
        return im.convert("RGB")
    except ValueError as e:
        raise UnreadableImage(path, f"unsupported mode {im.mode} ({e})") from None


def _decode(path: str, size: int, apply_exif: bool) -> tuple[np.ndarray, tuple[int, int]]:
    """(uint8[size, size, 3], (H, W) before resizing)."""
    with _open(path) as im:
        _load(im, path)
        if apply_exif:
            im = ImageOps.exif_transpose(im)
        rgb = _to_rgb(im, path)
        hw = (rgb.height, rgb.width)
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), RESAMPLE)
        return np.asarray(rgb, dtype=np.uint8), hw


def decode_image(path: str, size: int, *, apply_exif: bool = True) -> np.ndarray:
    """Decodes one image file to uint8[size, size, 3] (see the module docstring for the rules).

    Raises UnreadableImage(path, reason) for empty, truncated, non-image or too-large files.
    """
    return _decode(path, size, apply_exif)[0]


def _header_size(path: str, apply_exif: bool) -> tuple[int, int]:
    """(height, width) as decode_image would see it before resizing, reading the header only."""
    with _open(path) as im:
        width, height = im.size
        if apply_exif and im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # 90-degree turns
            width, height = height, width
        return height, width


@dataclasses.dataclass(frozen=True)
class _ReadFile:
    """grain map: path -> (image uint8[S,S,3] | None, (H, W), error reason or "").

    Errors come back as records instead of exceptions so that one bad file never stops the
    pipeline. With decode=False only the header is read (H, W and most kinds of damage).
    """
    size: int
    decode: bool
    apply_exif: bool

    def __call__(self, path: str) -> tuple[np.ndarray | None, tuple[int, int], str]:
        try:
            if self.decode:
                image, hw = _decode(path, self.size, self.apply_exif)
            else:
                image, hw = None, _header_size(path, self.apply_exif)
        except UnreadableImage as e:
            return None, (0, 0), e.reason
        return image, hw, ""


@dataclasses.dataclass(frozen=True)
class FileLoader:
    """id -> uint8[S, S, 3]: decodes names[id] (ImageSet.loader for streamed datasets)."""
    paths: tuple[str, ...]
    size: int
    apply_exif: bool = True

    def __call__(self, i: int) -> np.ndarray:
        return decode_image(self.paths[int(i)], self.size, apply_exif=self.apply_exif)


def resolve_workers(workers: int) -> int:
    """-1 -> min(os.cpu_count(), 8), or 0 on 2 CPUs or fewer; otherwise the number itself.

    0 decodes in threads of this process: on 2 cores, worker processes measured slower
    (their start-up and transfer cost more than the parallelism gains).
    """
    if workers < -1:
        raise DataError(f"data.workers={workers}: expected -1 (auto), 0 or a positive count")
    if workers == -1:
        cpus = os.cpu_count() or 1
        return 0 if cpus <= 2 else min(cpus, MAX_WORKERS)
    return workers


def _mp_prefetch(it_ds: grain.IterDataset, workers: int, buffer: int) -> grain.IterDataset:
    """`it_ds` read by `workers` grain processes (order kept: they take turns element by
    element), `buffer` elements buffered per worker."""
    from absl import flags  # grain's own dependency

    # grain 0.2.18 reads an absl flag when it starts workers and fails if the program never
    # parsed absl flags (google/grain#1355, fixed after 0.2.18): mark them parsed, defaults kept.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    # Arrays come back pickled through the pipe rather than in grain's shared-memory blocks:
    # those are freed by a background thread that may not run before the program exits,
    # which leaves "leaked shared_memory objects" warnings behind; the pipe costs ~20% on
    # 800x800 images here, where decoding dominates anyway.
    it_ds = grain.experimental.WithOptionsIterDataset(
        it_ds, grain.experimental.DatasetOptions(min_shm_size=NO_SHARED_MEMORY))
    return it_ds.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=buffer))


def iter_decoded(paths: Sequence[str], size: int, *, workers: int, decode: bool = True,
                 apply_exif: bool = True
                 ) -> Iterator[tuple[np.ndarray | None, tuple[int, int], str]]:
    """Reads `paths` in order through grain: worker processes when workers > 0 (-1: min(cpus,
    8)), threads in this process when 0. Yields per file (uint8[S, S, 3] or None when
    unreadable or decode=False, (H, W) before resizing or (0, 0), reason or "")."""
    workers = min(resolve_workers(workers), len(paths))
    threads = 1 if workers else min(os.cpu_count() or 1, MAX_WORKERS)  # Pillow frees the GIL
    ds = grain.MapDataset.source(list(paths)).map(_ReadFile(size, decode, apply_exif))
    it_ds = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads))
    if workers:
        it_ds = _mp_prefetch(it_ds, workers, buffer=4)
    iterator = iter(it_ds)
    try:
        for image, hw, reason in iterator:
            yield image, (int(hw[0]), int(hw[1])), reason
    finally:
        if hasattr(iterator, "close"):
            iterator.close()


def _read_files(paths: Sequence[str], size: int, *, decode: bool, apply_exif: bool,
                workers: int) -> tuple[np.ndarray | None, list[tuple[int, int]], list[str]]:
    """(images uint8[K, S, S, 3] of the K readable files in order, or None when decode=False;
    (H, W) per file; reason per file, "" if readable)."""
    images = np.empty((len(paths), size, size, 3), np.uint8) if decode else None
    sizes, reasons, k = [], [], 0
    for image, hw, reason in iter_decoded(paths, size, workers=workers, decode=decode,
                                          apply_exif=apply_exif):
        sizes.append(hw)
        reasons.append(reason)
        if image is not None:
            images[k] = image
            k += 1
    return (images[:k] if decode else None), sizes, reasons


def _warn_skipped(skipped: list[tuple[str, str]]) -> None:
    for path, reason in skipped:
        log.warning("skipping unreadable image %s: %s", path, reason)


# ----------------------------------------------------------------------------- sources


def list_image_files(folder: str) -> list[str]:
    """Image files under `folder`, recursively, by extension (any case), sorted by path."""
    if not os.path.isdir(folder):
        raise DataError(f"image folder not found: {folder}")
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, f) for f in files
                  if f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found, key=lambda p: os.path.relpath(p, folder))


def _load_folder(config: DataConfig, decode: bool) -> ImageSet:
    paths = list_image_files(config.dir)
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


@dataclasses.dataclass(frozen=True)
class _CsvRow:
    row: int  # 1-based data row
    line: int  # line in the file
    x: float
    y: float
    r: float
    ratio: float
    path: str
    altered: bool | None  # None when the CSV has no `altered` column


def _row_error(csv_path: str, row: int, line: int, problem: str) -> DataError:
    return DataError(f"{csv_path} row {row} (line {line}): {problem}")


def _number(csv_path: str, row: int, line: int, record: dict, column: str) -> float:
    text = (record.get(column) or "").strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise _row_error(csv_path, row, line, f"column {column}={text!r} is not a number")
    return value


def resolve_csv_image(csv_path: str, img_path: str) -> str | None:
    """The file an img_path names: as given (relative to the CSV's folder), else its basename
    in the CSV's folder, images/ or landscape_scrambled/; None if none exists."""
    base_dir = os.path.dirname(os.path.abspath(csv_path))
    direct = img_path if os.path.isabs(img_path) else os.path.join(base_dir, img_path)
    if os.path.isfile(direct):
        return direct
    basename = img_path.replace("\\", "/").rsplit("/", 1)[-1]
    for sub in CSV_FALLBACK_DIRS:
        candidate = os.path.join(base_dir, sub, basename)
        if os.path.isfile(candidate):
            return candidate
    return None


def read_csv_rows(csv_path: str) -> list[_CsvRow]:
    """Parses and checks a seed-format labels.csv (everything but the image sizes)."""
    if not os.path.isfile(csv_path):
        raise DataError(f"labels CSV not found: {csv_path}")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in CSV_COLUMNS if c not in columns]
        if missing:
            raise DataError(f"{csv_path} row 0 (line 1, header): missing column(s) "
                            f"{', '.join(missing)}; required columns: {', '.join(CSV_COLUMNS)}")
        reader.fieldnames = columns
        rows = []
        for i, record in enumerate(reader, start=1):
            line = reader.line_num
            x, y, r, ratio = (_number(csv_path, i, line, record, c)
                              for c in ("x", "y", "r", "discolor_ratio"))
            if r <= 0:
                raise _row_error(csv_path, i, line, f"r={r:g} must be > 0")
            if ratio <= 0:
                raise _row_error(csv_path, i, line, f"discolor_ratio={ratio:g} must be > 0")
            img_path = (record.get("img_path") or "").strip()
            if not img_path:
                raise _row_error(csv_path, i, line, "img_path is empty")
            path = resolve_csv_image(csv_path, img_path)
            if path is None:
                raise _row_error(
                    csv_path, i, line, f"image file not found: {img_path} (nor its basename "
                    f"in the CSV's folder, {'/, '.join(CSV_FALLBACK_DIRS[1:])}/)")
            altered = None
            if "altered" in columns:
                altered = (record.get("altered") or "").strip().lower() not in ("0", "false")
            rows.append(_CsvRow(i, line, x, y, r, ratio, path, altered))
    if not rows:
        raise DataError(f"{csv_path}: no data rows")
    return rows


def _load_csv(config: DataConfig, decode: bool) -> ImageSet:
    csv_path = config.csv
    rows = read_csv_rows(csv_path)
    # Labels index the stored pixel array, so EXIF orientation is not applied (module doc).
    images, sizes, reasons = _read_files([r.path for r in rows], config.image_size,
                                         decode=decode, apply_exif=False,
                                         workers=config.workers)
    kept = []
    for row, (height, width), reason in zip(rows, sizes, reasons):
        if reason:
            continue
        if not (0 <= row.x < height and 0 <= row.y < width):
            raise _row_error(csv_path, row.row, row.line,
                             f"centre (x={row.x:g}, y={row.y:g}) is outside the "
                             f"{height}x{width} image {row.path}")
        kept.append((row, height, width))
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
    names = [row.path for row, _, _ in kept]
    loader = None if decode else FileLoader(tuple(names), config.image_size, False)
    return ImageSet(images, names, targets, skipped, loader)


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
                    f"{', '.join(SYNTHETIC_SOURCES + ('folder', 'csv'))}")


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


# ----------------------------------------------------------------------------- batching


def steps_per_epoch(n_ids: int, batch_size: int, shard_count: int = 1) -> int:
    """Full batches per epoch and process: floor(n_ids / (batch_size * shard_count)).

    batch_size is the per-process batch (the global batch is batch_size * shard_count).
    """
    return n_ids // (batch_size * shard_count)


def _epoch_seed(seed: int, epoch: int) -> int:
    # grain's own repeat() reshuffles with seed + epoch, which makes (seed, epoch + 1) equal to
    # (seed + 1, epoch); hashing both through SeedSequence keeps runs with nearby seeds apart.
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _shard_positions(n: int, batch_size: int, shard_index: int, shard_count: int,
                     drop_remainder: bool) -> np.ndarray:
    """Positions, within one epoch's order, that this shard takes, in order."""
    global_batch = batch_size * shard_count
    used = (n // global_batch) * global_batch if drop_remainder else n
    positions = np.arange(used, dtype=np.int64)
    return positions[(positions // batch_size) % shard_count == shard_index]


@dataclasses.dataclass(frozen=True)
class _EpochBatch:
    """grain map: batch number k -> {"id": int32[b]} (epoch k // batches_per_epoch)."""
    ids: np.ndarray
    positions: np.ndarray
    batch_size: int
    batches_per_epoch: int
    seed: int
    shuffle: bool

    def __call__(self, k: int) -> dict[str, np.ndarray]:
        epoch, j = divmod(int(k), self.batches_per_epoch)
        order = grain.MapDataset.source(self.ids)
        if self.shuffle:
            order = order.shuffle(seed=_epoch_seed(self.seed, epoch))
        chunk = self.positions[j * self.batch_size:(j + 1) * self.batch_size]
        return {"id": np.array([order[int(p)] for p in chunk], np.int32)}


@dataclasses.dataclass(frozen=True)
class _LoadImages:
    """grain map: adds "image": uint8[b, S, S, 3] from the loader."""
    loader: Callable[[int], np.ndarray]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = np.stack([self.loader(int(i)) for i in batch["id"]])
        return {"id": batch["id"], "image": images}


def batch_iterator(ids: np.ndarray, batch_size: int, *, seed: int, num_epochs: int,
                   shuffle: bool = True, drop_remainder: bool = True, shard_index: int = 0,
                   shard_count: int = 1, loader: Callable[[int], np.ndarray] | None = None,
                   workers: int = 0) -> grain.DatasetIterator:
    """A checkpointable grain iterator over `num_epochs` epochs of `ids`.

    Yields {"id": int32[b]} (+ "image": uint8[b, S, S, 3] when `loader` is given, decoded in
    `workers` grain processes with prefetch; -1: min(cpus, 8); 0: threads here).
    ids: int[N]; batch_size: this process's batch. Each epoch is its own permutation of ids
    (from seed and epoch only); global batch s of an epoch is positions
    [s*B*P, (s+1)*B*P) of it, and shard p takes the p-th B of those. With drop_remainder,
    each epoch yields exactly steps_per_epoch(N, B, P) batches per shard, and the P shards
    together cover B*P*steps distinct ids of the epoch. Without it, the last batches may be
    short (and shards may differ in length).
    `get_state()` / `set_state()` (or grain.checkpoint.CheckpointSave/Restore) resume at the
    next batch; restore into an iterator built with the same arguments (same `workers`).
    """
    ids = np.asarray(ids, np.int32).reshape(-1)
    if batch_size < 1 or num_epochs < 1:
        raise DataError(f"batch_size={batch_size}, num_epochs={num_epochs}: expected >= 1")
    if not 0 <= shard_index < shard_count:
        raise DataError(f"shard_index={shard_index}: expected 0 <= index < {shard_count}")
    if not 0 <= seed < 2**32:
        raise DataError(f"seed={seed}: expected 0 <= seed < 2**32")
    positions = _shard_positions(len(ids), batch_size, shard_index, shard_count,
                                 drop_remainder)
    batches_per_epoch = math.ceil(len(positions) / batch_size)
    if batches_per_epoch == 0:
        raise DataError(f"{len(ids)} ids make no batch of {batch_size} x {shard_count} "
                        "shard(s); lower the batch size or add data")
    ds = grain.MapDataset.range(num_epochs * batches_per_epoch).map(
        _EpochBatch(ids, positions, batch_size, batches_per_epoch, seed, shuffle))
    workers = resolve_workers(workers) if loader is not None else 0
    threads = 0
    if loader is not None:
        ds = ds.map(_LoadImages(loader))
        threads = 1 if workers else min(os.cpu_count() or 1, MAX_WORKERS)
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                 prefetch_buffer_size=max(2, 2 * threads)))
    if workers:
        it_ds = _mp_prefetch(it_ds, workers, buffer=2)  # elements are whole batches here
    return iter(it_ds)


# ----------------------------------------------------------------------------- export


def _labels_in_pixels(labels: dict[str, Any], height: int, width: int
                      ) -> dict[str, np.ndarray]:
    """Seed columns from pixel labels (x, y, r, discolor_ratio) or corruption labels
    (center (row/H, col/W), half_size, ratio)."""
    if all(k in labels for k in ("x", "y", "r", "discolor_ratio")):
        out = {k: np.asarray(labels[k]) for k in ("x", "y", "r", "discolor_ratio")}
    else:
        center = np.asarray(labels["center"], np.float64)
        out = {"x": np.rint(center[:, 0] * height).astype(np.int64),
               "y": np.rint(center[:, 1] * width).astype(np.int64),
               "r": np.asarray(labels["half_size"]),
               "discolor_ratio": np.asarray(labels["ratio"], np.float32)}
    if "altered" in labels:
        out["altered"] = np.asarray(labels["altered"], bool)
    return out


def _format_number(v: Any) -> str:
    """Integers as integers; floats at float32's shortest round-trip form (1.08, not
    1.0800000190734863), so that reading back as float32 gives the same number."""
    v = np.asarray(v)
    if np.issubdtype(v.dtype, np.integer) or float(v) == int(float(v)):
        return str(int(v))
    return np.format_float_positional(np.float32(v), trim="-")


def write_seed_format(out_dir: str, images: np.ndarray, labels: dict, *,
                      quality: int = 75) -> str:
    """Writes a seed-format dataset: out_dir/images/NNNNN.jpg + out_dir/labels.csv.

    images: uint8[N, H, W, 3]; labels: pixel columns {x, y, r, discolor_ratio} or corruption
    labels {center float32[N, 2] (row/H, col/W), half_size int[N], ratio float32[N]},
    optionally altered bool[N] (written as a 6th column only if some image is clean).
    JPEG quality 75 is Pillow's default, i.e. what the seed's `img.save(path)` used.
    Returns the CSV path; img_path values are relative to out_dir.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"write_seed_format: images {images.dtype}{list(images.shape)}; "
                        "expected uint8[N, H, W, 3]")
    n, height, width = images.shape[:3]
    columns = _labels_in_pixels(labels, height, width)
    with_altered = "altered" in columns and not columns["altered"].all()
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    digits = max(5, len(str(n - 1)))
    csv_path = os.path.join(out_dir, "labels.csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(list(CSV_COLUMNS) + (["altered"] if with_altered else []))
        for i in range(n):
            rel = f"images/{i:0{digits}d}.jpg"
            Image.fromarray(images[i], "RGB").save(os.path.join(out_dir, rel), "JPEG",
                                                   quality=quality)
            row = [_format_number(columns[k][i]) for k in ("x", "y", "r", "discolor_ratio")]
            row.append(rel)
            if with_altered:
                row.append(str(int(columns["altered"][i])))
            writer.writerow(row)
    return csv_path
