"""The pure train/eval steps over pytrees, and the optimizer they apply.

The hot path (one pmapped call): gather clean uint8 images by id from the
device-resident table (or take the streamed batch), alter them on the device with keys
derived from (seed, example id[, step]), run the model, take the loss, average the gradients over devices (`parallel.ordered_mean`),
apply the optax update. K steps can be fused into one call with `lax.scan`
(`train.steps_per_dispatch`) for small, dispatch-bound models.

State is explicit: `TrainState = {"params", "opt_state", "step"}`; the model's static
structure (`graphdef`) and the task description are bound with `functools.partial`.
Randomness comes only from `RunKeys`, derived from `config.seed`, so a run is a pure function
of its config, and a resumed run is bit-for-bit the uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax import lax

from anomaly_jax import augment, corruptions, jpeg, localiser, metrics, models, parallel, squares
from anomaly_jax.alteration import alter_examples, example_keys
from anomaly_jax.config import (KIND_ORDER, MIX_KIND, Config, CorruptionConfig, TrainConfig,
                                is_detection)

TrainState = dict  # {"params": nnx.State, "opt_state": optax state, "step": int32[]}


@dataclasses.dataclass(frozen=True)
class Task:
    """What a step computes, fixed for a run (bound statically into the compiled steps).

    detect: classification (white box, seed 2) instead of centre regression (seed 1).
    labelled: the images are already altered and the labels come from a seed-format CSV.
    use_features: feed the numeric features (r, ratio) to a fusion model.
    dense: the dense localiser: trains on augmented crops (`crop`) with per-pixel targets.
    target: the dense localiser's (config.model.target): "edges" - the discolor square's four
      edges, scored on whole images by the square decoder within the seed's prior; "mask" -
      the altered pixels of any kind (`corruption`), scored with the mask metrics.
    crops_per_image: a training id is `image_id * crops_per_image + copy` (1 unless dense).
    image_loss: target "mask": the weight of `localiser.mask_loss`'s image-level term.
    mask_min_change: target "mask": grey levels an edit must have changed its region by in
      the saved crop to be trained as altered (`localiser.visible_target`); 0 = every edit.
    """
    corruption: CorruptionConfig
    detect: bool
    labelled: bool
    use_features: bool
    dense: bool = False
    crop: augment.CropParams | None = None
    crops_per_image: int = 1
    target: str = "edges"
    image_loss: float = 0.0
    mask_min_change: float = 0.0


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RunKeys:
    """The run's PRNG keys, all derived from the seed: init, alteration, dropout."""
    init: jax.Array
    corrupt: jax.Array
    dropout: jax.Array

    @classmethod
    def from_seed(cls, seed: int) -> "RunKeys":
        init, corrupt, dropout = jax.random.split(jax.random.key(seed), 3)
        return cls(init, corrupt, dropout)


def make_task(config: Config) -> Task:
    dense = models.is_dense(config.model.name)
    crop = None
    if dense:
        c = config.corruption
        crop = augment.CropParams(crop=config.data.crop_size or config.data.image_size,
                                  p_altered=c.p_altered, overflow=c.overflow,
                                  jpeg_quality=c.jpeg_quality, min_scale=config.data.min_scale,
                                  p_frame=config.data.p_frame)
    return Task(corruption=config.corruption,
                detect=is_detection(config),
                labelled=config.data.source == "csv",
                use_features=models.uses_features(config.model.name),
                dense=dense, crop=crop,
                crops_per_image=config.data.crops_per_image if dense else 1,
                target=config.model.target, image_loss=config.train.image_loss,
                mask_min_change=config.train.mask_min_change)


def make_optimizer(train: TrainConfig, total_steps: int = 0) -> optax.GradientTransformation:
    """The seeds' optimizers: Adam (seed 1); SGD with Nesterov momentum (seed 2); with the
    configured learning-rate schedule over `total_steps` (the run's last step)."""
    lr: float | optax.Schedule = train.lr
    if train.schedule == "cosine":
        lr = optax.warmup_cosine_decay_schedule(
            0.0, train.lr, min(train.warmup_steps, max(total_steps - 1, 0)),
            max(total_steps, 1), end_value=0.05 * train.lr)
    if train.optimizer == "adam":
        return optax.adam(lr)
    if train.optimizer == "nesterov":
        return optax.sgd(lr, momentum=train.momentum, nesterov=True)
    return optax.sgd(lr, momentum=train.momentum or None)


def total_steps(config: Config, steps_per_epoch: int) -> int:
    """The run's last step: epochs x steps per epoch, capped by train.max_steps."""
    total = steps_per_epoch * config.train.epochs
    return min(total, config.train.max_steps) if config.train.max_steps else total


# --------------------------------------------------------------------------- the steps


def prepare_inputs(task: Task, batch: Mapping[str, jax.Array], tables: Mapping[str, jax.Array],
                   corrupt_key: jax.Array, step: jax.Array | None
                   ) -> tuple[jax.Array, jax.Array | None, dict[str, jax.Array]]:
    """A batch of ids (or streamed images) -> model inputs and labels, on the device.

    batch: {"id": int32[B], optional "image": uint8[B,H,W,3]}.
    tables: device-resident {"images": uint8[N,H,W,3]} and, for labelled data, "center"
      float32[N,2], "half_size_norm" float32[N], "features" float32[N,2].
    step: None for fixed (per-example) alterations, else the global step.
    Returns x float32[B,H,W,3] in [0,1], features float32[B,2] or None, labels with
    "center" float32[B,2], "half_size_norm" float32[B], "altered" bool[B].
    """
    ids = batch["id"]
    images = tables["images"][ids] if "images" in tables else batch["image"]
    if task.labelled:
        labels = {"center": tables["center"][ids],
                  "half_size_norm": tables["half_size_norm"][ids],
                  "altered": (tables["altered"][ids] if "altered" in tables
                              else jnp.ones(ids.shape, bool))}
        features = tables["features"][ids]
    else:
        images, lab = alter_examples(task.corruption, images, corrupt_key, ids, step)
        labels = {k: lab[k] for k in ("center", "half_size_norm", "altered")}
        # As the seed fed them: r in pixels and the ratio, unscaled.
        features = jnp.stack([lab["half_size"].astype(jnp.float32), lab["ratio"]], axis=-1)
    x = images.astype(jnp.float32) * (1.0 / 255.0)
    return x, (features if task.use_features else None), labels


def _batch_sums(task: Task, outputs: jax.Array, labels: Mapping[str, jax.Array],
                weight: jax.Array) -> dict[str, jax.Array]:
    if task.detect:
        return metrics.detection_sums(outputs, labels["altered"], weight)
    return metrics.localisation_sums(outputs, labels["center"], labels["half_size_norm"], weight)


def train_step(state: TrainState, batch: Mapping[str, jax.Array],
               tables: Mapping[str, jax.Array], keys: RunKeys, *, graphdef: nnx.GraphDef,
               tx: optax.GradientTransformation, task: Task
               ) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimisation step on one device's share of the global batch (inside pmap).

    Loss: MSE on normalised centres (mean over the batch and both coordinates, as
    torch's MSELoss) or softmax cross-entropy for detection. Gradients are averaged over
    devices (`parallel.ordered_mean`, in device order: the same bits however the devices
    are spread over processes), so the update is the one on the global batch.
    Returns the new state and metric sums over the global batch.
    """
    step = state["step"]
    resample_step = step if task.corruption.resample == "per_step" else None
    if task.dense:
        return _dense_train_step(state, batch, tables, keys, graphdef=graphdef, tx=tx, task=task,
                                 resample_step=resample_step)
    x, features, labels = prepare_inputs(task, batch, tables, keys.corrupt, resample_step)
    # One dropout key per example, from (seed, step, example id): the masks do not depend on
    # how the batch is split over devices or processes.
    dropout_key = example_keys(keys.dropout, batch["id"], step)
    weight = jnp.ones(x.shape[0], jnp.float32)

    def loss_fn(params):
        model = nnx.merge(graphdef, params)
        outputs = model(x, features, dropout_key=dropout_key)
        sums = _batch_sums(task, outputs, labels, weight)
        return sums["loss"] / x.shape[0], sums

    grads, sums = jax.grad(loss_fn, has_aux=True)(state["params"])
    grads = parallel.ordered_mean(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = {"params": params, "opt_state": opt_state, "step": step + 1}
    return new_state, parallel.ordered_sum(sums)


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
    `augment.crop_example`; "mask" - {"mask": bool[B,C,C], "ignore": bool[B,C,C]}: the label
    mask of `alter_examples`, which alters the clean crops (`augment.clean_crop`) with
    corruption.* (splice's donor is the batch neighbour's crop) and then applies the JPEG
    round trip, and no pixel ignored; with task.mask_min_change, the masks of the edits the
    saved crop shows, and those of fainter edits ignored (`localiser.visible_target`).
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
            return x, {"mask": labels["mask"], "ignore": jnp.zeros_like(labels["mask"])}
        quality = task.corruption.jpeg_quality
        clean = jpeg.jpeg_roundtrip_batch(crops, quality) if quality else crops
        mask, ignore = localiser.visible_target(labels["mask"], x, clean, task.mask_min_change)
        return x, {"mask": mask, "ignore": ignore}
    example = functools.partial(augment.crop_example, p=task.crop)
    x, targets, _ = jax.vmap(example)(images, valid_hw, keys)
    return x, targets


def dense_loss(task: Task, logits: jax.Array, targets: jax.Array, weight: jax.Array
               ) -> jax.Array:
    """The dense localiser's per-example loss float32[B] for its target (`localiser.edge_loss`
    or `localiser.mask_loss`; targets as `dense_train_inputs` returns them)."""
    if task.target == "mask":
        # Static: without mask_min_change nothing is ignored, and the loss is the same
        # program, bit for bit, as before the option existed.
        return localiser.mask_loss(logits, targets["mask"], weight, task.image_loss,
                                   targets["ignore"] if task.mask_min_change else None)
    return localiser.edge_loss(logits, targets, weight)


def _dense_train_step(state, batch, tables, keys, *, graphdef, tx, task, resample_step):
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
    if c.jpeg_quality:
        altered = jpeg.jpeg_roundtrip_batch(altered, c.jpeg_quality)
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


def train_steps(state: TrainState, batches: Mapping[str, jax.Array],
                tables: Mapping[str, jax.Array], keys: RunKeys, **static
                ) -> tuple[TrainState, dict[str, jax.Array]]:
    """K train steps in one call (`lax.scan`); batches have a leading K axis. Sums add up.

    K=1 skips the scan: on XLA:CPU a step inside a while loop measured 7x slower for
    seed_cnn at 800x800 (12.3 s vs 1.7 s per step), the loop body losing optimisations
    and copying the 64 MB FC weights and their Adam moments per iteration.
    """
    if batches["id"].shape[0] == 1:
        return train_step(state, jax.tree.map(lambda x: x[0], batches), tables, keys, **static)

    def body(carry, batch):
        new_state, sums = train_step(carry, batch, tables, keys, **static)
        return new_state, sums

    # Unrolled: a rolled loop (a while loop in XLA) measured 2.7x slower per step on XLA:CPU.
    state, sums = lax.scan(body, state, batches, unroll=True)
    return state, jax.tree.map(lambda s: jnp.sum(s, axis=0), sums)


def eval_step(params: nnx.State, batch: Mapping[str, jax.Array], tables: Mapping[str, jax.Array],
              keys: RunKeys, *, graphdef: nnx.GraphDef, task: Task) -> dict[str, jax.Array]:
    """Metric sums on one device's share of an eval batch; batch["weight"] is 0 for padding.

    Evaluation always uses the fixed per-example alteration, so every epoch (and every
    run with the same seed) is scored on the same altered images. The batch has a step axis
    of length 1, as the train steps' batches have (`run_setup.device_batch`).
    """
    batch = jax.tree.map(lambda x: x[0], batch)
    if task.dense:
        ids = batch["id"]
        images = tables["images"][ids] if "images" in tables else batch["image"]
        sums = dense_eval_sums(task, nnx.merge(graphdef, params), images, keys.corrupt, ids,
                               batch["weight"])
        return parallel.ordered_sum(sums)
    x, features, labels = prepare_inputs(task, batch, tables, keys.corrupt, None)
    outputs = nnx.merge(graphdef, params)(x, features)
    return parallel.ordered_sum(_batch_sums(task, outputs, labels, batch["weight"]))
