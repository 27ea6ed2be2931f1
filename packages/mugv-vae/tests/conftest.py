import dataclasses

import pytest
import torch

from mugv.vae import CONFIGS, VideoVAE


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convs gain nothing from threads, and OpenMP spinning on a shared CPU costs 10-30x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=[False, True], ids=["convs", "linear-shortcut"])
def tiny_vae(request) -> VideoVAE:
    """The tiny preset, with and without the temporal stage's linear shortcut."""
    torch.manual_seed(0)
    config = CONFIGS["tiny"]
    temporal = dataclasses.replace(config.temporal, linear_shortcut=request.param)
    return VideoVAE(dataclasses.replace(config, temporal=temporal)).eval()


@pytest.fixture
def video() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 17, 32, 32, generator=g) * 2 - 1
