"""FastV (Chen et al., ECCV 2024), inside the LLM: from decoder layer K on, keep the visual tokens the
last prompt token attends to most at layer K-1 (attention averaged over heads), exactly
round(b * N_full) per sample. The attention row is computed from layer K-1's cached keys and the
hooked query, so the model stays on SDPA."""

from __future__ import annotations

from hired.layout import top_per_row
from hired.llm import LLM_STAGE_NOT_COMPILED, LayerInputs
from hired.spec import Method, llm_layer


def keep(inputs: LayerInputs, params: dict):
    attention = inputs.last_token_attention().mean(dim=1)  # (B, L) averaged over heads
    return top_per_row(attention, inputs.visual, inputs.counts)


METHOD = Method(
    name="fastv",
    summary="from LLM layer K on, the visual tokens the last prompt token attends to most at layer K-1",
    stage="llm",
    engines=("eager",),
    engines_why=LLM_STAGE_NOT_COMPILED,
    reference="Chen et al., FastV, ECCV 2024 (arXiv 2403.06764); code: github.com/pkunlp-icler/FastV",
    keep=keep,
    params=(llm_layer("layer", 2, "decoder layer K from which visual tokens are dropped (ranked at K - 1)"),),
)
