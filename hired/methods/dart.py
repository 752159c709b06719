"""DART (Wen et al., 2025), inside the LLM: from decoder layer K on, keep the visual tokens that
duplicate the pivots least. Pivots are the image and text tokens whose layer-(K-1) keys have the
largest norm; each pivot in turn takes its share of the budget: the remaining visual tokens least
similar to it (cosine on layer K's input after the final norm). Image pivots are kept; exactly
round(b * N_full) visual tokens per sample. Needs no attention weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hired.layout import top_per_row
from hired.llm import LLM_STAGE_NOT_COMPILED, LayerInputs
from hired.spec import Method, Param, llm_layer

RULES = {"l1": 1, "l2": 2}  # key norm that picks the pivots


def keep(inputs: LayerInputs, params: dict) -> torch.Tensor:
    b, n = inputs.visual.shape
    device = inputs.visual.device
    keys = inputs.keys.transpose(1, 2).flatten(2).float()  # (B, L, kv_heads * head_dim)
    size = keys.norm(p=RULES[params["pivot_rule"]], dim=-1)
    position = torch.arange(n, device=device)
    last_visual = torch.where(inputs.visual, position, -1).max(dim=1).values
    text = inputs.valid & ~inputs.visual & (position[None, :] > last_visual[:, None])  # after the image
    n_image = torch.clamp(inputs.counts, max=params["pivots_image"])
    n_text = torch.clamp(text.sum(dim=1), max=params["pivots_text"])  # per sample: never the batch's fewest
    image_pivots = top_per_row(size, inputs.visual, n_image)
    text_pivots = top_per_row(size, text, n_text)
    # each sample's pivots in a fixed order, its own first: image pivots by key size, then text pivots
    ranked = torch.cat(
        [_ranked(size, image_pivots, int(n_image.max())), _ranked(size, text_pivots, int(n_text.max()))], 1
    )
    pivots = ranked.gather(1, (ranked < 0).int().argsort(dim=1, stable=True))
    count = (pivots >= 0).sum(dim=1).clamp(min=1)  # per sample: its quota is shared among its own pivots
    features = F.normalize(inputs.norm(inputs.hidden).float(), dim=-1)
    quota = (inputs.counts - n_image).clamp(min=0)
    kept = image_pivots.clone()
    rows = torch.arange(b, device=device)
    for i in range(pivots.shape[1]):
        share = torch.where(pivots[:, i] >= 0, quota // count + (i < quota % count).long(), 0)
        similarity = (features @ features[rows, pivots[:, i].clamp(min=0)][..., None])[..., 0]
        kept |= top_per_row(-similarity, inputs.visual & ~kept, share)
    return kept


def _ranked(size: torch.Tensor, chosen: torch.Tensor, width: int) -> torch.Tensor:
    """(B, width) positions of the chosen tokens by descending size, -1 where a row has fewer."""
    order = size.masked_fill(~chosen, float("-inf")).argsort(dim=1, descending=True, stable=True)[:, :width]
    return torch.where(chosen.gather(1, order), order, -1)


METHOD = Method(
    name="dart",
    summary="from LLM layer K on, the visual tokens least similar to key-norm pivots (duplicates dropped)",
    stage="llm",
    engines=("eager",),
    engines_why=LLM_STAGE_NOT_COMPILED,
    reference="Wen et al., DART, EMNLP 2025 (arXiv 2502.11494); code: github.com/ZichenWen1/DART",
    keep=keep,
    params=(
        llm_layer("layer", 2, "decoder layer K from which visual tokens are dropped (pivots from K - 1)"),
        Param("pivots_image", int, 4, "image pivots (kept), by the largest key norm", low=0),
        Param("pivots_text", int, 4, "text pivots, from the prompt after the image", low=0),
        Param("pivot_rule", str, "l1", "key norm that picks the pivots", choices=tuple(RULES)),
    ),
)
