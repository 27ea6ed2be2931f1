"""Samplers and guidance against analytic flows: exact endpoints and measured convergence orders.

For Gaussian data x0 ~ N(mu, s^2) and x_t = (1 - t) x0 + t eps, the ideal velocity is linear in
x and the flow map is known: x_0 = mu + s x_1. Integrating that ODE numerically with N and 2N
steps gives the solver's order as log2(err_N / err_2N).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from mugv.dit.guidance import cfg_combine, contrast_term
from mugv.dit.rectified_flow import FlowError
from mugv.dit.samplers import SAMPLERS, EulerSampler, FlowSampler, HeunSampler, flow_sigmas

MU, STD = 2.0, 0.5


def gaussian_velocity(x: Tensor, t: Tensor) -> Tensor:
    """E[x0 - eps | x_t = x] for x0 ~ N(MU, STD^2), eps ~ N(0, 1)."""
    t = t.view(-1, *([1] * (x.dim() - 1)))
    var = (1 - t) ** 2 * STD**2 + t**2
    return MU + ((1 - t) * STD**2 - t) / var * (x - (1 - t) * MU)


class GaussianFlowModel(nn.Module):
    """Test double with MUGDiT's call signature whose velocity is the analytic Gaussian flow."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(
        self, x, timestep, text, text_mask, fps, cond_mask=None, frame_index=None, drop_text=None
    ):
        return gaussian_velocity(x, timestep)


def integrate(sampler: FlowSampler, x1: Tensor) -> Tensor:
    x = x1
    for t in sampler.timesteps:
        x = sampler.step(
            gaussian_velocity(x, torch.full((x.shape[0],), float(t), dtype=x.dtype)), t, x
        )
    return x


@pytest.mark.parametrize(("name", "order"), [("euler", 1), ("heun", 2), ("multistep", 2)])
@pytest.mark.parametrize("ratio", [1.0, 0.3])
def test_convergence_order(name, order, ratio):
    x1 = torch.linspace(-2.5, 2.5, 11, dtype=torch.float64).view(11, 1)
    exact = MU + STD * x1
    errors = []
    for steps in (32, 64, 128):
        sampler = SAMPLERS[name](steps, ratio=ratio)
        errors.append((integrate(sampler, x1) - exact).abs().max().item())
    measured = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(abs(m - order) < 0.15 for m in measured), (name, errors, measured)
    assert errors[-1] < (5e-2 if order == 1 else 1e-3)


def test_timesteps_and_call_order():
    euler, heun = EulerSampler(4), HeunSampler(4)
    torch.testing.assert_close(
        euler.timesteps, torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64)
    )
    torch.testing.assert_close(
        heun.timesteps,
        torch.tensor([1.0, 0.75, 0.75, 0.5, 0.5, 0.25, 0.25, 0.0], dtype=torch.float64),
    )
    x = torch.zeros(1)
    with pytest.raises(FlowError, match=r"next one is 1\.0"):
        euler.step(x, 0.5, x)
    for t in euler.timesteps:
        euler.step(x, t, x)
    with pytest.raises(FlowError, match="set_timesteps again"):
        euler.step(x, 0.0, x)
    with pytest.raises(FlowError, match="num_steps"):
        flow_sigmas(0)


def test_shifted_grid_moves_towards_noise():
    plain, shifted = flow_sigmas(10), flow_sigmas(10, ratio=3.0)
    assert shifted[0] == 1 and shifted[-1] == 0
    assert torch.all(shifted[1:-1] > plain[1:-1])
    for ratio in (0.1, 0.10825317547305482, 0.3, 0.7, 1.0, 2.5, 7.0):  # the ends are exact
        grid = flow_sigmas(25, ratio=ratio)
        assert grid[0].item() == 1.0 and grid[-1].item() == 0.0


def test_cfg_combine():
    torch.manual_seed(0)
    vc, vu = torch.randn(3, 4, 2, 4, 4), torch.randn(3, 4, 2, 4, 4)
    torch.testing.assert_close(cfg_combine(vc, vu, 1.0), vc)
    torch.testing.assert_close(cfg_combine(vc, vu, 0.0), vu)
    torch.testing.assert_close(cfg_combine(vc, vu, 4.0), vu + 4.0 * (vc - vu))
    rescaled = cfg_combine(vc, vu, 4.0, rescale=1.0)
    torch.testing.assert_close(rescaled.flatten(1).std(1), vc.flatten(1).std(1))
    half = cfg_combine(vc, vu, 4.0, rescale=0.5)
    torch.testing.assert_close(half, 0.5 * rescaled + 0.5 * cfg_combine(vc, vu, 4.0))
    with pytest.raises(ValueError, match="rescale"):
        cfg_combine(vc, vu, 4.0, rescale=2.0)


def test_contrast_term_averages_each_samples_contrasts():
    torch.manual_seed(0)
    vc, rows = torch.randn(2, 4, 2, 3, 3), torch.randn(3, 4, 2, 3, 3)
    owner = torch.tensor([1, 0, 1])  # sample 0 has row 1; sample 1 has rows 0 and 2
    got = contrast_term(vc, rows, owner, 2.5)
    want = torch.stack([vc[0] - rows[1], vc[1] - (rows[0] + rows[2]) / 2]) * 2.5
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="at least one contrast row"):
        contrast_term(vc, rows, torch.tensor([1, 1, 1]), 1.0)
    with pytest.raises(ValueError, match="one owner index per contrast row"):
        contrast_term(vc, rows, torch.tensor([0, 1]), 1.0)


def test_weighted_contrast_rows_count_as_repeated_rows():
    torch.manual_seed(0)
    vc, rows = torch.randn(2, 4, 2, 3, 3), torch.randn(3, 4, 2, 3, 3)
    owner = torch.tensor([1, 0, 1])
    got = contrast_term(vc, rows, owner, 1.5, torch.tensor([1.0, 0.5, 3.0]))
    # weight 3 = the row three times; weight 0.5 on sample 0's only row changes nothing
    repeated = torch.cat([rows, rows[2:], rows[2:]])
    want = contrast_term(vc, repeated, torch.tensor([1, 0, 1, 1, 1]), 1.5)
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="must be positive, one per contrast row"):
        contrast_term(vc, rows, owner, 1.0, torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="must be positive, one per contrast row"):
        contrast_term(vc, rows, owner, 1.0, torch.tensor([1.0, 1.0]))
