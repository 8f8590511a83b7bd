"""The localiser stack: the square decoder, the physics baseline, the dense model, its
training examples, and a localiser run that resumes bit for bit."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from anomaly_jax import augment, corruptions, localiser, physics, squares, train
from anomaly_jax.config import apply_overrides

# On one test worker with tests/test_scripts_localiser.py: the localiser run is made once.
pytestmark = pytest.mark.xdist_group("localiser_run")

# Jitted once per CropParams (static): op-by-op eager dispatch would dominate the test time.
crop_example = jax.jit(augment.crop_example, static_argnames="p")

# ------------------------------------------------------------------------- the decoder


@pytest.mark.parametrize("center,r", [((20, 27), 9), ((6, 6), 6), ((30, 17), 2)])
def test_decoder_finds_a_planted_square_exactly(center, r):
    h, w = 40, 36
    prior = squares.SquarePrior.anywhere(h, w, r_min=2)
    edges = squares.square_edges_target(jnp.array(center), jnp.int32(r), h, w)
    found = squares.best_square(edges.astype(jnp.float32), prior)
    assert tuple(np.asarray(found["center"])) == center
    assert int(found["half_size"]) == r
    assert float(found["score"]) == 8 * r  # every perimeter boundary pixel, once


@pytest.mark.parametrize("power", [0.0, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decoder_agrees_with_brute_force_numpy_search(power, seed):
    h, w = 33, 29
    prior = squares.SquarePrior(h, w, row_lo=4, row_hi=29, col_lo=4, col_hi=25, r_min=2,
                                r_max=14)
    edges = np.random.default_rng(seed).normal(size=(4, h + 1, w + 1)).astype(np.float32)
    found = squares.best_square(jnp.asarray(edges), prior, power)
    (x, y), r, score = squares.brute_force_best(edges, prior, power)
    assert tuple(np.asarray(found["center"])) == (x, y) and int(found["half_size"]) == r
    np.testing.assert_allclose(float(found["score"]), score, rtol=1e-5)


def test_seed_prior_matches_the_seed_sampler():
    prior = squares.SquarePrior.seed(800, 800)
    assert (prior.row_lo, prior.row_hi, prior.r_min) == (100, 700, 30)
    keys = jax.random.split(jax.random.key(0), 2000)
    p = jax.vmap(lambda k: corruptions.sample_discolor(k, 800, 800))(keys)
    c, r = np.asarray(p["center"]), np.asarray(p["half_size"])
    assert c.min() >= prior.row_lo and c.max() <= prior.row_hi
    reach = np.minimum(np.minimum(c[:, 0], 800 - c[:, 0]), np.minimum(c[:, 1], 800 - c[:, 1]))
    assert (r >= prior.r_min).all() and (r <= reach).all()


# ------------------------------------------------------------------------- physics


@pytest.mark.parametrize("overflow", ["wrap", "clip"])
def test_physics_finds_a_110_square_in_flat_noise(overflow):
    rng = np.random.default_rng(3)
    image = np.clip(np.round(rng.normal(120, 2.0, size=(64, 64, 3))), 0, 255).astype(np.uint8)
    altered = corruptions.discolor(jnp.asarray(image), jnp.array([37, 25]), jnp.int32(11),
                                   jnp.float32(1.10), overflow)
    found = physics.locate(altered[None], squares.SquarePrior.seed(64, 64))
    assert tuple(np.asarray(found["center"][0])) == (37, 25)
    assert int(found["half_size"][0]) == 11
    clean = physics.locate(jnp.asarray(image)[None], squares.SquarePrior.seed(64, 64))
    assert float(found["score"][0]) > 3 * float(clean["score"][0])  # also a detector


def test_physics_reads_a_wrapped_bright_square_as_evidence():
    image = np.full((64, 64, 3), 240, np.uint8)  # bright: x1.10 wraps to 8
    altered = corruptions.discolor(jnp.asarray(image), jnp.array([30, 33]), jnp.int32(12),
                                   jnp.float32(1.10), "wrap")
    assert int(altered[30, 33, 0]) == (240 * 110 // 100) % 256
    found = physics.locate(altered[None], squares.SquarePrior.seed(64, 64))
    assert tuple(np.asarray(found["center"][0])) == (30, 33)


# ------------------------------------------------------------------------- the model


def test_edge_targets_and_evidence_decode_to_the_same_square():
    targets = localiser.edge_targets(jnp.array([21, 30]), jnp.int32(7), jnp.bool_(True), 48, 52)
    assert targets.shape == (48, 52, 4) and targets.dtype == jnp.bool_
    assert int(targets.sum()) == 4 * 14  # four sides of 2r pixels
    logits = jnp.where(targets, 8.0, -8.0)[None]
    found = localiser.decode(logits, squares.SquarePrior.anywhere(48, 52, r_min=2))
    assert tuple(np.asarray(found["center"][0])) == (21, 30)
    assert int(found["half_size"][0]) == 7
    clean = localiser.edge_targets(jnp.array([21, 30]), jnp.int32(7), jnp.bool_(False), 48, 52)
    assert not bool(clean.any())


def test_localiser_trains_on_one_batch_and_decodes_with_documented_shapes():
    model = localiser.LocaliserNet(width=8, rngs=nnx.Rngs(params=0))
    graphdef, params = nnx.split(model)
    table = jnp.asarray(np.random.default_rng(0).integers(60, 200, (2, 64, 64, 3), np.uint8))
    hw = jnp.full((2, 2), 64, jnp.int32)
    p = augment.CropParams(crop=32, p_altered=1.0, jpeg_quality=0)  # JPEG: test_jpeg.py
    keys = jax.random.split(jax.random.key(1), 4)
    x, t, altered = jax.jit(jax.vmap(lambda i, k: augment.crop_example(table[i], hw[i], k, p)))(
        jnp.array([0, 1, 0, 1]), keys)
    assert x.shape == (4, 32, 32, 3) and x.dtype == jnp.uint8
    assert t.shape == (4, 32, 32, 4) and bool(altered.all())
    tx = optax.adam(3e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt):
        def loss_fn(q):
            return jnp.mean(localiser.edge_loss(nnx.merge(graphdef, q)(x), t, jnp.ones(4)))
        loss, g = jax.value_and_grad(loss_fn)(params)
        u, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, u), opt, loss

    losses = []
    for _ in range(10):
        params, opt, loss = step(params, opt)
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0]
    logits = jax.jit(lambda q, images: nnx.merge(graphdef, q)(images))(params, x[:2])
    assert logits.shape == (2, 32, 32, 4) and logits.dtype == jnp.float32
    found = localiser.decode(logits, squares.SquarePrior.seed(32, 32))
    assert found["center"].shape == (2, 2) and found["center"].dtype == jnp.int32
    assert found["half_size"].shape == (2,) and found["score"].shape == (2,)


def test_crop_example_changes_exactly_the_square_without_jpeg():
    image = jnp.asarray(np.random.default_rng(1).integers(1, 200, (80, 80, 3), np.uint8))
    p = augment.CropParams(crop=64, p_altered=1.0, jpeg_quality=0, exposure_range=(1.0, 1.0),
                           gamma_range=(1.0, 1.0))
    key = jax.random.key(7)
    x, t, altered = crop_example(image, jnp.array([80, 80]), key, p)
    x2, t2, _ = crop_example(image, jnp.array([80, 80]), key, p)
    assert bool((x == x2).all()) and bool((t == t2).all())  # a pure function of the key
    # Re-derive the crop without the alteration: the changed pixels are the square's.
    clean_p = augment.CropParams(crop=64, p_altered=0.0, jpeg_quality=0,
                                 exposure_range=(1.0, 1.0), gamma_range=(1.0, 1.0))
    clean, t_clean, not_altered = crop_example(image, jnp.array([80, 80]), key, clean_p)
    assert not bool(not_altered) and not bool(t_clean.any())
    changed = np.asarray((x != clean).any(-1))
    rows = np.flatnonzero(changed.any(1))
    cols = np.flatnonzero(changed.any(0))
    tt = np.asarray(t)
    assert rows.size and tt[rows[0], cols[0], 0] or rows[0] == 0
    assert changed[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()  # one solid rectangle
    assert changed.sum() == (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)


# ------------------------------------------------------------------------- a run

def test_localiser_run_resumes_bit_for_bit(localiser_run, tmp_path):
    """The real localiser config (JPEG, shrink, frames, per-step alterations) at 64x64 (the
    session's run, conftest.LOCALISER_RUN); also the localiser's end-to-end run (test_train's
    every-config test leaves it to this one)."""
    config, workdir, whole = localiser_run
    assert whole["steps"] == 3
    first = apply_overrides(config, ["train.max_steps=2"])
    train.train_and_evaluate(first, str(tmp_path / "split"), progress=False)
    resumed = train.train_and_evaluate(config, str(tmp_path / "split"), progress=False)
    assert resumed["params_sha256"] == whole["params_sha256"]
    lines = [json.loads(x) for x in open(f"{workdir}/metrics.jsonl")]
    assert {"val_distance", "val_hit_rate", "val_loss"} <= set(lines[-1])


def test_shrink_at_scale_one_is_the_crop_and_smaller_scales_shrink():
    image = jnp.asarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), np.uint8))
    same = augment.shrink(image, jax.random.key(0), 32, 1.0)
    assert bool((same == image[:32, :32]).all())  # scale 1: the top-left crop, bit for bit
    flat = jnp.full((64, 64, 3), 77, jnp.uint8).at[:, 32:].set(177)
    half = augment.shrink(flat, jax.random.key(0), 32, 0.5)
    # The 77|177 boundary at column 32 moves to column 32 * scale (scale in [0.5, 1]).
    edge = int(np.argmax(np.asarray(half[5, :, 0]) > 127))
    assert 16 <= edge <= 32 and half.shape == (32, 32, 3)


def test_decoy_frames_are_flat_bands_on_the_sides_and_leave_targets_alone():
    image = jnp.asarray(np.random.default_rng(4).integers(60, 200, (48, 48, 3), np.uint8))
    none = augment.add_frame(image, jax.random.key(0), 0.0)
    assert bool((none == image).all())
    changed_any = False
    add_frame = jax.jit(augment.add_frame, static_argnums=2)
    for i in range(6):
        out = np.asarray(add_frame(image, jax.random.key(i), 1.0))
        diff = (out != np.asarray(image)).any(-1)
        changed_any |= bool(diff.any())
        if diff.any():  # one flat colour, touching the crop's border
            colours = np.unique(out[diff], axis=0)
            assert len(colours) == 1
            assert diff[0].any() or diff[-1].any() or diff[:, 0].any() or diff[:, -1].any()
    assert changed_any
    p = augment.CropParams(crop=32, p_altered=0.0, jpeg_quality=0, p_frame=1.0)
    _, targets, _ = crop_example(image, jnp.array([48, 48]), jax.random.key(3), p)
    assert not bool(targets.any())  # a frame is not a square


def test_edge_visibility_sees_a_planted_square_and_not_its_absence():
    rng = np.random.default_rng(5)
    image = np.clip(np.round(rng.normal(120, 6.0, size=(64, 64, 3))), 0, 255).astype(np.uint8)
    altered = np.asarray(corruptions.discolor(jnp.asarray(image), jnp.array([30, 34]),
                                              jnp.int32(12), jnp.float32(1.10), "wrap"))
    seen = physics.edge_visibility(altered, (30, 34), 12)
    np.testing.assert_allclose(seen["step"], np.log(1.10), atol=0.03)
    assert (seen["z"] > 4).all()
    clean = physics.edge_visibility(image, (30, 34), 12)
    assert (np.abs(clean["step"]) < 0.03).all() and (np.abs(clean["z"]) < 4).all()
