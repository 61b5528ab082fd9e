import os

import pytest
import torch

# Two cores shared by pytest and notebook kernels: one intra-op thread avoids OpenMP oversubscription,
# which on a loaded 2-core machine made small ops 10x slower.
torch.set_num_threads(int(os.environ.get("MINIVGPT_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
