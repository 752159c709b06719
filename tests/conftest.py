import logging

import pytest
import torch

from workloads.models import load_model

logging.getLogger("transformers").setLevel(logging.ERROR)
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def tiny():
    """The tiny preset (real LLaVA-Next geometry, toy widths), random weights, on CPU; built once."""
    return load_model("tiny", "random", "float32", "cpu", seed=0)
