"""scripts.evaluate / predict / detection_auc with the dense localiser and the physics baseline.

One tiny localiser run (64x64 landscapes, tests/conftest.py) is trained once per session; the
scripts' `main(argv)` run in-process (stdout captured by capsys), at 64x64 so that the whole
file stays fast on 2 CPU cores.
"""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from scripts import detection_auc, evaluate, predict

# On one test worker with tests/test_localiser.py: the localiser run is made once.
pytestmark = pytest.mark.xdist_group("localiser_run")

SIZE = 64


@pytest.fixture
def localiser_workdir(localiser_run):
    """The session's tiny localiser run at 64x64 (tests/conftest.py)."""
    return localiser_run[1]


def _photo(height: int, width: int, seed: int) -> np.ndarray:
    """uint8[H, W, 3]: a smooth gradient plus noise (something with texture)."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(40, 200, height)[:, None, None]
    cols = np.linspace(0, 60, width)[None, :, None]
    base = rows + cols + rng.normal(0, 6, (height, width, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def seed_csv(tmp_path_factory):
    """A seed-format labels.csv with three 64x64 JPEGs, each with a discolored square."""
    folder = tmp_path_factory.mktemp("seed_csv")
    (folder / "images").mkdir()
    rows = [(20, 30, 8, 1.1), (40, 25, 10, 1.15), (32, 40, 6, 1.08)]
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["x", "y", "r", "discolor_ratio", "img_path"])
        for i, (x, y, r, ratio) in enumerate(rows):
            image = _photo(SIZE, SIZE, i).astype(np.float64)
            image[x - r:x + r, y - r:y + r] *= ratio
            name = f"images/{i:05d}.jpg"
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
                folder / name, "JPEG", quality=75)
            writer.writerow([x, y, r, ratio, name])
    return str(folder / "labels.csv")


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


KEYS = {"n", "mean_distance", "median_distance", "mean_distance_px", "hit_rate",
        "middle_mean_distance", "middle_median_distance", "middle_mean_distance_px",
        "middle_hit_rate", "method", "mean_score"}


def test_evaluate_localiser_run(localiser_workdir, seed_csv, tmp_path, capsys):
    per_image, draw = tmp_path / "per_image.csv", tmp_path / "drawn"
    rc = evaluate.main(["--workdir", localiser_workdir, "--csv", seed_csv,
                        "--per-image", str(per_image), "--draw", str(draw)])
    result = _last_json(capsys.readouterr().out)
    assert rc == 0
    assert KEYS <= set(result)
    assert result["n"] == 3 and result["method"] == "model"
    assert result["image_size"] == SIZE and 0.0 <= result["hit_rate"] <= 1.0
    with open(per_image) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and {"pred_half_size", "score"} <= set(rows[0])
    assert len(list(draw.glob("*_with_box.png"))) == 3


def test_evaluate_physics_needs_no_workdir(seed_csv, capsys):
    rc = evaluate.main(["--method", "physics", "--csv", seed_csv, "--size", str(SIZE)])
    result = _last_json(capsys.readouterr().out)
    assert rc == 0
    assert KEYS <= set(result)
    assert result["n"] == 3 and result["method"] == "physics" and result["workdir"] is None


def test_evaluate_model_without_workdir_is_one_line_error(seed_csv, capsys):
    assert evaluate.main(["--csv", seed_csv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "--workdir" in captured.err


def test_predict_folder_skips_unreadable_and_draws(localiser_workdir, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "bad.jpg").write_text("not an image")
    Image.fromarray(_photo(SIZE, SIZE, 5)).save(folder / "square.jpg", quality=90)
    Image.fromarray(_photo(96, 128, 6)).save(folder / "wide.png")  # 128 wide, 96 high
    draw = tmp_path / "drawn"
    rc = predict.main(["--workdir", localiser_workdir, "--size", str(SIZE), "--draw", str(draw),
                       str(folder)])
    captured = capsys.readouterr()
    assert rc == 0
    warnings = [line for line in captured.err.splitlines() if "bad.jpg" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning:")
    lines = captured.out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["n"] == 2 and result["skipped"] == 1 and result["drawn"] == 2
    rows = list(csv.DictReader(io.StringIO("\n".join(lines[:-1]))))
    assert [r["img_path"].rsplit("/", 1)[-1] for r in rows] == ["square.jpg", "wide.png"]
    for row, (height, width) in zip(rows, [(SIZE, SIZE), (96, 128)]):
        x, y, r = int(row["x"]), int(row["y"]), int(row["r"])
        assert 0 < r <= min(height, width) // 2
        assert 0 <= x - r and x + r <= height + 1 and 0 <= y - r and y + r <= width + 1
        float(row["score"])
    # Each PNG: the resized photo and its evidence map side by side, S high and 2S wide.
    for name in ("square_square.png", "wide_square.png"):
        with Image.open(draw / name) as im:
            assert im.size == (2 * SIZE, SIZE)


def test_predict_scales_back_to_original_pixels(tmp_path, capsys):
    from anomaly_jax import decoding
    from anomaly_jax.evaluation import locate_squares

    photo = tmp_path / "wide.png"
    Image.fromarray(_photo(96, 128, 7)).save(photo)  # H=96, W=128
    out_csv = tmp_path / "rows.csv"
    rc = predict.main(["--method", "physics", "--size", str(SIZE), "--csv", str(out_csv),
                       str(photo)])
    result = _last_json(capsys.readouterr().out)
    assert rc == 0
    assert (result["n"], result["skipped"], result["csv"]) == (1, 0, str(out_csv))
    with open(out_csv) as f:
        (row,) = list(csv.DictReader(f))
    found = locate_squares(None, decoding.decode_image(str(photo), SIZE)[None])
    (cx, cy), half = found["center"][0], found["half_size"][0]
    assert (int(row["x"]), int(row["y"]), int(row["r"])) == (
        round(cx * 96 / SIZE), round(cy * 128 / SIZE), round(half * 96 / SIZE))
    assert float(row["score"]) == pytest.approx(float(found["score"][0]), rel=1e-5)


def test_detection_auc_physics(capsys):
    from anomaly_jax import package_photos

    rc = detection_auc.main(["--method", "physics", "--size", str(SIZE), "--landscapes", "4",
                             "--copies", "1"])
    result = _last_json(capsys.readouterr().out)
    assert rc == 0
    assert 0.0 <= result["auc"] <= 1.0 and 0.0 <= result["hit_rate"] <= 1.0
    assert 0.0 <= result["auc_landscapes"] <= 1.0
    held_out = package_photos.split(package_photos.available())[1]
    assert result["n_photos"] == 4 + len(held_out)
    assert result["n_clean"] == result["n_altered"] == result["n_photos"]
    if held_out:
        assert 0.0 <= result["auc_package_photos"] <= 1.0
    else:  # scikit-image / scikit-learn absent: landscapes only
        assert result["auc_package_photos"] is None


def test_edge_visibility_scores_every_row(seed_csv, tmp_path, capsys):
    from scripts import edge_visibility
    rows = tmp_path / "rows.csv"
    assert edge_visibility.main(["--csv", seed_csv, "--per-image", str(rows)]) == 0
    result = _last_json(capsys.readouterr().out)
    assert result["n"] == 3 and len(result["z_all_quartiles"]) == 3
    with open(rows) as f:
        table = list(csv.DictReader(f))
    assert [int(r["r"]) for r in table] == [8, 10, 6]
    # Each planted square's edges stand out from their parallels (a gain of 1.08-1.15).
    assert all(float(r["z_all"]) > 4 for r in table)
