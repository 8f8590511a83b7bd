"""Checkpoints: SIGKILL + resume is bit-exact, broken checkpoints fall back, NaN stops cleanly,
the workdir lock, restoring on fewer devices, and config changes on resume."""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

from anomaly_jax import checkpoint, run_setup, steps, train
from anomaly_jax.config import apply_overrides
from anomaly_jax.errors import CheckpointError, ConfigError, WorkdirBusy
from experiments import run as run_cli
from conftest import SMALL_RUN, subprocess_xla_flags
from experiments.configs import get_config

# One test worker runs this file (--dist loadgroup), so the `uninterrupted` run is made once.
pytestmark = pytest.mark.xdist_group("checkpoint")

REPO = pathlib.Path(__file__).resolve().parents[1]
# 40 images at 64x64: 32 train / 8 val, batch 4 -> 8 steps per epoch.
SETS = SMALL_RUN + ["train.epochs=3", "checkpoint.every_steps=3", "train.log_every=1"]
TIMING_KEYS = ("train_images_per_s", "wall_s", "train_s", "val_s")


def config(*extra):
    return apply_overrides(get_config("cnn_lowlr"), SETS + list(extra))


def records(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    lines = open(path).read().splitlines() if os.path.exists(path) else []
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


def sha(workdir):
    return json.load(open(os.path.join(workdir, "summary.json")))["params_sha256"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    train.train_and_evaluate(config(), str(workdir), progress=False)
    return workdir


def run_args(workdir, *extra):
    """`experiments.run`'s arguments for this file's run in workdir (SETS, then extra)."""
    sets = [a for s in SETS + list(extra) for a in ("--set", s)]
    return ["--config", "cnn_lowlr", "--workdir", str(workdir), "--no-progress", *sets]


def cli(workdir, *extra):
    """The command in a subprocess, for a run that must be signalled or killed."""
    env = dict(os.environ, XLA_FLAGS=subprocess_xla_flags(2), JAX_PLATFORMS="cpu")
    return subprocess.Popen([sys.executable, "-m", "experiments.run", *run_args(workdir, *extra)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def cli_here(workdir, capfd, *extra):
    """The same command in this process (no interpreter and JAX start-up to pay):
    (exit code, stdout, stderr)."""
    capfd.readouterr()
    code = run_cli.main(run_args(workdir, *extra))
    out, err = capfd.readouterr()
    return code, out, err


def test_sigkill_then_resume_is_bit_exact(uninterrupted, tmp_path, capfd):
    workdir = tmp_path / "killed"
    proc = cli(workdir)
    ckpts = workdir / "checkpoints"
    deadline = time.time() + 240
    # Kill once the first checkpoint is being written or done: mid-step or mid-write.
    while time.time() < deadline and proc.poll() is None:
        if ckpts.is_dir() and any(ckpts.iterdir()):
            time.sleep(float(np.random.default_rng().uniform(0.0, 1.5)))
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed: " + proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    code, out, err = cli_here(workdir, capfd)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["params_sha256"] == sha(uninterrupted)
    assert sha(workdir) == sha(uninterrupted)
    assert records(workdir) == records(uninterrupted)


def test_unreadable_latest_checkpoint_falls_back(uninterrupted, tmp_path, capfd):
    workdir = tmp_path / "broken"
    train.train_and_evaluate(config("train.epochs=2"), str(workdir), progress=False)
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    latest = workdir / "checkpoints" / str(steps[-1]) / "state"
    for f in latest.rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3])  # truncated files
    summary = train.train_and_evaluate(config(), str(workdir), progress=False)
    err = capfd.readouterr().err
    assert f"checkpoints/{steps[-1]} is unreadable" in err
    assert summary["params_sha256"] == sha(uninterrupted)
    assert records(workdir) == records(uninterrupted)


def test_no_usable_checkpoint_is_a_clear_error(tmp_path):
    workdir = tmp_path / "allbroken"
    train.train_and_evaluate(config("train.epochs=1", "checkpoint.every_steps=0"),
                             str(workdir), progress=False)
    for f in (workdir / "checkpoints").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")
    with pytest.raises(CheckpointError, match="no usable checkpoint .*--fresh"):
        train.train_and_evaluate(config(), str(workdir), progress=False)
    summary = train.train_and_evaluate(config("train.epochs=1"), str(workdir), fresh=True,
                                       progress=False)
    assert summary["steps"] == 8


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    original = steps.train_step

    def poisoned(state, *args, **kwargs):
        new_state, sums = original(state, *args, **kwargs)
        sums = dict(sums, loss=jnp.where(state["step"] >= 4, jnp.nan, sums["loss"]))
        return new_state, sums

    monkeypatch.setattr(steps, "train_step", poisoned)
    workdir = tmp_path / "nan"
    code = run_cli.main(run_args(workdir))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and "non-finite training loss" in err[-1]
    assert "the last good checkpoint (step 3) is intact" in err[-1]
    manager = checkpoint.RunCheckpoints(str(workdir / "checkpoints"), keep=3,
                                        best_metric="val_distance", best_mode="min")
    assert manager.steps() == [3]
    run, state = run_setup.setup(config())
    restored = manager.restore(state, config())
    assert restored.step == 3 and int(restored.state["step"]) == 3
    leaves = [np.asarray(x) for x in __import__("jax").tree.leaves(restored.state["params"])]
    assert all(np.isfinite(x).all() for x in leaves)


def test_lock_refuses_second_run_and_dies_with_its_holder(tmp_path):
    workdir = tmp_path / "locked"
    with checkpoint.WorkdirLock(str(workdir)):
        with pytest.raises(WorkdirBusy, match="in use by a live run"):
            train.train_and_evaluate(config(), str(workdir), progress=False)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r)\n"
        "from anomaly_jax.checkpoint import WorkdirLock\n"
        "lock = WorkdirLock(%r).__enter__(); print('held', flush=True); time.sleep(60)")
        % (str(REPO), str(workdir))], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(WorkdirBusy, match=f"pid {holder.pid}"):
        checkpoint.WorkdirLock(str(workdir)).__enter__()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with checkpoint.WorkdirLock(str(workdir)):
        pass  # a dead holder leaves nothing stuck


def test_two_device_checkpoint_restores_on_one_device(uninterrupted, tmp_path):
    workdir = tmp_path / "two_to_one"
    train.train_and_evaluate(config("train.epochs=1", "train.num_devices=2"), str(workdir),
                             progress=False)
    train.train_and_evaluate(config("train.num_devices=1"), str(workdir), progress=False)
    for a, b in zip(records(workdir), records(uninterrupted)):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=2e-4, err_msg=key)


def test_resume_refuses_meaningful_changes_but_allows_more_epochs(tmp_path):
    workdir = tmp_path / "changes"
    train.train_and_evaluate(config("train.epochs=1"), str(workdir), progress=False)
    with pytest.raises(ConfigError, match="different config in: seed, train.lr"):
        train.train_and_evaluate(config("train.lr=0.5", "seed=7"), str(workdir),
                                 progress=False)
    summary = train.train_and_evaluate(config("train.epochs=2"), str(workdir), progress=False)
    assert [r["epoch"] for r in records(workdir)] == [1, 2] and summary["steps"] == 16


def test_keeps_latest_plus_best_and_finds_the_best_after_reopening(tmp_path):
    state = {"w": np.arange(4, dtype=np.float32)}
    directory = str(tmp_path / "ckpts")
    manager = checkpoint.RunCheckpoints(directory, keep=2, best_metric="val_distance",
                                        best_mode="min")
    for step, distance in zip((1, 2, 3, 4), (0.5, 0.2, 0.4, 0.6)):
        manager.save(step, {"w": state["w"] + step}, data_state={"next": step},
                     epoch_sums=None, epoch_time=0.0, epoch_done=step, config=config(),
                     record={"val_distance": distance})
    manager.close()
    reopened = checkpoint.RunCheckpoints(directory, keep=2, best_metric="val_distance",
                                         best_mode="min")
    assert reopened.steps() == [2, 3, 4] and reopened.best_step() == 2
    restored = reopened.restore(state, None, step=reopened.best_step())
    np.testing.assert_array_equal(restored.state["w"], state["w"] + 2)
    assert restored.data_state == {"next": 2}
    reopened.close()


def test_torn_metrics_line_is_dropped_and_resume_keeps_the_history(uninterrupted, tmp_path, capsys):
    workdir = tmp_path / "torn"
    shutil.copytree(uninterrupted, workdir)
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "step": 3')  # what a crash in the middle of an append leaves
    train.train_and_evaluate(config(), str(workdir), progress=False)
    assert "line 4 is torn" in capsys.readouterr().err
    assert records(workdir) == records(uninterrupted)


def test_restart_from_step_0_keeps_the_old_history_apart(uninterrupted, tmp_path, capsys):
    workdir = tmp_path / "restart"
    shutil.copytree(uninterrupted, workdir)
    shutil.rmtree(workdir / "checkpoints")
    train.train_and_evaluate(config("train.epochs=1"), str(workdir), progress=False)
    assert "kept as metrics.jsonl.old" in capsys.readouterr().err
    assert records(workdir) == records(uninterrupted)[:1]
    assert len(open(workdir / "metrics.jsonl.old").read().splitlines()) == 3


def test_nan_before_any_checkpoint_says_so(tmp_path, monkeypatch, capsys):
    original = steps.train_step

    def poisoned(state, *args, **kwargs):
        new_state, sums = original(state, *args, **kwargs)
        return new_state, dict(sums, loss=jnp.full_like(sums["loss"], jnp.nan))

    monkeypatch.setattr(steps, "train_step", poisoned)
    code = run_cli.main(run_args(tmp_path / "nan0"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].endswith("no checkpoint was written yet")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused_at_parse_time(value):
    with pytest.raises(ConfigError, match=f"train.lr='{value}': expected a finite number"):
        config(f"train.lr={value}")


def test_a_file_named_checkpoints_is_one_line_not_a_hang(tmp_path):
    workdir = tmp_path / "filed"
    workdir.mkdir()
    (workdir / "checkpoints").write_text("not a folder")
    t0 = time.time()
    with pytest.raises(CheckpointError, match="is a file, not a folder of checkpoints"):
        train.train_and_evaluate(config(), str(workdir), progress=False)
    assert time.time() - t0 < 60
    assert not (workdir / "metrics.jsonl").exists()


def test_corrupt_config_json_is_one_line_in_evaluate(tmp_path, capsys):
    from scripts import evaluate
    workdir = tmp_path / "broken"
    workdir.mkdir()
    (workdir / "config.json").write_text('{"name": "cnn_lo')
    code = evaluate.main(["--workdir", str(workdir), "--csv", str(tmp_path / "labels.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "config.json is not valid JSON" in err[0]


def wait_for_first_checkpoint(proc, workdir):
    ckpts = workdir / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir()):
            return
        time.sleep(0.05)
    raise AssertionError("run ended before its first checkpoint: " + proc.stderr.read())


def test_sigterm_stops_at_a_step_with_a_checkpoint_and_resumes_bit_exact(uninterrupted,
                                                                          tmp_path, capfd):
    workdir = tmp_path / "preempted"
    proc = cli(workdir)
    wait_for_first_checkpoint(proc, workdir)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    stopped = re.fullmatch(r"stopped by SIGTERM at step (\d+); checkpoint \1 is saved in "
                           r".*; rerun the same command to resume", last)
    assert stopped, last
    step = int(stopped.group(1))
    assert 3 <= step < 24 and (workdir / "checkpoints" / str(step)).is_dir()
    assert records(workdir) == records(uninterrupted)[:step // 8]
    code, out, err = cli_here(workdir, capfd)
    assert code == 0, err
    assert f"resumed from step {step}" in err
    assert sha(workdir) == sha(uninterrupted)
    assert records(workdir) == records(uninterrupted)


def test_two_ctrl_c_stop_at_once_in_one_line(tmp_path):
    workdir = tmp_path / "interrupted"
    proc = cli(workdir)
    wait_for_first_checkpoint(proc, workdir)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert re.match(r"(error: interrupted|stopped by SIGINT)", err.strip().splitlines()[-1])


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: room for one checkpoint of the test run, not two (needs root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def remount(mount, options):
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)


def test_full_then_read_only_disk_are_one_line_and_resume_after(uninterrupted, small_disk,
                                                                  capfd):
    workdir = small_disk / "run"
    code, out, err = cli_here(workdir, capfd)
    lines = err.strip().splitlines()
    assert code == 1 and "Traceback" not in err, err  # the whole stderr: which library printed it
    assert re.fullmatch(r"error: .*/checkpoints: a checkpoint could not be written \(No space "
                        r"left on device\); checkpoint 3 is intact — .*", lines[-1]), lines[-1]
    remount(small_disk, "ro")
    code, out, err = cli_here(workdir, capfd)
    assert code == 1 and "Traceback" not in err, err
    assert re.fullmatch(r"error: .*: Read-only file system; .*rerun to resume .*",
                        err.strip().splitlines()[-1])
    remount(small_disk, "rw,size=16m")
    code, out, err = cli_here(workdir, capfd)
    assert code == 0, err
    assert "resumed from step 3" in err
    assert sha(workdir) == sha(uninterrupted)
    assert records(workdir) == records(uninterrupted)


def test_evaluate_names_a_missing_step_and_the_saved_ones(uninterrupted, tmp_path, capsys):
    from scripts import evaluate
    code = evaluate.main(["--workdir", str(uninterrupted), "--csv", str(tmp_path / "x.csv"),
                          "--step", "99"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert re.fullmatch(r"error: no checkpoint at step 99 in .*/checkpoints \(saved steps: "
                        r"(\d+, )*24\)", err[0]), err
