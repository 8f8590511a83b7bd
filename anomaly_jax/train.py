"""Training: pure train/eval steps over pytrees, and the loop that drives them.

The hot path (one pmapped call, DESIGN §3): gather clean uint8 images by id from the
device-resident table (or take the streamed batch), alter them on the device with keys
derived from (seed, example id[, step]), run the model, take the loss, `pmean` the gradients,
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
import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax import lax

from anomaly_jax import augment
from anomaly_jax import checkpoint as ckpt_lib
from anomaly_jax import corruptions, data, jpeg, localiser, metrics, models, parallel, report, squares
from anomaly_jax.config import Config, ConfigError, CorruptionConfig, TrainConfig, to_dict

TrainState = dict  # {"params": nnx.State, "opt_state": optax state, "step": int32[]}


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; the run stopped before saving it."""


@dataclasses.dataclass(frozen=True)
class Task:
    """What a step computes, fixed for a run (bound statically into the compiled steps).

    detect: classification (white box, seed 2) instead of centre regression (seed 1).
    labelled: the images are already altered and the labels come from a seed-format CSV.
    use_features: feed the numeric features (r, ratio) to a fusion model.
    dense: the dense localiser: trains on augmented crops (`crop`) with per-pixel edge
      targets, is scored on whole images by the square decoder within the seed's prior.
    crops_per_image: a training id is `image_id * crops_per_image + copy` (1 unless dense).
    """
    corruption: CorruptionConfig
    detect: bool
    labelled: bool
    use_features: bool
    dense: bool = False
    crop: augment.CropParams | None = None
    crops_per_image: int = 1


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
                detect=config.model.name == "white_box_net",
                labelled=config.data.source == "csv",
                use_features=models.uses_features(config.model.name),
                dense=dense, crop=crop,
                crops_per_image=config.data.crops_per_image if dense else 1)


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


def example_keys(base: jax.Array, ids: jax.Array, step: jax.Array | None) -> jax.Array:
    """One key per example: from (base, id) for fixed alterations, (base, step, id) fresh.

    ids: int32[B] -> key[B]. Keys depend on the example, not on its batch or device, so
    the same global batch gives the same alterations on any number of devices.
    """
    if step is not None:
        base = jax.random.fold_in(base, step)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(ids)


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
        c = task.corruption
        images, lab = corruptions.alter_batch(
            c.kind, images, example_keys(corrupt_key, ids, step),
            p_altered=c.p_altered, overflow=c.overflow, box_size=c.box_size)
        if c.jpeg_quality:  # as the seed's photos were saved after the alteration
            images = jpeg.jpeg_roundtrip_batch(images, c.jpeg_quality)
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
    devices with `pmean`, so the update equals the single-device one on the global batch.
    Returns the new state and metric sums over the global batch.
    """
    step = state["step"]
    resample_step = step if task.corruption.resample == "per_step" else None
    if task.dense:
        return _dense_train_step(state, batch, tables, keys, graphdef=graphdef, tx=tx, task=task,
                                 resample_step=resample_step)
    x, features, labels = prepare_inputs(task, batch, tables, keys.corrupt, resample_step)
    dropout_key = jax.random.fold_in(jax.random.fold_in(keys.dropout, step),
                                     lax.axis_index(parallel.AXIS))
    weight = jnp.ones(x.shape[0], jnp.float32)

    def loss_fn(params):
        model = nnx.merge(graphdef, params)
        outputs = model(x, features, dropout_key=dropout_key)
        sums = _batch_sums(task, outputs, labels, weight)
        return sums["loss"] / x.shape[0], sums

    grads, sums = jax.grad(loss_fn, has_aux=True)(state["params"])
    grads = lax.pmean(grads, parallel.AXIS)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = {"params": params, "opt_state": opt_state, "step": step + 1}
    return new_state, lax.psum(sums, parallel.AXIS)


def dense_train_inputs(task: Task, batch: Mapping[str, jax.Array],
                       tables: Mapping[str, jax.Array], corrupt_key: jax.Array,
                       step: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Crop ids -> augmented, altered, JPEG'd crops and their edge targets (on the device).

    batch: {"id": int32[B] crop ids, optional "image": uint8[B,S,S,3] (host cache)};
    tables: {"images": uint8[N,S,S,3] (device cache), "valid_hw": int32[N,2]}.
    Returns (images uint8[B,C,C,3], targets bool[B,C,C,4]); see `augment.crop_example`.
    """
    crop_ids = batch["id"]
    image_ids = crop_ids // task.crops_per_image
    images = tables["images"][image_ids] if "images" in tables else batch["image"]
    valid_hw = tables["valid_hw"][image_ids]
    example = functools.partial(augment.crop_example, p=task.crop)
    x, targets, _ = jax.vmap(example)(images, valid_hw, example_keys(corrupt_key, crop_ids, step))
    return x, targets


def _dense_train_step(state, batch, tables, keys, *, graphdef, tx, task, resample_step):
    """`train_step` for the dense localiser: per-pixel edge loss on augmented crops."""
    x, targets = dense_train_inputs(task, batch, tables, keys.corrupt, resample_step)
    weight = jnp.ones(x.shape[0], jnp.float32)

    def loss_fn(params):
        logits = nnx.merge(graphdef, params)(x)
        loss = jnp.sum(localiser.edge_loss(logits, targets, weight))
        return loss / x.shape[0], {"loss": loss, "count": jnp.sum(weight)}

    grads, sums = jax.grad(loss_fn, has_aux=True)(state["params"])
    grads = lax.pmean(grads, parallel.AXIS)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = {"params": params, "opt_state": opt_state, "step": state["step"] + 1}
    return new_state, lax.psum(sums, parallel.AXIS)


def dense_eval_sums(task: Task, logits_fn, images: jax.Array, keys: jax.Array,
                    weight: jax.Array) -> dict[str, jax.Array]:
    """Whole images, altered as the seed (fixed per example) and JPEG'd, scored by the decoded
    square: localisation sums (`loss` is the edge loss). images: uint8[B,H,W,3]; keys: key[B]."""
    c = task.corruption
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
    run with the same seed) is scored on the same altered images.
    """
    if task.dense:
        ids = batch["id"]
        images = tables["images"][ids] if "images" in tables else batch["image"]
        sums = dense_eval_sums(task, nnx.merge(graphdef, params), images,
                               example_keys(keys.corrupt, ids, None), batch["weight"])
        return lax.psum(sums, parallel.AXIS)
    x, features, labels = prepare_inputs(task, batch, tables, keys.corrupt, None)
    outputs = nnx.merge(graphdef, params)(x, features)
    return lax.psum(_batch_sums(task, outputs, labels, batch["weight"]), parallel.AXIS)


def params_sha256(params: Any) -> str:
    """SHA-256 of the parameters' bytes, leaves in sorted key-path order (DESIGN §3.1)."""
    digest = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        arr = np.asarray(leaf)
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(str(arr.dtype).encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class Run:
    """Everything a run holds while training (built by `setup`, used by the loop and tools)."""
    config: Config
    devices: list
    task: Task
    graphdef: nnx.GraphDef
    tx: optax.GradientTransformation
    image_set: data.ImageSet
    splits: dict[str, np.ndarray]
    tables: dict[str, jax.Array]  # replicated on the devices
    keys: RunKeys  # replicated on the devices
    cache: str
    steps_per_epoch: int


def _tables(task: Task, image_set: data.ImageSet, cache: str) -> dict[str, np.ndarray]:
    tables = {}
    if cache == "device":
        tables["images"] = image_set.images
    if task.dense:
        n, size = len(image_set.names), image_set.images.shape[1]
        tables["valid_hw"] = (image_set.valid_hw if image_set.valid_hw is not None
                              else np.full((n, 2), size, np.int32))
    if task.labelled:
        tables.update({k: image_set.targets[k] for k in
                       ("center", "half_size_norm", "features", "altered")
                       if k in image_set.targets})
    return tables


def init_state(config: Config, keys: RunKeys, tx: optax.GradientTransformation
               ) -> tuple[nnx.GraphDef, TrainState]:
    """A fresh model and optimizer state (on the host/default device, not replicated)."""
    model = models.make_model(config.model.name, config.data.image_size,
                              dtype=config.model.dtype, width=config.model.width,
                              rngs=nnx.Rngs(params=keys.init))
    graphdef, params = nnx.split(model)
    state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
    return graphdef, state


def setup(config: Config) -> tuple[Run, TrainState]:
    """Devices, data (decoded once), tables on the devices, model and a fresh state."""
    devices = parallel.local_devices(config.train.num_devices)
    parallel.check_batch_size(config.train.batch_size, len(devices))
    task = make_task(config)
    keys = RunKeys.from_seed(config.seed)
    cache = choose_cache(config, len(devices))
    image_set = data.load_image_set(config.data, config.seed, decode=cache != "stream")
    n = len(image_set.names)
    splits = data.split_ids(n, config.data.val_fraction, config.data.test_fraction, config.seed)
    if task.dense:
        image_set, splits = _dense_training_set(config, task, image_set, splits)
    shard_index, shard_count = parallel.process_shard()
    steps = data.steps_per_epoch(len(splits["train"]), config.train.batch_size // shard_count,
                                 shard_count)
    if steps < 1:
        raise ConfigError(
            f"train.batch_size={config.train.batch_size} is larger than the training split "
            f"({len(splits['train'])} images); lower it or raise data.num_images")
    tables = parallel.replicate(_tables(task, image_set, cache), devices)
    tx = make_optimizer(config.train, total_steps(config, steps))
    graphdef, state = init_state(config, keys, tx)
    run = Run(config, devices, task, graphdef, tx, image_set, splits, tables,
              parallel.replicate(keys, devices), cache, steps)
    return run, state


def _dense_training_set(config: Config, task: Task, image_set: data.ImageSet,
                        splits: dict[str, np.ndarray]
                        ) -> tuple[data.ImageSet, dict[str, np.ndarray]]:
    """The dense localiser's clean pool and splits: package photos (if asked) join the training
    split only; training ids become crop ids (`crops_per_image` per image and epoch)."""
    if image_set.images is None:
        raise ConfigError("model.name='localiser' needs decoded images: set data.cache=device "
                          "or host")
    n = len(image_set.names)
    if config.data.package_photos:
        image_set, added = data.add_package_photos(image_set, config.data.image_size,
                                                   task.crop.window)
        splits = dict(splits, train=np.concatenate(
            [splits["train"], np.arange(n, n + added, dtype=np.int32)]))
    if image_set.valid_hw is not None:
        small = image_set.valid_hw.min(axis=1) < task.crop.window
        if small.any():
            raise ConfigError(f"data.crop_size={task.crop.crop} / data.min_scale="
                              f"{task.crop.min_scale}: needs {task.crop.window} pixels, more "
                              f"than {image_set.names[int(np.argmax(small))]} has")
    if task.crop.window > config.data.image_size:
        raise ConfigError(f"data.crop_size / data.min_scale: a {task.crop.window}-pixel window "
                          f"does not fit data.image_size={config.data.image_size}")
    cpi = task.crops_per_image
    crop_ids = (splits["train"][:, None] * cpi + np.arange(cpi, dtype=np.int32)).reshape(-1)
    return image_set, dict(splits, train=crop_ids.astype(np.int32))


def choose_cache(config: Config, num_devices: int) -> str:
    """Where the decoded dataset lives: "device", "host" or "stream" (data.cache, or automatic
    from its size: every device holds a full copy, so device bytes scale with the count)."""
    d = config.data
    if d.source in data.SYNTHETIC_SOURCES:
        n = d.num_images
    elif d.source == "folder":
        n = len(data.list_image_files(d.dir))
    else:
        n = len(data.read_csv_rows(d.csv))
    n_bytes = n * d.image_size * d.image_size * 3
    cache = data.resolve_cache(d.cache, n_bytes * num_devices,
                               device_bytes_free=_device_bytes_free(jax.local_devices()[0]),
                               host_bytes_free=_host_bytes_free())
    # Synthetic images are generated, not read: there is nothing to stream from.
    return "host" if cache == "stream" and d.source in data.SYNTHETIC_SOURCES else cache


def _device_bytes_free(device) -> int | None:
    try:
        stats = device.memory_stats() or {}
    except Exception:  # CPU backends report nothing
        return None
    limit = stats.get("bytes_limit")
    return None if limit is None else limit - stats.get("bytes_in_use", 0)


def _host_bytes_free() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 8 << 30


class TrainStepper:
    """The pmapped K-step train function, compiled ahead of time once per K.

    Compiling explicitly (`lower().compile()`) keeps compile time out of the throughput
    figures (`compile_s` accumulates it) and gives the compiled step for cost analysis.
    The state argument is donated: its buffers are reused for the new state.
    """

    def __init__(self, run: Run):
        static = dict(graphdef=run.graphdef, tx=run.tx, task=run.task)
        self.run = run
        self.pmapped = parallel.pmap(functools.partial(train_steps, **static), run.devices,
                                     donate_argnums=(0,))
        self.compiled: dict[int, Any] = {}
        self.compile_s = 0.0

    def compile(self, state_repl: Any, batch: Mapping[str, jax.Array]) -> Any:
        k = batch["id"].shape[1]
        if k not in self.compiled:
            t0 = time.perf_counter()
            self.compiled[k] = self.pmapped.lower(state_repl, batch, self.run.tables,
                                                  self.run.keys).compile()
            self.compile_s += time.perf_counter() - t0
        return self.compiled[k]

    def __call__(self, state_repl: Any, batch: Mapping[str, jax.Array]) -> tuple[Any, dict]:
        return self.compile(state_repl, batch)(state_repl, batch, self.run.tables, self.run.keys)


def compiled_steps(run: Run) -> tuple[TrainStepper, Any]:
    """(the train stepper, the pmapped eval function)."""
    eval_fn = parallel.pmap(functools.partial(eval_step, graphdef=run.graphdef, task=run.task),
                            run.devices)
    return TrainStepper(run), eval_fn


def device_batch(run: Run, ids: np.ndarray, images: np.ndarray | None = None,
                 weight: np.ndarray | None = None, image_ids_per_id: int = 1
                 ) -> dict[str, jax.Array]:
    """Host ids int[K, B] (and streamed images uint8[K,B,H,W,3]) -> device arrays [D, K, B/D, ...].

    image_ids_per_id: ids are crop ids, `crops_per_image` per image (dense training).

    With the device cache only the ids travel; with the host cache the images are gathered
    here from the decoded-once array.
    """
    batch = {"id": ids.astype(np.int32)}
    if images is None and run.cache == "host":
        images = run.image_set.images[ids // image_ids_per_id]
    if images is not None:
        batch["image"] = images
    if weight is not None:
        batch["weight"] = weight
    return parallel.shard_steps(batch, run.devices)


def stream_images(run: Run, ids: np.ndarray) -> np.ndarray | None:
    """Images of `ids` int[K, B] decoded now when the run streams, else None (cached)."""
    if run.cache != "stream":
        return None
    return np.stack([run.image_set.loader(int(i)) for i in ids.reshape(-1)]).reshape(
        ids.shape + (run.config.data.image_size,) * 2 + (3,))


def evaluate(run: Run, params_repl: Any, eval_fn: Any, split: str) -> dict[str, float] | None:
    """Metrics of the replicated params on a whole split (padded to full batches)."""
    ids = run.splits.get(split)
    if ids is None or len(ids) == 0:
        return None
    batch_size = run.config.train.batch_size
    totals = None
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        pad = batch_size - len(chunk)
        weight = np.concatenate([np.ones(len(chunk), np.float32), np.zeros(pad, np.float32)])
        chunk = np.concatenate([chunk, np.full(pad, chunk[0], chunk.dtype)])
        batch = device_batch(run, chunk[None], stream_images(run, chunk[None]), weight[None])
        batch = jax.tree.map(lambda x: x[:, 0], batch)  # eval takes one step: drop K
        sums = parallel.unreplicate(eval_fn(params_repl, batch, run.tables, run.keys))
        totals = metrics.add(totals, sums)
    return metrics.finish(jax.device_get(totals))


def _check_finite(sums: Mapping[str, Any], where: str) -> None:
    loss = float(np.asarray(sums["loss"]))
    if not np.isfinite(loss):
        raise NonFiniteLoss(f"non-finite training loss ({loss}) {where}; stopped without "
                            "saving it — the last good checkpoint is intact")


def _summarise_epoch(epoch: int, step: int, train_sums: Mapping, val: Mapping | None,
                     images_per_s: float, wall_s: float, detect: bool) -> dict:
    train = metrics.finish(jax.device_get(train_sums))
    record = {"epoch": epoch, "step": step, "train_loss": train["loss"]}
    if val is not None:
        record["val_loss"] = val["loss"]
        if detect:
            record.update(val_accuracy=val["accuracy"], val_precision=val["precision"],
                          val_recall=val["recall"])
        else:
            record.update(val_distance=val["distance"], val_hit_rate=val["hit_rate"],
                          val_middle_distance=val["middle_distance"])
    record.update(train_images_per_s=images_per_s, wall_s=wall_s)
    return record


def validation_target(config: Config) -> tuple[str, str]:
    """The metric that picks the best checkpoint, and whether higher ("max") is better."""
    task = make_task(config)
    if task.detect:
        return "val_accuracy", "max"
    if task.dense:
        # The dense localiser's validation squares are all found within a few epochs (its
        # val_distance saturates near 0 on synthetic images); the edge loss keeps measuring.
        return "val_loss", "min"
    return "val_distance", "min"


def open_checkpoints(workdir: str, config: Config) -> ckpt_lib.RunCheckpoints:
    metric, mode = validation_target(config)
    return ckpt_lib.RunCheckpoints(os.path.join(workdir, "checkpoints"),
                                   keep=config.checkpoint.keep, best_metric=metric,
                                   best_mode=mode)


def train_and_evaluate(config: Config, workdir: str, *, fresh: bool = False,
                       progress: bool = True) -> dict:
    """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the summary.

    Writes config.json, metrics.jsonl (one line per epoch), checkpoints/ and summary.json
    (DESIGN §3.1). Only process 0 writes files.
    """
    from tqdm import tqdm  # progress output only

    t_start = time.perf_counter()
    os.makedirs(workdir, exist_ok=True)
    writer = jax.process_index() == 0
    with ckpt_lib.WorkdirLock(workdir):
        run, state = setup(config)
        manager = open_checkpoints(workdir, config)
        metrics_path = os.path.join(workdir, "metrics.jsonl")
        if fresh:
            manager.delete_all()
            for name in ("metrics.jsonl", "summary.json"):
                if os.path.exists(os.path.join(workdir, name)):
                    os.remove(os.path.join(workdir, name))
        try:
            shard_index, shard_count = parallel.process_shard()
            iterator = data.batch_iterator(
                # Each process reads its share of the global batch.
                run.splits["train"], config.train.batch_size // shard_count, seed=config.seed,
                num_epochs=config.train.epochs, shard_index=shard_index, shard_count=shard_count,
                loader=run.image_set.loader if run.cache == "stream" else None,
                workers=config.data.workers if run.cache == "stream" else 0)

            epoch_sums, epoch_time = None, 0.0
            restored = manager.restore(state, config) if not fresh else None
            if restored is not None:
                state = restored.state
                iterator.set_state(restored.data_state)
                epoch_sums = restored.epoch_sums
                epoch_time = restored.epoch_time
                _truncate_metrics(metrics_path, restored.epoch_done)
                print(f"resumed from step {int(state['step'])} in {workdir}", file=sys.stderr)
            if writer:
                with open(os.path.join(workdir, "config.json"), "w") as f:
                    json.dump(to_dict(config), f, indent=2, sort_keys=True)

            step = int(state["step"])
            last_step = total_steps(config, run.steps_per_epoch)
            state_repl = parallel.replicate(state, run.devices)
            if epoch_sums is not None:
                epoch_sums = parallel.replicate(epoch_sums, run.devices)
            del state
            train_fn, eval_fn = compiled_steps(run)
            images_per_step = config.train.batch_size
            bar = tqdm(total=last_step * images_per_step, initial=step * images_per_step,
                       unit="img", unit_scale=True, disable=not progress, dynamic_ncols=True,
                       file=sys.stderr, desc=config.name)
            last_log = step
            t_epoch = time.perf_counter()
            while step < last_step:
                epoch = step // run.steps_per_epoch
                k = _steps_this_dispatch(config, step, run.steps_per_epoch, last_step)
                host_batches = [next(iterator) for _ in range(k)]
                # The position after the last batch *consumed*: what a checkpoint must hold.
                data_state = iterator.get_state()
                ids = np.stack([b["id"] for b in host_batches])
                images = (np.stack([b["image"] for b in host_batches])
                          if "image" in host_batches[0] else None)
                batch = device_batch(run, ids, images,
                                     image_ids_per_id=run.task.crops_per_image)
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    compile_before = train_fn.compile_s
                    state_repl, sums = train_fn(state_repl, batch)
                    t_epoch += train_fn.compile_s - compile_before  # not training time
                # Summed on the device: no host round trip until the next log or checkpoint.
                epoch_sums = metrics.add(epoch_sums, sums)
                step += k
                bar.update(k * images_per_step)
                if step - last_log >= config.train.log_every:
                    host_sums = jax.device_get(parallel.unreplicate(epoch_sums))
                    _check_finite(host_sums, f"at step {step}")
                    bar.set_postfix(loss=f"{metrics.finish(host_sums)['loss']:.4g}")
                    last_log = step
                end_of_epoch = step % run.steps_per_epoch == 0
                periodic = (config.checkpoint.every_steps
                            and step % config.checkpoint.every_steps == 0)
                if not (end_of_epoch or periodic or step >= last_step):
                    continue
                if last_log != step:  # else fetched and checked just above
                    host_sums = jax.device_get(parallel.unreplicate(epoch_sums))
                    _check_finite(host_sums, f"at step {step}")
                elapsed = epoch_time + time.perf_counter() - t_epoch
                record = None
                if end_of_epoch:
                    t_val = time.perf_counter()
                    val = evaluate(run, state_repl["params"], eval_fn, "val")
                    record = _summarise_epoch(epoch + 1, step, host_sums, val,
                                              run.steps_per_epoch * images_per_step / elapsed,
                                              time.perf_counter() - t_start, run.task.detect)
                    # Where the epoch's time went (the checkpoint write is the rest of wall_s).
                    record.update(train_s=elapsed, val_s=time.perf_counter() - t_val)
                    if writer:
                        with open(metrics_path, "a") as f:
                            f.write(json.dumps(record) + "\n")
                    bar.write(_format_record(record), file=sys.stderr)
                manager.save(step, jax.device_get(parallel.unreplicate(state_repl)),
                             data_state=data_state,
                             epoch_sums=None if end_of_epoch else host_sums,
                             epoch_time=0.0 if end_of_epoch else elapsed,
                             epoch_done=epoch + 1 if end_of_epoch else epoch,
                             config=config, record=record)
                if end_of_epoch:
                    epoch_sums, epoch_time = None, 0.0
                    t_epoch = time.perf_counter()
        finally:
            manager.close()  # waits for an in-flight async save: the last good one lands
        bar.close()
        params = jax.device_get(parallel.unreplicate(state_repl["params"]))
        summary = _final_summary(run, state_repl, eval_fn, metrics_path, params,
                                 time.perf_counter() - t_start)
        summary["compile_s"] = train_fn.compile_s
        if writer:
            with open(os.path.join(workdir, "summary.json"), "w") as f:
                json.dump(summary, f, indent=2)
    return summary


def _steps_this_dispatch(config: Config, step: int, steps_per_epoch: int, total_steps: int
                         ) -> int:
    """K steps fused into the next call, never across an epoch end or a checkpoint."""
    k = min(config.train.steps_per_dispatch, steps_per_epoch - step % steps_per_epoch,
            total_steps - step)
    every = config.checkpoint.every_steps
    return min(k, every - step % every) if every else k


def _format_record(record: Mapping[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in record.items())


def _truncate_metrics(path: str, epochs_done: int) -> None:
    """Keeps the first `epochs_done` epoch lines: a resumed run rewrites the rest."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    kept = [line for line in lines if json.loads(line)["epoch"] <= epochs_done]
    with open(path, "w") as f:
        f.writelines(kept)


def _final_summary(run: Run, state_repl: Any, eval_fn: Any, metrics_path: str, params: Any,
                   wall_s: float) -> dict:
    history = report.read_metrics(metrics_path)
    key, mode = validation_target(run.config)
    better = max if mode == "max" else min
    scored = [r for r in history if key in r]
    summary = {
        "name": run.config.name,
        "final": history[-1] if history else None,
        "best": better(scored, key=lambda r: r[key]) if scored else None,
        "params_sha256": params_sha256(params),
        "num_params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
        "steps": int(parallel.unreplicate(state_repl["step"])),
        "wall_s": wall_s,
        "devices": [str(d) for d in run.devices],
        "num_images": len(run.image_set.names),
        "skipped_images": len(run.image_set.skipped),
        "cache": run.cache,
    }
    test = evaluate(run, state_repl["params"], eval_fn, "test")
    if test is not None:
        summary["test"] = test
    return summary


def restore_params(workdir: str, step: int | None = None) -> tuple[Config, nnx.Module, int]:
    """A trained model from a run directory: its config, the model, and the step restored.

    Takes checkpoint `step`, else the best by the validation metric, else the latest.
    """
    from anomaly_jax.config import from_dict
    config = from_dict(ckpt_lib.read_saved_config(workdir))
    tx = make_optimizer(config.train)
    graphdef, template = init_state(config, RunKeys.from_seed(config.seed), tx)
    manager = open_checkpoints(workdir, config)
    try:
        chosen = step if step is not None else manager.best_step()
        restored = manager.restore(template, None, step=chosen)
    finally:
        manager.close()
    if restored is None:
        raise ckpt_lib.CheckpointError(f"no checkpoint in {workdir}/checkpoints")
    return config, nnx.merge(graphdef, restored.state["params"]), restored.step
