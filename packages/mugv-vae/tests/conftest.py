import pytest
import torch

from mugv.vae import CONFIGS, VideoVAE


@pytest.fixture
def tiny_vae() -> VideoVAE:
    torch.manual_seed(0)
    return VideoVAE(CONFIGS["tiny"]).eval()


@pytest.fixture
def video() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 17, 32, 32, generator=g) * 2 - 1
