"""The interface every flow sampler follows (diffusers-style `set_timesteps` / `step`).

A sampler integrates the rectified-flow ODE dx/dt = -v(x, t) from t = 1 (noise) to t = 0
(data) on the shifted grid sigma_i = time_shift(1 - i / N, ratio). The caller loops:

    sampler.set_timesteps(25, ratio=r)
    for t in sampler.timesteps:          # the times the model is evaluated at, in call order
        x = sampler.step(model(x, t), t, x)

A sampler of order k may call for several evaluations per grid step; `timesteps` lists them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from mugv.dit.rectified_flow import FlowError, time_shift

__all__ = ["FlowSampler", "GridSampler", "flow_sigmas"]


@runtime_checkable
class FlowSampler(Protocol):
    """One ODE solver for the rectified flow: `set_timesteps`, then one `step` per timestep."""

    order: int
    num_steps: int
    timesteps: Tensor

    def set_timesteps(self, num_steps: int, *, ratio: float = 1.0) -> None: ...

    def step(self, velocity: Tensor, timestep: float | Tensor, sample: Tensor) -> Tensor: ...


def flow_sigmas(num_steps: int, ratio: float = 1.0) -> Tensor:
    """The grid (num_steps + 1,) float64 from 1 to 0, warped by the SD3 shift `ratio`."""
    if num_steps < 1:
        raise FlowError(f"num_steps must be >= 1, got {num_steps}")
    if ratio <= 0:
        raise FlowError(f"shift ratio must be > 0, got {ratio}")
    return time_shift(torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64), ratio)


def check_timestep(timesteps: Tensor, index: int, timestep: float | Tensor) -> None:
    """Raise if `step` is called past the end or with a time other than the expected one."""
    if index >= len(timesteps):
        raise FlowError(
            f"step called {index + 1} times but set_timesteps made {len(timesteps)} timesteps; "
            "call set_timesteps again before a new sampling run"
        )
    expected = float(timesteps[index])
    got = float(timestep.flatten()[0]) if isinstance(timestep, Tensor) else float(timestep)
    if abs(got - expected) > 1e-6:
        raise FlowError(
            f"step got timestep {got:.6f} but the next one is {expected:.6f}; "
            "iterate over sampler.timesteps in order"
        )


class GridSampler:
    """What the grid samplers share: the sigma grid, the evaluation times, the call index.

    Subclasses implement `step`, and override `_evaluation_times` (when they evaluate the
    model more than once per grid step) and `_reset` (when they carry state between calls).
    """

    order = 1

    def __init__(self, num_steps: int = 25, *, ratio: float = 1.0) -> None:
        self.set_timesteps(num_steps, ratio=ratio)

    def set_timesteps(self, num_steps: int, *, ratio: float = 1.0) -> None:
        self.num_steps = num_steps
        self.sigmas = flow_sigmas(num_steps, ratio)  # (N + 1,)
        self.timesteps = self._evaluation_times(self.sigmas)
        self._index = 0
        self._reset()

    def _evaluation_times(self, sigmas: Tensor) -> Tensor:
        return sigmas[:-1]  # (N,): one evaluation at the start of each grid step

    def _reset(self) -> None:
        """Clears state carried between `step` calls (none by default)."""
