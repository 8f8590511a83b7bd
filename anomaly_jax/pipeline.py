"""The grain batch pipeline: checkpointable iterators of batches of example ids.

Batching (`batch_iterator`): epochs never mix; each epoch is a fresh permutation derived only
from (seed, epoch) by grain's index shuffle, so the same on every machine and for every worker
count. A global batch of `batch_size * shard_count` consecutive ids of that permutation is
cut into `shard_count` per-process slices, so the sequence of global batches does not depend
on how many processes share it.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable

import grain
import numpy as np

from anomaly_jax.decoding import MAX_WORKERS, _mp_prefetch, resolve_workers
from anomaly_jax.errors import DataError


def steps_per_epoch(n_ids: int, batch_size: int, shard_count: int = 1) -> int:
    """Full batches per epoch and process: floor(n_ids / (batch_size * shard_count)).

    batch_size is the per-process batch (the global batch is batch_size * shard_count).
    """
    return n_ids // (batch_size * shard_count)


def _epoch_seed(seed: int, epoch: int) -> int:
    # grain's own repeat() reshuffles with seed + epoch, which makes (seed, epoch + 1) equal to
    # (seed + 1, epoch); hashing both through SeedSequence keeps runs with nearby seeds apart.
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _shard_positions(n: int, batch_size: int, shard_index: int, shard_count: int,
                     drop_remainder: bool) -> np.ndarray:
    """Positions, within one epoch's order, that this shard takes, in order."""
    global_batch = batch_size * shard_count
    used = (n // global_batch) * global_batch if drop_remainder else n
    positions = np.arange(used, dtype=np.int64)
    return positions[(positions // batch_size) % shard_count == shard_index]


@dataclasses.dataclass(frozen=True)
class _EpochBatch:
    """grain map: batch number k -> {"id": int32[b]} (epoch k // batches_per_epoch)."""
    ids: np.ndarray
    positions: np.ndarray
    batch_size: int
    batches_per_epoch: int
    seed: int
    shuffle: bool

    def __call__(self, k: int) -> dict[str, np.ndarray]:
        epoch, j = divmod(int(k), self.batches_per_epoch)
        order = grain.MapDataset.source(self.ids)
        if self.shuffle:
            order = order.shuffle(seed=_epoch_seed(self.seed, epoch))
        chunk = self.positions[j * self.batch_size:(j + 1) * self.batch_size]
        return {"id": np.array([order[int(p)] for p in chunk], np.int32)}


@dataclasses.dataclass(frozen=True)
class _LoadImages:
    """grain map: adds "image": uint8[b, S, S, 3] from the loader."""
    loader: Callable[[int], np.ndarray]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = np.stack([self.loader(int(i)) for i in batch["id"]])
        return {"id": batch["id"], "image": images}


def batch_iterator(ids: np.ndarray, batch_size: int, *, seed: int, num_epochs: int,
                   shuffle: bool = True, drop_remainder: bool = True, shard_index: int = 0,
                   shard_count: int = 1, loader: Callable[[int], np.ndarray] | None = None,
                   workers: int = 0) -> grain.DatasetIterator:
    """A checkpointable grain iterator over `num_epochs` epochs of `ids`.

    Yields {"id": int32[b]} (+ "image": uint8[b, S, S, 3] when `loader` is given, decoded in
    `workers` grain processes with prefetch; -1: min(cpus, 8); 0: threads here).
    ids: int[N]; batch_size: this process's batch. Each epoch is its own permutation of ids
    (from seed and epoch only); global batch s of an epoch is positions
    [s*B*P, (s+1)*B*P) of it, and shard p takes the p-th B of those. With drop_remainder,
    each epoch yields exactly steps_per_epoch(N, B, P) batches per shard, and the P shards
    together cover B*P*steps distinct ids of the epoch. Without it, the last batches may be
    short (and shards may differ in length).
    `get_state()` / `set_state()` (or grain.checkpoint.CheckpointSave/Restore) resume at the
    next batch; restore into an iterator built with the same arguments (same `workers`).
    """
    ids = np.asarray(ids, np.int32).reshape(-1)
    if batch_size < 1 or num_epochs < 1:
        raise DataError(f"batch_size={batch_size}, num_epochs={num_epochs}: expected >= 1")
    if not 0 <= shard_index < shard_count:
        raise DataError(f"shard_index={shard_index}: expected 0 <= index < {shard_count}")
    if not 0 <= seed < 2**32:
        raise DataError(f"seed={seed}: expected 0 <= seed < 2**32")
    positions = _shard_positions(len(ids), batch_size, shard_index, shard_count,
                                 drop_remainder)
    batches_per_epoch = math.ceil(len(positions) / batch_size)
    if batches_per_epoch == 0:
        raise DataError(f"{len(ids)} ids make no batch of {batch_size} x {shard_count} "
                        "shard(s); lower the batch size or add data")
    ds = grain.MapDataset.range(num_epochs * batches_per_epoch).map(
        _EpochBatch(ids, positions, batch_size, batches_per_epoch, seed, shuffle))
    workers = resolve_workers(workers) if loader is not None else 0
    threads = 0
    if loader is not None:
        ds = ds.map(_LoadImages(loader))
        threads = 1 if workers else min(os.cpu_count() or 1, MAX_WORKERS)
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                 prefetch_buffer_size=max(2, 2 * threads)))
    if workers:
        it_ds = _mp_prefetch(it_ds, workers, buffer=2)  # elements are whole batches here
    return iter(it_ds)
