"""Shared test setup: `_captioning_toy` on sys.path (pytest uses importlib mode), one torch thread.

The test models are tiny: on a shared, oversubscribed CPU, intra-op threads only spin (a 2-thread
step measured 35x slower than a 1-thread one), so each test runs single-threaded and restores
the setting afterwards.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
