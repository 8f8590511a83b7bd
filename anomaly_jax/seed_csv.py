"""The seed-format labels CSV (x, y, r, discolor_ratio, img_path): reading and checking it, and writing a dataset in it.

Columns x, y, r, discolor_ratio, img_path (+ an optional `altered`); x and y are the square's
centre as row and column of the stored pixel array, r its half size in pixels. Issue 12's
optional columns: `mask_path`, a PNG of the changed pixels (nonzero = changed; same size as
the image; relative to the CSV's folder), `kind`, the alteration's name (a KIND_ORDER
entry of anomaly_jax.config), and `jpeg_change`, how much the alteration changed its region in
the saved files (`saved_change`: mean |difference| in grey levels; 0 for a clean image).
`read_csv_rows` checks everything but the image sizes (`anomaly_jax.data` checks those when it
decodes the images); `write_seed_format` writes images/NNNNN.jpg and labels.csv.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import os
from typing import Any

import numpy as np
from PIL import Image

from anomaly_jax.config import KIND_ORDER
from anomaly_jax.errors import DataError

log = logging.getLogger(__name__)

CSV_COLUMNS = ("x", "y", "r", "discolor_ratio", "img_path")
# Where an img_path that does not exist is looked for by its basename, relative to the CSV's
# folder: the seed's own CSV held absolute paths from its authors' laptop.
CSV_FALLBACK_DIRS = ("", "images", "landscape_scrambled")


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
    mask_path: str | None = None  # the resolved mask file; None without a `mask_path` column
    kind: str | None = None  # one of KIND_ORDER; None without a `kind` column
    jpeg_change: float | None = None  # >= 0; None without a `jpeg_change` column


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


def _mask_file(csv_path: str, row: int, line: int, mask_path: str) -> str:
    """The file a mask_path names, as given or relative to the CSV's folder. No basename
    fallback as for images: masks/00001.png and images/00001.png may share a basename."""
    if not mask_path:
        raise _row_error(csv_path, row, line, "mask_path is empty")
    base_dir = os.path.dirname(os.path.abspath(csv_path))
    path = mask_path if os.path.isabs(mask_path) else os.path.join(base_dir, mask_path)
    if not os.path.isfile(path):
        raise _row_error(csv_path, row, line, f"mask file not found: {mask_path}")
    return path


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
            mask_path = None
            if "mask_path" in columns:
                mask_path = _mask_file(csv_path, i, line, (record.get("mask_path") or "").strip())
            kind = None
            if "kind" in columns:
                kind = (record.get("kind") or "").strip()
                if kind not in KIND_ORDER:
                    raise _row_error(csv_path, i, line, f"kind={kind!r} is not one of "
                                     f"{', '.join(KIND_ORDER)}")
            jpeg_change = None
            if "jpeg_change" in columns:
                jpeg_change = _number(csv_path, i, line, record, "jpeg_change")
                if jpeg_change < 0:
                    raise _row_error(csv_path, i, line,
                                     f"jpeg_change={jpeg_change:g} must be >= 0")
            rows.append(_CsvRow(i, line, x, y, r, ratio, path, altered, mask_path, kind,
                                jpeg_change))
    if not rows:
        raise DataError(f"{csv_path}: no data rows")
    return rows


def one_row_per_image(csv_path: str, rows: list[_CsvRow]) -> list[_CsvRow]:
    """Keeps the first row of each image file: a repeated image could land in both the
    training and the validation split. Warns once, with the count and an example."""
    first: dict[str, _CsvRow] = {}
    repeats = []
    for row in rows:
        if row.path in first:
            repeats.append((row, first[row.path]))
        else:
            first[row.path] = row
    if repeats:
        same = sum(1 for row, earlier in repeats
                   if (row.x, row.y, row.r, row.ratio, row.altered)
                   == (earlier.x, earlier.y, earlier.r, earlier.ratio, earlier.altered))
        row, earlier = repeats[0]
        log.warning("%s: %d rows repeat an earlier row's image (%d with the same labels, %d "
                    "with different ones; e.g. row %d repeats row %d) and are dropped, so that "
                    "no image is in two splits; %d rows kept", csv_path, len(repeats), same,
                    len(repeats) - same, row.row, earlier.row, len(first))
    return list(first.values())


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


def _jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    """uint8[H, W, 3] as the JPEG file `write_seed_format` writes (Pillow, `quality`)."""
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def saved_change(clean: np.ndarray, saved: bytes, mask: np.ndarray, quality: int) -> float:
    """How much an alteration changed its region once saved: the mean absolute difference in
    grey levels over the mask's pixels and three channels (`metrics.mask_change`) between
    the clean image and the altered one, each as the JPEG file `write_seed_format` writes at
    `quality`; 0 for an empty mask (a clean image). The signal a detector gets from the file:
    an edit of a grey level or two is under JPEG's own noise.

    clean: uint8[H, W, 3]; saved: the altered image's JPEG bytes, as written; mask: bool[H, W].
    """
    if not mask.any():
        return 0.0
    from anomaly_jax import metrics  # jax: only the exporter needs it here

    def decoded(data):
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[None]

    return float(metrics.mask_change(decoded(_jpeg_bytes(clean, quality)), decoded(saved),
                                     mask[None])[0][0])


def write_seed_format(out_dir: str, images: np.ndarray, labels: dict, *,
                      quality: int = 75, clean: np.ndarray | None = None) -> str:
    """Writes a seed-format dataset: out_dir/images/NNNNN.jpg + out_dir/labels.csv.

    images: uint8[N, H, W, 3]; labels: pixel columns {x, y, r, discolor_ratio} or corruption
    labels {center float32[N, 2] (row/H, col/W), half_size int[N], ratio float32[N]},
    optionally altered bool[N] (written as a 6th column only if some image is clean),
    mask bool[N, H, W] (written as out_dir/masks/NNNNN.png, 1-bit, one per image - all black
    for a clean one - and a `mask_path` column), kind: N names from KIND_ORDER (a `kind`
    column). With the images' clean originals (clean: uint8[N, H, W, 3]) and a mask, also a
    `jpeg_change` column: `saved_change` of each file as written. The seed's five columns
    always come first, unchanged.
    JPEG quality 75 is Pillow's default, i.e. what the seed's `img.save(path)` used.
    Returns the CSV path; img_path and mask_path values are relative to out_dir.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"write_seed_format: images {images.dtype}{list(images.shape)}; "
                        "expected uint8[N, H, W, 3]")
    n, height, width = images.shape[:3]
    columns = _labels_in_pixels(labels, height, width)
    with_altered = "altered" in columns and not columns["altered"].all()
    masks = None
    if "mask" in labels:
        masks = np.asarray(labels["mask"])
        if masks.dtype != bool or masks.shape != (n, height, width):
            raise DataError(f"write_seed_format: mask {masks.dtype}{list(masks.shape)}; "
                            f"expected bool[{n}, {height}, {width}]")
        os.makedirs(os.path.join(out_dir, "masks"), exist_ok=True)
    kinds = None
    if "kind" in labels:
        kinds = [str(k) for k in labels["kind"]]
        unknown = sorted(set(kinds) - set(KIND_ORDER))
        if len(kinds) != n or unknown:
            raise DataError(f"write_seed_format: kind needs {n} names from "
                            f"{', '.join(KIND_ORDER)}; got {len(kinds)} (unknown: {unknown})")
    with_change = clean is not None and masks is not None
    if with_change and np.shape(clean) != images.shape:
        raise DataError(f"write_seed_format: clean {list(np.shape(clean))}; expected the "
                        f"images' shape {list(images.shape)}")
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    digits = max(5, len(str(n - 1)))
    csv_path = os.path.join(out_dir, "labels.csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(list(CSV_COLUMNS) + (["altered"] if with_altered else [])
                        + (["mask_path"] if masks is not None else [])
                        + (["kind"] if kinds is not None else [])
                        + (["jpeg_change"] if with_change else []))
        for i in range(n):
            rel = f"images/{i:0{digits}d}.jpg"
            saved = _jpeg_bytes(images[i], quality)
            with open(os.path.join(out_dir, rel), "wb") as f_image:
                f_image.write(saved)
            row = [_format_number(columns[k][i]) for k in ("x", "y", "r", "discolor_ratio")]
            row.append(rel)
            if with_altered:
                row.append(str(int(columns["altered"][i])))
            if masks is not None:
                # PNG, lossless: the mask reads back bit for bit (the JPEG changes pixels only).
                mask_rel = f"masks/{i:0{digits}d}.png"
                Image.fromarray(masks[i]).save(os.path.join(out_dir, mask_rel), "PNG")
                row.append(mask_rel)
            if kinds is not None:
                row.append(kinds[i])
            if with_change:
                row.append(f"{saved_change(clean[i], saved, masks[i], quality):.3f}")
            writer.writerow(row)
    return csv_path
