import os

import pytest
import torch

# tests are small workloads: one thread is as fast and does not fight other processes for cores
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
