"""Throughput, model FLOPs utilisation (MFU) and hardware FLOPs utilisation (HFU).

MFU counts the FLOPs the model needs (forward + backward = 3x forward) against the peak of
the devices; HFU also counts forward FLOPs recomputed for activation checkpointing, so
HFU >= MFU. (The MUG-V reference reports HFU as "MFU".) FLOPs come from the model: a
function of one micro-batch returning its forward FLOPs (a multiply-add counts 2).
"""

from __future__ import annotations

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
    than fp32 at a small DiT's shapes; False on CPUs without them, where bf16 is converted on
    the fly and runs slower than fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(has_amx()) if has_amx is not None else False


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
