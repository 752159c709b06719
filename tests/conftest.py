import json
import logging
import os
from pathlib import Path

import pytest
import torch

from workloads.models import load_model

logging.getLogger("transformers").setLevel(logging.ERROR)
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


# the command line's arguments for the tiny model on the CPU, and for the shortest measurement
TINY = ["--model", "tiny", "--device", "cpu"]
QUICK = ["--warmup", "0", "--repeats", "1", "--new-tokens", "2"]
# a sweep file's head for the same: append [[methods]] tables
TINY_SWEEP = """
models = ["tiny"]
weights = "random"
device = "cpu"
batch_sizes = [1]
new_tokens = [2]
warmup = 0
repeats = 1
"""


@pytest.fixture(scope="session")
def tiny():
    """The tiny preset (real LLaVA-Next geometry, toy widths), random weights, on CPU; built once."""
    return load_model("tiny", "random", "float32", "cpu", seed=0)


@pytest.fixture
def fake_nvml(monkeypatch):
    """Configure the fake pynvml the sampler process will import; returns a function taking the script."""
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("PYTHONPATH", f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("FAKE_NVML_PID", str(os.getpid()))

    def configure(**script):
        monkeypatch.setenv("FAKE_NVML", json.dumps(script))
        return "tests.support.fake_pynvml"

    return configure


def need_extra(module: str):
    """An optional extra's module ([eval], [ray]), or the test skipped. `make test` installs every extra
    and sets HIRED_BENCH_EXTRAS=required, so there a missing one fails instead of hiding a test."""
    if os.environ.get("HIRED_BENCH_EXTRAS") == "required":
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module)


def plant_key_ties(batch) -> None:
    """Every fourth patch key of every layer copies its neighbour's: exact CLS-score ties in any dtype
    (and fp16 rounding makes more), where reference fidelity must break them as the releases do."""
    for keys in batch.keys.values():
        keys[:, 2::4] = keys[:, 1::4][:, : keys[:, 2::4].shape[1]]


def with_patch_queries(cls_query: torch.Tensor, seed: int) -> torch.Tensor:
    """(S, 577, C) queries of a layer: the given CLS query first, random patch queries after (drawn
    from their own generator, so the rest of a fake batch stays what its seed made)."""
    g = torch.Generator().manual_seed(seed + 1_000)
    patches = torch.randn(cls_query.shape[0], 576, cls_query.shape[1], generator=g)
    return torch.cat([cls_query[:, None], patches.to(cls_query.dtype)], dim=1)
