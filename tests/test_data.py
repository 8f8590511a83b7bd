"""Tests for the data layer (data, decoding, seed_csv, pipeline) and scripts.make_dataset: decoding every Pillow mode, unreadable
files, seed-format CSVs, splits, the grain batch iterator (epochs, shards, checkpoints,
streaming) and the seed-format export round trip. Small images (64x64) in temp folders."""
from __future__ import annotations

import csv
import dataclasses
import io
import logging
import json
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from anomaly_jax import data, decoding, errors, pipeline, seed_csv
from anomaly_jax.config import DataConfig

S = 64


def _save(path, image: Image.Image, **kw) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, **kw)
    return str(path)


def _rgb(seed: int, h: int = S, w: int = S) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _huge_png_header(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose IHDR claims width x height (well over Pillow's bomb limit)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


# ----------------------------------------------------------------------------- decoding


def _mode_cases():
    """(mode name, Pillow image, expected uint8[S, S, 3]) built from numpy, not Pillow."""
    v = np.arange(S * S, dtype=np.int64).reshape(S, S)
    grey = (v * 7 % 256).astype(np.uint8)
    alpha = (v * 3 % 256).astype(np.uint8)
    rgb = _rgb(0)
    cases = [
        ("RGB", Image.fromarray(rgb, "RGB"), rgb),
        ("L", Image.fromarray(grey, "L"), np.repeat(grey[..., None], 3, -1)),
        ("LA", Image.fromarray(np.stack([grey, alpha], -1), "LA"),
         np.repeat(grey[..., None], 3, -1)),
        ("RGBA", Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), rgb),  # alpha dropped
    ]
    palette = np.random.default_rng(1).integers(0, 256, (256, 3), dtype=np.uint8)
    index = (v % 256).astype(np.uint8)
    p_image = Image.fromarray(index, "P")
    p_image.putpalette(palette.reshape(-1).tolist())
    cases.append(("P", p_image, palette[index]))
    p_transparent = p_image.copy()
    p_transparent.info["transparency"] = 0
    cases.append(("P+transparency", p_transparent, palette[index]))
    words = (v * 37 % 65536).astype(np.uint16)
    expected16 = np.clip(np.floor(words / 257.0 + 0.5), 0, 255).astype(np.uint8)
    cases.append(("I;16", Image.fromarray(words), np.repeat(expected16[..., None], 3, -1)))
    # CMYK: pure inks and black, whose RGB values are unambiguous.
    cmyk_values = np.array([[0, 0, 0, 0], [255, 0, 0, 0], [0, 255, 0, 0], [0, 0, 255, 0],
                            [0, 0, 0, 255]], np.uint8)
    rgb_values = np.array([[255, 255, 255], [0, 255, 255], [255, 0, 255], [255, 255, 0],
                           [0, 0, 0]], np.uint8)
    pick = (v % 5)
    cases.append(("CMYK", Image.fromarray(cmyk_values[pick], "CMYK"), rgb_values[pick]))
    return cases


@pytest.mark.parametrize("name,image,expected", _mode_cases(), ids=lambda c: str(c)[:14])
def test_every_mode_decodes_to_rgb_uint8(tmp_path, name, image, expected):
    ext = "tiff" if image.mode == "CMYK" else "png"  # lossless for every mode
    path = _save(tmp_path / f"im.{ext}", image)
    assert Image.open(path).mode == image.mode
    out = decoding.decode_image(path, S)
    assert out.dtype == np.uint8 and out.shape == (S, S, 3)
    np.testing.assert_array_equal(out, expected)


def test_exif_orientation_is_applied(tmp_path):
    rgb = _rgb(2, 64, 64)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(tmp_path / "rot.png", Image.fromarray(rgb), exif=exif.tobytes())
    np.testing.assert_array_equal(decoding.decode_image(path, S), np.rot90(rgb, k=-1))
    # CSV images are labelled in stored-array coordinates: no rotation there.
    np.testing.assert_array_equal(decoding.decode_image(path, S, apply_exif=False), rgb)


def test_resize_is_pillow_bicubic_like_the_seed(tmp_path):
    rgb = _rgb(3, 96, 128)
    path = _save(tmp_path / "big.png", Image.fromarray(rgb))
    expected = np.asarray(Image.fromarray(rgb).resize((S, S)))  # the seed's call, defaults
    np.testing.assert_array_equal(decoding.decode_image(path, S), expected)


def _bad_files(folder) -> dict[str, str]:
    """Unreadable files -> a word their skip reason must contain."""
    os.makedirs(folder, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(_rgb(4)).save(buf, "JPEG")
    with open(os.path.join(folder, "truncated.jpg"), "wb") as f:
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    open(os.path.join(folder, "empty.jpg"), "wb").close()
    with open(os.path.join(folder, "text.jpg"), "w") as f:
        f.write("this is not a JPEG\n")
    with open(os.path.join(folder, "huge.png"), "wb") as f:
        f.write(_huge_png_header())
    return {"truncated.jpg": "truncated", "empty.jpg": "empty", "text.jpg": "not an image",
            "huge.png": "decompression bomb"}


def test_unreadable_files_raise_specific_error(tmp_path):
    for name, word in _bad_files(tmp_path).items():
        with pytest.raises(errors.UnreadableImage, match=word) as info:
            decoding.decode_image(str(tmp_path / name), S)
        assert info.value.path.endswith(name) and isinstance(info.value, errors.DataError)


def test_folder_skips_unreadable_with_one_warning_each(tmp_path, caplog):
    good = {"a.png": _rgb(5), "sub/B.JPG": _rgb(6), "c.webp": _rgb(7)}
    for rel, rgb in good.items():
        _save(tmp_path / rel, Image.fromarray(rgb), **({"lossless": True}
                                                        if rel.endswith("webp") else {}))
    bad = _bad_files(tmp_path / "bad")
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")
    with caplog.at_level(logging.WARNING, logger="anomaly_jax.decoding"):
        s = data.load_image_set(DataConfig(source="folder", dir=str(tmp_path), image_size=S,
                                           workers=0), 0)
    rels = [os.path.relpath(p, tmp_path) for p in s.names]
    assert rels == ["a.png", "c.webp", "sub/B.JPG"]  # recursive, any case, sorted by path
    np.testing.assert_array_equal(s.images[0], good["a.png"])
    np.testing.assert_array_equal(s.images[1], good["c.webp"])
    jpeg = np.asarray(Image.open(tmp_path / "sub/B.JPG").convert("RGB"))  # JPEG is lossy
    np.testing.assert_array_equal(s.images[2], jpeg)
    assert sorted(os.path.basename(p) for p, _ in s.skipped) == sorted(bad)
    for path, reason in s.skipped:
        assert bad[os.path.basename(path)] in reason
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0] == (f"{tmp_path}: 1 files skipped, not a supported image type (.txt: "
                           "notes.txt); supported: .jpg .jpeg .png .bmp .webp")
    warnings = warnings[1:]
    assert len(warnings) == len(bad)
    for name, word in bad.items():
        assert sum(name in w and word in w for w in warnings) == 1
    assert s.targets is None and s.loader is None


def test_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(errors.DataError, match="no image files.*empty_dir"):
        os.makedirs(tmp_path / "empty_dir")
        data.load_image_set(DataConfig(source="folder", dir=str(tmp_path / "empty_dir"),
                                       image_size=S, workers=0), 0)
    with pytest.raises(errors.DataError, match="not found.*missing_dir"):
        data.load_image_set(DataConfig(source="folder", dir=str(tmp_path / "missing_dir"),
                                       image_size=S, workers=0), 0)
    _bad_files(tmp_path / "only_bad")
    with pytest.raises(errors.DataError, match="no readable image in folder .*only_bad"):
        data.load_image_set(DataConfig(source="folder", dir=str(tmp_path / "only_bad"),
                                       image_size=S, workers=0), 0)


# ----------------------------------------------------------------------------- CSV


def _write_csv(path, rows, header=("x", "y", "r", "discolor_ratio", "img_path")) -> str:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def _csv_folder(tmp_path, n=3, h=S, w=S):
    images = [_rgb(10 + i, h, w) for i in range(n)]
    for i, rgb in enumerate(images):
        _save(tmp_path / "images" / f"{i}.png", Image.fromarray(rgb))
    return images


def _csv_set(csv_path, size=S, **kw):
    return data.load_image_set(DataConfig(source="csv", csv=csv_path, image_size=size,
                                          workers=0), 0, **kw)


def test_csv_targets_and_absolute_path_fallback(tmp_path):
    images = _csv_folder(tmp_path, n=3, h=S, w=2 * S)  # non-square: x/H and y/W differ
    rows = [[10, 100, 5, 1.05, "images/0.png"],
            [63, 0, 30, 1.15, "/Users/someone/Desktop/landscapes/1.png"],  # the seed's paths
            [0, 127, 1, 1.1, r"C:\Users\someone\landscape_scrambled\2.png"]]
    s = _csv_set(_write_csv(tmp_path / "labels.csv", rows))
    assert [os.path.basename(p) for p in s.names] == ["0.png", "1.png", "2.png"]
    x, y, r, ratio = (np.array([row[k] for row in rows], np.float32) for k in range(4))
    np.testing.assert_array_equal(s.targets["center"], np.stack([x / S, y / (2 * S)], 1))
    np.testing.assert_array_equal(s.targets["half_size_norm"], r / S)
    np.testing.assert_array_equal(s.targets["ratio"], ratio)
    np.testing.assert_array_equal(s.targets["features"], np.stack([r, ratio], 1))
    expected = np.asarray(Image.fromarray(images[1]).resize((S, S), Image.BICUBIC))
    np.testing.assert_array_equal(s.images[1], expected)


@pytest.mark.parametrize("row,problem", [
    (["ten", 5, 5, 1.1, "images/0.png"], "column x='ten' is not a number"),
    ([5, "", 5, 1.1, "images/0.png"], "column y='' is not a number"),
    ([5, 5, "nan", 1.1, "images/0.png"], "column r='nan' is not a number"),
    ([64, 5, 5, 1.1, "images/0.png"], "centre (x=64, y=5) is outside the 64x64 image"),
    ([5, -1, 5, 1.1, "images/0.png"], "centre (x=5, y=-1) is outside"),
    ([5, 5, 0, 1.1, "images/0.png"], "r=0 must be > 0"),
    ([5, 5, 3, -1.1, "images/0.png"], "discolor_ratio=-1.1 must be > 0"),
    ([5, 5, 3, 1.1, "images/nope.png"], "image file not found: images/nope.png"),
])
def test_csv_bad_row_names_row_and_problem(tmp_path, row, problem):
    _csv_folder(tmp_path, n=1)
    good = [1, 1, 1, 1.1, "images/0.png"]
    path = _write_csv(tmp_path / "labels.csv", [good, good, row])
    with pytest.raises(errors.DataError) as info:
        _csv_set(path)
    message = str(info.value)
    assert "\n" not in message and path in message
    assert "row 3 (line 4)" in message and problem in message


@pytest.mark.parametrize("value,problem", [("-2", "jpeg_change=-2 must be >= 0"),
                                           ("lots", "column jpeg_change='lots' is not a number")])
def test_csv_bad_jpeg_change_names_row_and_problem(tmp_path, value, problem):
    _csv_folder(tmp_path, n=1)
    header = ("x", "y", "r", "discolor_ratio", "img_path", "jpeg_change")
    path = _write_csv(tmp_path / "labels.csv", [[1, 1, 1, 1.1, "images/0.png", "12.5"],
                                                [1, 1, 1, 1.1, "images/0.png", value]],
                      header=header)
    with pytest.raises(errors.DataError) as info:
        _csv_set(path)
    assert "\n" not in str(info.value) and f"{path} row 2 (line 3): {problem}" in str(info.value)


def test_csv_missing_column_and_missing_file(tmp_path):
    path = _write_csv(tmp_path / "labels.csv", [[1, 1, 1, "images/0.png"]],
                      header=("x", "y", "r", "img_path"))
    expected = (r"labels.csv row 0 \(line 1, header\): missing column\(s\) discolor_ratio; "
                r"required columns: x, y, r, discolor_ratio, img_path")
    with pytest.raises(errors.DataError, match=expected):
        _csv_set(path)
    with pytest.raises(errors.DataError, match="labels CSV not found: .*nowhere.csv"):
        _csv_set(str(tmp_path / "nowhere.csv"))


def test_csv_unreadable_image_is_skipped_and_counted(tmp_path, caplog):
    _csv_folder(tmp_path, n=2)
    _bad_files(tmp_path / "images")
    rows = [[1, 2, 3, 1.1, "images/0.png"], [4, 5, 6, 1.12, "images/truncated.jpg"],
            [7, 8, 9, 1.13, "images/1.png"]]
    with caplog.at_level(logging.WARNING, logger="anomaly_jax.decoding"):
        s = _csv_set(_write_csv(tmp_path / "labels.csv", rows))
    assert len(s.names) == 2 and len(s.skipped) == 1 and "truncated" in s.skipped[0][1]
    np.testing.assert_array_equal(s.targets["features"], np.float32([[3, 1.1], [9, 1.13]]))
    assert sum("truncated.jpg" in r.getMessage() for r in caplog.records) == 1


def test_seed1_dev_labels(shared_dir):
    csv_path = shared_dir / "seed1_dev" / "labels.csv"
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40
    s = _csv_set(str(csv_path))
    assert s.images.shape == (40, S, S, 3) and s.images.dtype == np.uint8 and not s.skipped
    col = lambda k: np.array([float(r[k]) for r in rows], np.float32)  # noqa: E731
    side = np.float32(800)  # every seed-1 photo is 800x800
    np.testing.assert_array_equal(s.targets["center"], np.stack([col("x") / side,
                                                                 col("y") / side], 1))
    np.testing.assert_array_equal(s.targets["half_size_norm"], col("r") / side)
    np.testing.assert_array_equal(s.targets["features"], np.stack([col("r"),
                                                                   col("discolor_ratio")], 1))
    # Pixels: Pillow's own decode + the seed's resize call.
    first = Image.open(shared_dir / "seed1_dev" / rows[0]["img_path"]).convert("RGB")
    np.testing.assert_array_equal(s.images[0], np.asarray(first.resize((S, S))))


# ----------------------------------------------------------------------------- splits, cache


def test_split_ids_deterministic_fractions_and_peer_parity():
    s1 = data.split_ids(200, 0.2, 0.0, 42)
    assert [len(s1[k]) for k in ("train", "val", "test")] == [160, 40, 0]
    order = np.random.default_rng(42).permutation(200)  # the seed-1 peer's split
    np.testing.assert_array_equal(s1["val"], np.sort(order[:200 // 5]))
    s2 = data.split_ids(1000, 0.1, 0.1, 7)
    assert [len(s2[k]) for k in ("train", "val", "test")] == [800, 100, 100]
    assert np.array_equal(np.sort(np.concatenate(list(s2.values()))), np.arange(1000))
    again = data.split_ids(1000, 0.1, 0.1, 7)
    assert all(np.array_equal(s2[k], again[k]) and again[k].dtype == np.int32 for k in s2)
    assert not np.array_equal(data.split_ids(1000, 0.1, 0.1, 8)["val"], s2["val"])
    with pytest.raises(errors.DataError):
        data.split_ids(10, 0.6, 0.5, 0)


def test_resolve_cache():
    gib = 1 << 30
    kw = dict(host_bytes_free=64 * gib)
    assert data.resolve_cache("auto", gib, device_bytes_free=80 * gib, **kw) == "device"
    assert data.resolve_cache("auto", 30 * gib, device_bytes_free=80 * gib, **kw) == "host"
    assert data.resolve_cache("auto", gib, device_bytes_free=None, **kw) == "device"
    assert data.resolve_cache("auto", 3 * gib, device_bytes_free=None, **kw) == "host"
    assert data.resolve_cache("auto", 40 * gib, device_bytes_free=None, **kw) == "stream"
    assert data.resolve_cache("stream", 1, device_bytes_free=None, **kw) == "stream"
    with pytest.raises(errors.DataError, match="data.cache='gpu'"):
        data.resolve_cache("gpu", 1, device_bytes_free=None, **kw)


# ----------------------------------------------------------------------------- batching


def _ids(it) -> list[np.ndarray]:
    return [b["id"] for b in it]


def test_epochs_are_separate_and_differently_ordered():
    ids = np.arange(100, 123)  # 23 ids, batch 4: 5 batches per epoch, 3 dropped
    batches = _ids(pipeline.batch_iterator(ids, 4, seed=3, num_epochs=3))
    assert pipeline.steps_per_epoch(23, 4) == 5 and len(batches) == 15
    assert all(b.dtype == np.int32 and b.shape == (4,) for b in batches)
    epochs = [np.concatenate(batches[5 * e:5 * e + 5]) for e in range(3)]
    for e in epochs:
        assert len(set(e.tolist())) == 20 and set(e.tolist()) <= set(ids.tolist())
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    again = _ids(pipeline.batch_iterator(ids, 4, seed=3, num_epochs=3))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    other = _ids(pipeline.batch_iterator(ids, 4, seed=4, num_epochs=1))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other))
    plain = _ids(pipeline.batch_iterator(ids, 4, seed=3, num_epochs=2, shuffle=False,
                                     drop_remainder=False))
    assert [len(b) for b in plain] == [4, 4, 4, 4, 4, 3] * 2
    np.testing.assert_array_equal(np.concatenate(plain[:6]), ids)


def test_two_process_shards_cover_each_epoch_without_overlap():
    ids = np.arange(50)
    shards = [_ids(pipeline.batch_iterator(ids, 4, seed=1, num_epochs=2, shard_index=p,
                                       shard_count=2)) for p in range(2)]
    steps = pipeline.steps_per_epoch(50, 4, 2)
    assert steps == 6 and all(len(s) == 2 * steps for s in shards)
    single = _ids(pipeline.batch_iterator(ids, 8, seed=1, num_epochs=2))  # one process, batch 8
    for epoch in range(2):
        part = [np.concatenate(s[epoch * steps:(epoch + 1) * steps]) for s in shards]
        assert not set(part[0].tolist()) & set(part[1].tolist())
        assert len(set(part[0].tolist()) | set(part[1].tolist())) == 48
    # The global batch is the same whether one process or two share it.
    for step in range(2 * steps):
        np.testing.assert_array_equal(np.concatenate([shards[0][step], shards[1][step]]),
                                      single[step])


def test_iterator_state_restores_the_rest():
    ids = np.arange(30)
    it = pipeline.batch_iterator(ids, 4, seed=5, num_epochs=3)
    head = [next(it)["id"] for _ in range(9)]  # crosses the first epoch end (7 per epoch)
    state = it.get_state()
    rest = _ids(it)
    fresh = pipeline.batch_iterator(ids, 4, seed=5, num_epochs=3)
    fresh.set_state(state)
    restored = _ids(fresh)
    assert len(head) + len(rest) == 21 and len(restored) == len(rest)
    assert all(np.array_equal(a, b) for a, b in zip(rest, restored))


def test_iterator_checkpoint_through_orbax(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    import grain

    ids = np.arange(20)
    it = pipeline.batch_iterator(ids, 3, seed=9, num_epochs=2)
    for _ in range(4):
        next(it)
    with ocp.CheckpointManager(str(tmp_path / "ckpt")) as manager:
        manager.save(4, args=ocp.args.Composite(
            data_iter=grain.checkpoint.CheckpointSave(it)))
        manager.wait_until_finished()
        rest = _ids(it)
        fresh = pipeline.batch_iterator(ids, 3, seed=9, num_epochs=2)
        manager.restore(4, args=ocp.args.Composite(
            data_iter=grain.checkpoint.CheckpointRestore(fresh)))
    restored = _ids(fresh)
    assert len(rest) == 2 * 6 - 4 and all(np.array_equal(a, b) for a, b in zip(rest, restored))


def test_streaming_matches_decode_once_with_workers(tmp_path):
    """Worker processes: same pixels as decode-once, same order as in-process, resumable.

    (Each start of a worker pipeline spawns Python processes that import grain and jax: the
    streaming iterators use one worker to keep this test short; the code path is the same.)"""
    for i in range(12):
        _save(tmp_path / f"{i:02d}.png", Image.fromarray(_rgb(20 + i, 80, 72)))
    config = DataConfig(source="folder", dir=str(tmp_path), image_size=S, workers=2)
    decoded = data.load_image_set(config, 0)  # decode-once through 2 grain workers
    reference = np.stack([np.asarray(Image.fromarray(_rgb(20 + i, 80, 72)).resize((S, S)))
                          for i in range(12)])
    np.testing.assert_array_equal(decoded.images, reference)
    lazy = data.load_image_set(dataclasses.replace(config, workers=0), 0, decode=False)
    assert lazy.images is None and lazy.names == decoded.names
    kw = dict(seed=2, num_epochs=2, loader=lazy.loader)
    it = pipeline.batch_iterator(np.arange(12), 5, workers=1, **kw)
    first = next(it)
    state = it.get_state()
    rest = list(it)
    it.close()
    in_process = list(pipeline.batch_iterator(np.arange(12), 5, workers=0, **kw))
    assert len(in_process) == 4
    for batch, other in zip([first] + rest, in_process):
        np.testing.assert_array_equal(batch["id"], other["id"])
        np.testing.assert_array_equal(batch["image"], decoded.images[batch["id"]])
        np.testing.assert_array_equal(other["image"], decoded.images[other["id"]])
    resumed = pipeline.batch_iterator(np.arange(12), 5, workers=1, **kw)
    resumed.set_state(state)
    again = list(resumed)
    resumed.close()
    assert [b["id"].tolist() for b in again] == [b["id"].tolist() for b in rest]


def test_streaming_checks_headers_up_front_and_names_late_damage(tmp_path):
    _save(tmp_path / "good.png", Image.fromarray(_rgb(30)))
    _bad_files(tmp_path)
    s = data.load_image_set(DataConfig(source="folder", dir=str(tmp_path), image_size=S,
                                       workers=0), 0, decode=False)
    # Empty, text and huge files are caught from their headers; the truncated JPEG is not.
    assert sorted(os.path.basename(p) for p, _ in s.skipped) == ["empty.jpg", "huge.png",
                                                                 "text.jpg"]
    assert [os.path.basename(p) for p in s.names] == ["good.png", "truncated.jpg"]
    np.testing.assert_array_equal(s.loader(0), _rgb(30))
    with pytest.raises(errors.UnreadableImage, match="truncated.jpg: truncated"):
        list(pipeline.batch_iterator(np.arange(2), 2, seed=0, num_epochs=1, loader=s.loader))


# ----------------------------------------------------------------------------- export


def test_write_seed_format_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, S, S, 3), dtype=np.uint8)
    rows = rng.integers(8, S - 8, 5)
    cols = rng.integers(8, S - 8, 5)
    labels = {"center": np.stack([rows / S, cols / S], 1).astype(np.float32),
              "half_size": rng.integers(1, 8, 5).astype(np.int32),
              "ratio": (rng.integers(105, 116, 5) / 100).astype(np.float32)}
    csv_path = seed_csv.write_seed_format(str(tmp_path / "out"), images, labels, quality=95)
    with open(csv_path) as f:
        text = f.read().splitlines()
    assert text[0] == "x,y,r,discolor_ratio,img_path" and text[1].endswith(",images/00000.jpg")
    assert text[1].split(",")[:4] == [str(rows[0]), str(cols[0]),
                                      str(labels["half_size"][0]),
                                      f"{float(np.round(labels['ratio'][0], 2)):g}"]
    s = _csv_set(csv_path)
    np.testing.assert_array_equal(s.targets["center"], labels["center"])
    np.testing.assert_array_equal(s.targets["ratio"], labels["ratio"])
    np.testing.assert_array_equal(s.targets["features"][:, 0], labels["half_size"])
    for i in range(5):  # the JPEG is what Pillow writes for that array at that quality
        buf = io.BytesIO()
        Image.fromarray(images[i]).save(buf, "JPEG", quality=95)
        np.testing.assert_array_equal(s.images[i], np.asarray(Image.open(buf)))


def test_make_dataset_round_trip_and_bad_key(tmp_path, capsys, make_dataset_recorded):
    make_dataset, exported = make_dataset_recorded
    out = str(tmp_path / "x")
    # "black" instead of the default landscapes: same export path, no image-generator compile.
    assert make_dataset.main(["--out", out, "--set", "data.num_images=20", "--set",
                              f"data.image_size={S}", "--set", "data.source=black"]) == 0
    import json
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == {"out": out, "n": 20, "csv": os.path.join(out, "labels.csv")}
    s = data.load_image_set(DataConfig(source="csv", csv=summary["csv"], image_size=S), 0)
    labels = exported["labels"]
    assert len(s.names) == 20 and "altered" not in s.targets and labels["altered"].all()
    np.testing.assert_array_equal(s.targets["center"], labels["center"])
    np.testing.assert_array_equal(s.targets["half_size_norm"],
                                  labels["half_size"].astype(np.float32) / S)
    np.testing.assert_array_equal(s.targets["ratio"], labels["ratio"])

    assert make_dataset.main(["--out", out, "--set", "data.bogus=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.bogus" in err[0]


def test_make_dataset_appends_the_held_out_photos(tmp_path, capsys, make_dataset_recorded):
    """--held-out-photos: the config's images, then package_photos.held_out_at(size) - the
    photos training never adds - each altered like the rest."""
    from anomaly_jax import package_photos
    make_dataset, exported = make_dataset_recorded
    names, photos = package_photos.held_out_at(S)
    out = str(tmp_path / "held")
    assert make_dataset.main(["--out", out, "--held-out-photos", "--set", "data.num_images=3",
                              "--set", f"data.image_size={S}", "--set", "data.source=black"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["n"] == 3 + len(names)
    assert f"+ {len(names)} held-out package photos" in captured.err
    images, labels = exported["images"], exported["labels"]
    assert images.shape == (3 + len(names), S, S, 3)
    outside = ~labels["mask"][3:]  # outside its square an altered photo is its clean self
    assert outside.any() and not outside.all(axis=(1, 2)).any()
    np.testing.assert_array_equal(images[3:][outside], photos[outside])
    assert set(names).isdisjoint(package_photos.split()[0])
