"""anomaly_jax.synthetic: determinism, independence of n, shapes, and that landscapes look like
photos in the ways the alteration tasks care about (texture at several scales, variety, bright
pixels for the wrapping discolor)."""
import jax
import numpy as np
import pytest

from anomaly_jax import landscape_params, landscape_scene, synthetic, value_noise

N = 16  # one compiled batch shape serves most tests (compiling dominates their time)

# One test worker builds this file's module fixtures (--dist loadgroup); split across
# workers, each worker built them again.
pytestmark = pytest.mark.xdist_group("synthetic")


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.asarray(synthetic.landscapes(jax.random.key(0), N, 64, 64))


def test_dtype_and_shape(batch):
    assert batch.dtype == np.uint8 and batch.shape == (N, 64, 64, 3)
    # 160 > _MAX_LOW_SIDE: rendered on a coarse grid (step 2) and interpolated, with sides
    # that are not multiples of anything in particular.
    assert landscape_params._step(160, 118) == 2
    rect = np.asarray(synthetic.landscapes(jax.random.key(1), 3, 160, 118))
    assert rect.dtype == np.uint8 and rect.shape == (3, 160, 118, 3)
    assert rect.reshape(3, -1).std(axis=1).min() > 10
    # Image i is the same in a batch of 3 and in a batch of 2 (no cross-image dependence).
    keys = jax.random.split(jax.random.key(1), 3)
    np.testing.assert_array_equal(np.asarray(synthetic.landscapes_from_keys(keys[:2], 160, 118)), rect[:2])


def test_same_key_same_bytes_and_different_key_differs(batch):
    again = np.asarray(synthetic.landscapes(jax.random.key(0), N, 64, 64))
    assert again.tobytes() == batch.tobytes()
    other = np.asarray(synthetic.landscapes(jax.random.key(7), N, 64, 64))
    assert not np.array_equal(other, batch)
    # Every image of a batch is distinct.
    assert len({row.tobytes() for row in batch.reshape(N, -1)}) == N


def test_image_depends_only_on_its_key(batch):
    keys = jax.random.split(jax.random.key(0), N)
    # A sub-batch of 5 keys, rendered in chunks of 2 (the last one padded) instead of 16 at
    # once, gives the same images: image i depends on keys[i] alone, not on n nor on the
    # chunking.
    sub = np.asarray(synthetic.landscapes_from_keys(keys[5:10], 64, 64, chunk=2))
    np.testing.assert_array_equal(sub, batch[5:10])


def test_not_flat_and_fine_detail(batch):
    x = batch.astype(np.float32)
    assert (x.reshape(N, -1).std(axis=1) > 12).all()
    # High frequency: neighbouring pixels differ (grain, texture, edges).
    dx = np.abs(np.diff(x, axis=2)).mean(axis=(1, 2, 3))
    dy = np.abs(np.diff(x, axis=1)).mean(axis=(1, 2, 3))
    assert (dx > 1.0).all() and (dy > 1.0).all(), (dx, dy)
    # Middle frequency: 4x4 block means still vary between neighbouring blocks.
    blocks = x.reshape(N, 16, 4, 16, 4, 3).mean(axis=(2, 4))
    assert (np.abs(np.diff(blocks, axis=1)).mean(axis=(1, 2, 3)) > 1.5).all()


def test_sky_above_is_brighter_and_bluer_than_ground(batch):
    x = batch.astype(np.float32)
    top, bottom = x[:, :12], x[:, -12:]
    assert top.mean() > bottom.mean() + 20
    blueness = lambda a: (a[..., 2] - a[..., 0]).mean()
    assert blueness(top) > blueness(bottom)


def test_varied_and_bright(batch):
    x = np.concatenate([batch, np.asarray(synthetic.landscapes(jax.random.key(4), N, 64, 64))])
    means = x.reshape(2 * N, -1, 3).mean(axis=1)
    # Mean colours spread over the batch, and no two images share a mean colour.
    assert means.std(axis=0).min() > 8
    dists = np.linalg.norm(means[:, None] - means[None], axis=-1) + np.eye(2 * N) * 1e3
    assert dists.min() > 1.0
    # Bright skies reach 250+ in a good share of images (seed 1's wrap makes neon there).
    share = (x.reshape(2 * N, -1) >= 250).any(axis=1).mean()
    assert share >= 0.3, share


def test_black_and_solid():
    b = np.asarray(synthetic.black(3, 64, 64))
    assert b.dtype == np.uint8 and b.shape == (3, 64, 64, 3) and not b.any()
    s = np.asarray(synthetic.solid(jax.random.key(0), 6, 64, 64))
    assert s.dtype == np.uint8 and s.shape == (6, 64, 64, 3)
    colours = s[:, :1, :1].reshape(6, 3)
    assert (s == colours[:, None, None, :]).all()  # one colour per image
    assert len({c.tobytes() for c in colours}) == 6
    again = np.asarray(synthetic.solid(jax.random.key(0), 6, 64, 64))
    np.testing.assert_array_equal(again, s)
    # Colour i comes from split(key, n)[i]: independent of n.
    np.testing.assert_array_equal(np.asarray(synthetic.solid(jax.random.key(0), 2, 8, 8))[:, 0, 0], colours[:2])


def test_generate_dispatch_and_errors(batch):
    key = jax.random.key(0)
    np.testing.assert_array_equal(np.asarray(synthetic.generate("landscapes", key, N, 64, 64)), batch)
    np.testing.assert_array_equal(
        np.asarray(synthetic.generate("solid", key, 2, 64, 64)), np.asarray(synthetic.solid(key, 2, 64, 64))
    )
    assert not np.asarray(synthetic.generate("black", key, 2, 64, 64)).any()
    with pytest.raises(ValueError, match="landscapes.*solid.*black"):
        synthetic.generate("folder", key, 2, 64, 64)
    with pytest.raises(ValueError, match="n >= 0"):
        synthetic.landscapes(key, 2, 0, 64)


def test_hash_noise_matches_numpy_reference():
    seed = np.uint32(12345)
    got = np.asarray(value_noise._hash_uniform(jax.numpy.uint32(seed), (5, 7)))

    def h(x):
        x = x.astype(np.uint64) & 0xFFFFFFFF
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    bits = h(np.arange(35, dtype=np.uint64) ^ h(np.array(seed)))
    want = ((bits >> 8).astype(np.float32) * (2.0 / (1 << 24)) - 1.0).reshape(5, 7)
    np.testing.assert_array_equal(got, want)
    assert -1.0 <= got.min() and got.max() < 1.0


def test_upsample_matches_numpy_reference():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((2, 5, 3)).astype(np.float32)
    cell, size, offset = 4, 13, 2
    got = np.asarray(value_noise._upsample(jax.numpy.asarray(g), 1, cell, size, offset, True))
    want = np.empty((2, size, 3), np.float32)
    for i in range(size):
        k, j = divmod(i + offset, cell)
        t = j / cell
        t = t * t * (3 - 2 * t)
        want[:, i] = g[:, k] + (g[:, k + 1] - g[:, k]) * t
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # cell 1 is a plain crop.
    np.testing.assert_array_equal(np.asarray(value_noise._upsample(jax.numpy.asarray(g), 1, 1, 3, 1, True)), g[:, 1:4])


def test_full_resolution_pass_matches_numpy_reference():
    """_widen + _finish (int16 bilinear interpolation, grain window, rounding) against a
    plain numpy loop-free reference, exactly."""
    s, height, width, b = 4, 30, 22, 2
    h, w = -(-height // s) + 1, -(-width // s) + 1  # coarse nodes, the last one closing
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256 << landscape_scene._FRAC_BITS, (b, h, w, 3)).astype(np.int16)
    amp = rng.integers(0, 256, (b, h)).astype(np.int16)
    offsets = rng.integers(0, landscape_scene._GRAIN_PAD - s + 1, (b, 2)).astype(np.int32)
    wide = synthetic._widen(jax.numpy.asarray(colour), width, s)
    got = np.asarray(synthetic._finish(wide, jax.numpy.asarray(amp), jax.numpy.asarray(offsets), height, width, s))

    k = s.bit_length() - 1
    c = colour.astype(np.int64)
    y, x = np.arange(height), np.arange(width)
    i, a = y // s, (y % s)[:, None, None]
    j, f = x // s, (x % s)[None, :, None]
    plane = synthetic._grain_plane((h - 1) * s + landscape_scene._GRAIN_PAD, width + landscape_scene._GRAIN_PAD).astype(np.int64)
    plane = plane.reshape(plane.shape[0], -1, 3)
    want = np.empty((b, height, width, 3), np.int64)
    for n in range(b):
        rows = [c[n][r][:, j] + (((c[n][r][:, j + 1] - c[n][r][:, j]) * f) >> k) for r in (i, i + 1)]
        val = rows[0] + (((rows[1] - rows[0]) * a) >> k)
        lo, hi = amp[n, i].astype(np.int64), amp[n, i + 1].astype(np.int64)
        amp_y = lo + (((hi - lo) * (y % s)) >> k)  # [H]
        grain = plane[offsets[n, 0] + y][:, offsets[n, 1] + x]
        noise = (grain * amp_y[:, None, None]) >> synthetic._GRAIN_SHIFT
        want[n] = np.clip((val + noise + (1 << (landscape_scene._FRAC_BITS - 1))) >> landscape_scene._FRAC_BITS, 0, 255)
    np.testing.assert_array_equal(got, want.astype(np.uint8))


def test_grain_plane_is_fixed_and_mostly_luminance():
    plane = synthetic._grain_plane(40, 50)
    assert plane.dtype == np.int8 and plane.shape == (40, 150)
    np.testing.assert_array_equal(plane, synthetic._grain_plane.__wrapped__(40, 50))
    rgb = plane.reshape(40, 50, 3).astype(np.float64)
    assert 40 < rgb.std() < 70, rgb.std()
    assert np.corrcoef(rgb[..., 0].ravel(), rgb[..., 1].ravel())[0, 1] > 0.9
