"""Where a model runs: device, dtype and the `auto` model, resolved with torch alone (no transformers),
so the command line can refuse a wrong device in a second."""

from __future__ import annotations

import torch

from workloads.errors import InputError

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def resolve_device(device: str, worker_gpu: bool | None = None) -> torch.device:
    """The device a point runs on: on this machine, or (worker_gpu True/False) on a Ray worker with or
    without a GPU, which this machine cannot look at."""
    has_gpu = torch.cuda.is_available() if worker_gpu is None else worker_gpu
    if device == "auto":
        return torch.device("cuda" if has_gpu else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda" and not has_gpu:
        where = (
            "torch sees no CUDA GPU on this machine" if worker_gpu is None else "this Ray cluster has no GPU"
        )
        raise InputError(f"device {device!r} asked for, but {where}")
    if (
        worker_gpu is None
        and dev.type == "cuda"
        and dev.index is not None
        and dev.index >= torch.cuda.device_count()
    ):
        raise InputError(f"device {device!r} asked for, but torch sees {torch.cuda.device_count()} GPU(s)")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device type {dev.type!r} is not supported (use cpu or cuda)")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":  # half precision as deployed on GPUs; float32 where CPU kernels are fast
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r} (use auto, {', '.join(DTYPES)})")
    return DTYPES[dtype]


def resolve_model_name(model: str, device: torch.device, engine: str = "eager") -> str:
    """auto: the 7B on a GPU; on a CPU the tiny preset (for vLLM its twin with wider heads, tiny-vllm)."""
    if model == "auto":
        if device.type == "cuda":
            return "llava-next-7b"
        return "tiny-vllm" if engine == "vllm" else "tiny"
    return model
