"""Heun's method (explicit trapezoid): second order, two model evaluations per grid step."""

from __future__ import annotations

import torch
from torch import Tensor

from mugv.dit.samplers.base import GridSampler, check_timestep

__all__ = ["HeunSampler"]


class HeunSampler(GridSampler):
    """Predict x' = x + dt v(x, s_i); correct x_{i+1} = x + dt (v(x, s_i) + v(x', s_{i+1})) / 2.

    `timesteps` is s_0, s_1, s_1, s_2, s_2, ..., s_N: the calls alternate predictor and
    corrector, so a plain `for t in timesteps` loop drives it like a first-order sampler.
    """

    order = 2

    def _evaluation_times(self, sigmas: Tensor) -> Tensor:
        return torch.cat([sigmas[:1], sigmas[1:].repeat_interleave(2)[:-1]])  # (2N - 1,)

    def _reset(self) -> None:
        self._prev: tuple[Tensor, Tensor] | None = None  # (x_i, v(x_i, s_i)) between the calls

    def step(self, velocity: Tensor, timestep: float | Tensor, sample: Tensor) -> Tensor:
        check_timestep(self.timesteps, self._index, timestep)
        grid = (self._index + 1) // 2  # the grid step this call belongs to
        self._index += 1
        if self._prev is None:  # predictor from s_grid to s_{grid+1}
            dt = float(self.sigmas[grid] - self.sigmas[grid + 1])
            self._prev = (sample, velocity)
            return sample + dt * velocity
        x_i, v_i = self._prev
        dt = float(self.sigmas[grid - 1] - self.sigmas[grid])
        self._prev = None
        return x_i + dt * 0.5 * (v_i + velocity)
