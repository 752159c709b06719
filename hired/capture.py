"""One pass of LLaVA-Next's vision tower that keeps what the methods need.

Forward hooks take the projector's input (the `vision_feature_layer` output) and, for the layers
a method asks for, the CLS row of the attention computed from that layer's q/k projections, so
no 577 x 577 matrix is materialised and the tower keeps its fast (sdpa) attention.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch


@dataclass
class VisionOutput:
    """Vision tower results for a batch of images, partitions of all images stacked."""

    features: torch.Tensor  # (sum P, side**2, C) projector input, CLS dropped
    partitions: list[int]  # partitions per image, to split the stack
    cls_attention: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (sum P, heads, side**2)

    def per_image(self) -> list[tuple[torch.Tensor, dict[int, torch.Tensor]]]:
        feats = self.features.split(self.partitions)
        attn = {layer: a.split(self.partitions) for layer, a in self.cls_attention.items()}
        return [(f, {layer: a[i] for layer, a in attn.items()}) for i, f in enumerate(feats)]


def vision_layers(model) -> torch.nn.ModuleList:
    """The CLIP encoder layers (transformers 5.x has no `vision_model` wrapper)."""
    tower = model.model.vision_tower
    encoder = tower.encoder if hasattr(tower, "encoder") else tower.vision_model.encoder
    return encoder.layers


def feature_layer_index(model) -> int:
    """Index into the encoder layers whose output feeds the projector (hidden_states[i + 1] = layers[i])."""
    selected = model.config.vision_feature_layer
    if not isinstance(selected, int):
        raise ValueError("only a single vision_feature_layer is supported")
    depth = len(vision_layers(model))
    return depth + selected if selected < 0 else selected - 1


def cls_attention(query_cls: torch.Tensor, keys: torch.Tensor, heads: int) -> torch.Tensor:
    """Softmax row of the CLS query over all keys, per head, at the patch keys: (B, heads, T-1).

    query_cls: (B, C) projected CLS query; keys: (B, T, C) projected keys (token 0 is CLS).
    """
    b, t, c = keys.shape
    d = c // heads
    q = query_cls.float().view(b, heads, 1, d)
    k = keys.float().view(b, t, heads, d).transpose(1, 2)  # (B, H, T, d)
    scores = (q @ k.transpose(-1, -2)).squeeze(2) * d**-0.5  # (B, H, T)
    return scores.softmax(dim=-1)[:, :, 1:]


@contextmanager
def _hooks(model, attention_layers: set[int], store: dict):
    layers = vision_layers(model)
    heads = model.config.vision_config.num_attention_heads
    handles = []

    def keep_features(_module, _inputs, output):
        store["features"] = output[0] if isinstance(output, tuple) else output

    handles.append(layers[feature_layer_index(model)].register_forward_hook(keep_features))
    for layer in sorted(attention_layers):
        attn = layers[layer].self_attn

        def keep_query(_m, _i, out, layer=layer):
            store[("q", layer)] = out[:, 0]

        def make_cls_attention(_m, _i, out, layer=layer):
            store[layer] = cls_attention(store.pop(("q", layer)), out, heads)

        handles.append(attn.q_proj.register_forward_hook(keep_query))
        handles.append(attn.k_proj.register_forward_hook(make_cls_attention))
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
    model, pixel_values: torch.Tensor, partitions: list[int], attention_layers: set[int] = frozenset()
) -> VisionOutput:
    """Run the vision tower once over every partition of every image."""
    depth = len(vision_layers(model))
    bad = [layer for layer in attention_layers if not 0 <= layer < depth]
    if bad:
        raise ValueError(f"attention layer(s) {bad} outside the vision tower's 0..{depth - 1}")
    stacked = stack_partitions(pixel_values, partitions)
    tower = model.model.vision_tower
    store: dict = {}
    with _hooks(model, set(attention_layers), store):
        tower(stacked.to(tower.dtype))
    features = store.pop("features")
    if model.config.vision_feature_select_strategy == "default":
        features = features[:, 1:]
    return VisionOutput(features, list(partitions), {layer: store[layer] for layer in attention_layers})
