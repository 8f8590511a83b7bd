"""The cost model behind the profiler's figures: FLOPs and bytes of a compiled step from XLA's
cost analysis, datasheet peaks of known GPUs, and the roofline (MFU, share of memory
bandwidth, the ceiling images/s) - also what docs/PERFORMANCE.md's on-paper H100 estimate uses.

Units: FLOP/s and bytes/s in the Peak table; per-step figures in GFLOP and GB.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class Peak:
    """Dense (no sparsity) peak of one GPU: FLOP/s by input dtype, and HBM bytes/s."""
    bf16_flops: float
    tf32_flops: float
    fp32_flops: float
    hbm_bytes_per_s: float


# Vendor datasheet figures, dense. Matched in order against device_kind in lower case
# ("NVIDIA H100 80GB HBM3" is the SXM part), so the more specific names come first.
GPU_PEAKS: tuple[tuple[str, Peak], ...] = (
    ("h200 nvl", Peak(835.5e12, 417.5e12, 60.0e12, 4.8e12)),
    ("h200", Peak(989.4e12, 494.7e12, 66.9e12, 4.8e12)),
    ("h100 nvl", Peak(835.5e12, 417.5e12, 60.0e12, 3.9e12)),
    ("h100 pcie", Peak(756.5e12, 378.0e12, 51.2e12, 2.0e12)),
    ("h100", Peak(989.4e12, 494.7e12, 66.9e12, 3.35e12)),
    ("a100-sxm4-80gb", Peak(312e12, 156e12, 19.5e12, 2.039e12)),
    ("a100 80gb pcie", Peak(312e12, 156e12, 19.5e12, 1.935e12)),
    ("a100", Peak(312e12, 156e12, 19.5e12, 1.555e12)),
)


def gpu_peak(device_kind: str) -> Peak | None:
    """The Peak of a known GPU by its jax device_kind, else None (CPU, unknown GPUs)."""
    kind = device_kind.lower()
    for name, peak in GPU_PEAKS:
        if name in kind:
            return peak
    return None


def peak_flops(peak: Peak, dtype: str) -> tuple[float, str]:
    """The peak that bounds a model computing in `dtype`: bf16 tensor cores for bfloat16;
    TF32 tensor cores for float32, which XLA uses for f32 convolutions and dots at JAX's
    default precision on Ampere and later."""
    return (peak.bf16_flops, "bf16") if dtype == "bfloat16" else (peak.tf32_flops, "tf32")


def cost_per_device(cost: Any) -> dict[str, float | None]:
    """XLA's cost analysis of a compiled (pmapped) step -> {"flops", "bytes"} per device.

    `compiled.cost_analysis()` is a dict for the SPMD executable JAX builds for pmap, which is
    the program of ONE device (2 devices at the same global batch report half the FLOPs of
    1); older JAX returned a list with one dict per device program — their first is taken.
    Missing or negative (unknown) entries give None.
    """
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost:
        return {"flops": None, "bytes": None}

    def pick(key: str) -> float | None:
        value = cost.get(key)
        return float(value) if value is not None and value >= 0 else None

    return {"flops": pick("flops"), "bytes": pick("bytes accessed")}


def peak_memory_bytes() -> int | None:
    """Peak bytes in use on the first device since start, where the backend says (not CPU)."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # some backends raise instead of returning None
        return None
    return None if not stats else stats.get("peak_bytes_in_use")


def compiled_memory_bytes(compiled: Any) -> int | None:
    """Arguments + outputs + temporaries of one device's compiled program, donated outputs
    counted once (XLA's memory_analysis; works on every backend)."""
    try:
        m = compiled.memory_analysis()
    except Exception:
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
               + m.temp_size_in_bytes)


def device_peak() -> Peak | None:
    """The Peak of this process's first device, if it is a GPU in GPU_PEAKS."""
    device = jax.devices()[0]
    return gpu_peak(device.device_kind) if device.platform == "gpu" else None


def ceiling_images_per_s(flops: float, nbytes: float, images_per_step: int,
                         flops_per_s: float, bytes_per_s: float) -> float:
    """The roofline: images per second if a step took max(FLOPs / peak, bytes / bandwidth)."""
    return images_per_step / max(flops / flops_per_s, nbytes / bytes_per_s)


def step_figures(step_s: float, images_per_step: int, cost: dict[str, float | None],
                 dtype: str, peak: Peak | None) -> dict[str, Any]:
    """images/s, ms/step, achieved TFLOP/s and GB/s per device, and with a `peak` the MFU,
    the share of HBM bandwidth and the ceiling images/s (max of FLOP and byte time).

    step_s: seconds per step (every device runs its share of the batch in parallel);
    cost: per-device {"flops", "bytes"} of one step (cost_per_device).
    """
    flops, nbytes = cost["flops"], cost["bytes"]
    out = {
        "images_per_s": round(images_per_step / step_s, 2),
        "ms_per_step": round(step_s * 1e3, 3),
        "gflop_per_step": None if flops is None else round(flops / 1e9, 3),
        "gb_per_step": None if nbytes is None else round(nbytes / 1e9, 4),
        "tflop_per_s": None if flops is None else round(flops / step_s / 1e12, 4),
        "gb_per_s": None if nbytes is None else round(nbytes / step_s / 1e9, 2),
        "mfu": None, "hbm_share": None, "ceiling_images_per_s": None, "peak": None,
    }
    if peak is not None and flops is not None and nbytes is not None:
        pf, which = peak_flops(peak, dtype)
        out.update(mfu=round(flops / step_s / pf, 4),
                   hbm_share=round(nbytes / step_s / peak.hbm_bytes_per_s, 4),
                   ceiling_images_per_s=round(
                       ceiling_images_per_s(flops, nbytes, images_per_step, pf,
                                            peak.hbm_bytes_per_s), 1),
                   peak=f"{which} {pf / 1e12:.0f} TFLOP/s, {peak.hbm_bytes_per_s / 1e12:.2f} TB/s")
    return out
