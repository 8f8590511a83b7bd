"""Mask metrics (issue 12) as summable sums: pixel F1 / IoU equal their definitions, the
histogram ROC AUCs equal the Mann-Whitney statistic on bin-quantised scores, sums add over
batches and devices, and per-kind rows are the metrics of each kind's examples."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from anomaly_jax import metrics


def _batch(seed, b=6, h=8, w=8):
    rng = np.random.default_rng(seed)
    # Scores at bin centres, so the histogram AUC is exact, not a binned approximation.
    q = lambda shape: (rng.integers(0, metrics.AUC_BINS, shape) + 0.5) / metrics.AUC_BINS  # noqa: E731
    return dict(prob=q((b, h, w)).astype(np.float32), mask=rng.random((b, h, w)) < 0.3,
                image_score=q((b,)).astype(np.float32), altered=rng.random(b) < 0.5,
                weight=np.array([1, 1, 1, 1, 1, 0], np.float32)[:b])


def _mann_whitney(pos, neg):
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def test_mask_metrics_equal_their_definitions():
    b = _batch(0)
    b["altered"][:2] = [True, False]  # both classes present
    got = metrics.finish(jax.device_get(metrics.mask_sums(**b)))
    keep = b["weight"] > 0  # the padded example weighs nothing
    prob, mask = b["prob"][keep], b["mask"][keep]
    pred = prob >= 0.5
    tp, fp, fn = (pred & mask).sum(), (pred & ~mask).sum(), (~pred & mask).sum()
    assert got["pixel_f1"] == 2 * tp / (2 * tp + fp + fn)
    assert got["pixel_iou"] == tp / (tp + fp + fn)
    np.testing.assert_allclose(got["pixel_auc"], _mann_whitney(prob[mask], prob[~mask]),
                               rtol=1e-12)
    score, altered = b["image_score"][keep], b["altered"][keep]
    np.testing.assert_allclose(got["image_auc"],
                               _mann_whitney(score[altered], score[~altered]), rtol=1e-12)


def test_sums_add_over_batches_and_devices():
    one, two = _batch(1), _batch(2)
    whole = {k: np.concatenate([one[k], two[k]]) for k in one}
    added = metrics.add(metrics.mask_sums(**one), metrics.mask_sums(**two))
    direct = metrics.mask_sums(**whole)
    for k in direct:
        np.testing.assert_array_equal(added[k], direct[k])
    n = jax.local_device_count()
    split = {k: v.reshape(n, -1, *v.shape[1:]) for k, v in whole.items()}
    summed = jax.pmap(lambda **kw: jax.lax.psum(metrics.mask_sums(**kw), "d"),
                      axis_name="d")(**split)
    for k in direct:
        np.testing.assert_allclose(summed[k][0], direct[k], rtol=1e-6)


def test_rows_per_kind_are_each_kinds_altered_images_against_every_clean_one():
    b = _batch(3, b=12)
    b["weight"] = np.ones(12, np.float32)
    kind = np.array([0, 1, 2] * 4, np.int32)
    b["altered"] = np.array([True] * 6 + [False] * 6)
    rows = metrics.finish_by_kind(jax.device_get(metrics.mask_sums_by_kind(
        **b, kind=jnp.asarray(kind), kind_names=("smudge", "erase", "splice"))))
    assert set(rows) == {"smudge", "erase", "splice"}
    score, altered = np.asarray(b["image_score"]), b["altered"]
    for index, name in enumerate(("smudge", "erase", "splice")):
        own = {k: v[(kind == index) & altered] for k, v in b.items()}
        want = metrics.finish(jax.device_get(metrics.mask_sums(**own)))
        for field in ("pixel_f1", "pixel_iou", "pixel_auc"):
            assert rows[name][field] == want[field]
        # The kind's altered images against all six clean ones, whatever kind they drew.
        np.testing.assert_allclose(
            rows[name]["image_auc"],
            _mann_whitney(score[(kind == index) & altered], score[~altered]), rtol=1e-12)


def test_mask_change_is_the_mean_difference_inside_the_mask():
    rng = np.random.default_rng(4)
    clean = rng.integers(0, 256, (3, 8, 8, 3), np.uint8)
    altered = clean.copy()
    altered[0, 2:4, 2:5] = 255 - altered[0, 2:4, 2:5]
    altered[1, 0, 0, 1] ^= 1
    mask = np.zeros((3, 8, 8), bool)
    mask[0, 1:5, 2:5] = True  # 12 pixels, 6 of them changed
    mask[1, 0, 0] = True
    mean, changed = jax.device_get(metrics.mask_change(jnp.asarray(clean), jnp.asarray(altered),
                                                       jnp.asarray(mask)))
    diff = np.abs(altered.astype(int) - clean.astype(int)).sum(-1)
    np.testing.assert_allclose(mean, [diff[0][mask[0]].sum() / 36, 1 / 3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(changed, [0.5, 1.0, 0.0])
