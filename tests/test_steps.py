"""The pmapped train step is plain data parallelism: on the same global batch it gives what one
device gives with `jax.grad` of the batch-mean loss and the optax update, written here
directly (no pmap, no reductions of ours)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from anomaly_jax import parallel, run_setup, steps
from anomaly_jax.config import apply_overrides
from conftest import SMALL_RUN
from experiments.configs import get_config


def test_pmapped_step_equals_single_device_grad_and_optax():
    config = apply_overrides(get_config("cnn_lowlr"), SMALL_RUN + ["train.epochs=1"])
    run, state = run_setup.setup(config)
    assert len(run.devices) == 2
    ids = np.array([[5, 0, 9, 3]], np.int32)  # one step (K = 1) of the global batch

    # Reference: the whole batch on one device, the loss written out (seed 1's MSE).
    tables = jax.tree.map(lambda x: x[0], run.tables)
    keys = jax.tree.map(lambda x: x[0], run.keys)
    x, features, labels = steps.prepare_inputs(run.task, {"id": jnp.asarray(ids[0])}, tables,
                                               keys.corrupt, None)

    def loss_fn(params):
        outputs = nnx.merge(run.graphdef, params)(x, features)
        return jnp.mean((outputs - labels["center"]) ** 2)

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(state["params"])
    updates, want_opt = run.tx.update(grads, state["opt_state"], state["params"])
    want = optax.apply_updates(state["params"], updates)

    stepper, _ = run_setup.compiled_steps(run)
    new_state, sums = stepper(parallel.replicate(state, run.devices),
                              run_setup.device_batch(run, ids))
    got = parallel.unreplicate(new_state)
    assert int(got["step"]) == 1
    np.testing.assert_allclose(float(parallel.unreplicate(sums)["loss"]) / 4, float(loss),
                               rtol=1e-6)
    # The optimizer state (Adam's moments, linear in the gradient and its square) carries the
    # gradient itself: two devices add their halves in another order than one, so each leaf
    # agrees up to rounding relative to the leaf's own scale.
    for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(got["opt_state"])[0],
                            jax.tree.leaves(want_opt)):
        g, w = np.asarray(g), np.asarray(w)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6 * float(np.abs(w).max()),
                                   err_msg=jax.tree_util.keystr(path))
    # The parameters: Adam's first step moves each by lr * g / (|g| + eps), whose derivative
    # in g is at most lr / (4 eps); a gradient that cancels to ~eps (1e-8) and differs by a
    # rounding of ~4e-10 moves its parameter by up to lr * 1e-2. That is the bound here (one
    # element of fc1's 102,400 moved 6.4e-7 at the tests' XLA -O0); all but at most 1 in
    # 10,000 elements of each leaf agree to rtol 1e-5.
    lr = float(config.train.lr)
    for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(got["params"])[0],
                            jax.tree.leaves(want)):
        g, w, name = np.asarray(g), np.asarray(w), jax.tree_util.keystr(path)
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-2 * lr, err_msg=name)
        assert np.mean(~np.isclose(g, w, rtol=1e-5, atol=1e-7)) < 1e-4, name
    # And the step did move the parameters (the comparison is not of two untouched copies).
    moved = [not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
             zip(jax.tree.leaves(got["params"]), jax.tree.leaves(state["params"]))]
    assert all(moved)
