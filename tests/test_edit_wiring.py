"""Issue 12's wiring: the config fields (corruption.kind / region / mix_weights), the one
alteration entry point (`alteration.alter_examples`) dispatching to corruptions or edits, and
the export of masks and kinds by `scripts.make_dataset` read back through the CSV source.

64x64 images, a few examples each; one jitted call per case.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from anomaly_jax import alteration, corruptions, data, edit_sampling, edits
from anomaly_jax.config import (KIND_ORDER, Config, CorruptionConfig, DataConfig,
                                apply_overrides, choices, mix_weights)
from anomaly_jax.errors import ConfigError, DataError

S = 64
N = 6


def images(n: int = N, seed: int = 1) -> jnp.ndarray:
    return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (n, S, S, 3), np.uint8))


def csv_set(csv_path: str, size: int = S) -> data.ImageSet:
    # workers=0: decoding in this process, no grain worker start-up for 8 small files.
    return data.load_image_set(DataConfig(source="csv", csv=csv_path, image_size=size,
                                          workers=0), 0)


def base_config(*sets: str) -> Config:
    return apply_overrides(Config(), ["data.image_size=64", *sets])


# ----------------------------------------------------------------------------- config


def test_kinds_and_regions_are_defined_once():
    assert choices(CorruptionConfig, "kind") == KIND_ORDER + ("mix",)
    assert edits.KIND_ORDER == KIND_ORDER and corruptions.KINDS == edits.OLD_KINDS
    assert choices(CorruptionConfig, "region") == ("square", "free")
    c = base_config("corruption.kind=copy_move", "corruption.region=free").corruption
    assert (c.kind, c.region, c.mix_weights) == ("copy_move", "free", "")


def test_mix_weights_parse():
    parse = lambda text: mix_weights(CorruptionConfig(kind="mix", mix_weights=text))  # noqa: E731
    assert parse("") == {k: 1.0 for k in KIND_ORDER}
    w = parse(" smudge = 2, erase=0.5 ,splice=0")
    assert w == {k: {"smudge": 2.0, "erase": 0.5}.get(k, 0.0) for k in KIND_ORDER}
    c = base_config("corruption.kind=mix", "corruption.mix_weights=stretch=1,discolor=3")
    assert mix_weights(c.corruption)["discolor"] == 3.0


@pytest.mark.parametrize("sets, match", [
    (["corruption.kind=blur"], r"corruption.kind='blur': expected one of .*'splice', 'mix'"),
    (["corruption.region=circle"], r"corruption.region='circle': expected one of 'square'"),
    (["corruption.kind=mix", "corruption.mix_weights=paint=1"],
     r"corruption.mix_weights='paint=1': 'paint=1' is not kind=weight .* discolor, .*splice"),
    (["corruption.kind=mix", "corruption.mix_weights=smudge"], r"'smudge' is not kind=weight"),
    (["corruption.kind=mix", "corruption.mix_weights=erase=-1"], r"weight '-1' of erase"),
    (["corruption.kind=mix", "corruption.mix_weights=erase=nan"], r"weight 'nan' of erase"),
    (["corruption.kind=mix", "corruption.mix_weights=erase=inf"], r"weight 'inf' of erase"),
    (["corruption.kind=mix", "corruption.mix_weights=erase=x"], r"weight 'x' of erase"),
    (["corruption.kind=mix", "corruption.mix_weights=erase=1,erase=2"], r"erase is given twice"),
    (["corruption.kind=mix", "corruption.mix_weights=erase=0,smudge=0"], r"every weight is 0"),
    (["corruption.mix_weights=erase=1"], r"only read when corruption.kind='mix'"),
])
def test_bad_corruption_values_are_one_line_config_errors(sets, match):
    with pytest.raises(ConfigError, match=match) as e:
        base_config(*sets)
    assert "\n" not in str(e.value)


def test_which_models_take_which_kinds():
    # The seed's regressors and the detector take any kind; the dense localiser stays on
    # discolor (its square decoder).
    base_config("model.name=seed_cnn", "corruption.kind=mix", "corruption.region=free")
    base_config("model.name=white_box_net", "corruption.p_altered=0.5", "corruption.kind=erase")
    with pytest.raises(ConfigError, match="model localiser finds discolor"):
        base_config("model.name=localiser", "corruption.kind=smudge")


# ----------------------------------------------------------------------------- alter_examples


def _together(*fns):
    """fns (images, keys) -> outputs, run by ONE jitted call on `images()`'s batch with the
    per-example keys alter_examples derives: one compile (XLA shares what they have in
    common), numpy results."""
    ids = jnp.arange(N, dtype=jnp.int32)
    keys = alteration.example_keys(jax.random.key(3), ids, None)
    return jax.tree.map(np.asarray, jax.jit(lambda x: [f(x, keys) for f in fns])(images()))


def _examples(corruption: CorruptionConfig):
    # alter_examples as training calls it, from the base key and the ids.
    return lambda x, keys: alteration.alter_examples(
        corruption, x, jax.random.key(3), jnp.arange(x.shape[0], dtype=jnp.int32))


@pytest.mark.parametrize("kind", corruptions.KINDS)
def test_old_kinds_on_squares_are_alter_batch_bit_for_bit(kind):
    c = CorruptionConfig(kind=kind, p_altered=0.5, overflow="clip", box_size=12)
    ref_fn = functools.partial(corruptions.alter_batch, kind, p_altered=0.5, overflow="clip",
                               box_size=12)
    (out, labels), (ref, ref_labels) = _together(_examples(c), ref_fn)
    np.testing.assert_array_equal(out, ref)
    assert set(labels) == set(ref_labels) | {"kind"}
    for name, value in ref_labels.items():
        np.testing.assert_array_equal(labels[name], value, err_msg=name)
    np.testing.assert_array_equal(labels["kind"], KIND_ORDER.index(kind))


def test_edit_kind_is_alter_batch_edits_then_jpeg_changes_pixels_only():
    c = CorruptionConfig(kind="stretch", region="free", p_altered=0.5)
    ref_fn = functools.partial(edit_sampling.alter_batch_edits, "stretch", region="free", p_altered=0.5)
    (out, labels), (ref, ref_labels), (jpeg_out, jpeg_labels) = _together(
        _examples(c), ref_fn, _examples(dataclasses.replace(c, jpeg_quality=75)))
    np.testing.assert_array_equal(out, ref)
    for name, value in ref_labels.items():
        np.testing.assert_array_equal(labels[name], value, err_msg=name)
    np.testing.assert_array_equal(labels["kind"], KIND_ORDER.index("stretch"))
    assert labels["altered"].any() and not labels["altered"].all()
    # The JPEG round trip follows the alteration: the same labels, other pixels.
    assert (jpeg_out != out).any()
    for name in labels:
        np.testing.assert_array_equal(jpeg_labels[name], labels[name], err_msg=name)


# ----------------------------------------------------------------------------- export


def test_mix_free_export_reads_back_masks_and_kinds(tmp_path, capsys, make_dataset_recorded):
    make_dataset, exported = make_dataset_recorded
    out = str(tmp_path / "mix")
    sets = ["data.source=landscapes", f"data.image_size={S}", "data.num_images=8",
            "corruption.kind=mix", "corruption.region=free", "corruption.p_altered=0.75",
            "model.name=white_box_net"]  # a detector: some images left clean
    assert make_dataset.main(["--out", out, *[a for s in sets for a in ("--set", s)]]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    labels = exported["labels"]
    assert labels["mask"].shape == (8, S, S) and labels["mask"].any()
    assert len(set(labels["kind"].tolist())) > 1  # the mix drew several kinds
    header = open(summary["csv"]).readline().strip().split(",")
    assert header[:5] == ["x", "y", "r", "discolor_ratio", "img_path"]
    assert header[-3:] == ["mask_path", "kind", "jpeg_change"]
    assert sorted(os.listdir(os.path.join(out, "masks"))) == [f"{i:05d}.png" for i in range(8)]

    s = csv_set(summary["csv"])
    np.testing.assert_array_equal(s.targets["mask"], labels["mask"])
    np.testing.assert_array_equal(s.targets["kind"], labels["kind"])
    np.testing.assert_array_equal(s.targets["altered"], labels["altered"])
    np.testing.assert_array_equal(s.targets["center"], labels["center"])
    # jpeg_change: the mean |difference| inside the mask between the written file and the
    # clean image saved the same way (Pillow, quality 75), here from the files themselves.
    config = make_dataset.build_config("cnn_lowlr", sets)
    clean = data.load_image_set(config.data, config.seed).images
    for i in range(8):
        written = np.asarray(Image.open(os.path.join(out, f"images/{i:05d}.jpg")), np.int64)
        Image.fromarray(clean[i]).save(tmp_path / "clean.jpg", quality=75)
        saved_clean = np.asarray(Image.open(tmp_path / "clean.jpg"), np.int64)
        m = labels["mask"][i]
        want = np.abs(written - saved_clean)[m].sum() / (3 * m.sum()) if m.any() else 0.0
        assert s.targets["jpeg_change"][i] == pytest.approx(want, abs=5e-4)
    assert (s.targets["jpeg_change"][~labels["altered"]] == 0).all()
    assert (s.targets["jpeg_change"][labels["altered"]] > 0).sum() >= 3
    # Nearest-neighbour resizing keeps a mask a set of pixels: at 32 px, Pillow's NEAREST
    # takes the pixel under each output pixel's centre, (2i + 1, 2j + 1).
    np.testing.assert_array_equal(csv_set(summary["csv"], S // 2).targets["mask"],
                                  labels["mask"][:, 1::2, 1::2])

    # A missing or unreadable mask is one line naming the row and the file.
    csv_path = summary["csv"]
    os.remove(os.path.join(out, "masks", "00003.png"))
    with pytest.raises(DataError, match=r"row 4 .*mask file not found: masks/00003.png"):
        csv_set(csv_path)
    open(os.path.join(out, "masks", "00003.png"), "wb").write(b"not a png")
    with pytest.raises(DataError, match=r"row 4 .*unreadable mask .*00003.png") as e:
        csv_set(csv_path)
    assert "\n" not in str(e.value)
    Image.fromarray(np.zeros((S, S + 1), bool)).save(os.path.join(out, "masks", "00003.png"))
    with pytest.raises(DataError, match=r"row 4 .*is 64x65, its image .* 64x64"):
        csv_set(csv_path)
