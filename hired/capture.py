"""One pass of LLaVA-Next's vision tower that keeps what the methods need.

Forward hooks take the projector's input (the `vision_feature_layer` output) and, for the layers
a method asks for, the CLS query and all keys of that layer's attention. Methods compute the
attention they need from those (per head for HiRED, full width for PruMerge), so no 577 x 577
matrix is materialised and the tower keeps its fast (sdpa) attention.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from hired.layout import ImageLayout
from hired.shape import shape_of


@dataclass
class VisionBatch:
    """Vision tower results for a batch of images; partitions of all images stacked (sum P rows)."""

    layouts: list[ImageLayout]
    features: torch.Tensor  # (sum P, n, C) projector input, CLS dropped
    heads: int  # attention heads of the vision tower
    queries: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (sum P, 1 + n, C), CLS first
    keys: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (sum P, 1 + n, C), CLS first
    project: Callable[[torch.Tensor], torch.Tensor] | None = None  # the projector, for methods that need it
    newline: torch.Tensor | None = None  # (D,) LLaVA-Next's image newline embedding, for methods that emit it
    source_sizes: list[tuple[int, int]] | None = None  # (height, width) of the pictures before any resize

    @property
    def partitions(self) -> list[int]:
        return [layout.partitions for layout in self.layouts]

    def cls_attention(self, layer: int, heads: int | None = None, softmax: bool = True) -> torch.Tensor:
        """(sum P, heads, n) CLS row at the patch keys; heads=1 is full width (no head split).

        softmax=False gives the scaled logits q.k / sqrt(d) instead of the probabilities."""
        return cls_attention(self.queries[layer][:, 0], self.keys[layer], heads or self.heads, softmax)

    def released_cls_attention(self, layer: int, heads: int | None = None) -> torch.Tensor:
        """(sum P, heads, n) the CLS row as the HiRED and PruMerge releases compute it: the whole
        attention matrix in the model's dtype (q k^T, scaled after the product, then the softmax)."""
        heads = heads or self.heads
        q, k = (split_heads(x, heads) for x in (self.queries[layer], self.keys[layer]))
        return ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(dim=-1)[:, :, 0, 1:]

    def released_cls_logits(self, layer: int) -> torch.Tensor:
        """(sum P, n) the CLS row of the head-averaged attention logits as the GlobalCom2 release computes
        them (its custom CLIP attention): query scaled first, one bmm per head, the mean over heads of
        the whole matrix, all in the model's dtype."""
        queries, keys = self.queries[layer], self.keys[layer]
        d = queries.shape[-1] // self.heads
        q, k = (split_heads(x, self.heads).flatten(0, 1) for x in (queries * d**-0.5, keys))
        logits = torch.bmm(q, k.transpose(1, 2))  # (S * heads, t, t), one product per head
        return logits.unflatten(0, (-1, self.heads)).mean(dim=1)[:, 0, 1:]

    def head_mean_keys(self, layer: int) -> torch.Tensor:
        """(sum P, n, C / heads) patch keys of a layer averaged over heads (CLS dropped)."""
        keys = self.keys[layer][:, 1:]
        return keys.unflatten(-1, (self.heads, -1)).float().mean(-2)

    def split(self, tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-image views of a (sum P, ...) tensor."""
        return tensor.split(self.partitions)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(S, t, C) -> (S, heads, t, C / heads), as the released codes reshape q and k."""
    s, t, c = x.shape
    return x.view(s, t, heads, c // heads).transpose(1, 2)


def vision_layers(model) -> torch.nn.ModuleList:
    """The CLIP encoder layers (transformers 5.x has no `vision_model` wrapper)."""
    tower = model.model.vision_tower
    encoder = tower.encoder if hasattr(tower, "encoder") else tower.vision_model.encoder
    return encoder.layers


def feature_layer_index(model) -> int:
    """Index into the encoder layers whose output feeds the projector (hidden_states[i + 1] = layers[i])."""
    return shape_of(model.config).feature_layer


def cls_attention(
    query_cls: torch.Tensor, keys: torch.Tensor, heads: int, softmax: bool = True
) -> torch.Tensor:
    """Softmax row of the CLS query over all keys, per head, at the patch keys: (B, heads, T-1).

    query_cls: (B, C) projected CLS query; keys: (B, T, C) projected keys (token 0 is CLS).
    softmax=False: the scaled logits before the softmax.
    """
    c = keys.shape[-1]
    d = c // heads
    # one contiguous bmm against a block-diagonal (C, heads) query: the keys are read once, not per head
    blocks = torch.eye(heads, device=keys.device).repeat_interleave(d, dim=0)
    scores = (keys.float() @ (query_cls.float()[:, :, None] * blocks)).transpose(1, 2) * d**-0.5
    return (scores.softmax(dim=-1) if softmax else scores)[:, :, 1:]


@contextmanager
def _hooks(model, layers_needed: set[int], store: dict):
    layers = vision_layers(model)
    handles = []

    def keep_features(_module, _inputs, output):
        store["features"] = output[0] if isinstance(output, tuple) else output

    handles.append(layers[feature_layer_index(model)].register_forward_hook(keep_features))
    for layer in sorted(layers_needed):
        attn = layers[layer].self_attn

        def keep_query(_m, _i, out, layer=layer):
            store[("q", layer)] = out  # all queries: the released code's scores use the whole matrix

        def keep_keys(_m, _i, out, layer=layer):
            store[("k", layer)] = out

        handles.append(attn.q_proj.register_forward_hook(keep_query))
        handles.append(attn.k_proj.register_forward_hook(keep_keys))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def stack_partitions(pixel_values: torch.Tensor, partitions: list[int]) -> torch.Tensor:
    """(B, max P, 3, H, W) padded batch -> (sum P, 3, H, W), as get_image_features does."""
    if pixel_values.dim() == 4:
        return pixel_values
    return torch.cat([pv[:p] for pv, p in zip(pixel_values, partitions, strict=True)], dim=0)


@torch.inference_mode()
def encode_images(
    model, pixel_values: torch.Tensor, layouts: list[ImageLayout], layers_needed: set[int] = frozenset()
) -> VisionBatch:
    """Run the vision tower once over every partition of every image."""
    depth = len(vision_layers(model))
    bad = [layer for layer in layers_needed if not 0 <= layer < depth]
    if bad:
        raise ValueError(f"vision layer(s) {bad} outside the tower's 0..{depth - 1}")
    stacked = stack_partitions(pixel_values, [layout.partitions for layout in layouts])
    tower = model.model.vision_tower
    store: dict = {}
    with _hooks(model, set(layers_needed), store):
        tower(stacked.to(tower.dtype))
    features = store.pop("features")
    if model.config.vision_feature_select_strategy == "default":
        features = features[:, 1:]
    return VisionBatch(
        layouts,
        features,
        model.config.vision_config.num_attention_heads,
        {layer: store[("q", layer)] for layer in layers_needed},
        {layer: store[("k", layer)] for layer in layers_needed},
    )
