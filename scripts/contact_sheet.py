"""Contact sheet of the procedural landscapes: clean, then altered, the true square outlined.

    python -m scripts.contact_sheet --out docs/contact_sheet.png [--size 256] [--seed 0]

Rows: clean landscapes; the same images with seed 1's discolor (overflow "wrap", the seed's);
white_box (seed 2's square, side scaled by size/64) and scramble. The PNG is kept under
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

from anomaly_jax import corruptions, synthetic

COLUMNS = 8
ROWS = ("clean", "discolor", "white_box", "scramble")
LABEL_W = 84
OUTLINE = (255, 40, 40)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/contact_sheet.png", help="PNG to write")
    parser.add_argument("--size", type=int, default=256, help="side of the generated images, px")
    parser.add_argument("--tile", type=int, default=160, help="side of each image on the sheet, px")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed")
    parser.add_argument("--max-bytes", type=int, default=300_000, help="PNG size budget")
    return parser.parse_args(argv)


def make_rows(size: int, seed: int) -> list[tuple[str, np.ndarray, dict | None]]:
    """[(name, uint8[8, size, size, 3], labels or None)], clean first."""
    key = jax.random.key(seed)
    k_images, k_alter = jax.random.split(key)
    clean = synthetic.landscapes(k_images, COLUMNS, size, size)
    rows = [("clean", np.asarray(clean), None)]
    for i, kind in enumerate(ROWS[1:]):
        keys = jax.random.split(jax.random.fold_in(k_alter, i), COLUMNS)
        box = max(1, 16 * size // 64)
        altered, labels = corruptions.alter_batch(kind, clean, keys, overflow="wrap", box_size=box)
        rows.append((kind, np.asarray(altered), jax.tree.map(np.asarray, labels)))
    return rows


def caption(kind: str, labels: dict, j: int) -> str:
    if kind == "discolor":
        return f"x{float(labels['ratio'][j]):.2f}"
    return f"r={int(labels['half_size'][j])}"


def draw_sheet(rows: list, size: int, tile: int) -> Image.Image:
    font = ImageFont.load_default()
    sheet = Image.new("RGB", (LABEL_W + COLUMNS * tile, len(rows) * tile), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    scale = tile / size
    for r, (kind, images, labels) in enumerate(rows):
        y0 = r * tile
        draw.text((6, y0 + tile // 2 - 6), kind, fill=(235, 235, 235), font=font)
        for j, img in enumerate(images):
            x0 = LABEL_W + j * tile
            sheet.paste(Image.fromarray(img).resize((tile, tile), Image.LANCZOS), (x0, y0))
            if labels is None:
                continue
            # The true square: centre (row/H, col/W) and half side in pixels of the image.
            cy, cx = labels["center"][j] * size
            half = float(labels["half_size"][j])
            box = [x0 + (cx - half) * scale - 1, y0 + (cy - half) * scale - 1,
                   x0 + (cx + half) * scale, y0 + (cy + half) * scale]
            draw.rectangle(box, outline=OUTLINE, width=1)
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
