import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_model():
    from mugv.retrieval import TWBert, tiny

    torch.manual_seed(0)
    return TWBert(tiny()).eval()


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread: on a shared, oversubscribed CPU it is several times faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
