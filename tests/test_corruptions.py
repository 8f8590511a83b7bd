"""anomaly_jax.corruptions against independent references: numpy float64 (the seed's rule),
exact rational arithmetic, and Pillow's ImageDraw; plus jit/vmap agreement, key behaviour,
no-recompilation and the samplers' distributions."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageDraw

from anomaly_jax import corruptions as C

RATIOS_K = list(range(105, 116))  # the seed's eleven two-decimal ratios, in hundredths
S = 64


def rng_images(n: int, size: int = S, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def seed_discolor_f64(img: np.ndarray, row: int, col: int, r: int, ratio: float) -> np.ndarray:
    """The seed's rule in float64 (as numpy_discolor.py), with negative starts clamped to 0."""
    out = img.copy()
    sl = (slice(max(row - r, 0), max(row + r, 0)), slice(max(col - r, 0), max(col + r, 0)))
    out[sl] = np.floor(img[sl].astype(np.float64) * ratio).astype(np.int64).astype(np.uint8)
    return out


def exact_discolor(img: np.ndarray, row: int, col: int, r: int, k: int, overflow: str) -> np.ndarray:
    """Integer-exact reference for ratio k/100: wrap floor(v*k/100) % 256, clip round-half-up."""
    out = img.copy()
    sl = (slice(max(row - r, 0), max(row + r, 0)), slice(max(col - r, 0), max(col + r, 0)))
    v = img[sl].astype(np.int64)
    if overflow == "wrap":
        out[sl] = ((v * k) // 100 % 256).astype(np.uint8)
    else:
        out[sl] = np.minimum((2 * v * k + 100) // 200, 255).astype(np.uint8)
    return out


def near_integer(x: np.ndarray, tol: float = 1e-4) -> np.ndarray:
    return np.abs(x - np.round(x)) < tol


# ----------------------------------------------------------------------------- discolor


@pytest.mark.parametrize("k", RATIOS_K)
def test_discolor_all_values_match_float64_seed_rule(k):
    values = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    ratio = k / 100  # the seed's float64 ratio; ours is its float32
    ours = np.asarray(C.discolor(jnp.asarray(values), jnp.array([8, 8]), 8, np.float32(ratio)))
    ref = seed_discolor_f64(values, 8, 8, 8, ratio)
    exact = np.arange(256) * k // 100 % 256
    np.testing.assert_array_equal(ours[..., 0].ravel(), exact)  # exact for two-decimal ratios
    diff = (ours.astype(np.int64) - ref.astype(np.int64)) % 256
    ambiguous = near_integer(values.astype(np.float64) * ratio)
    assert np.all((diff == 0) | (ambiguous & np.isin(diff, [1, 255])))


@pytest.mark.parametrize("overflow", ["wrap", "clip"])
def test_discolor_squares_at_borders_match_references(overflow):
    imgs = rng_images(48, seed=1)
    rng = np.random.default_rng(2)
    params = [(0, 0, 10), (-5, 10, 12), (63, 63, 20), (70, 30, 10), (30, -3, 8), (5, 60, 40),
              (32, 32, 0), (32, 32, 40), (-20, -20, 10), (10, 90, 5)]
    while len(params) < len(imgs):
        params.append(tuple(int(x) for x in rng.integers(-10, 75, 2)) + (int(rng.integers(0, 45)),))
    ks = rng.choice(RATIOS_K, len(imgs))
    centers = jnp.array([p[:2] for p in params], jnp.int32)
    halves = jnp.array([p[2] for p in params], jnp.int32)
    ratios = jnp.asarray((ks / 100).astype(np.float32))
    fn = jax.jit(jax.vmap(lambda i, c, h, q: C.discolor(i, c, h, q, overflow)))
    ours = np.asarray(fn(jnp.asarray(imgs), centers, halves, ratios))
    for img, out, (row, col, r), k in zip(imgs, ours, params, ks):
        np.testing.assert_array_equal(out, exact_discolor(img, row, col, r, int(k), overflow))
        if overflow == "wrap":
            ref = seed_discolor_f64(img, row, col, r, k / 100)
            bad = out != ref
            assert np.all(near_integer(img[bad].astype(np.float64) * (k / 100)))


def test_discolor_clip_arbitrary_ratio_within_fixed_point_tolerance():
    img = rng_images(1, seed=3)[0]
    for ratio in [0.37, 1.0, 1.234567, 1.9, 3.3]:
        out = np.asarray(C.discolor(jnp.asarray(img), jnp.array([32, 32]), 40, np.float32(ratio), "clip"))
        x = img.astype(np.float64) * np.float64(np.float32(ratio))
        ref = np.minimum(np.floor(x + 0.5), 255)
        ok = (out == ref) | near_integer(x + 0.5)
        assert ok.all(), ratio


def test_discolor_ratio_one_is_identity_and_bad_overflow_raises():
    img = jnp.asarray(rng_images(1)[0])
    for overflow in ("wrap", "clip"):
        np.testing.assert_array_equal(C.discolor(img, jnp.array([30, 30]), 30, 1.0, overflow), img)
    with pytest.raises(ValueError, match="overflow"):
        C.discolor(img, jnp.array([30, 30]), 10, 1.1, "saturate")


# ----------------------------------------------------------------------------- white_box


def test_white_box_matches_pillow_rectangle():
    img = rng_images(1, seed=4)[0]
    positions = [(r, c) for r in range(-4, 66, 3) for c in (-3, 0, 1, 20, 46, 47, 48, 55, 63)]
    tls = jnp.array(positions, jnp.int32)
    ours = np.asarray(jax.vmap(lambda t: C.white_box(jnp.asarray(img), t, 16))(tls))
    for (r, c), out in zip(positions, ours):
        pil = Image.fromarray(img)
        ImageDraw.Draw(pil).rectangle([c, r, c + 16, r + 16], fill=(255, 255, 255))
        np.testing.assert_array_equal(out, np.asarray(pil), err_msg=str((r, c)))
    inside = ours[positions.index((2, 20))]
    assert (inside[2:19, 20:37] == 255).all() and (inside[19, 20:37] != 255).any()


def test_white_box_other_sizes_match_pillow():
    img = rng_images(1, seed=5)[0]
    for size in (1, 5, 30):
        out = np.asarray(C.white_box(jnp.asarray(img), jnp.array([10, 7]), size))
        pil = Image.fromarray(img)
        ImageDraw.Draw(pil).rectangle([7, 10, 7 + size, 10 + size], fill=(255, 255, 255))
        np.testing.assert_array_equal(out, np.asarray(pil))


# ----------------------------------------------------------------------------- scramble


@pytest.mark.parametrize("row,col,r", [(32, 32, 20), (5, 60, 12), (-3, 10, 9), (63, 0, 30)])
def test_scramble_permutes_rows_inside_square_only(row, col, r):
    img = rng_images(1, seed=6)[0]
    out = np.asarray(C.scramble(jnp.asarray(img), jnp.array([row, col]), r, jax.random.key(7)))
    r0, r1 = max(row - r, 0), min(row + r, S)
    c0, c1 = max(col - r, 0), min(col + r, S)
    outside = np.ones((S, S), bool)
    outside[r0:r1, c0:c1] = False
    np.testing.assert_array_equal(out[outside], img[outside])
    src, dst = img[r0:r1, c0:c1], out[r0:r1, c0:c1]
    # Every output row segment is one input row segment, each used exactly once.
    matches = [[j for j in range(len(src)) if np.array_equal(d, src[j])] for d in dst]
    assert all(len(m) == 1 for m in matches)  # random rows are distinct
    perm = [m[0] for m in matches]
    assert sorted(perm) == list(range(r1 - r0))
    assert perm != list(range(r1 - r0))
    for j in range(c1 - c0):  # column multisets preserved
        np.testing.assert_array_equal(np.sort(dst[:, j], axis=0), np.sort(src[:, j], axis=0))


def test_scramble_key_behaviour_and_raw_keys():
    img = jnp.asarray(rng_images(1, seed=8)[0])
    center = jnp.array([32, 32])
    a = C.scramble(img, center, 25, jax.random.key(1))
    b = C.scramble(img, center, 25, jax.random.key(1))
    c = C.scramble(img, center, 25, jax.random.key(2))
    d = C.scramble(img, center, 25, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, d)  # raw uint32[2] key == the typed key with that data
    assert (np.asarray(a) != np.asarray(c)).any()


# ----------------------------------------------------------------------------- jit / vmap / keys


@pytest.mark.parametrize("kind", C.KINDS)
def test_eager_jit_vmap_agree(kind):
    imgs = jnp.asarray(rng_images(3, seed=9))
    keys = jax.random.split(jax.random.key(3), 3)
    sampler = {"discolor": C.sample_discolor, "white_box": C.sample_white_box,
               "scramble": C.sample_scramble}[kind]
    apply = {"discolor": C.discolor, "white_box": C.white_box, "scramble": C.scramble}[kind]
    # Samplers run eagerly in test_samplers_same_key...; here params come from a jitted vmap
    # (op-by-op compilation of every sampler primitive would dominate this file's run time).
    params = jax.jit(jax.vmap(lambda k: sampler(k, S, S)))(keys)
    per_image = [jax.tree.map(lambda x, b=b: x[b], params) for b in range(3)]
    eager = np.stack([np.asarray(apply(i, **p)) for i, p in zip(imgs, per_image)])
    jitted_apply = jax.jit(apply)
    jitted = np.stack([np.asarray(jitted_apply(i, **p)) for i, p in zip(imgs, per_image)])
    vmapped = np.asarray(jax.jit(jax.vmap(apply))(imgs, **params))
    np.testing.assert_array_equal(eager, jitted)
    np.testing.assert_array_equal(eager, vmapped)
    assert (eager != np.asarray(imgs)).any()
    # alter_batch is this same computation, with params from the first half of each key.
    batch, _ = jax.jit(lambda i, k: C.alter_batch(kind, i, k))(imgs, keys)
    params_keys = jax.vmap(lambda k: jax.random.split(k)[0])(keys)
    expected = jax.jit(jax.vmap(lambda i, k: apply(i, **sampler(k, S, S))))(imgs, params_keys)
    np.testing.assert_array_equal(batch, np.asarray(expected))


def test_no_recompilation_when_only_values_change():
    img = jnp.asarray(rng_images(1)[0])
    traces = []

    def traced_discolor(*args):
        traces.append(1)
        return C.discolor(*args)

    fn = jax.jit(traced_discolor)
    for center, r, ratio in [((10, 10), 5, 1.05), ((40, 20), 30, 1.15), ((-4, 70), 0, 1.1)]:
        fn(img, jnp.array(center, jnp.int32), jnp.int32(r), jnp.float32(ratio))
    assert fn._cache_size() == 1 and len(traces) == 1
    batch = jax.jit(lambda i, k: C.alter_batch("discolor", i, k))
    imgs = jnp.asarray(rng_images(2))
    for seed in range(3):
        batch(imgs, jax.random.split(jax.random.key(seed), 2))
    assert batch._cache_size() == 1


def test_samplers_same_key_same_params_different_keys_differ():
    for sampler in (C.sample_discolor, C.sample_white_box, C.sample_scramble):
        a, b, c = (sampler(jax.random.key(s), S, S) for s in (5, 5, 6))
        for name in ("center", "top_left", "half_size", "ratio"):
            if name in a:
                np.testing.assert_array_equal(a[name], b[name])
        flat = lambda p: np.concatenate(  # noqa: E731
            [np.ravel(v) for k, v in sorted(p.items()) if k != "key"])
        assert not np.array_equal(flat(a), flat(c))


# ----------------------------------------------------------------------------- samplers


def numpy_seed_square(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The seed sampler, as the numpy peer writes it, for distribution comparisons."""
    rng = np.random.default_rng(seed)
    lo, hi = size // 8, size - size // 8
    rc = rng.integers(lo, hi + 1, size=(n, 2))
    reach = np.minimum(np.minimum(rc[:, 0], size - rc[:, 0]), np.minimum(rc[:, 1], size - rc[:, 1]))
    r = np.maximum(size * 30 // 800, rng.integers(0, reach))
    return rc, r


@pytest.mark.parametrize("size", [64, 800])
def test_sample_discolor_distribution(size):
    n = 20000
    keys = jax.random.split(jax.random.key(11), n)
    p = jax.jit(jax.vmap(lambda k: C.sample_discolor(k, size, size)))(keys)
    center, r, ratio = (np.asarray(p[k]) for k in ("center", "half_size", "ratio"))
    lo, hi = size // 8, size - size // 8
    assert center.dtype == np.int32 and r.dtype == np.int32 and ratio.dtype == np.float32
    assert center.min() == lo and center.max() == hi  # inclusive range, both ends reached
    reach = np.minimum(np.minimum(center[:, 0], size - center[:, 0]),
                       np.minimum(center[:, 1], size - center[:, 1]))
    r_min = 30 * size // 800
    assert (r >= r_min).all() and ((r < reach) | (r == r_min)).all()
    assert r.max() >= 0.95 * (size // 2 - 1) - 1  # big squares do occur
    _, r_np = numpy_seed_square(n, size)
    assert abs(r.mean() - r_np.mean()) < 0.03 * r_np.mean()
    assert abs((r == r_min).mean() - (r_np == r_min).mean()) < 0.02
    # Ratio: exactly the float32 of a two-decimal value, all eleven present, ends half as likely.
    k = np.round(ratio.astype(np.float64) * 100).astype(int)
    np.testing.assert_array_equal(ratio, (k / 100).astype(np.float32))
    counts = np.bincount(k - 105, minlength=11)
    assert set(k) == set(RATIOS_K)
    middle = counts[1:-1].mean()
    assert abs(middle / n - 0.1) < 0.01
    for end in (counts[0], counts[-1]):
        assert 0.4 < end / middle < 0.6


def test_sample_white_box_and_scramble_ranges():
    keys = jax.random.split(jax.random.key(12), 20000)
    tl = np.asarray(jax.jit(jax.vmap(lambda k: C.sample_white_box(k, S, S)["top_left"]))(keys))
    assert tl.min() == 0 and tl.max() == 47
    assert len(np.unique(tl[:, 0])) == 48 and len(np.unique(tl[:, 1])) == 48
    counts = np.bincount(tl.ravel())
    assert counts.min() > 0.7 * counts.mean()
    sc = jax.jit(jax.vmap(lambda k: C.sample_scramble(k, S, S)))(keys[:500])
    assert np.asarray(sc["center"]).min() >= 8 and np.asarray(sc["center"]).max() <= 56
    assert np.asarray(sc["half_size"]).min() >= 2
    assert len(np.unique(np.asarray(jax.random.key_data(sc["key"])), axis=0)) == 500


# ----------------------------------------------------------------------------- alter_batch


def test_alter_batch_discolor_labels_match_pixels():
    imgs = rng_images(32, seed=13)
    keys = jax.random.split(jax.random.key(14), 32)
    out, lab = jax.jit(lambda i, k: C.alter_batch("discolor", i, k))(jnp.asarray(imgs), keys)
    out, lab = np.asarray(out), jax.tree.map(np.asarray, lab)
    assert lab["altered"].all()
    for b in range(32):
        row, col = np.round(lab["center"][b] * S).astype(int)
        r, k = int(lab["half_size"][b]), int(round(float(lab["ratio"][b]) * 100))
        assert lab["half_size_norm"][b] == np.float32(r / S)
        np.testing.assert_array_equal(out[b], exact_discolor(imgs[b], row, col, r, k, "wrap"))
        square = np.zeros((S, S), bool)
        square[max(row - r, 0):row + r, max(col - r, 0):col + r] = True
        np.testing.assert_array_equal(lab["mask"][b], square)
        changed = (out[b] != imgs[b]).any(-1)
        visible = (imgs[b].astype(int) * k // 100 % 256 != imgs[b]).any(-1)
        np.testing.assert_array_equal(changed, lab["mask"][b] & visible)


def test_alter_batch_white_box_and_scramble_labels():
    imgs = rng_images(16, seed=15)
    keys = jax.random.split(jax.random.key(16), 16)
    out, lab = jax.jit(lambda i, k: C.alter_batch("white_box", i, k))(jnp.asarray(imgs), keys)
    out, mask = np.asarray(out), np.asarray(lab["mask"])
    assert (mask.sum((1, 2)) == 17 * 17).all()
    assert (out[mask] == 255).all() and (out[~mask] == imgs[~mask]).all()
    assert (lab["half_size"] == 8).all() and (lab["ratio"] == 1.0).all()
    for b in range(16):  # centre label = middle pixel of the drawn 17x17 square
        rows, cols = np.nonzero(mask[b])
        np.testing.assert_allclose(lab["center"][b], [rows.mean() / S, cols.mean() / S])
    out, lab = jax.jit(lambda i, k: C.alter_batch("scramble", i, k))(jnp.asarray(imgs), keys)
    out, mask = np.asarray(out), np.asarray(lab["mask"])
    changed = (out != imgs).any(-1)
    assert (changed <= mask).all() and changed.sum() > 0.9 * mask.sum()
    assert (lab["ratio"] == 1.0).all()


@pytest.mark.parametrize("kind", C.KINDS)
def test_alter_batch_p_altered_and_batch_independence(kind):
    n = 400
    imgs = rng_images(n, size=32, seed=17)
    keys = jax.random.split(jax.random.key(18), n)
    fn = jax.jit(lambda i, k: C.alter_batch(kind, i, k, p_altered=0.3, overflow="clip"))
    out, lab = fn(jnp.asarray(imgs), keys)
    out, lab = np.asarray(out), jax.tree.map(np.asarray, lab)
    assert abs(lab["altered"].mean() - 0.3) < 0.06
    clean = ~lab["altered"]
    np.testing.assert_array_equal(out[clean], imgs[clean])
    assert not lab["mask"][clean].any() and lab["mask"][~clean].any((1, 2)).all()
    assert (lab["half_size"][clean] >= 1).all()  # labels still the sampled values
    # Each image depends only on its own key, not on its batch position or neighbours.
    perm = np.random.default_rng(19).permutation(n)
    shuffled, shuffled_lab = fn(jnp.asarray(imgs[perm]), keys[perm])
    np.testing.assert_array_equal(shuffled, out[perm])
    np.testing.assert_array_equal(shuffled_lab["center"], lab["center"][perm])
    if kind == "discolor":  # raw uint32[B, 2] key data gives what the typed keys give
        raw, _ = fn(jnp.asarray(imgs), jax.random.key_data(keys))
        np.testing.assert_array_equal(raw, out)


def test_alter_batch_bad_input_raises():
    imgs, keys = jnp.zeros((2, S, S, 3), jnp.uint8), jax.random.split(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="discolor.*white_box.*scramble"):
        C.alter_batch("blur", imgs, keys)
    with pytest.raises(ValueError, match="uint8"):
        C.alter_batch("discolor", imgs.astype(jnp.float32), keys)
    with pytest.raises(ValueError, match="one key per image"):
        C.alter_batch("discolor", imgs, keys[:1])
