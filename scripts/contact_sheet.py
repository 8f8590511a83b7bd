"""Contact sheet of every alteration kind, on landscapes and real photos, the mask outlined.

    python -m scripts.contact_sheet --out docs/contact_sheet.png [--size 256] [--seed 0]

Columns: procedural landscapes, then the real photos shipped in the scikit-image wheel
(`anomaly_jax.package_photos`, centre-cropped). Rows: clean; then every kind of KIND_ORDER on
seed 1's square region; then every kind on a free-form region - each altered by
`alteration.alter_examples` (the trainer's own path; overflow "wrap", white_box's side
scaled by size/64, no JPEG), with the label mask's outline in red. The PNG is kept under
--max-bytes by shrinking to a 256-colour palette, then smaller tiles, if needed.
Last stdout line: JSON {"out", "bytes", "size", "tile", "seed"}.
"""
from __future__ import annotations

import argparse
import io
import json
import pathlib
import sys

import jax
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from anomaly_jax import alteration, package_photos, synthetic
from anomaly_jax.config import KIND_ORDER, CorruptionConfig, choices

COLUMNS = 8
PHOTOS = 2  # of the columns, real photos (the rest landscapes)
REGIONS = choices(CorruptionConfig, "region")
LABEL_W = 110
OUTLINE = np.array([255, 40, 40], np.uint8)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/contact_sheet.png", help="PNG to write")
    parser.add_argument("--size", type=int, default=256, help="side of the generated images, px")
    parser.add_argument("--tile", type=int, default=128, help="side of each image on the sheet, px")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed")
    parser.add_argument("--max-bytes", type=int, default=900_000, help="PNG size budget")
    return parser.parse_args(argv)


def clean_images(size: int, key: jax.Array) -> np.ndarray:
    """uint8[COLUMNS, size, size, 3]: landscapes, then the first PHOTOS package photos
    (centre square, resized; landscapes instead when none is installed)."""
    photos = [package_photos.square_at(name, size, Image.LANCZOS)
              for name in package_photos.available()[:PHOTOS]]
    land = np.asarray(synthetic.landscapes(key, COLUMNS - len(photos), size, size))
    return np.concatenate([land] + ([np.stack(photos)] if photos else []))


def make_rows(size: int, seed: int) -> list[tuple[str, np.ndarray, dict | None]]:
    """[(name, uint8[COLUMNS, size, size, 3], labels or None)], clean first."""
    k_images, k_alter = jax.random.split(jax.random.key(seed))
    clean = clean_images(size, k_images)
    ids = np.arange(COLUMNS, dtype=np.int32)
    rows = [("clean", clean, None)]
    for region in REGIONS:
        for i, kind in enumerate(KIND_ORDER):
            # The same key for a kind in both regions: the free blob lies in the same square.
            c = CorruptionConfig(kind=kind, region=region, overflow="wrap",
                                 box_size=max(1, 16 * size // 64))
            altered, labels = alteration.alter_examples(c, clean, jax.random.fold_in(k_alter, i),
                                                        ids)
            rows.append((f"{kind} ({region})", np.asarray(altered),
                         jax.tree.map(np.asarray, labels)))
    return rows


def caption(kind: str, labels: dict, j: int) -> str:
    if kind.startswith("discolor"):
        return f"x{float(labels['ratio'][j]):.2f}"
    return f"r={int(labels['half_size'][j])}"


def outlined(image: np.ndarray, mask: np.ndarray, tile: int) -> Image.Image:
    """The image at tile x tile with the mask's boundary pixels (after resizing) in red."""
    small = np.array(Image.fromarray(image).resize((tile, tile), Image.LANCZOS))
    m = np.asarray(Image.fromarray(mask).resize((tile, tile), Image.NEAREST))
    inner = m.copy()
    inner[1:-1, 1:-1] = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    small[m & ~inner] = OUTLINE
    return Image.fromarray(small)


def draw_sheet(rows: list, size: int, tile: int) -> Image.Image:
    font = ImageFont.load_default()
    sheet = Image.new("RGB", (LABEL_W + COLUMNS * tile, len(rows) * tile), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for r, (kind, images, labels) in enumerate(rows):
        y0 = r * tile
        draw.text((6, y0 + tile // 2 - 6), kind, fill=(235, 235, 235), font=font)
        for j, img in enumerate(images):
            x0 = LABEL_W + j * tile
            if labels is None:
                sheet.paste(Image.fromarray(img).resize((tile, tile), Image.LANCZOS), (x0, y0))
                continue
            sheet.paste(outlined(img, labels["mask"][j], tile), (x0, y0))
            text = caption(kind, labels, j)
            draw.rectangle([x0 + 2, y0 + 2, x0 + 6 + 6 * len(text), y0 + 14], fill=(0, 0, 0))
            draw.text((x0 + 4, y0 + 2), text, fill=(255, 255, 255), font=font)
    return sheet


def encode(sheet: Image.Image, max_bytes: int) -> bytes:
    """PNG bytes: full colour if it fits, else a 256-colour palette."""
    for image in (sheet, sheet.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)):
        buf = io.BytesIO()
        image.save(buf, "PNG", optimize=True)
        if buf.tell() <= max_bytes:
            break
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = make_rows(args.size, args.seed)
    tile = args.tile
    while True:
        data = encode(draw_sheet(rows, args.size, tile), args.max_bytes)
        if len(data) <= args.max_bytes or tile <= 32:
            break
        tile = int(tile * 0.85)
        print(f"sheet over {args.max_bytes} bytes; tiles shrunk to {tile}px", file=sys.stderr)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    print(f"wrote {out} ({len(data)} bytes, {len(rows)} rows x {COLUMNS} images of {args.size}px)", file=sys.stderr)
    print(json.dumps({"out": str(out), "bytes": len(data), "size": args.size, "tile": tile, "seed": args.seed}))


if __name__ == "__main__":
    main()
