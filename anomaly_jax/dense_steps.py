"""The dense localiser's steps (`model.name="localiser"`): its training crops and targets,
its loss, its train step, and its validation sums on whole images, for the edge target (issue
7) and the mask target (issue 12). `anomaly_jax.steps` dispatches to them; the same
conventions hold (pure functions over pytrees, keys passed in, the task bound statically).
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from anomaly_jax import augment, corruptions, localiser, metrics, parallel, squares
from anomaly_jax.alteration import alter_examples, as_saved, example_keys
from anomaly_jax.config import KIND_ORDER, MIX_KIND

if TYPE_CHECKING:  # steps imports this module
    from anomaly_jax.steps import Task

# Folded into the run's alteration key for the mask target's crop alterations. Not the crop's
# own key: with threefry_partitionable, split(k, 2)[i] == split(k, 7)[i], so altering with
# the crop key would draw the region from the same bits as the crop's position.
_MASK_CROP_SALT = 0x4D41534B


def mask_crop_key(corrupt_key: jax.Array) -> jax.Array:
    """The base key `alter_examples` alters the mask target's training crops with (per crop
    id and, with per_step resampling, per step: as the crops themselves)."""
    return jax.random.fold_in(corrupt_key, _MASK_CROP_SALT)


def dense_train_inputs(task: Task, batch: Mapping[str, jax.Array],
                       tables: Mapping[str, jax.Array], corrupt_key: jax.Array,
                       step: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Crop ids -> augmented, altered, JPEG'd crops and their targets (on the device).

    batch: {"id": int32[B] crop ids, optional "image": uint8[B,S,S,3] (host cache)};
    tables: {"images": uint8[N,S,S,3] (device cache), "valid_hw": int32[N,2]}.
    Returns (images uint8[B,C,C,3], targets): target "edges" - bool[B,C,C,4], see
    `augment.crop_example`; "mask" - {"mask": bool[B,C,C], "ignore": bool[B,C,C] | None}:
    the label mask of `alter_examples`, which alters the clean crops (`augment.clean_crop`)
    with corruption.* (splice's donor is the batch neighbour's crop) and then applies the
    JPEG round trip, and "ignore" None (the loss is then the program it was before the
    option); with task.mask_min_change, the masks of the edits the saved crop shows, and
    those of fainter edits ignored (`localiser.visible_target`).
    """
    crop_ids = batch["id"]
    image_ids = crop_ids // task.crops_per_image
    images = tables["images"][image_ids] if "images" in tables else batch["image"]
    valid_hw = tables["valid_hw"][image_ids]
    keys = example_keys(corrupt_key, crop_ids, step)
    if task.target == "mask":
        crops = jax.vmap(functools.partial(augment.clean_crop, p=task.crop))(images, valid_hw,
                                                                             keys)
        x, labels = alter_examples(task.corruption, crops, mask_crop_key(corrupt_key), crop_ids,
                                   step)
        if not task.mask_min_change:
            return x, {"mask": labels["mask"], "ignore": None}
        mask, ignore = localiser.visible_target(labels["mask"], x,
                                                as_saved(task.corruption, crops),
                                                task.mask_min_change)
        return x, {"mask": mask, "ignore": ignore}
    example = functools.partial(augment.crop_example, p=task.crop)
    x, targets, _ = jax.vmap(example)(images, valid_hw, keys)
    return x, targets


def dense_loss(task: Task, logits: jax.Array, targets: jax.Array, weight: jax.Array
               ) -> jax.Array:
    """The dense localiser's per-example loss float32[B] for its target (`localiser.edge_loss`
    or `localiser.mask_loss`; targets as `dense_train_inputs` returns them)."""
    if task.target == "mask":
        return localiser.mask_loss(logits, targets["mask"], weight, task.image_loss,
                                   targets["ignore"])
    return localiser.edge_loss(logits, targets, weight)


def dense_train_step(state, batch, tables, keys, *, graphdef, tx, task, resample_step):
    """`train_step` for the dense localiser: per-pixel edge or mask loss on augmented crops."""
    x, targets = dense_train_inputs(task, batch, tables, keys.corrupt, resample_step)
    weight = jnp.ones(x.shape[0], jnp.float32)

    def loss_fn(params):
        logits = nnx.merge(graphdef, params)(x)
        loss = jnp.sum(dense_loss(task, logits, targets, weight))
        return loss / x.shape[0], {"loss": loss, "count": jnp.sum(weight)}

    grads, sums = jax.grad(loss_fn, has_aux=True)(state["params"])
    grads = parallel.ordered_mean(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = {"params": params, "opt_state": opt_state, "step": state["step"] + 1}
    return new_state, parallel.ordered_sum(sums)


def dense_eval_sums(task: Task, logits_fn, images: jax.Array, corrupt_key: jax.Array,
                    ids: jax.Array, weight: jax.Array) -> dict[str, jax.Array]:
    """Whole images, altered (fixed per example: keys from corrupt_key and ids int32[B]) and
    JPEG'd, scored: target "edges" - discolor as the seed, localisation sums of the decoded
    square (`loss`: the edge loss); "mask" - `dense_mask_eval_sums`.
    images: uint8[B,H,W,3]; weight: float32[B], 0 for padding."""
    if task.target == "mask":
        return dense_mask_eval_sums(task, logits_fn, images, corrupt_key, ids, weight)
    c = task.corruption
    keys = example_keys(corrupt_key, ids, None)
    altered, lab = corruptions.alter_batch("discolor", images, keys, p_altered=1.0,
                                           overflow=c.overflow)
    altered = as_saved(c, altered)
    h, w = images.shape[1:3]
    targets = jax.vmap(lambda ctr, r: localiser.edge_targets(
        ctr, r, jnp.bool_(True), h, w))(jnp.round(lab["center"] * jnp.array([h, w])).astype(
            jnp.int32), lab["half_size"])
    logits = logits_fn(altered)
    found = localiser.decode(logits, squares.SquarePrior.seed(h, w))
    pred = found["center"].astype(jnp.float32) / jnp.array([h, w], jnp.float32)
    sums = metrics.localisation_sums(pred, lab["center"], lab["half_size_norm"], weight)
    sums["loss"] = jnp.sum(localiser.edge_loss(logits, targets, weight))
    return sums


def dense_mask_eval_sums(task: Task, logits_fn, images: jax.Array, corrupt_key: jax.Array,
                         ids: jax.Array, weight: jax.Array) -> dict[str, jax.Array]:
    """The mask target's validation: images uint8[B,H,W,3] altered by `alter_examples` with
    corruption.* (fixed per example, JPEG included), scored by `metrics.mask_sums` on
    `localiser.mask_prob` with `localiser.image_score` as the detection score, plus `loss` (the
    mask loss) and, for kind "mix", `metrics.mask_sums_by_kind` ("<kind>/<sum>" keys)."""
    altered, lab = alter_examples(task.corruption, images, corrupt_key, ids, None)
    logits = logits_fn(altered)
    prob = localiser.mask_prob(logits)
    score = localiser.image_score(prob)
    sums = metrics.mask_sums(prob, lab["mask"], score, lab["altered"], weight)
    if task.corruption.kind == MIX_KIND:
        sums.update(metrics.mask_sums_by_kind(prob, lab["mask"], score, lab["altered"], weight,
                                              lab["kind"], KIND_ORDER))
    sums["loss"] = jnp.sum(localiser.mask_loss(logits, lab["mask"], weight, task.image_loss))
    return sums
