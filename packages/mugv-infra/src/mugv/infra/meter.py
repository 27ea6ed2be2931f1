"""Throughput, model FLOPs utilisation (MFU) and hardware FLOPs utilisation (HFU).

MFU counts the FLOPs the model needs (forward + backward = 3x forward) against the peak of
the devices; HFU also counts forward FLOPs recomputed for activation checkpointing, so
HFU >= MFU. (The MUG-V reference reports HFU as "MFU".) FLOPs come from the model: a
function of one micro-batch returning its forward FLOPs (a multiply-add counts 2).
"""

from __future__ import annotations

import functools
import time

import torch

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, matched in order
# against `torch.cuda.get_device_name()`.
PEAK_BF16_FLOPS: dict[str, float] = {
    "B200": 2250e12,
    "H200": 989.4e12,
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989.4e12,
    "H800": 989.4e12,
    "GH200": 989.4e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362.05e12,
    "L4": 121e12,
    "A10": 125e12,
    "RTX 4090": 165.2e12,
    "V100": 125e12,
}


def peak_flops(device: torch.device) -> float | None:
    """Peak bf16 FLOP/s of one `device`, None for CPUs and unknown GPUs."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def fast_bf16(device: torch.device | str) -> bool:
    """Whether bf16 matrix products beat fp32 on `device`: True on CUDA GPUs and on CPUs with
    AMX tiles (Intel Xeon from Sapphire Rapids on), where oneDNN's bf16 GEMMs run 6-15x faster
    than fp32 at a small DiT's shapes. A CPU with AVX512-BF16 but no AMX is measured once per
    process (`_bf16_gemm_speedup`) and counts when bf16 runs at least `BF16_MIN_SPEEDUP` times
    fp32: two AMD Zen 4 cores run a 1024 x 192 x 768 product at ~2.4x, while earlier Xeons
    with the same flag ran a small MLP slower in bf16 than in fp32. False on other CPUs, where
    bf16 is converted on the fly."""
    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    return _cpu_bf16()


# A margin, so that a CPU near parity (where the choice hardly matters for speed) does not flip
# between runs on timing noise and change a run's numerics.
BF16_MIN_SPEEDUP = 1.5


@functools.cache
def _cpu_bf16() -> bool:
    if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
        return True
    if not getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        return False
    return _bf16_gemm_speedup() >= BF16_MIN_SPEEDUP


def _bf16_gemm_speedup(rounds: int = 3, repeats: int = 8) -> float:
    """fp32 time over bf16 time of a (1024, 192) x (192, 768) product on this CPU's current
    threads: the best of `rounds` timings of `repeats` products each (~0.1 s in all)."""
    a, b = torch.randn(1024, 192), torch.randn(192, 768)
    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), b.to(dtype)
        x @ y  # first call: oneDNN picks and caches its kernel
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(repeats):
                x @ y
            times.append(time.perf_counter() - start)
        best[dtype] = min(times)
    return best[torch.float32] / best[torch.bfloat16]


class ThroughputMeter:
    """Accumulates samples, FLOPs and time between reports; `report()` returns rates."""

    def __init__(
        self, *, data_size: int, model_size: int, device: torch.device, recompute: bool
    ) -> None:
        self.data_size = data_size
        self.model_size = model_size
        self.peak = peak_flops(device)
        self.recompute = recompute
        self.reset()

    def reset(self) -> None:
        self.samples = 0
        self.forward_flops = 0.0
        self.seconds = 0.0

    def update(self, *, samples: int, forward_flops: float, seconds: float) -> None:
        """One step of this rank's replica: its samples, their full-model forward FLOPs and
        the step's wall time. Replicas are assumed to see equal work."""
        self.samples += samples
        self.forward_flops += forward_flops
        self.seconds += seconds

    def report(self) -> dict[str, float]:
        """samples/s of the whole job; model FLOP/s per device; MFU and HFU if the peak is known.

        A replica's FLOPs are spread over its `model_size` (TP x CP x PP) devices.
        """
        seconds = max(self.seconds, 1e-9)
        out = {"samples_per_s": self.samples * self.data_size / seconds}
        if self.forward_flops:
            per_device = self.forward_flops / self.model_size / seconds
            model = 3.0 * per_device
            hardware = (4.0 if self.recompute else 3.0) * per_device
            out["flops_per_s"] = model
            if self.peak:
                out["mfu"] = model / self.peak
                out["hfu"] = hardware / self.peak
        return out
