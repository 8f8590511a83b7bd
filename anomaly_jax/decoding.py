"""Opening and decoding image files with Pillow, in grain worker processes or threads.

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

Grain worker processes import this module: it must not import jax (or anything heavy).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Iterator, Sequence

import grain
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from anomaly_jax.errors import DataError, UnreadableImage

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
RESAMPLE = Image.BICUBIC
MAX_WORKERS = 8
NO_SHARED_MEMORY = 1 << 62  # grain's min_shm_size: no array is that large


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


def decode_mask(path: str, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """A mask image file -> (bool[size, size], (H, W) before resizing): nonzero = in the mask
    (1-bit, 0/1 or 0/255 8-bit PNGs alike), resized with nearest-neighbour so it stays a
    set of pixels. No EXIF rotation, as for the CSV's images: it indexes the stored array.
    Raises UnreadableImage(path, reason) as `decode_image` does."""
    with _open(path) as im:
        _load(im, path)
        grey = im if im.mode in ("1", "L") else _to_rgb(im, path).convert("L")
        hw = (grey.height, grey.width)
        mask = Image.fromarray(np.asarray(grey.convert("L")) > 0)
        if mask.size != (size, size):
            mask = mask.resize((size, size), Image.NEAREST)
        return np.asarray(mask, dtype=bool), hw


def _header_size(path: str, apply_exif: bool) -> tuple[int, int]:
    """(height, width) as decode_image would see it before resizing, reading the header only."""
    with _open(path) as im:
        width, height = im.size
        if apply_exif and im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # 90-degree turns
            width, height = height, width
        return height, width


def header_size(path: str) -> tuple[int, int]:
    """(height, width) of an image file as decode_image sees it (EXIF turns applied), from its
    header only. Raises UnreadableImage like decode_image."""
    return _header_size(path, True)


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


def list_image_files(folder: str, *, name_others: bool = False) -> list[str]:
    """Image files under `folder`, recursively, by extension (any case), sorted by path.

    name_others: log one warning naming the files of other types that are left out."""
    if not os.path.isdir(folder):
        raise DataError(f"image folder not found: {folder}")
    found, other = [], {}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for f in sorted(files):
            if f.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.join(root, f))
            elif not f.startswith("."):
                other.setdefault(os.path.splitext(f)[1].lower() or "(none)", []).append(f)
    if other and name_others:
        # Named, so that a folder of .gif or .tif photos is not silently a smaller dataset.
        kinds = "; ".join(f"{ext}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                          for ext, names in sorted(other.items()))
        log.warning("%s: %d files skipped, not a supported image type (%s); supported: %s",
                    folder, sum(map(len, other.values())), kinds, " ".join(IMAGE_EXTENSIONS))
    return sorted(found, key=lambda p: os.path.relpath(p, folder))
