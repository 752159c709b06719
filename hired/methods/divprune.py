"""DivPrune (Alvar et al., CVPR 2025), paper fidelity with exact budgets, batched over images.

Max-min diversity over each image's visual tokens as the LLM receives them (projector outputs, the
features the released code uses), by cosine distance: first the most isolated token (the one whose
nearest other token is farthest), then repeatedly the token farthest from everything chosen.
The greedy loop runs its k steps over all images of the batch at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hired.capture import VisionBatch
from hired.spec import Method, Selection, budget_tokens


def farthest_point(features: torch.Tensor, valid: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(B, max count) token positions in the order chosen, -1 past each row's count.

    features (B, N, D); valid (B, N) which positions are tokens; counts (B,) how many to choose (on the
    host: the loop's length is read from it once).
    Distance = 1 - cosine similarity, from one (B, N, N) product; the first token is the most
    isolated (its nearest other token farthest), then each step takes the token farthest from all
    chosen (ties: the lower index); a chosen token is never chosen again.
    """
    b, n, _ = features.shape
    x = F.normalize(features.float(), dim=-1)
    similarity = x @ x.transpose(1, 2)
    rows = torch.arange(b, device=x.device)
    others = similarity.masked_fill(~valid[:, None, :], float("-inf"))
    others.diagonal(dim1=1, dim2=2).fill_(float("-inf"))
    pick = others.max(dim=2).values.masked_fill(~valid, float("inf")).argmin(dim=1)
    del others
    width = max(counts.tolist())
    counts = counts.to(x.device)
    chosen = torch.full((b, width), -1, dtype=torch.long, device=x.device)
    taken = ~valid
    nearest = torch.full((b, n), float("inf"), device=x.device)  # distance to the closest chosen token
    for step in range(width):  # device ops only: no host sync per step
        active = step < counts
        chosen[:, step] = torch.where(active, pick, -1)
        taken.scatter_(1, pick[:, None], True)
        distance = 1 - similarity[rows, pick]  # (B, N): one row per image, no product per step
        nearest = torch.where(active[:, None], torch.minimum(nearest, distance), nearest)
        pick = nearest.masked_fill(taken, float("-inf")).argmax(dim=1)
    return chosen


def select(batch: VisionBatch, budget: float | None, fidelity: str, params: dict) -> list[Selection]:
    """Per image: the chosen candidates in stock order, with their projector outputs."""
    if batch.project is None:
        raise ValueError("divprune selects on projector outputs: the vision batch carries no projector")
    per_image = [
        f.flatten(0, 1)[layout.candidates.to(f.device)]
        for layout, f in zip(batch.layouts, batch.split(batch.features), strict=True)
    ]
    lengths = [len(t) for t in per_image]  # sizes known on the host: no sync
    counts = [budget_tokens(budget, n) for n in lengths]
    projected = batch.project(torch.cat(per_image))
    padded = torch.nn.utils.rnn.pad_sequence(list(projected.split(lengths)), batch_first=True)
    valid = (
        torch.arange(padded.shape[1], device=padded.device)[None, :]
        < torch.tensor(lengths, device=padded.device)[:, None]
    )
    chosen = farthest_point(padded, valid, torch.tensor(counts))
    out = []
    for i, layout in enumerate(batch.layouts):
        positions = chosen[i, : counts[i]].sort().values  # stock order
        kept = layout.candidates.to(positions.device)[positions]
        out.append(Selection(per_image[i][positions], kept, projected=padded[i, positions]))
    return out


METHOD = Method(
    name="divprune",
    summary="max-min diversity (greedy farthest point) over the image's LLM inputs by cosine distance",
    stage="vision",
    reference="Alvar et al., DivPrune, CVPR 2025 (arXiv 2503.02175); code: github.com/vbdi/divprune",
    select=select,
)
