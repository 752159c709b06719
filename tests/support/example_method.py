"""A test-only method: what adding a method between the vision tower and the LLM takes (this module,
plus one registry line: tests register it with monkeypatch.setitem(METHODS, "stride", STRIDE))."""

import torch

from hired.spec import Method, Param, Selection, budget_tokens


def select_stride(batch, budget, fidelity, params):
    """round(b * N_full) candidates at even steps, starting `phase` of a step in."""
    out = []
    for layout, features in zip(batch.layouts, batch.split(batch.features), strict=True):
        k = budget_tokens(budget, layout.n_full)
        positions = ((torch.arange(k) + params["phase"]) * layout.n_full / k).long()
        kept = layout.candidates[positions].to(features.device)
        out.append(Selection(features.flatten(0, 1)[kept], kept))
    return out


STRIDE = Method(
    name="stride",
    summary="evenly spaced candidates (a test-only method)",
    stage="vision",
    reference="tests/support/example_method.py",
    select=select_stride,
    params=(Param("phase", float, 0.0, "offset of the first token, in steps", low=0, high=0.99),),
)
