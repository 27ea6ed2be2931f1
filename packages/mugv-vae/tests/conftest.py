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


@pytest.fixture
def tiny_vae() -> VideoVAE:
    torch.manual_seed(0)
    return VideoVAE(CONFIGS["tiny"]).eval()


@pytest.fixture
def video() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 17, 32, 32, generator=g) * 2 - 1
