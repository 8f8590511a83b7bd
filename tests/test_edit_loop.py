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
from tests.test_edits import keys_for, smooth_images


def test_loop_schedule_gives_the_vmap_bits():
    """edit_loop (the CPU default: each image edited on a window around its region, in place)
    and vmap (every pixel of every image, every kind's branch) are two schedules of one
    computation. Every path of the loop: the five edits on windows smaller than the image
    (128 px images: sides 64 and 128; erase reading its whole image, stretch grouped by axis),
    a seed kind on the whole image, clean examples. Free regions: their window mask is the
    harder one (a square's window mask is `regions.square_mask` cut the same way)."""
    n = 24
    images, keys = smooth_images(n, 128, seed=5), keys_for(n, 5)
    kinds = ("discolor", "smudge", "erase", "stretch", "copy_move", "splice")
    weights = {k: 1.0 for k in kinds}
    runs = [jax.jit(functools.partial(fn, weights=weights, region="free", p_altered=0.8))(
        jnp.asarray(images), keys) for fn in (ES.alter_batch_mix, EL.alter_batch_loop)]
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(runs[0]), jax.tree.leaves(runs[1])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))
    labels = jax.tree.map(np.asarray, runs[0][1])
    drawn = labels["kind"][labels["altered"]]
    assert set(drawn.tolist()) == {E.KIND_ORDER.index(k) for k in kinds}
    assert not labels["altered"].all()
    # Both window sides are used: copy_move and splice need a side of 2r (their extent).
    assert EL.window_sides(128) == (64, 128)
    copies = labels["altered"] & np.isin(labels["kind"], [E.KIND_ORDER.index("copy_move"),
                                                          E.KIND_ORDER.index("splice")])
    assert {bool(2 * r <= 64) for r in labels["half_size"][copies]} == {True, False}
    cpu = jax.default_backend() == "cpu"
    assert EL.batching("auto", 128) == ("loop" if cpu else "vmap")
    assert EL.batching("auto", 64) == "vmap"  # no window smaller than the image
    assert EL.batching("loop", 64) == "loop"
    with pytest.raises(ValueError, match="batching='scan'"):
        EL.batching("scan")
