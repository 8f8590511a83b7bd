"""Data parallelism over every device of every process: the one module that knows about
pmap, devices and processes.

One run may span several processes (hosts), each with its own local devices, on JAX's own
runtime (`jax.distributed`). Everything device- or process-shaped goes through here:
starting the runtime, picking the devices, replicating the train state, feeding each process's
slice of a global batch, the reductions inside the steps, and who writes files.

Arrays "replicated" or "sharded" here carry a leading axis over this process's devices, the
layout `jax.pmap` expects from each process (it joins them into one computation over every
device of the run); they are placed with a `NamedSharding` over a 1-D mesh named `AXIS`.

Reductions are *ordered*: `ordered_sum` gathers every device's value and adds them in device
order on each device, so a result does not depend on how the devices are spread over
processes (a cross-process `psum` adds in another order: measured 1 x 4 and 2 x 2 devices
differ in the last bits; the gathered sum is identical).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from anomaly_jax.errors import ConfigError

AXIS = "batch"  # the pmap axis name used by the reductions and lax.axis_index in the steps
# JAX's own heartbeat timeout (its default): after it JAX declares a silent peer dead.
HEARTBEAT_TIMEOUT_S = 100
# The run's own, faster check (see `_start_peer_watch`).
# ANOMALY_JAX_PEER_TIMEOUT_S overrides the timeout (the tests use a short one).
PEER_BEAT_S = 1.0
PEER_TIMEOUT_S = float(os.environ.get("ANOMALY_JAX_PEER_TIMEOUT_S", "30"))
_ALIVE = "anomaly_jax/alive"
_done = threading.Event()
# Environments whose launcher starts one process per task and that JAX's own cluster
# detection understands (`jax.distributed.initialize()` with no arguments): (variable holding
# the task count, a variable that must also be set). SLURM's *step* count (set by srun), not
# the allocation's SLURM_NTASKS: a lone `python` inside `salloc -n 4` is one process.
CLUSTER_ENV = (("SLURM_STEP_NUM_TASKS", "SLURM_PROCID"), ("OMPI_COMM_WORLD_SIZE", None))


def _cluster_detected() -> bool:
    for size_var, also in CLUSTER_ENV:
        if int(os.environ.get(size_var, "1") or 1) > 1 and (also is None or also in os.environ):
            return True
    return "JAX_COORDINATOR_ADDRESS" in os.environ


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Starts JAX's multi-process runtime when this is one process of several; else nothing.

    Must run before anything touches a device. With a coordinator (host:port), the process
    count and this process's id are needed too. Without, a SLURM / Open MPI job of more than
    one task (or JAX_COORDINATOR_ADDRESS) is detected by JAX itself. Returns whether the
    runtime was started. CPU processes talk through gloo (part of jaxlib).
    """
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise ConfigError("--coordinator, --num-processes and --process-id go together: "
                          "give all three, or none for cluster auto-detection")
    if not any(given) and not _cluster_detected():
        return False
    if all(given) and not 0 <= process_id < num_processes:
        raise ConfigError(f"--process-id {process_id}: expected 0 <= id < --num-processes "
                          f"{num_processes}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes, process_id,
                               heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
    _start_peer_watch()
    return True


def peer_lost_message(detail: str, process: int | None = None) -> str:
    detail = detail.strip().splitlines()[0][:200] if detail.strip() else "no detail"
    process = jax.process_index() if process is None else process
    return (f"error: process {process} lost contact with the other processes of "
            f"this run ({detail}); rerun every process to resume from the last checkpoint")


def _start_peer_watch() -> None:
    """A daemon thread that ends this process with one line when another stops answering.

    JAX's own reaction to a dead peer, after its heartbeat timeout, is a fatal C++ log with a
    stack trace (exit 134), and a process waiting in an Orbax barrier sees nothing sooner.
    Here each process bumps a counter in JAX's key-value store every `PEER_BEAT_S`; a counter
    that has not moved for `PEER_TIMEOUT_S` (or a store that stopped answering: process 0
    holds it) means the run is broken. `mark_done` tells the others this process ended well.
    """
    from jax._src import distributed
    client = distributed.global_state.client
    me, n = jax.process_index(), jax.process_count()

    def watch():
        beat, seen = 0, {}
        while True:
            beat += 1
            now = time.monotonic()
            try:
                if _done.is_set():
                    client.key_value_set(f"{_ALIVE}/{me}", "done", allow_overwrite=True)
                    return
                client.key_value_set(f"{_ALIVE}/{me}", str(beat), allow_overwrite=True)
                for p in range(n):
                    if p == me:
                        continue
                    try:
                        value = client.key_value_try_get(f"{_ALIVE}/{p}")
                    except Exception:  # noqa: BLE001 -- not written yet: still starting
                        value = None
                    if value == "done":
                        continue
                    if value is None or seen.get(p, (None,))[0] != value:
                        seen[p] = (value, now)
                    elif now - seen[p][1] > PEER_TIMEOUT_S:
                        _exit_peer_lost(f"process {p} has not answered for {PEER_TIMEOUT_S:g} s",
                                        me)
            except Exception as e:  # noqa: BLE001 -- the store itself is gone
                if _done.is_set():
                    return
                _exit_peer_lost(f"the coordinator stopped answering: {e}", me)
            time.sleep(PEER_BEAT_S)

    threading.Thread(target=watch, name="anomaly_jax-peer-watch", daemon=True).start()


def _exit_peer_lost(detail: str, process: int) -> None:
    print(peer_lost_message(detail, process), file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)


def mark_done() -> None:
    """This process finished its part of the run: the others' watch stops counting it."""
    _done.set()
    if jax.process_count() > 1:
        from jax._src import distributed
        try:
            distributed.global_state.client.key_value_set(
                f"{_ALIVE}/{jax.process_index()}", "done", allow_overwrite=True)
        except Exception:  # noqa: BLE001 -- the others are gone already; nothing to tell
            pass


def devices(num_devices: int = 0) -> list[jax.Device]:
    """The run's devices: every device of every process for 0, else this (only) process's
    first `num_devices`."""
    local = jax.local_devices()
    if num_devices == 0:
        return jax.devices()
    if jax.process_count() > 1:
        raise ConfigError(f"train.num_devices={num_devices}: a run of "
                          f"{jax.process_count()} processes uses all their devices (set 0)")
    if not 0 < num_devices <= len(local):
        raise ConfigError(f"train.num_devices={num_devices}: this process has "
                          f"{len(local)} local devices (0 means all)")
    return local[:num_devices]


def process_shard() -> tuple[int, int]:
    """(index, count) of this JAX process, for sharding the dataset between hosts."""
    return jax.process_index(), jax.process_count()


def is_writer() -> bool:
    """Whether this process writes the run's files (process 0 does; the others only compute)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Every process waits here until all have arrived (nothing to wait for in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def check_batch_size(global_batch: int, num_devices: int) -> int:
    """The per-device batch; a global batch that does not divide is a ConfigError."""
    if global_batch % num_devices:
        lo = global_batch - global_batch % num_devices
        raise ConfigError(
            f"train.batch_size={global_batch} does not divide over {num_devices} devices; "
            f"use a multiple of {num_devices} such as {max(lo, num_devices)} or "
            f"{lo + num_devices} (or set train.num_devices)")
    return global_batch // num_devices


def _local(devices: Sequence[jax.Device]) -> list[jax.Device]:
    """This process's devices among `devices` (all of them in a single-process run)."""
    return [d for d in devices if d.process_index == jax.process_index()]


def _sharding(devices: Sequence[jax.Device]) -> NamedSharding:
    return NamedSharding(Mesh(np.array(_local(devices)), (AXIS,)), PartitionSpec(AXIS))


def replicate(tree: Any, devices: Sequence[jax.Device]) -> Any:
    """Every leaf x -> x[None] repeated on each of this process's devices: [D_local, *x.shape].

    Every process passes the same value.
    """
    sharding = _sharding(devices)
    d = len(_local(devices))

    def put(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(x)),
                                            impl=jax.random.key_impl(x))
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        stacked = (np.broadcast_to(x[None], (d,) + x.shape) if isinstance(x, np.ndarray)
                   else jnp.broadcast_to(x[None], (d,) + x.shape))
        return jax.device_put(stacked, sharding)

    return jax.tree.map(put, tree)


def unreplicate(tree: Any) -> Any:
    """The first local device's copy of a replicated tree, leading axis dropped, on the host:
    numpy arrays (a PRNG key leaf stays a key array).

    Reads the device's own buffer: indexing the global array (`x[0]`) would dispatch one
    compiled gather per leaf, ~1.3 ms each on CPU - more than a small run's step when a state
    of dozens of leaves is fetched at every log and checkpoint.
    """
    def first(x):
        if not isinstance(x, jax.Array):
            return np.asarray(x)[0]
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(first(jax.random.key_data(x)),
                                            impl=jax.random.key_impl(x))
        return np.asarray(x.addressable_data(0))[0]
    return jax.tree.map(first, tree)


def shard_steps(tree: Any, devices: Sequence[jax.Device]) -> Any:
    """This process's slice of K stacked global batches -> its devices' K-step batches:
    [K, b, ...] -> [D_local, K, b/D_local, ...], b = B / processes (`process_slice`)."""
    sharding = _sharding(devices)
    d = len(_local(devices))

    def put(x):
        x = np.asarray(x)
        k, b = x.shape[:2]
        per_device = x.reshape((k, d, b // d) + x.shape[2:]).swapaxes(0, 1)
        return jax.device_put(np.ascontiguousarray(per_device), sharding)

    return jax.tree.map(put, tree)


def process_slice(global_rows: int) -> slice:
    """The rows of a global batch of `global_rows` that this process feeds."""
    p, n = process_shard()
    per = global_rows // n
    return slice(p * per, (p + 1) * per)


def ordered_sum(tree: Any) -> Any:
    """Inside the pmapped steps: the sum over all devices, added in device order, on every
    device. Unlike `lax.psum` its bits do not depend on how devices map to processes."""
    return jax.tree.map(lambda x: jnp.sum(lax.all_gather(x, AXIS), axis=0), tree)


def ordered_mean(tree: Any) -> Any:
    """`ordered_sum` divided by the device count (the data-parallel gradient average)."""
    n = lax.psum(1, AXIS)
    return jax.tree.map(lambda x: x / n, ordered_sum(tree))


def pmap(fn: Callable, devices: Sequence[jax.Device], *, donate_argnums=()) -> Callable:
    """jax.pmap over `devices` (all processes' when the run spans several) on the axis `AXIS`."""
    return jax.pmap(fn, axis_name=AXIS, devices=list(devices), donate_argnums=donate_argnums)


# What a collective or the coordination service says when another process of the run is gone.
_LOST_PEER_SIGNS = ("gloo", "connection closed", "connection reset", "heartbeat", "unavailable",
                    "coordination service", "barrier")


def lost_peer(error: BaseException) -> bool:
    """Whether `error` is JAX's runtime (a gloo collective, the coordination service, an Orbax
    barrier) reporting that another process of the run died. Their exception types vary
    (JaxRuntimeError, ValueError, TimeoutError); their messages say it."""
    text = f"{error} {error.__cause__ or ''}".lower()
    return any(sign in text for sign in _LOST_PEER_SIGNS)
