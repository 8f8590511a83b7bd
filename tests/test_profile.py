"""The throughput profiler: the real train stage end to end (JSON figures, a profiler trace),
and the cost-model arithmetic (XLA cost analysis parsing, GPU peaks, MFU) on exact numbers.
No timing thresholds: only that figures exist, are positive and are computed as documented."""
from __future__ import annotations

import glob
import json
import math

import pytest

from anomaly_jax import cost_model, profiling
from scripts import profile_steps
from scripts import profile_throughput as pt

TINY = ["--config", "cnn_lowlr", "--set", "data.image_size=64", "--set", "data.num_images=20",
        "--set", "train.batch_size=4", "--set", "data.source=black",
        "--steps", "2", "--repeats", "1", "--no-peers"]


def test_train_stage_reports_figures_and_writes_a_trace(tmp_path, capsys):
    trace_dir = tmp_path / "trace"
    figures = pt.main([*TINY, "--stage", "train", "--trace", str(trace_dir)])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(figures))  # the last stdout line is the figures
    assert figures["train_images_per_s"] > 0 and figures["train_k1_images_per_s"] > 0
    assert figures["train_ms_per_step"] > 0 and figures["train_compile_s"] > 0
    assert figures["train_gflop_per_step"] > 0 and figures["train_gb_per_step"] > 0
    assert figures["train_tflop_per_s"] > 0 and figures["train_steps_per_run"] == 2
    # images/s and ms/step describe the same median step of a 4-image batch.
    assert math.isclose(figures["train_images_per_s"], 4e3 / figures["train_ms_per_step"],
                        rel_tol=1e-2)
    # On CPU: no device memory statistics, no known peak, no peer asked for.
    assert figures["train_peak_memory_mb"] is None and figures["train_mfu"] is None
    assert figures["train_ratio_vs_torch"] is None
    files = glob.glob(str(trace_dir / "**" / "*.xplane.pb"), recursive=True)
    assert files and figures["train_trace_files"] == sorted(files)


@pytest.mark.parametrize("cost, expected", [
    ({"flops": 2e9, "bytes accessed": 3e8, "transcendentals": 5.0}, (2e9, 3e8)),
    ([{"flops": 4.0, "bytes accessed": 8.0}, {"flops": 4.0, "bytes accessed": 8.0}], (4.0, 8.0)),
    ({"flops": -1.0}, (None, None)),  # XLA's "unknown"
    (None, (None, None)),
    ([], (None, None)),
])
def test_cost_analysis_parsing(cost, expected):
    got = cost_model.cost_per_device(cost)
    assert (got["flops"], got["bytes"]) == expected


@pytest.mark.parametrize("kind, hbm", [
    ("NVIDIA H100 80GB HBM3", 3.35e12), ("NVIDIA H100 PCIe", 2.0e12),
    ("NVIDIA H200", 4.8e12), ("NVIDIA H200 NVL", 4.8e12), ("NVIDIA A100-SXM4-80GB", 2.039e12),
])
def test_gpu_peaks_by_device_kind(kind, hbm):
    assert cost_model.gpu_peak(kind).hbm_bytes_per_s == hbm
    assert cost_model.gpu_peak("cpu") is None and cost_model.gpu_peak("TPU v5 lite") is None


def test_step_figures_arithmetic():
    cost = {"flops": 1e12, "bytes": 2e9}
    h100 = cost_model.gpu_peak("NVIDIA H100 80GB HBM3")
    fig = cost_model.step_figures(0.5, 100, cost, "bfloat16", h100)
    assert fig["images_per_s"] == 200.0 and fig["ms_per_step"] == 500.0
    assert fig["tflop_per_s"] == 2.0 and fig["gb_per_s"] == 4.0
    assert fig["mfu"] == round(2e12 / 989.4e12, 4)
    assert fig["hbm_share"] == round(4e9 / 3.35e12, 4)
    # Ceiling: the step cannot beat max(FLOPs / peak, bytes / bandwidth).
    assert fig["ceiling_images_per_s"] == round(100 / max(1e12 / 989.4e12, 2e9 / 3.35e12), 1)
    fp32 = cost_model.step_figures(0.5, 100, cost, "float32", h100)
    assert fp32["mfu"] == round(2e12 / 494.7e12, 4)  # TF32 tensor cores
    cpu = cost_model.step_figures(0.5, 100, {"flops": None, "bytes": None}, "float32", None)
    assert cpu["mfu"] is None and cpu["tflop_per_s"] is None and cpu["images_per_s"] == 200.0


def test_corrupt_gpu_ceilings_are_the_roofline_of_the_vmap_program():
    from anomaly_jax.config import apply_overrides
    from experiments.configs import get_config
    config = apply_overrides(get_config("cnn_lowlr"), ["corruption.kind=copy_move",
                                                       "data.image_size=64"])
    got = profiling.corrupt_gpu_ceilings(config, 4)
    # At least one read and one write of every pixel (XLA:CPU counts more, never less).
    assert got["bytes_per_image"] >= 2 * 64 * 64 * 3 and got["flops_per_image"] > 0
    h100 = cost_model.gpu_peak("NVIDIA H100 80GB HBM3")
    expected = 4 / max(4 * got["flops_per_image"] / h100.fp32_flops,
                       4 * got["bytes_per_image"] / h100.hbm_bytes_per_s)
    assert got["ceilings"]["h100"] == pytest.approx(expected, rel=1e-4)
    assert set(got["ceilings"]) == {name for name, _ in cost_model.GPU_PEAKS}


def test_table_shows_missing_figures_as_na():
    rows = [profiling.row("a", {"images_per_s": 12.345, "peak_memory_mb": None}),
            profiling.row("b", {"seconds": 1.5}, ratio=1.25)]
    lines = profiling.format_table(rows).splitlines()
    assert lines[0].split()[:2] == ["row", "img/s"]
    assert "12.3" in lines[1] and "n/a" in lines[1]
    assert lines[2].split()[-1] == "1.25x" and "1.50" in lines[2]


def test_k_list():
    from experiments.configs import get_config

    args = pt.parse_args(["--config", "whitebox_photos"])
    assert profile_steps.k_list(get_config("whitebox_photos"), args) == [1, 8]
    assert profile_steps.k_list(get_config("cnn_lowlr"), args) == [1]
    assert profile_steps.k_list(get_config("cnn_lowlr"), pt.parse_args(["--k", "4,2"])) == [1, 2, 4]
