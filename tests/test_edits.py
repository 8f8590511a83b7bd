"""anomaly_jax.regions and anomaly_jax.edits against independent numpy references (loops over
pixels, float64), plus: outside the mask bit-identical for every kind and both regions,
eager == jit == jit(vmap), no recompilation across parameter values, free-mask properties,
the mix's kind distribution, and clean images returned untouched.

Tolerances: copy_move and splice exact; smudge, erase and stretch (fixed point against the
references' float64) within 1 grey level everywhere, and exactly the reference rounded
wherever its unrounded value is not within 0.05 of a tie (x.5).
Kept fast: 32x32 images (64 for the free masks, 13x21 for one erase test), a handful of
module-scoped jitted functions reused by several tests: the two mix runs (square and free
regions) stand for every kind's batch, since a mix example is exactly its kind's alteration
(checked eagerly, one example per kind); eager calls one image per kind (op-by-op
compilation of every primitive is what an eager call costs).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anomaly_jax import corruptions as C
from anomaly_jax import edit_sampling as ES
from anomaly_jax import edits as E
from anomaly_jax import push_pull as PP
from anomaly_jax import regions as R

S = 32
B = 8
# The mix test's weights: one kind at 0 (never drawn), one at twice the others.
W_MIX = {"discolor": 1.0, "white_box": 0.0, "scramble": 1.0, "smudge": 2.0, "erase": 1.0,
         "stretch": 1.0, "copy_move": 1.0, "splice": 1.0}
N_MIX = 200

# One test worker builds this file's module fixtures (--dist loadgroup); split across
# workers, each worker built them again.
pytestmark = pytest.mark.xdist_group("edits")


def rng_images(n: int, size: int = S, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def smooth_images(n: int, size: int = S, seed: int = 0) -> np.ndarray:
    """Random low-frequency images plus a little noise: edits of them are far from flat."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        a = rng.uniform(0, 6, (3, 4))
        img = 127 + 60 * np.sin(a[:, 0, None, None] * x + a[:, 1, None, None] * y + a[:, 2, None, None])
        img += 60 * np.cos(a[:, 3, None, None] * (x - y) * 3) + rng.normal(0, 8, (3, size, size))
        out.append(np.clip(img, 0, 255).transpose(1, 2, 0).astype(np.uint8))
    return np.stack(out)


def keys_for(n: int, seed: int = 0) -> jax.Array:
    return jax.random.split(jax.random.key(seed), n)


# ----------------------------------------------------------------------------- references


def clamp(i: int, n: int) -> int:
    return min(max(i, 0), n - 1)


def ref_blur(a: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    """Gaussian blur, float64, edge-replicated, by explicit loops over rows then columns."""
    taps = np.array([np.exp(-k * k / (2.0 * sigma * sigma)) for k in range(-radius, radius + 1)])
    taps /= taps.sum()
    h, w = a.shape[:2]
    rows = np.zeros_like(a, np.float64)
    for i in range(h):
        for k in range(-radius, radius + 1):
            rows[i] += taps[k + radius] * a[clamp(i + k, h)]
    out = np.zeros_like(rows)
    for j in range(w):
        for k in range(-radius, radius + 1):
            out[:, j] += taps[k + radius] * rows[:, clamp(j + k, w)]
    return out


def ref_smudge(img, mask, sigma, radius):
    x = img.astype(np.float64)
    m = mask.astype(np.float64)
    weight = (ref_blur(m, sigma, radius) * m)[:, :, None]
    return np.where(mask[:, :, None], x + weight * (ref_blur(x, sigma, radius) - x), x)


def ref_push_pull(c: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Push-pull with explicit block loops and continuous-coordinate bilinear upsampling."""
    h, wd = w.shape
    if (h, wd) == (1, 1):
        return c
    h2, w2 = (h + 1) // 2, (wd + 1) // 2
    c2 = np.zeros((h2, w2, c.shape[2]))
    wt2 = np.zeros((h2, w2))
    for bi in range(h2):
        for bj in range(w2):
            sw, sc = 0.0, np.zeros(c.shape[2])
            for i in (2 * bi, 2 * bi + 1):
                for j in (2 * bj, 2 * bj + 1):
                    if i < h and j < wd:
                        sw += w[i, j]
                        sc += w[i, j] * c[i, j]
            c2[bi, bj] = sc / sw if sw > 0 else 0.0
            wt2[bi, bj] = min(1.0, sw)
    f2 = ref_push_pull(c2, wt2)
    out = np.zeros_like(c, np.float64)
    for i in range(h):
        for j in range(wd):
            # Fine pixel centre i + 1/2 sits at coarse coordinate (i + 1/2)/2 - 1/2.
            y, x = (i + 0.5) / 2 - 0.5, (j + 0.5) / 2 - 0.5
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            ty, tx = y - y0, x - x0
            up = 0.0
            for yy, wy in ((y0, 1 - ty), (y0 + 1, ty)):
                for xx, wx in ((x0, 1 - tx), (x0 + 1, tx)):
                    up = up + wy * wx * f2[clamp(yy, h2), clamp(xx, w2)]
            out[i, j] = w[i, j] * c[i, j] + (1 - w[i, j]) * up
    return out


def ref_erase(img, mask):
    filled = ref_push_pull(img.astype(np.float64), (~mask).astype(np.float64))
    return np.where(mask[:, :, None], filled, img)


def ref_stretch(img, mask, center, factor, axis):
    h, w = mask.shape
    x = img.astype(np.float64)
    out = x.copy()
    mid = np.asarray(center, np.float64) - 0.5
    for i in range(h):
        for j in range(w):
            if not mask[i, j]:
                continue
            src = [float(i), float(j)]
            src[axis] = mid[axis] + (src[axis] - mid[axis]) / factor
            y0, x0 = int(np.floor(src[0])), int(np.floor(src[1]))
            ty, tx = src[0] - y0, src[1] - x0
            v = ((1 - ty) * (1 - tx) * x[clamp(y0, h), clamp(x0, w)]
                 + (1 - ty) * tx * x[clamp(y0, h), clamp(x0 + 1, w)]
                 + ty * (1 - tx) * x[clamp(y0 + 1, h), clamp(x0, w)]
                 + ty * tx * x[clamp(y0 + 1, h), clamp(x0 + 1, w)])
            out[i, j] = v
    return out


def ref_splice(img, donor, mask, offset):
    h, w = mask.shape
    out = img.copy()
    for i in range(h):
        for j in range(w):
            if mask[i, j]:
                out[i, j] = donor[clamp(i + offset[0], h), clamp(j + offset[1], w)]
    return out


def ref_square(h, w, row, col, r):
    m = np.zeros((h, w), bool)
    m[max(row - r, 0):max(row + r, 0), max(col - r, 0):max(col + r, 0)] = True
    return m


def assert_close_uint8(ours, ref, what):
    """ours uint8 vs a float64 reference before rounding: within 1 level everywhere, and
    equal to the reference rounded (half to even, saturated) wherever that is not within 0.05
    of a tie (x.5): the edits compute in fixed point (1/256 level and finer) and round half
    up, so near a tie - or on one, a stretch sampling half-way between pixels, say - they may
    round the other way. Measured: mismatches lie within 0.007 of a tie."""
    rounded = np.clip(np.round(ref), 0, 255)
    diff = np.abs(ours.astype(np.float64) - rounded)
    assert diff.max() <= 1, (what, diff.max())
    tie = np.abs(ref - np.floor(ref) - 0.5) < 0.05
    assert (diff[~tie] == 0).all(), (what, np.argwhere((diff > 0) & ~tie)[:5])


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mix_runs():
    """{region: (images, keys, out, labels)}: square - every kind weighted 1, 64 images;
    free - W_MIX with p_altered=0.5 over N_MIX images (the distribution test)."""
    runs = {}
    for region, weights, n, p in (("square", {k: 1.0 for k in E.KIND_ORDER}, 64, 1.0),
                                  ("free", W_MIX, N_MIX, 0.5)):
        images = smooth_images(n, seed=2)
        keys = keys_for(n, 2)
        fn = jax.jit(functools.partial(ES.alter_batch_mix, weights=weights, region=region,
                                       p_altered=p))
        out, labels = fn(jnp.asarray(images), keys)
        runs[region] = (images, keys, np.asarray(out), jax.tree.map(np.asarray, labels))
    return runs


def rows_of(labels, kind, n=B):
    """Up to n ids of altered examples of `kind` in a mix run. The mix draws an example's
    parameters exactly as alter_batch_edits(kind) on its key, so these rows stand for that
    kind's batch (one compiled mix instead of one compile per kind keeps this file fast)."""
    return np.nonzero(labels["altered"] & (labels["kind"] == E.KIND_ORDER.index(kind)))[0][:n]


def apply_all(image, donor, mask, center, sigma, factor, axis, offset):
    """The five apply functions on one image with explicit parameters."""
    return (E.smudge(image, mask, sigma), E.erase(image, mask),
            E.stretch(image, mask, center, factor, axis), E.copy_move(image, mask, offset),
            E.splice(image, donor, mask, offset))


@pytest.fixture(scope="module")
def apply_jit():
    """(jitted apply_all at 32x32, its trace log): one compile shared by several tests."""
    traces = []

    def counted(*args):
        traces.append(1)  # runs only while tracing
        return apply_all(*args)

    return jax.jit(counted), traces


def run_apply(fn, img, donor, row, col, r, sigma=1.5, factor=1.3, axis=0, offset=(0, 0)):
    mask = ref_square(S, S, row, col, r)
    out = fn(jnp.asarray(img), jnp.asarray(donor), jnp.asarray(mask), jnp.array([row, col]),
             jnp.float32(sigma), jnp.float32(factor), jnp.int32(axis), jnp.array(offset))
    return mask, [np.asarray(o) for o in out]


def sampled_params(kind, key, region="free"):
    """The parameters alter_batch_edits drew for this key (eager: primitives cached by then)."""
    k_params = ES._keys(key)[0]
    return jax.tree.map(np.asarray, ES._SAMPLERS[kind](k_params, S, S, region))


# ----------------------------------------------------------------------------- regions


def test_square_mask_matches_discolor_square():
    cases = [(16, 16, 5), (0, 0, 4), (-3, 10, 6), (31, 31, 8), (10, 40, 5), (16, 16, 0),
             (16, 16, 20), (5, 28, 7)]
    for row, col, r in cases:
        ours = np.asarray(R.square_mask(S, S, jnp.array([row, col]), r))
        np.testing.assert_array_equal(ours, ref_square(S, S, row, col, r), err_msg=str((row, col, r)))
        img = rng_images(1, seed=row % 7)[0]
        changed = (np.asarray(C.discolor(jnp.asarray(img), jnp.array([row, col]), r, 2.0)) != img)
        assert not (changed.any(-1) & ~ours).any()


def test_free_masks_bounded_nonempty_centred_and_vary_with_key():
    n, size = 40, 64
    keys = keys_for(n, 5)

    @jax.jit
    def draw(keys, keys2):
        return (jax.vmap(lambda k: R.sample_region(k, size, size, "free"))(keys),
                jax.vmap(lambda k: R.sample_region(k, size, size, "square"))(keys),
                jax.vmap(lambda k: R.free_mask(k, size, size, jnp.array([32, 32]), 12))(keys2),
                R.free_mask(keys2[0], size, size, jnp.array([32, 32]), 0))

    free, square, same_square, empty = jax.tree.map(np.asarray, draw(keys, keys_for(4, 6)))
    np.testing.assert_array_equal(free["center"], square["center"])
    np.testing.assert_array_equal(free["half_size"], square["half_size"])
    fractions = []
    for i in range(n):
        (row, col), r = free["center"][i], int(free["half_size"][i])
        box = ref_square(size, size, row, col, r)
        np.testing.assert_array_equal(square["mask"][i], box)
        m = free["mask"][i]
        assert not (m & ~box).any() and m[row, col]
        fractions.append(m.sum() / box.sum())
    assert 0.1 < np.mean(fractions) < 0.8 and min(fractions) > 0
    # Different keys, different blobs, even on the same square.
    assert len({m.tobytes() for m in free["mask"]}) == n
    assert len({m.tobytes() for m in same_square}) == 4
    assert not empty.any()
    with pytest.raises(ValueError, match="shape"):
        R.sample_region(keys[0], size, size, "circle")


# ----------------------------------------------------------------------------- references


@pytest.mark.parametrize("kind", E.EDIT_KINDS)
def test_batch_matches_reference_and_leaves_outside_untouched(mix_runs, kind):
    images, keys, out, labels = mix_runs["free"]
    donors = np.roll(images, 1, axis=0)
    rows = rows_of(labels, kind)
    assert len(rows) >= 4
    for i in rows:
        p = sampled_params(kind, keys[i])
        mask = p["mask"]
        np.testing.assert_array_equal(labels["mask"][i], mask)
        np.testing.assert_array_equal(out[i][~mask], images[i][~mask])
        if kind == "smudge":
            ref = ref_smudge(images[i], mask, float(p["sigma"]), E.smudge_radius(S, S))
        elif kind == "erase":
            ref = ref_erase(images[i], mask)
        elif kind == "stretch":
            ref = ref_stretch(images[i], mask, p["center"], float(p["factor"]), int(p["axis"]))
        elif kind == "copy_move":
            ref = ref_splice(images[i], images[i], mask, p["offset"])
        else:
            ref = ref_splice(images[i], donors[i], mask, p["offset"])
        if kind in ("copy_move", "splice"):
            np.testing.assert_array_equal(out[i], ref)
        else:
            assert_close_uint8(out[i], ref, (kind, i))
        assert (out[i] != images[i]).any()  # smooth images: every edit shows


def test_apply_functions_at_borders_match_references(apply_jit):
    """Hand-made parameters the samplers never draw: squares clipped by the border, offsets
    clamped at the border, a shrinking factor, sigmas outside the sampled range."""
    fn, _ = apply_jit
    img = smooth_images(1, seed=3)[0]
    donor = rng_images(1, seed=4)[0]
    cases = [((2, 3, 5), 0.7, 1.3, 0, (3, -4)), ((31, 30, 6), 2.5, 1.55, 1, (-40, 30)),
             ((16, 16, 20), 1.6, 0.7, 0, (0, 0)), ((0, 0, 3), 3.0, 1.1, 1, (31, -31))]
    for (row, col, r), sigma, factor, axis, offset in cases:
        mask, (sm, er, st, cm, sp) = run_apply(fn, img, donor, row, col, r, sigma, factor, axis,
                                               offset)
        what = (row, col, r)
        assert_close_uint8(sm, ref_smudge(img, mask, sigma, E.smudge_radius(S, S)), what)
        assert_close_uint8(er, ref_erase(img, mask), what)
        assert_close_uint8(st, ref_stretch(img, mask, (row, col), factor, axis), what)
        np.testing.assert_array_equal(cm, ref_splice(img, img, mask, offset))
        np.testing.assert_array_equal(sp, ref_splice(img, donor, mask, offset))


def test_erase_at_odd_sizes_matches_reference():
    """13x21: odd sizes at several pyramid levels (padding with weight 0); a full mask fills 0."""
    img = smooth_images(1, 24, seed=5)[0][:13, :21].copy()
    masks = np.stack([ref_square(13, 21, 2, 3, 5), ref_square(13, 21, 12, 20, 6),
                      ref_square(13, 21, 6, 10, 9), np.ones((13, 21), bool)])
    outs = np.asarray(jax.jit(jax.vmap(E.erase, (None, 0)))(jnp.asarray(img), jnp.asarray(masks)))
    for mask, out in zip(masks[:3], outs):
        assert_close_uint8(out, ref_erase(img, mask), "erase")
    np.testing.assert_array_equal(outs[3], 0)


def test_erase_block_mean_needs_no_division():
    """push-pull's mean of 1..4 known children, (2 total + count) // (2 count), written with
    shifts and a float32 multiply by 1/3: every total erase can meet (values <= 255 * 256),
    and totals up to the documented bound (values < 2**21) at random and at its top."""
    counts = np.arange(5, dtype=np.int32)
    totals = np.concatenate([np.arange(4 * 255 * 256 + 1),
                             np.random.default_rng(0).integers(0, 4 * (2**21 - 1), 200_000),
                             4 * (2**21 - 1) - np.arange(4096)]).astype(np.int32)
    t, c = np.meshgrid(totals, counts, indexing="ij")
    ours = np.asarray(jax.jit(PP._block_mean)(jnp.asarray(t), jnp.asarray(c)))
    ref = np.where(c > 0, (2 * t.astype(np.int64) + c) // np.maximum(2 * c, 1), 0)
    np.testing.assert_array_equal(ours, ref)


def test_erase_fill_is_smooth_not_flat(mix_runs, apply_jit):
    images, keys, out, labels = mix_runs["free"]
    for i in rows_of(labels, "erase"):
        m = labels["mask"][i]
        if m.sum() >= 20:
            fill = out[i][m].astype(np.float64)
            assert fill.std(axis=0).max() > 0.5  # not a flat colour
    # A linear ramp is continued across a hole to within a few levels.
    ramp = np.tile((np.arange(S) * 6).astype(np.uint8)[None, :, None], (S, 1, 3))
    mask, (_, filled, *_) = run_apply(apply_jit[0], ramp, ramp, 16, 16, 5)
    assert np.abs(filled[mask].astype(int) - ramp[mask].astype(int)).max() <= 12


# ----------------------------------------------------------------------------- jit / vmap


def test_no_recompilation_across_parameter_values_and_jit_equals_eager(apply_jit):
    fn, traces = apply_jit
    img, donor = smooth_images(2, seed=6)
    sets = [dict(row=10, col=12, r=6, sigma=1.2, factor=1.15, axis=0, offset=(12, -3)),
            dict(row=20, col=18, r=9, sigma=2.0, factor=1.6, axis=1, offset=(-9, 4))]
    for params in sets:
        mask, jitted = run_apply(fn, img, donor, **params)
        eager = apply_all(jnp.asarray(img), jnp.asarray(donor), jnp.asarray(mask),
                          jnp.array([params["row"], params["col"]]),
                          jnp.float32(params["sigma"]), jnp.float32(params["factor"]),
                          jnp.int32(params["axis"]), jnp.array(params["offset"]))
        for a, b in zip(jitted, eager):
            np.testing.assert_array_equal(a, np.asarray(b))
    # Every test using the fixture (other masks, sigmas, factors, axes, offsets) shares it.
    assert len(traces) == 1 and fn._cache_size() == 1


# ----------------------------------------------------------------------------- samplers


def test_same_key_same_region_for_every_edit():
    for key in keys_for(4, 1):
        params = [sampled_params(k, key) for k in E.EDIT_KINDS]
        for p in params[1:]:
            np.testing.assert_array_equal(p["mask"], params[0]["mask"])
            np.testing.assert_array_equal(p["center"], params[0]["center"])


def test_copy_move_source_inside_and_apart_splice_source_inside():
    n = 200
    keys = keys_for(n, 7)
    p = jax.jit(jax.vmap(lambda k: (ES.sample_copy_move(k, S, S), ES.sample_splice(k, S, S),
                                    ES.sample_smudge(k, S, S), ES.sample_stretch(k, S, S))))(keys)
    cm, sp, sm, st = jax.tree.map(np.asarray, p)
    c, r = cm["center"], cm["half_size"][:, None]
    for off in (cm["offset"], sp["offset"]):
        src = c + off
        assert ((src - r >= 0) & (src + r <= S)).all()
    apart = (np.abs(cm["offset"]) >= 2 * r).any(axis=1)
    room = ((c - r >= 2 * r) | (S - (c + r) >= 2 * r)).any(axis=1)  # a disjoint source fits
    np.testing.assert_array_equal(apart, room)
    assert room.mean() > 0.5 and (sp["offset"] != 0).any(axis=1).mean() > 0.5
    lo, hi = E.smudge_sigma_range(S, S)
    assert lo <= sm["sigma"].min() and sm["sigma"].max() <= hi and np.ptp(sm["sigma"]) > 0.5
    assert (1.1 <= st["factor"]).all() and (st["factor"] <= 1.6).all()
    assert 0.35 < st["axis"].mean() < 0.65


# ----------------------------------------------------------------------------- batches and mix


def test_every_kind_both_regions_outside_mask_bit_identical(mix_runs):
    seen = {}
    for region, (images, keys, out, labels) in mix_runs.items():
        changed = (out != images).any(-1)
        assert not (changed & ~labels["mask"]).any(), region
        for k in np.unique(labels["kind"][labels["altered"]]):
            seen.setdefault(E.KIND_ORDER[k], set()).add(region)
    # white_box, which the free mix never draws (weight 0): eagerly, on a few of its images.
    images, keys = mix_runs["free"][:2]
    for i in range(3):
        out, labels = ES.alter_one_edit("white_box", jnp.asarray(images[i]),
                                       jnp.asarray(images[i - 1]), keys[i], region="free")
        changed = (np.asarray(out) != images[i]).any(-1)
        assert changed.any() and not (changed & ~np.asarray(labels["mask"])).any()
    seen["white_box"].add("free")
    assert seen == {k: {"square", "free"} for k in E.KIND_ORDER}


def test_mix_kind_distribution_follows_weights_and_zero_never_drawn(mix_runs):
    kinds = mix_runs["free"][3]["kind"]
    counts = np.bincount(kinds, minlength=len(E.KIND_ORDER))
    w = np.array([W_MIX[k] for k in E.KIND_ORDER])
    expected = N_MIX * w / w.sum()
    assert counts[E.KIND_ORDER.index("white_box")] == 0
    sd = np.sqrt(expected * (1 - w / w.sum()))
    assert (np.abs(counts - expected) <= 4 * sd + 1).all(), counts
    # The rule itself: a zero weight repeats a threshold, so no u in [0, 1) lands on it.
    t = ES.mix_thresholds({"white_box": 0.0, "discolor": 0.0, "splice": 0.0, "erase": 3.0,
                          "smudge": 1e-7})
    u = np.concatenate([np.linspace(0, 1, 10001, endpoint=False), t, np.nextafter(t, 0),
                        [np.nextafter(np.float32(1), np.float32(0))]]).astype(np.float32)
    u = u[u < 1]
    drawn = set(np.sum(u[:, None] >= t[None, :], axis=1).tolist())
    assert drawn == {E.KIND_ORDER.index("smudge"), E.KIND_ORDER.index("erase")}
    for bad in ({"paint": 1.0}, {"erase": -1.0}, {"erase": 0.0}):
        with pytest.raises(ValueError):
            ES.mix_thresholds(bad)


def test_eager_single_kind_equals_jit_vmap_mix(mix_runs):
    # A mix example of kind k is exactly alter_one_edit(k) on the same key and donor - and
    # eager (op by op) equals jit(vmap): one example of every kind the free mix draws.
    images, keys, out, labels = mix_runs["free"]
    for kind in E.KIND_ORDER:
        if kind == "white_box":
            continue  # weight 0 in the free mix; its eager run is in the test above
        i = rows_of(labels, kind, 1)[0]
        single, single_labels = ES.alter_one_edit(kind, jnp.asarray(images[i]),
                                                 jnp.asarray(images[i - 1]), keys[i],
                                                 region="free")
        np.testing.assert_array_equal(np.asarray(single), out[i], err_msg=kind)
        for name, value in single_labels.items():
            np.testing.assert_array_equal(np.asarray(value), labels[name][i],
                                          err_msg=(kind, name))
    # And an old kind on a square region is exactly corruptions.alter_batch.
    images, keys, out, labels = mix_runs["square"]
    rows = np.nonzero(labels["kind"] == E.KIND_ORDER.index("discolor"))[0]
    ref, ref_labels = jax.jit(functools.partial(C.alter_batch, "discolor"))(
        jnp.asarray(images[rows]), keys[rows])
    np.testing.assert_array_equal(out[rows], np.asarray(ref))
    for name, value in ref_labels.items():
        np.testing.assert_array_equal(labels[name][rows], np.asarray(value), err_msg=name)


def test_clean_images_bit_identical_with_false_masks(mix_runs):
    images, keys, out, labels = mix_runs["free"]
    clean = ~labels["altered"]
    assert 0.35 < clean.mean() < 0.65
    np.testing.assert_array_equal(out[clean], images[clean])
    assert not labels["mask"][clean].any() and labels["mask"][~clean].any(axis=(1, 2)).all()
    # p_altered = 0: nothing altered at all.
    images = jnp.asarray(rng_images(4, seed=8))
    out, labels = jax.jit(functools.partial(ES.alter_batch_edits, "splice", p_altered=0.0))(
        images, keys_for(4, 8))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(images))
    assert not np.asarray(labels["mask"]).any() and not np.asarray(labels["altered"]).any()
    assert set(labels) == {"center", "half_size", "half_size_norm", "ratio", "mask", "altered"}
    assert labels["center"].dtype == jnp.float32 and labels["half_size"].dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(labels["ratio"]), 1.0)


def test_bad_arguments_raise():
    images = jnp.asarray(rng_images(2))
    with pytest.raises(ValueError, match="kind"):
        ES.alter_batch_edits("paint", images, keys_for(2))
    with pytest.raises(ValueError, match="region"):
        ES.alter_batch_edits("erase", images, keys_for(2), region="circle")
    with pytest.raises(ValueError, match="one key per image"):
        ES.alter_batch_edits("erase", images, keys_for(3))
    with pytest.raises(ValueError, match="mask"):
        E.erase(images[0], jnp.ones((S, S), jnp.int32))
