"""The dense localiser's mask target (issue 12): its training crops are altered by the one
alteration path with exact label masks, a tiny `localiser_mix` run records the mask metrics and
resumes bit for bit, scripts.evaluate scores it per kind (and as squares) on sets with masks,
and the 4-edge localiser is what it was."""
from __future__ import annotations

import csv
import dataclasses
import functools
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from anomaly_jax import (augment, dense_steps, jpeg, localiser, metrics, models, run_setup,
                         squares, steps, train)
from anomaly_jax.alteration import alter_examples, example_keys
from anomaly_jax.config import KIND_ORDER, apply_overrides
from anomaly_jax.errors import ConfigError
from experiments.configs import get_config
from scripts import evaluate

# The real localiser_mix config at 64x64 with 32x32 crops (as conftest.LOCALISER_RUN for
# `localiser`): 8 landscapes, 2 of them validation, 6 x 2 crops = 3 steps of 4.
MIX_RUN = ["data.image_size=64", "data.num_images=8", "data.package_photos=false",
           "data.crop_size=32", "data.crops_per_image=2", "train.batch_size=4",
           "train.epochs=1", "train.schedule=constant", "checkpoint.every_steps=0",
           "train.log_every=1",
           # Three kinds (a mix compiles one branch per weighted kind): the run's path is the
           # same as with eight, in a third of the compile time.
           "corruption.mix_weights=splice=1,scramble=1,smudge=1"]

# One test worker builds this file's module fixtures (--dist loadgroup); split across
# workers, each worker built them again.
pytestmark = pytest.mark.xdist_group("localiser_mix")


def _unreplicated(run):
    return jax.tree.map(lambda x: x[0], run.tables), jax.tree.map(lambda x: x[0], run.keys)


def test_mask_inputs_are_the_alterations_labels_on_the_clean_crops():
    """On splice (free-form), the kind that reads the batch neighbour's crop: one kind
    compiles in seconds where the mix's eight take ~13 s (the run below trains on the mix)."""
    quality = 75
    config = apply_overrides(get_config("localiser_mix"), MIX_RUN + ["corruption.kind=splice",
                                                                    "corruption.mix_weights="])
    run, _ = run_setup.setup(config)
    task = run.task
    assert task.target == "mask" and task.corruption.region == "free"
    tables, keys = _unreplicated(run)
    ids = jnp.asarray(run.splits["train"][:8])
    step = jnp.int32(5)  # per_step resampling: the step is part of every key
    inputs = jax.jit(lambda i, s: dense_steps.dense_train_inputs(task, {"id": i}, tables,
                                                                 keys.corrupt, s))
    x, targets = inputs(ids, step)
    masks = targets["mask"]
    assert targets["ignore"] is None  # train.mask_min_change 0: none ignored
    assert x.shape == (8, 32, 32, 3) and x.dtype == jnp.uint8
    assert masks.shape == (8, 32, 32) and masks.dtype == jnp.bool_

    # The same crops without alteration, and the alteration of them, built separately.
    image_ids = ids // task.crops_per_image
    clean = jax.jit(jax.vmap(functools.partial(augment.clean_crop, p=task.crop)))(
        tables["images"][image_ids], tables["valid_hw"][image_ids],
        example_keys(keys.corrupt, ids, step))
    altered, labels = jax.jit(lambda c: alter_examples(
        task.corruption, c, dense_steps.mask_crop_key(keys.corrupt), ids, step,
        jpeg_roundtrip=False))(clean)
    np.testing.assert_array_equal(np.asarray(masks), np.asarray(labels["mask"]))
    want = jax.jit(jpeg.jpeg_roundtrip_batch, static_argnums=1)(altered, quality)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(want))
    # Before JPEG, the pixels outside the mask are the clean augmented crop's, bit for bit.
    outside = ~np.asarray(masks)
    np.testing.assert_array_equal(np.asarray(altered)[outside], np.asarray(clean)[outside])
    m, alt = np.asarray(masks), np.asarray(labels["altered"])
    assert m.any() and not m[~alt].any()  # some crops altered; clean ones have empty masks
    # A fresh step gives fresh alterations of the same crop ids.
    _, other = inputs(ids, step + 1)
    assert not np.array_equal(np.asarray(other["mask"]), m)

    # train.mask_min_change: the same crops, each edit's mask kept or left out by what the
    # saved crop shows - its mean |x - clean| over the mask and R, G, B (both JPEG'd) against
    # the threshold (here halfway between two of the altered crops' changes, so that both
    # sides happen and no float rounding decides one).
    saved_clean = np.asarray(jax.jit(jpeg.jpeg_roundtrip_batch, static_argnums=1)(clean,
                                                                                  quality))
    diff = np.abs(np.asarray(x, np.int64) - saved_clean).sum(-1)
    edited = m.any(axis=(1, 2))
    change = np.array([diff[i][m[i]].sum() / (3.0 * m[i].sum()) if edited[i] else 0.0
                       for i in range(len(m))])
    middle = np.sort(change[edited])[len(change[edited]) // 2 - 1:][:2]
    levels = float(middle.mean())
    assert middle[1] - middle[0] > 0.1
    visible_task = dataclasses.replace(task, mask_min_change=levels)
    xv, tv = jax.jit(lambda i, s: dense_steps.dense_train_inputs(
        visible_task, {"id": i}, tables, keys.corrupt, s))(ids, step)
    np.testing.assert_array_equal(np.asarray(xv), np.asarray(x))
    kept = (change >= levels)[:, None, None]
    np.testing.assert_array_equal(np.asarray(tv["mask"]), m & kept)
    np.testing.assert_array_equal(np.asarray(tv["ignore"]), m & ~kept)
    assert np.asarray(tv["mask"]).any() and np.asarray(tv["ignore"]).any()


def test_mask_loss_weighs_positives_and_the_image_score_ignores_one_hot_pixel():
    mask = jnp.zeros((1, 8, 8), bool).at[0, 2:4, 2:4].set(True)
    zero = jnp.zeros((1, 8, 8, 1))
    # At logit 0 every pixel costs log 2, positives MASK_POS_WEIGHT times as much.
    want = np.log(2) * (60 + 4 * localiser.MASK_POS_WEIGHT) / 64
    np.testing.assert_allclose(float(localiser.mask_loss(zero, mask, jnp.ones(1))[0]), want,
                               rtol=1e-6)
    assert float(localiser.mask_loss(zero, mask, jnp.zeros(1))[0]) == 0.0
    # Ignored pixels cost nothing and still count in the mean: 2 of the positives, 3 negatives.
    ignore = jnp.zeros((1, 8, 8), bool).at[0, 2, 2:4].set(True).at[0, 6, 1:4].set(True)
    want = np.log(2) * (57 + 2 * localiser.MASK_POS_WEIGHT) / 64
    np.testing.assert_allclose(
        float(localiser.mask_loss(zero, mask & ~ignore, jnp.ones(1), ignore=ignore)[0]), want,
        rtol=1e-6)
    prob = jnp.zeros((2, 16, 16)).at[0, 7, 7].set(1.0).at[1, 4:9, 4:9].set(1.0)
    score = np.asarray(localiser.image_score(prob))
    np.testing.assert_allclose(score, [1 / 25, 1.0], rtol=1e-6)


def test_the_image_level_term_pays_for_the_most_confident_window():
    # One 5x5 block of logit 4 on 0: the image logit is 4 whatever the rest of the map holds.
    logits = jnp.zeros((2, 16, 16, 1)).at[:, 3:8, 3:8, 0].set(4.0)
    np.testing.assert_allclose(np.asarray(localiser.image_logit(logits)), [4.0, 4.0])
    mask = jnp.zeros((2, 16, 16), bool).at[1, 10, 10].set(True)  # example 0 clean, 1 altered
    ones = jnp.ones(2)
    base = np.asarray(localiser.mask_loss(logits, mask, ones))
    with_term = np.asarray(localiser.mask_loss(logits, mask, ones, 0.5))
    # Clean: the window's false alarm costs softplus(4) more; altered: nothing more.
    np.testing.assert_allclose(with_term - base, [0.5 * np.log1p(np.exp(4.0)), 0.0],
                               rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(localiser.mask_loss(logits, mask, jnp.zeros(2), 0.5)) == 0.0)
    # An example whose edit is all ignored (invisible once saved) is not clean: no term.
    ignored = jnp.zeros((2, 16, 16), bool).at[1, 10, 10].set(True)
    none = jnp.zeros((2, 16, 16), bool)
    np.testing.assert_allclose(
        np.asarray(localiser.mask_loss(logits, none, ones, 0.5, ignored))
        - np.asarray(localiser.mask_loss(logits, none, ones, 0.0, ignored)),
        [0.5 * np.log1p(np.exp(4.0)), 0.0], rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def mix_run(tmp_path_factory):
    config = apply_overrides(get_config("localiser_mix"), MIX_RUN)
    workdir = tmp_path_factory.mktemp("localiser_mix_run")
    return config, str(workdir), train.train_and_evaluate(config, str(workdir), progress=False)


def test_localiser_mix_run_records_mask_metrics(mix_run):
    """The run's records and its saved model. Its resume is not run again here: stopping and
    resuming a per-step-resampled dense run is tests/test_localiser.py's bit-for-bit check
    (the same loop, checkpoint and keys; the mix changes only the alteration and the target),
    and a second and third training of this config cost ~20 s of the suite."""
    config, workdir, whole = mix_run
    assert whole["steps"] == 3
    lines = [json.loads(x) for x in open(f"{workdir}/metrics.jsonl")]
    record = lines[-1]
    assert {"val_loss", "val_pixel_f1", "val_pixel_iou", "val_pixel_auc",
            "val_image_auc"} <= set(record)
    assert "val_distance" not in record
    assert 0.0 <= record["val_pixel_f1"] <= 1.0 and np.isfinite(record["val_loss"])
    assert set(record["val_by_kind"]) <= set(KIND_ORDER) and record["val_by_kind"]
    assert train.validation_target(config) == ("val_pixel_f1", "max")
    # The trained model reads back with its one output map.
    _, model, _ = train.restore_params(workdir)
    assert model(jnp.zeros((1, 40, 48, 3), jnp.uint8)).shape == (1, 40, 48, 1)


def test_the_edge_localiser_is_unchanged():
    config = get_config("localiser")
    assert config.model.target == "edges" and steps.make_task(config).target == "edges"
    # Same parameters as before the output count existed: 4 maps, the same init draws.
    made = models.make_model("localiser", 800, width=8, rngs=nnx.Rngs(params=3))
    direct = localiser.LocaliserNet(width=8, rngs=nnx.Rngs(params=3))
    for a, b in zip(jax.tree.leaves(nnx.state(made)), jax.tree.leaves(nnx.state(direct))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert direct.head.shape == (1, 1, 8, 4)
    mask_net = models.make_model("localiser", 800, width=8, target="mask",
                                 rngs=nnx.Rngs(params=3))
    assert mask_net.head.shape == (1, 1, 8, 1)
    # The edge target's crops: clean_crop's pixels where crop_example left them unaltered.
    image = jnp.asarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), np.uint8))
    p = augment.CropParams(crop=32, p_altered=0.0, jpeg_quality=0, min_scale=0.75, p_frame=1.0)
    x, t, _ = jax.jit(augment.crop_example, static_argnames="p")(
        image, jnp.array([48, 48]), jax.random.key(2), p)
    clean = jax.jit(augment.clean_crop, static_argnames="p")(
        image, jnp.array([48, 48]), jax.random.key(2), p)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(clean))
    assert not bool(t.any())
    # Edges stay discolor-square only; the mask target takes any kind and region.
    with pytest.raises(ConfigError, match="model.target"):
        apply_overrides(config, ["corruption.kind=mix"])
    with pytest.raises(ConfigError, match="model.target"):
        apply_overrides(config, ["corruption.region=free"])
    apply_overrides(config, ["corruption.kind=smudge", "model.target=mask"])
    with pytest.raises(ConfigError, match="model.target"):
        apply_overrides(get_config("cnn_lowlr"), ["model.target=mask"])


def _quantised_auc(pos, neg):
    """The Mann-Whitney AUC of scores quantised to metrics.AUC_BINS bins (what the summable
    histogram AUC computes exactly)."""
    bins = lambda s: np.clip((np.asarray(s) * metrics.AUC_BINS).astype(int), 0,  # noqa: E731
                             metrics.AUC_BINS - 1)
    pos, neg = bins(pos)[:, None], bins(neg)[None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def _mask_set(folder, rows, jpeg_change=None):
    """A seed-format set with masks, written by hand (no alteration to compile): rows of
    (kind, altered, mask bool[64, 64]); random images (the model's scores are what is
    checked against the script's figures, not its skill); optionally a jpeg_change column."""
    (folder / "masks").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["x,y,r,discolor_ratio,img_path,altered,mask_path,kind"
             + ("" if jpeg_change is None else ",jpeg_change")]
    for i, (kind, altered, mask) in enumerate(rows):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(folder / f"{i}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / f"{i}.png")
        lines.append(f"32,32,8,1,{i}.png,{int(altered)},masks/{i}.png,{kind}"
                     + ("" if jpeg_change is None else f",{jpeg_change[i]}"))
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return str(folder / "labels.csv")


def test_evaluate_scores_a_mask_run_per_kind(mix_run, tmp_path, capsys):
    """scripts.evaluate on a set with masks and kinds (as make_dataset exports it; its
    read-back is tests/test_edit_wiring.py's): the JSON's counts are the set's, and its AUCs
    are the per-image scores' (a kind's altered images against every clean image)."""
    _, workdir, _ = mix_run
    rng = np.random.default_rng(1)
    kinds = ["splice", "smudge", "splice", "scramble", "smudge", "erase", "splice", "erase"]
    altered = np.array([1, 1, 1, 1, 0, 0, 1, 0], bool)
    masks = [(rng.random((64, 64)) < 0.2) & a for a in altered]
    change = np.array([2.0, 20.0, 5.0, 30.0, 0.0, 0.0, 3.5, 0.0])
    labels = _mask_set(tmp_path / "set", list(zip(kinds, altered, masks)), change)
    per_image = str(tmp_path / "per_image.csv")
    assert evaluate.main(["--workdir", workdir, "--csv", labels, "--per-image", per_image]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert (result["n"], result["n_altered"], result["n_clean"]) == (8, 5, 3)
    assert 0.0 <= result["pixel_f1"] <= 1.0 and 0.0 <= result["pixel_auc"] <= 1.0
    rows = list(csv.DictReader(open(per_image)))
    scores = np.array([float(r["score"]) for r in rows])
    assert [r["kind"] for r in rows] == kinds
    assert [int(r["altered"]) for r in rows] == altered.astype(int).tolist()
    assert result["image_auc"] == pytest.approx(
        _quantised_auc(scores[altered], scores[~altered]), abs=1e-12)
    by_kind = result["by_kind"]
    assert {k: v["n"] for k, v in by_kind.items()} == {"splice": 3, "smudge": 1, "scramble": 1}
    for name, row in by_kind.items():
        own = altered & (np.array(kinds) == name)
        assert row["image_auc"] == pytest.approx(
            _quantised_auc(scores[own], scores[~altered]), abs=1e-12)
    assert "image AUC" in captured.err
    assert all(name in captured.err for name in by_kind)
    # Split by the edit's change in the files: rows 0 and 6 under 4 grey levels, row 2 in
    # 4-16, rows 1 and 3 at 16 or more; each against every clean image, from the raw scores.
    assert [float(r["jpeg_change"]) for r in rows] == change.tolist()
    assert list(result["by_change"]) == ["<4", "4-16", ">=16"]
    for name, chosen in (("<4", [0, 6]), ("4-16", [2]), (">=16", [1, 3])):
        pos, neg = scores[chosen][:, None], scores[~altered][None, :]
        assert result["by_change"][name]["n"] == len(chosen)
        assert result["by_change"][name]["image_auc"] == pytest.approx(
            float(np.mean((pos > neg) + 0.5 * (pos == neg))), abs=1e-12)
    assert "by the edit's change" in captured.err


def test_evaluate_mask_run_needs_masks_and_draws_no_squares(mix_run, tmp_path, capsys):
    _, workdir, _ = mix_run
    image = np.zeros((64, 64, 3), np.uint8)
    Image.fromarray(image).save(tmp_path / "a.jpg")
    (tmp_path / "labels.csv").write_text("x,y,r,discolor_ratio,img_path\n32,32,8,1.1,a.jpg\n")
    assert evaluate.main(["--workdir", workdir, "--csv", str(tmp_path / "labels.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no mask_path column" in err and "make_dataset" in err
    assert evaluate.main(["--workdir", workdir, "--csv", str(tmp_path / "labels.csv"),
                          "--draw", str(tmp_path / "d")]) == 2
    assert "--draw/--sheet" in capsys.readouterr().err


def _area_brute_force(llr, prior):
    """((row, col), r) maximising the sum of llr over the square, by direct numpy loops."""
    best = (None, None, -np.inf)
    for x in range(prior.row_lo, prior.row_hi + 1):
        for y in range(prior.col_lo, prior.col_hi + 1):
            reach = min(x, prior.height - x, y, prior.width - y)
            for r in range(prior.r_min, min(prior.r_max, reach) + 1):
                s = llr[x - r:x + r, y - r:y + r].sum()
                if s > best[2]:
                    best = ((x, y), r, s)
    return best


def test_mask_logits_decode_as_the_square_of_highest_summed_ratio():
    """The mask target's square decoder: a planted square comes back exactly, and on random
    maps the search finds the square a brute-force sum over pixels finds."""
    prior = squares.SquarePrior.seed(32, 32)
    shift = localiser.MASK_EVIDENCE_OFFSET - np.log(localiser.MASK_POS_WEIGHT)
    planted = np.full((32, 32), -4.0 - shift, np.float32)  # ratio -4 per pixel outside
    planted[10:22, 12:24] = 3.0 - shift  # a square centred (16, 18), r = 6
    found = jax.device_get(localiser.decode(jnp.asarray(planted)[None, :, :, None], prior))
    assert found["center"][0].tolist() == [16, 18] and int(found["half_size"][0]) == 6
    np.testing.assert_allclose(found["score"][0], 3.0 * 144, rtol=1e-5)
    rng = np.random.default_rng(3)
    for _ in range(3):
        logits = rng.normal(0.0, 2.0, (32, 32)).astype(np.float32) - shift
        logits[rng.integers(4, 12):rng.integers(18, 28), 6:20] += 2.5
        got = jax.device_get(localiser.decode(jnp.asarray(logits)[None, :, :, None], prior))
        (x, y), r, s = _area_brute_force(logits.astype(np.float64) + shift, prior)
        assert (got["center"][0].tolist(), int(got["half_size"][0])) == ([x, y], r)
        np.testing.assert_allclose(got["score"][0], s, rtol=1e-4, atol=1e-3)


def test_evaluate_decodes_squares_for_a_mask_run_on_squares(mix_run, tmp_path, capsys):
    """A mask run trained on region=square is also scored as a square localiser (the tiny
    run's weights, its config switched to squares: the decoding path, not the model, is under
    test)."""
    config, workdir, _ = mix_run
    square_run = tmp_path / "square_run"
    shutil.copytree(workdir, square_run)
    saved = json.loads((square_run / "config.json").read_text())
    saved["corruption"]["region"] = "square"
    (square_run / "config.json").write_text(json.dumps(saved))
    squares_ = [(20, 30, 8), (40, 24, 12), (32, 40, 9), (30, 30, 8)]
    rows = []
    for i, (x, y, r) in enumerate(squares_):
        m = np.zeros((64, 64), bool)
        if i < 3:  # the last image is clean
            m[x - r:x + r, y - r:y + r] = True
        rows.append(("splice", i < 3, m))
    labels = _mask_set(tmp_path / "squares", rows)
    # The true squares: _mask_set writes every row at (32, 32, 8); put the real ones in.
    lines = open(labels).read().splitlines()
    lines[1:] = [f"{x},{y},{r}," + line.split(",", 3)[3]
                 for (x, y, r), line in zip(squares_, lines[1:])]
    open(labels, "w").write("\n".join(lines) + "\n")
    assert evaluate.main(["--workdir", str(square_run), "--csv", labels]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    square = result["square"]
    assert square["n"] == result["n_altered"] == 3
    assert 0.0 <= square["hit_rate"] <= 1.0 and square["mean_distance"] >= 0.0
    # The middle's figures are the labels' own: centre (0.5, 0.5) against each true centre.
    altered = [r for r in csv.DictReader(open(labels)) if r["altered"] == "1"]
    middle = [np.hypot(int(r["x"]) / 64 - 0.5, int(r["y"]) / 64 - 0.5) for r in altered]
    assert square["middle_mean_distance"] == pytest.approx(float(np.mean(middle)), abs=1e-6)
    assert "square decoded from the mask" in captured.err
