"""A model's vision shape: what method defaults, ranges and layer choices depend on. Importable without
torch (the command line checks parameters before anything heavy loads)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VisionShape:
    """What method defaults and ranges depend on: the vision tower's depth and the projector's input."""

    depth: int
    feature_layer: int
    llm_depth: int | None = None  # decoder layers of the language model (LLM-stage methods' layer range)


def shape_of(config) -> VisionShape:
    """A LlavaNextConfig's vision shape (hidden_states[i + 1] is the output of layers[i])."""
    depth = config.vision_config.num_hidden_layers
    selected = config.vision_feature_layer
    if not isinstance(selected, int):
        raise ValueError("only a single vision_feature_layer is supported")
    text = getattr(config, "text_config", None)
    llm_depth = getattr(text, "num_hidden_layers", None)
    return VisionShape(depth, depth + selected if selected < 0 else selected - 1, llm_depth)
