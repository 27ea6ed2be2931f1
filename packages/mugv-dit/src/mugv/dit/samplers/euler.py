"""Euler, the MUG-V default sampler (25 steps): first order, one model evaluation per step."""

from __future__ import annotations

from torch import Tensor

from mugv.dit.samplers.base import check_timestep, flow_sigmas

__all__ = ["EulerSampler"]


class EulerSampler:
    """x_{i+1} = x_i + (sigma_i - sigma_{i+1}) v(x_i, sigma_i)."""

    order = 1

    def __init__(self, num_steps: int = 25, *, ratio: float = 1.0) -> None:
        self.set_timesteps(num_steps, ratio=ratio)

    def set_timesteps(self, num_steps: int, *, ratio: float = 1.0) -> None:
        self.num_steps = num_steps
        self.sigmas = flow_sigmas(num_steps, ratio)  # (N + 1,)
        self.timesteps = self.sigmas[:-1]  # (N,)
        self._index = 0

    def step(self, velocity: Tensor, timestep: float | Tensor, sample: Tensor) -> Tensor:
        check_timestep(self.timesteps, self._index, timestep)
        dt = float(self.sigmas[self._index] - self.sigmas[self._index + 1])
        self._index += 1
        return sample + dt * velocity
