"""Data parallelism over local devices: the one module that knows about pmap and devices.

Everything device-shaped goes through here: picking devices, replicating the train state,
splitting a global batch over devices, and per-process sharding for several hosts. Moving
to `jit` + `NamedSharding` later should only change this file.

Arrays "replicated" or "sharded" here carry a leading device axis of size D, the layout
`jax.pmap` expects; they are placed with a `NamedSharding` over a 1-D mesh named `AXIS`,
which is what JAX's pmap (built on shard_map since JAX 0.8) consumes without copies.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from anomaly_jax.config import ConfigError

AXIS = "batch"  # the pmap axis name used by lax.pmean / lax.axis_index in the steps


def local_devices(num_devices: int = 0) -> list[jax.Device]:
    """The first `num_devices` local devices (all of them for 0)."""
    devices = jax.local_devices()
    if num_devices < 0 or num_devices > len(devices):
        raise ConfigError(f"train.num_devices={num_devices}: this process has "
                          f"{len(devices)} local devices (0 means all)")
    return devices[:num_devices] if num_devices else devices


def process_shard() -> tuple[int, int]:
    """(index, count) of this JAX process, for sharding the dataset between hosts."""
    return jax.process_index(), jax.process_count()


def check_batch_size(global_batch: int, num_devices: int) -> int:
    """The per-device batch; a global batch that does not divide is a ConfigError."""
    if global_batch % num_devices:
        lo = global_batch - global_batch % num_devices
        raise ConfigError(
            f"train.batch_size={global_batch} does not divide over {num_devices} devices; "
            f"use a multiple of {num_devices} such as {max(lo, num_devices)} or "
            f"{lo + num_devices} (or set train.num_devices)")
    return global_batch // num_devices


def _sharding(devices: Sequence[jax.Device]) -> NamedSharding:
    return NamedSharding(Mesh(np.array(devices), (AXIS,)), PartitionSpec(AXIS))


def replicate(tree: Any, devices: Sequence[jax.Device]) -> Any:
    """Every leaf x -> x[None] repeated on each device: shape [D, *x.shape]."""
    sharding = _sharding(devices)
    d = len(devices)

    def put(x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(x)),
                                            impl=jax.random.key_impl(x))
        stacked = (np.broadcast_to(x[None], (d,) + x.shape) if isinstance(x, np.ndarray)
                   else jnp.broadcast_to(x[None], (d,) + x.shape))
        return jax.device_put(stacked, sharding)

    return jax.tree.map(put, tree)


def unreplicate(tree: Any) -> Any:
    """The first device's copy of a replicated tree (leading axis dropped)."""
    return jax.tree.map(lambda x: x[0], tree)


def shard_steps(tree: Any, devices: Sequence[jax.Device]) -> Any:
    """K stacked global batches -> per-device K-step batches: [K, B, ...] -> [D, K, B/D, ...]."""
    sharding = _sharding(devices)
    d = len(devices)

    def put(x):
        x = np.asarray(x)
        k, b = x.shape[:2]
        per_device = x.reshape((k, d, b // d) + x.shape[2:]).swapaxes(0, 1)
        return jax.device_put(np.ascontiguousarray(per_device), sharding)

    return jax.tree.map(put, tree)


def pmap(fn: Callable, devices: Sequence[jax.Device], *, donate_argnums=()) -> Callable:
    """jax.pmap over `devices` on the axis `AXIS`."""
    return jax.pmap(fn, axis_name=AXIS, devices=list(devices), donate_argnums=donate_argnums)
