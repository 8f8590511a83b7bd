"""Input a user gets wrong is one line naming the key, file or row, and what to do (issue 11):
a model that does not fit the task, a folder with too few usable images or files of another
type, a CSV that repeats its rows, and --debug for the traceback."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from anomaly_jax import seed_csv
from anomaly_jax.config import apply_overrides
from anomaly_jax.errors import ConfigError
from experiments import run as run_cli
from experiments.configs import get_config


@pytest.mark.parametrize("config, model, expected", [
    ("cnn_lowlr", "white_box_net", r"model.name='white_box_net' detects .* "
     r"corruption.p_altered=1 alters every image; .*localise with one of seed_cnn, .*localiser"),
    ("whitebox_black", "seed_cnn", r"model.name='seed_cnn' regresses .* needs every image "
     r"altered, but corruption.p_altered=0.5; set it to 1, or use localiser .*white_box_net"),
])
def test_a_model_that_does_not_fit_the_task_is_refused(config, model, expected):
    with pytest.raises(ConfigError, match=expected):
        apply_overrides(get_config(config), [f"model.name={model}"])


@pytest.mark.parametrize("config, setting, expected", [
    ("localiser", "image_loss=0.5", r"train.image_loss=0.5: only the mask-target localiser"),
    ("localiser_mix", "image_loss=-1", r"train.image_loss=-1.0: expected 0 or more"),
    ("cnn_lowlr", "mask_min_change=4", r"train.mask_min_change=4.0: only the mask-target"),
    ("localiser_mix", "mask_min_change=-2", r"train.mask_min_change=-2.0: expected 0 or more"),
])
def test_mask_loss_options_where_there_is_no_mask_or_below_zero_are_refused(config, setting,
                                                                             expected):
    with pytest.raises(ConfigError, match=expected):
        apply_overrides(get_config(config), [f"train.{setting}"])


def test_every_named_config_fits_its_task():
    for name in ("cnn_lowlr", "whitebox_black", "localiser"):
        apply_overrides(get_config(name), [])


def _png(path, value=0):
    Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(path)


def test_a_folder_with_too_few_images_says_how_many_and_names_other_types(tmp_path, capsys,
                                                                         caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    _png(folder / "a.png")
    (folder / "b.png").write_bytes(b"not a png")
    _png(folder / "c.gif")
    (folder / "notes.txt").write_text("hello")
    code = run_cli.main(["--config", "cnn_lowlr", "--workdir", str(tmp_path / "w"),
                         "--no-progress", "--set", "data.image_size=64", "--set",
                         "data.source=folder", "--set", f"data.dir={folder}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == (
        f"error: folder {folder} has 1 usable images (1 more skipped as unreadable), a "
        "training split of 1 after validation (data.val_fraction=0.2, data.test_fraction=0); "
        "train.batch_size=10 needs at least 10 training images: add images or lower "
        "train.batch_size")
    named = [r.getMessage() for r in caplog.records if "not a supported image type" in
             r.getMessage()]
    assert named == [f"{folder}: 2 files skipped, not a supported image type (.gif: c.gif; "
                     ".txt: notes.txt); supported: .jpg .jpeg .png .bmp .webp"]


def test_repeated_csv_rows_are_counted_warned_and_dropped(tmp_path, caplog):
    for i in range(3):
        _png(tmp_path / f"{i}.png", 10 * i)
    rows = ["x,y,r,discolor_ratio,img_path", "30,30,10,1.1,0.png", "20,20,8,1.05,1.png",
            "30,30,10,1.1,0.png", "25,25,9,1.1,1.png", "32,32,10,1.1,2.png"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING):
        path = str(tmp_path / "labels.csv")
        kept = seed_csv.one_row_per_image(path, seed_csv.read_csv_rows(path))
    assert [r.row for r in kept] == [1, 2, 5]
    assert any("2 rows repeat an earlier row's image (1 with the same labels, 1 with different "
               "ones; e.g. row 3 repeats row 1) and are dropped" in r.getMessage()
               for r in caplog.records)


def test_debug_shows_the_traceback_instead_of_one_line(capsys):
    args = ["--config", "cnn_lowlr", "--set", "train.lr=nan"]
    assert run_cli.main(args) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: train.lr='nan': expected a finite number"]
    with pytest.raises(ConfigError, match="expected a finite number"):
        run_cli.main(args + ["--debug"])
