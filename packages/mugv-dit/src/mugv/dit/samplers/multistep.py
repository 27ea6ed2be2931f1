"""Two-step Adams-Bashforth: second order at one model evaluation per step.

The multistep idea of DPM-Solver++(2M) applied to the flow ODE: reuse the previous step's
velocity to extrapolate a second-order update, so it costs what Euler costs. The first step,
which has no history, is an Euler step.
"""

from __future__ import annotations

from torch import Tensor

from mugv.dit.samplers.base import GridSampler, check_timestep

__all__ = ["MultistepSampler"]


class MultistepSampler(GridSampler):
    """x_{i+1} = x_i + h_i ((1 + r) v_i - r v_{i-1}), r = h_i / (2 h_{i-1}), h_i = s_i - s_{i+1}."""

    order = 2

    def _reset(self) -> None:
        self._prev_velocity: Tensor | None = None

    def step(self, velocity: Tensor, timestep: float | Tensor, sample: Tensor) -> Tensor:
        check_timestep(self.timesteps, self._index, timestep)
        i = self._index
        h = float(self.sigmas[i] - self.sigmas[i + 1])
        if self._prev_velocity is None:
            update = velocity
        else:
            r = h / (2 * float(self.sigmas[i - 1] - self.sigmas[i]))
            update = (1 + r) * velocity - r * self._prev_velocity
        self._index += 1
        self._prev_velocity = velocity
        return sample + h * update
