"""Test set-up: every test runs on CPU with two simulated devices, so pmap paths see >1 device.

XLA_FLAGS must be set before JAX is imported anywhere, which is why it lives here.
"""
import os
import pathlib

# LLVM at -O0 for the tests: the suite is compile-bound (a second run of the same small
# config in one process takes 2 s, its first 14 s), and -O0 ran the whole suite in 5:24
# against 6:35 at -O1 and longer at XLA's default (2026-12-01, this 2-core machine). Every
# comparison in it is between programs compiled the same way - subprocesses get the same flag
# (`subprocess_xla_flags`) - or against a reference with its stated tolerance (at -O0 one
# Adam update of 102,400 in tests/test_steps.py leaves rtol 1e-5, 6.4e-7 off, within the
# 1e-6 bound derived there); runs outside the tests keep XLA's default.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2 "
    + TEST_XLA_FLAGS
).strip()


def subprocess_xla_flags(devices: int) -> str:
    """XLA_FLAGS for a run the tests start in a subprocess: `devices` simulated CPU devices,
    compiled as this test process compiles."""
    return f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests compile the same small steps (every run builds fresh pmapped functions, and the
# checkpoint tests start subprocesses): a persistent compilation cache shared by the session
# and its subprocesses turns those recompilations into cache hits.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="anomaly_jax_xla_cache_")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import pytest  # noqa: E402

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"

# The small seed-1 run of tests/test_train.py, test_checkpoint.py and test_steps.py: one shape
# (the step program depends on the image size, the device table's length and the batch), so
# the suite's compilation cache holds its step program once.
SMALL_RUN = ["data.image_size=64", "data.num_images=40", "train.batch_size=4"]


@pytest.fixture
def shared_dir():
    """The ../shared folder beside the clone; tests that need it skip cleanly without it."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


# A tiny run of the real `localiser` config (JPEG, shrink, frames, per-step alterations) at
# 64x64: 8 images, 1 validates, 7 train x 2 crops = 14 crop ids -> 3 steps of 4. Trained once
# per session; tests/test_localiser.py checks a resume against it, the script tests use it.
LOCALISER_RUN = ["data.image_size=64", "data.num_images=8", "data.package_photos=false",
                 "data.crop_size=32", "data.crops_per_image=2", "train.batch_size=4",
                 "train.epochs=1", "train.schedule=constant", "checkpoint.every_steps=0",
                 "train.log_every=1"]


@pytest.fixture(scope="session")
def localiser_run(tmp_path_factory):
    """(config, workdir, summary) of the session's tiny localiser run."""
    from anomaly_jax import train
    from anomaly_jax.config import apply_overrides
    from experiments.configs import get_config

    config = apply_overrides(get_config("localiser"), LOCALISER_RUN)
    workdir = tmp_path_factory.mktemp("localiser_run")
    summary = train.train_and_evaluate(config, str(workdir), progress=False)
    return config, str(workdir), summary


@pytest.fixture
def make_dataset_recorded(monkeypatch):
    """(scripts.make_dataset, exported): after its main() runs, exported holds the "images"
    and "labels" the export computed, before the files were written."""
    from scripts import make_dataset

    exported = {}
    alter_all = make_dataset.alter_all

    def recording_alter_all(config, images):
        exported["images"], exported["labels"] = alter_all(config, images)
        return exported["images"], exported["labels"]

    monkeypatch.setattr(make_dataset, "alter_all", recording_alter_all)
    return make_dataset, exported


# Files with the longest tests first: xdist hands tests out in collection order, and a
# 40-second subprocess test collected last leaves the other worker idle at the end.
_SLOW_FIRST = ("test_multiprocess.py", "test_checkpoint.py", "test_localiser_mix.py",
               "test_edit_loop.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        return _SLOW_FIRST.index(name) if name in _SLOW_FIRST else len(_SLOW_FIRST)
    items.sort(key=rank)  # stable: the order within a file is kept
