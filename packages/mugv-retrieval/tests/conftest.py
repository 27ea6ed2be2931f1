import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_model():
    from mugv.retrieval import TWBert, tiny

    torch.manual_seed(0)
    return TWBert(tiny()).eval()
