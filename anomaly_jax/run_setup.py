"""Building a run from its config: devices, data, tables and keys on the devices, model and
optimizer state; the compiled steps, host batches moved to the devices, and evaluation of a split.

`Run` holds all of it; the loop in `anomaly_jax.train` and the tools (profile_throughput) use it.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from anomaly_jax import data, decoding, metrics, models, parallel, pipeline, seed_csv
from anomaly_jax.config import SYNTHETIC_SOURCES, Config
from anomaly_jax.errors import ConfigError
from anomaly_jax.steps import (RunKeys, Task, TrainState, eval_step, make_optimizer, make_task,
                               total_steps, train_steps)


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


def _too_few_images(config: Config, image_set: data.ImageSet, n_train: int) -> str:
    d, batch = config.data, config.train.batch_size
    found = f"{len(image_set.names)} usable images"
    if image_set.skipped:
        found += f" ({len(image_set.skipped)} more skipped as unreadable)"
    where = {"folder": f"folder {d.dir} has", "csv": f"{d.csv} lists"}.get(
        d.source, f"data.num_images={d.num_images} makes")
    return (f"{where} {found}, a training split of {n_train} after validation "
            f"(data.val_fraction={d.val_fraction:g}, data.test_fraction={d.test_fraction:g}); "
            f"train.batch_size={batch} needs at least {batch} training images: "
            + ("raise data.num_images or lower train.batch_size" if d.source not in
               ("folder", "csv") else "add images or lower train.batch_size"))


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
                              dtype=config.model.dtype, impl=config.model.impl,
                              width=config.model.width, target=config.model.target,
                              rngs=nnx.Rngs(params=keys.init))
    graphdef, params = nnx.split(model)
    state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
    return graphdef, state


def setup(config: Config) -> tuple[Run, TrainState]:
    """Devices, data (decoded once), tables on the devices, model and a fresh state."""
    devices = parallel.devices(config.train.num_devices)  # every process's, in a multi-process run
    parallel.check_batch_size(config.train.batch_size, len(devices))
    task = make_task(config)
    keys = RunKeys.from_seed(config.seed)
    cache = choose_cache(config, sum(d.process_index == jax.process_index() for d in devices))
    image_set = data.load_image_set(config.data, config.seed, decode=cache != "stream")
    n = len(image_set.names)
    splits = data.split_ids(n, config.data.val_fraction, config.data.test_fraction, config.seed)
    if task.dense:
        image_set, splits = _dense_training_set(config, task, image_set, splits)
    steps = pipeline.steps_per_epoch(len(splits["train"]), config.train.batch_size)
    if steps < 1:
        raise ConfigError(_too_few_images(config, image_set, len(splits["train"])))
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
    if d.source in SYNTHETIC_SOURCES:
        n = d.num_images
    elif d.source == "folder":
        n = len(decoding.list_image_files(d.dir))
    else:
        n = len(seed_csv.read_csv_rows(d.csv))
    n_bytes = n * d.image_size * d.image_size * 3
    cache = data.resolve_cache(d.cache, n_bytes * num_devices,
                               device_bytes_free=_device_bytes_free(jax.local_devices()[0]),
                               host_bytes_free=_host_bytes_free())
    # Synthetic images are generated, not read: there is nothing to stream from.
    return "host" if cache == "stream" and d.source in SYNTHETIC_SOURCES else cache


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
        args = (state_repl, batch, self.run.tables, self.run.keys)
        if jax.process_count() == 1:
            return self.compile(state_repl, batch)(*args)
        # Several processes: an ahead-of-time executable takes global arrays, while pmap
        # itself joins each process's local arrays into the global computation. Call pmap;
        # its first call per K (compile + one step) counts as compile time.
        k = batch["id"].shape[1]
        if k in self.compiled:
            return self.pmapped(*args)
        t0 = time.perf_counter()
        out = jax.block_until_ready(self.pmapped(*args))
        self.compiled[k] = self.pmapped
        self.compile_s += time.perf_counter() - t0
        return out


def compiled_steps(run: Run) -> tuple[TrainStepper, Any]:
    """(the train stepper, the pmapped eval function)."""
    eval_fn = parallel.pmap(functools.partial(eval_step, graphdef=run.graphdef, task=run.task),
                            run.devices)
    return TrainStepper(run), eval_fn


def device_batch(run: Run, ids: np.ndarray, images: np.ndarray | None = None,
                 weight: np.ndarray | None = None, image_ids_per_id: int = 1
                 ) -> dict[str, jax.Array]:
    """This process's slice of K global batches -> global device arrays [D, K, B/D, ...].

    ids: int[K, b] (b = B / processes), streamed images uint8[K, b, H, W, 3], weight [K, b].

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
    """Metrics of the replicated params on a whole split (padded to full global batches):
    `metrics.finish` of the sums, plus "by_kind" {kind: finished figures} when the eval step
    returns per-kind sums.

    Each process scores its slice of every batch; the sums add up over all devices.
    """
    ids = run.splits.get(split)
    if ids is None or len(ids) == 0:
        return None
    batch_size = run.config.train.batch_size
    mine = parallel.process_slice(batch_size)
    totals = None
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        pad = batch_size - len(chunk)
        weight = np.concatenate([np.ones(len(chunk), np.float32), np.zeros(pad, np.float32)])
        chunk = np.concatenate([chunk, np.full(pad, chunk[0], chunk.dtype)])
        chunk, weight = chunk[None, mine], weight[None, mine]  # one step (K = 1)
        batch = device_batch(run, chunk, stream_images(run, chunk), weight)
        # Summed on the devices (each holds the same all-reduced sums): one host read at the end.
        totals = metrics.add(totals, eval_fn(params_repl, batch, run.tables, run.keys))
    totals = parallel.unreplicate(totals)
    # "<kind>/<sum>" keys (the mask target on kind "mix") finish into one row per kind.
    out = metrics.finish({k: v for k, v in totals.items() if "/" not in k})
    by_kind = {k: v for k, v in totals.items() if "/" in k}
    if by_kind:
        out["by_kind"] = metrics.finish_by_kind(by_kind)
    return out
