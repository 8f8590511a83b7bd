"""The pure train/eval steps over pytrees, and the optimizer they apply.

The hot path (one pmapped call): gather clean uint8 images by id from the
device-resident table (or take the streamed batch), alter them on the device with keys
derived from (seed, example id[, step]), run the model, take the loss, average the
gradients over devices (`parallel.ordered_mean`), apply the optax update. K steps can be
fused into one call with `lax.scan` (`train.steps_per_dispatch`) for small, dispatch-bound
models.

The dense localiser's steps are in `anomaly_jax.dense_steps`. State is explicit:
`TrainState = {"params", "opt_state", "step"}`; the model's static structure (`graphdef`)
and the task description are bound with `functools.partial`.
Randomness comes only from `RunKeys`, derived from `config.seed`, so a run is a pure function
of its config, and a resumed run is bit-for-bit the uninterrupted one.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax import lax

from anomaly_jax import augment, metrics, models, parallel
from anomaly_jax.alteration import alter_examples, example_keys
from anomaly_jax.config import Config, CorruptionConfig, TrainConfig, is_detection
from anomaly_jax.dense_steps import dense_train_step, dense_eval_sums

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
        return dense_train_step(state, batch, tables, keys, graphdef=graphdef, tx=tx, task=task,
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
