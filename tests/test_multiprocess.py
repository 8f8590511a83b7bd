"""Several processes, one run (jax.distributed on 127.0.0.1, gloo collectives, simulated CPU
devices): 2 processes x 1 device give the same parameters and per-epoch metrics, bit for bit,
as this test process's 2 devices; a process that dies makes the other stop with one line
within 2 minutes (here: a 6 s peer timeout), and a rerun of every process resumes to the same final parameters.

Why 2 x 1 against 1 x 2 and not 2 x 2 against 1 x 4: on XLA:CPU a device's own arithmetic
depends on how many devices its process simulates (same HLO, same inputs: conv weight
gradients differ in the last bits between 4 devices per process and 1 or 2; 1 and 2 agree),
so 1 x 4 cannot match 2 x 2 bit for bit on this backend whatever the reduction does.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import pytest

from anomaly_jax import train
from anomaly_jax.config import apply_overrides
from conftest import subprocess_xla_flags
from experiments.configs import get_config
from experiments.launch import free_port

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMING_KEYS = ("train_images_per_s", "wall_s", "train_s", "val_s")
# 24 images at 64x64: 20 train / 4 val, batch 4 -> 5 steps per epoch, 2 epochs.
SETS = ["data.image_size=64", "data.num_images=24", "train.batch_size=4", "train.epochs=2",
        "checkpoint.every_steps=1"]


def _env(devices: int) -> dict:
    # A short peer timeout: the survivor of a kill stops in seconds, not 30.
    env = dict(os.environ, JAX_PLATFORMS="cpu", ANOMALY_JAX_PEER_TIMEOUT_S="6")
    env["XLA_FLAGS"] = subprocess_xla_flags(devices)
    return env


def _sets() -> list[str]:
    return [a for s in SETS for a in ("--set", s)]


def one_process(config: str, workdir) -> dict:
    """The run in this process, on its two simulated devices (tests/conftest.py)."""
    assert len(jax.devices()) == 2
    return train.train_and_evaluate(apply_overrides(get_config(config), SETS), str(workdir),
                                    progress=False)


def launched(config: str, workdir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.launch", "--processes", "2",
                           "--cpu-devices", "1", "--", "--config", config, "--workdir",
                           str(workdir), "--no-progress", *_sets()],
                          cwd=REPO, env=_env(1), capture_output=True, text=True, timeout=300)


def records(workdir) -> list[dict]:
    lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


# whitebox_black: dropout included, so each process's keys must be the one-process run's.
CONFIG = "whitebox_black"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """CONFIG as one process with two devices."""
    workdir = tmp_path_factory.mktemp("one_by_two")
    return workdir, one_process(CONFIG, workdir)


def test_dead_process_stops_the_other_and_rerun_resumes(reference, tmp_path):
    """CONFIG on 2 processes x 1 device, one killed after the first checkpoint: the other
    stops with one line; rerunning both ends with the parameters, per-epoch metrics and files
    of the uninterrupted 1-process, 2-device run, bit for bit. (An uninterrupted 2-process run
    is not made separately: the rerun's own steps after the resume are one.)"""
    workdir = tmp_path / "killed"
    port = free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "experiments.run", "--config", CONFIG, "--workdir",
         str(workdir), "--no-progress", *_sets(), "--coordinator", f"127.0.0.1:{port}",
         "--num-processes", "2", "--process-id", str(i)],
        cwd=REPO, env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    ckpts = workdir / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and procs[0].poll() is None:
        if ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir()):
            break
        time.sleep(0.05)
    assert procs[1].poll() is None, "the run ended before it could be killed"
    procs[1].send_signal(signal.SIGKILL)
    t_kill = time.time()
    _, err = procs[0].communicate(timeout=150)
    assert time.time() - t_kill < 120
    assert procs[0].returncode not in (0, None)
    assert "Traceback" not in err, err[:4000]
    assert "lost contact with the other processes" in err.strip().splitlines()[-1]
    procs[1].wait()
    out = launched(CONFIG, workdir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from step" in out.stderr
    ref_dir, ref = reference
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["params_sha256"] == ref["params_sha256"]
    assert len(summary["devices"]) == 2
    assert records(workdir) == records(ref_dir)
    # Both processes printed a summary; only process 0 wrote the run's files.
    assert out.stdout.count('"params_sha256"') == 3  # [0], [1] and the launcher's last line
    written = {p.name for p in workdir.iterdir()} - {"learning_curves.png"}
    assert written == {p.name for p in ref_dir.iterdir()}


def test_cluster_detection_needs_a_launched_step(monkeypatch):
    """A lone process in a SLURM allocation stays single; srun's tasks start the runtime."""
    from anomaly_jax import parallel
    for var in ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "OMPI_COMM_WORLD_SIZE",
                "JAX_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    assert not parallel._cluster_detected()
    assert parallel.initialize() is False  # nothing started
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert parallel._cluster_detected()
    with pytest.raises(Exception, match="go together"):
        parallel.initialize("127.0.0.1:1", None, None)
