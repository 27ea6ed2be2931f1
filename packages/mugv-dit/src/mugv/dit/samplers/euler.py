"""Euler, the MUG-V default sampler (25 steps): first order, one model evaluation per step."""

from __future__ import annotations

from torch import Tensor

from mugv.dit.samplers.base import GridSampler, check_timestep

__all__ = ["EulerSampler"]


class EulerSampler(GridSampler):
    """x_{i+1} = x_i + (sigma_i - sigma_{i+1}) v(x_i, sigma_i)."""

    order = 1

    def step(self, velocity: Tensor, timestep: float | Tensor, sample: Tensor) -> Tensor:
        check_timestep(self.timesteps, self._index, timestep)
        dt = float(self.sigmas[self._index] - self.sigmas[self._index + 1])
        self._index += 1
        return sample + dt * velocity
