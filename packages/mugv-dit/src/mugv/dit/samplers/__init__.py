"""Rectified-flow ODE samplers, one per file behind the `FlowSampler` interface."""

from mugv.dit.samplers.base import FlowSampler, flow_sigmas
from mugv.dit.samplers.euler import EulerSampler
from mugv.dit.samplers.heun import HeunSampler
from mugv.dit.samplers.multistep import MultistepSampler

SAMPLERS = {"euler": EulerSampler, "heun": HeunSampler, "multistep": MultistepSampler}
"""The named samplers (`Pipeline(sampler="heun")`)."""

__all__ = [
    "SAMPLERS",
    "EulerSampler",
    "FlowSampler",
    "HeunSampler",
    "MultistepSampler",
    "flow_sigmas",
]
