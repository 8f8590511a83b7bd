"""anomaly_jax.edit_loop: the CPU schedule of the edits gives the vmap schedule's bits.

Its own file (and xdist group): compiling the loop is ~15 s, and beside tests/test_edits.py's
module fixtures on one worker it made that worker the suite's last to finish.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anomaly_jax import edit_loop as EL
from anomaly_jax import edit_sampling as ES
from anomaly_jax import edits as E
from anomaly_jax import regions as R
from tests.test_edits import keys_for, smooth_images


def test_loop_schedule_gives_the_vmap_bits():
    """edit_loop (the CPU default: each image edited on a window around its region, in place)
    and vmap (every pixel of every image, every kind's branch) are two schedules of one
    computation. Every path of the loop, on windows smaller than the image (128 px images:
    sides 64 and 128): smudge (a margin), stretch (grouped by axis), erase (reading its whole
    image), splice (a source window, from the donor as it came in; copy_move is the same path
    on its own image), a seed kind on the whole image, clean examples. Square regions: a free
    region's window mask is checked on its own below (compiling the loop with free masks
    doubles this test's time)."""
    n = 24
    images, keys = smooth_images(n, 128, seed=6), keys_for(n, 6)
    kinds = ("discolor", "smudge", "erase", "stretch", "splice")
    weights = {k: 1.0 for k in kinds}
    runs = [jax.jit(functools.partial(fn, weights=weights, region="square", p_altered=0.8))(
        jnp.asarray(images), keys) for fn in (ES.alter_batch_mix, EL.alter_batch_loop)]
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(runs[0]), jax.tree.leaves(runs[1])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))
    labels = jax.tree.map(np.asarray, runs[0][1])
    drawn = labels["kind"][labels["altered"]]
    assert set(drawn.tolist()) == {E.KIND_ORDER.index(k) for k in kinds}
    assert not labels["altered"].all()
    # Both window sides are used: erase and splice need a side of 2r (their extent).
    assert EL.window_sides(128) == (64, 128)
    copies = labels["altered"] & np.isin(labels["kind"], [E.KIND_ORDER.index("erase"),
                                                          E.KIND_ORDER.index("splice")])
    assert {bool(2 * r <= 64) for r in labels["half_size"][copies]} == {True, False}
    cpu = jax.default_backend() == "cpu"
    assert EL.batching("auto", 128) == ("loop" if cpu else "vmap")
    assert EL.batching("auto", 64) == "vmap"  # no window smaller than the image
    assert EL.batching("loop", 64) == "loop"
    with pytest.raises(ValueError, match="batching='scan'"):
        EL.batching("scan")


def test_free_mask_in_window_is_the_mask_cut():
    """regions.mask_in_window on the loop's windows (every side, moved inside the image) is
    exactly the whole image's free mask cut to the window, for 16 regions."""
    size = 128
    keys = keys_for(16, 9)

    def cuts(key):
        whole = R.sample_region(key, size, size, "free")
        out = []
        for side in EL.window_sides(size):
            origin = EL.window_origin(whole["center"], (side, side), (size, size))
            window = R.mask_in_window(key, "free", whole["center"], whole["half_size"], origin,
                                      (side, side))
            cut = jax.lax.dynamic_slice(whole["mask"], (origin[0], origin[1]), (side, side))
            out.append((window, cut, whole["half_size"]))
        return out

    for window, cut, half_size in jax.jit(jax.vmap(cuts))(keys):
        np.testing.assert_array_equal(np.asarray(window), np.asarray(cut))
        assert np.asarray(window).any(axis=(1, 2)).all()
