"""Checkpoints of a run (Orbax `CheckpointManager`), and the lock that guards a workdir.

One checkpoint is one Orbax composite with three items:
  state      the (unreplicated) train state: params, optimizer state, step
  data_state the grain iterator's position after the last consumed batch (get_state())
  meta       JSON: the resolved config, epoch bookkeeping, the epoch's metric sums so far
The PRNG state is a pure function of (config.seed, step), so config + step restore it exactly.

Saves are asynchronous and atomic (Orbax writes to a temporary folder and renames it when
complete), so a run killed mid-write leaves the previous checkpoints untouched. Kept: the
latest `keep` plus the best by the validation metric.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import re
import shutil
import sys
import threading
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from anomaly_jax import parallel
from anomaly_jax.config import Config, field_paths, to_dict
from anomaly_jax.errors import (STORAGE_ERRNOS, CheckpointError, ConfigError, StorageError,
                                WorkdirBusy)

# Fields a resumed run may change without changing what the run means.
RESUMABLE_CHANGES = ("train.epochs", "train.max_steps", "train.log_every", "train.num_devices",
                     "model.impl",
                     "train.steps_per_dispatch", "checkpoint.every_steps", "checkpoint.keep",
                     "data.cache", "data.workers")
# The longest a run waits for its last checkpoint to land before giving up with one line.
CLOSE_TIMEOUT_S = float(os.environ.get("ANOMALY_JAX_CLOSE_TIMEOUT_S", 600))


class WorkdirLock:
    """An exclusive lock on a workdir, held for the life of a run.

    It is an OS advisory lock (flock) on `workdir/.lock`: the kernel releases it when the
    holding process exits in any way, SIGKILL included, so a dead run never leaves it stuck.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, ".lock")
        self._file = None

    def __enter__(self) -> "WorkdirLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise WorkdirBusy(f"{os.path.dirname(self.path)} is in use by a live run "
                              f"(pid {holder}); wait for it to finish or use another --workdir"
                              ) from None
        self._file.truncate(0)
        self._file.write(str(os.getpid()))
        self._file.flush()
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


@dataclasses.dataclass
class Restored:
    step: int
    state: Any
    data_state: dict
    epoch_sums: dict | None  # metric sums of the unfinished epoch, None at an epoch end
    epoch_time: float  # seconds already spent in the unfinished epoch
    epoch_done: int  # epochs completed (metrics.jsonl lines that stay valid)


def config_differences(saved: Mapping, config: Config) -> list[str]:
    """Dotted keys whose values differ between a saved config dict and `config`,
    ignoring the fields a resume may change."""
    current = {k: v for k, (_, v) in field_paths(config).items()}
    flat_saved = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, Mapping):
                walk(v, prefix + k + ".")
            else:
                flat_saved[prefix + k] = v

    walk(saved)
    # A field added to the schema after the run was saved held its default then (config.py
    # adds fields only with defaults that keep existing runs unchanged).
    defaults = {k: v for k, (_, v) in field_paths(Config()).items()}
    keys = sorted(set(current) | set(flat_saved))
    return [k for k in keys if k not in RESUMABLE_CHANGES
            and flat_saved.get(k, defaults.get(k)) != current.get(k)]


class RunCheckpoints:
    """Save/restore a run's checkpoints under `directory` (one per step)."""

    def __init__(self, directory: str, *, keep: int, best_metric: str, best_mode: str):
        self.directory = os.path.abspath(directory)
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            # Orbax would train an epoch, fail in its async save and then hang on close.
            raise CheckpointError(f"{self.directory} is a file, not a folder of checkpoints; "
                                  "move it away or use another --workdir")
        self.best_metric = best_metric
        preservation = policies.AnyPreservationPolicy([
            policies.LatestN(keep),
            policies.BestN(get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min",
                           n=1, keep_checkpoints_without_metrics=False),
        ])
        # Process 0 sets broken checkpoints aside; every process then sees the same folder.
        before = _set_aside(self.directory)
        parallel.barrier("checkpoints listed")
        if parallel.is_writer():
            _quarantine_unreadable(self.directory)
        parallel.barrier("checkpoints set aside")
        self.quarantined = sorted(_set_aside(self.directory) - before)
        self.manager = ocp.CheckpointManager(
            self.directory,
            # best_fn makes Orbax write each checkpoint's metrics, so the best one is known
            # after a restart too; what is kept is decided by `preservation` alone.
            options=ocp.CheckpointManagerOptions(preservation_policy=preservation,
                                                 best_fn=lambda m: m[best_metric],
                                                 best_mode=best_mode,
                                                 enable_async_checkpointing=True),
            item_names=("state", "data_state", "meta"))

    def save(self, step: int, state: Any, *, data_state: dict, epoch_sums: Mapping | None,
             epoch_time: float, epoch_done: int, config: Config,
             record: Mapping | None) -> None:
        """Starts an asynchronous save of a host (unreplicated) state; returns at once."""
        meta = {
            "config": to_dict(config),
            "epoch_done": epoch_done,
            "epoch_time": epoch_time,
            "epoch_sums": None if epoch_sums is None else
            {k: float(np.asarray(v)) for k, v in epoch_sums.items()},
        }
        metrics = None
        if record is not None and self.best_metric in record:
            metrics = {self.best_metric: float(record[self.best_metric])}
        try:
            # Also where the previous asynchronous save's failure surfaces.
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data_state=ocp.args.JsonSave(data_state),
                meta=ocp.args.JsonSave(meta)), metrics=metrics)
        except Exception as e:  # noqa: BLE001 -- a storage failure becomes one line
            raise self._storage_error(e) or e

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def restore(self, template_state: Any, config: Config | None, step: int | None = None
                ) -> Restored | None:
        """The latest usable checkpoint (or `step`), None when there is none.

        An unreadable checkpoint is reported in one line and the previous one is tried.
        With `config`, a checkpoint whose config differs in a field that changes the run's
        meaning is refused (ConfigError listing the fields).
        """
        if step is not None and step not in self.steps():
            saved = ", ".join(map(str, self.steps())) or "none"
            raise CheckpointError(f"no checkpoint at step {step} in {self.directory} "
                                  f"(saved steps: {saved})")
        steps = [step] if step is not None else sorted(self.steps(), reverse=True)
        if not steps and self.quarantined:
            raise CheckpointError(
                f"no usable checkpoint in {self.directory} (unreadable: "
                f"{', '.join(self.quarantined)}); rerun with --fresh to start over")
        if not steps:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template_state)
        failures = []
        for s in steps:
            try:
                meta = self.manager.restore(s, args=ocp.args.Composite(
                    meta=ocp.args.JsonRestore()))["meta"]
            except Exception as e:  # a truncated or half-written checkpoint
                failures.append(s)
                print(f"checkpoint {self.directory}/{s} is unreadable ({_reason(e)}); "
                      "trying the previous one", file=sys.stderr)
                continue
            if config is not None:
                diff = config_differences(meta["config"], config)
                if diff:
                    raise ConfigError(
                        f"{self.directory} holds a run with a different config in: "
                        f"{', '.join(diff)}; use the same settings to resume, or --fresh to "
                        "start over")
            try:
                items = self.manager.restore(s, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract),
                    data_state=ocp.args.JsonRestore()))
            except Exception as e:
                failures.append(s)
                print(f"checkpoint {self.directory}/{s} is unreadable ({_reason(e)}); "
                      "trying the previous one", file=sys.stderr)
                continue
            return Restored(step=s, state=items["state"], data_state=items["data_state"],
                            epoch_sums=meta["epoch_sums"], epoch_time=meta["epoch_time"],
                            epoch_done=meta["epoch_done"])
        raise CheckpointError(
            f"no usable checkpoint in {self.directory} (tried steps "
            f"{', '.join(map(str, failures))}); rerun with --fresh to start over")

    def close(self) -> None:
        """Waits (at most CLOSE_TIMEOUT_S) for the save in flight, then closes the manager.

        A failed save is raised here: StorageError for a full or read-only disk."""
        failure: list[BaseException] = []

        def close():
            try:
                self.manager.close()
            except BaseException as e:  # noqa: BLE001 -- handed to the caller's thread
                failure.append(e)

        closer = threading.Thread(target=close, name="anomaly_jax-checkpoint-close",
                                  daemon=True)
        closer.start()
        closer.join(CLOSE_TIMEOUT_S)
        if closer.is_alive():
            raise CheckpointError(
                f"the last checkpoint save in {self.directory} did not finish within "
                f"{CLOSE_TIMEOUT_S:g} s (a stalled disk?); the checkpoints before it are kept")
        if failure:
            raise self._storage_error(failure[0]) or failure[0]

    def _storage_error(self, error: BaseException) -> StorageError | None:
        """A StorageError if Orbax failed because the disk refused a write, else None."""
        text = str(error)
        code = re.search(r"os_error_code='(\d+)'", text)
        number = int(code.group(1)) if code else getattr(error, "errno", None)
        if number is None and "RESOURCE_EXHAUSTED" in text:
            number = errno.ENOSPC
        if number not in STORAGE_ERRNOS:
            return None
        kept = self.steps()
        previous = (f"checkpoint {kept[-1]} is intact" if kept else "no checkpoint was kept")
        return StorageError(
            f"{self.directory}: a checkpoint could not be written ({os.strerror(number)}); "
            f"{previous} — free space or fix the permissions, then rerun to resume")


def delete_checkpoints(directory: str) -> None:
    """Deletes every checkpoint of a run, the unreadable ones set aside included (--fresh)."""
    shutil.rmtree(directory, ignore_errors=True)


def _set_aside(directory: str) -> set[str]:
    """The step folders set aside as unreadable (`<step>.unreadable`)."""
    if not os.path.isdir(directory):
        return set()
    return {n for n in os.listdir(directory) if n.endswith(".unreadable")}


def _quarantine_unreadable(directory: str) -> list[str]:
    """Sets aside step folders whose JSON metadata cannot be read, renamed `<step>.unreadable`.

    Orbax reads every checkpoint's metadata when it opens a directory and fails outright on
    a broken one; setting it aside (not deleting it) lets the previous checkpoints be used.
    Returns the new names; reports each in one line.
    """
    if not os.path.isdir(directory):
        return []
    moved = []
    for name in sorted(os.listdir(directory)):
        step_dir = os.path.join(directory, name)
        if not (name.isdigit() and os.path.isdir(step_dir)):
            continue
        reason = None
        # The JSON files Orbax (metadata, metrics) and `restore` (our meta item) read first.
        json_files = [os.path.join(step_dir, "_CHECKPOINT_METADATA")] + [
            os.path.join(step_dir, item, name) for item, name in (("metrics", "metrics"),
                                                                  ("meta", "metadata"))
            if os.path.isdir(os.path.join(step_dir, item))]
        for path in json_files:
            try:
                with open(path) as f:
                    json.load(f)
            except (OSError, ValueError) as e:
                reason = f"{os.path.relpath(path, directory)}: {type(e).__name__}"
                break
        if reason:
            os.rename(step_dir, step_dir + ".unreadable")
            moved.append(name + ".unreadable")
            print(f"checkpoint {step_dir} is unreadable ({reason}); set aside as "
                  f"{name}.unreadable, trying the previous one", file=sys.stderr)
    return moved


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def read_saved_config(workdir: str) -> dict:
    """The config.json of a run directory, as a dict."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise CheckpointError(f"{path} not found: is {workdir} a run directory?")
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:  # a torn or hand-edited file
        raise CheckpointError(f"{path} is not valid JSON ({e}); restore it from the run's "
                              "checkpoints/*/meta or rerun the training") from None

