"""LLaVA-Next in vLLM with a vision-stage method between the vision tower and the language model.

Imported by vLLM only (hired.vllm_plugin registers it). The point's method reaches it as the
`hired_bench` attribute of the model config (vLLM's `hf_overrides`), which both the multimodal
processor and the model read:
- the processing info gives each image exactly the placeholders the method keeps
  (hired.methods.expected_tokens on the layout transformers' geometry gives);
- the model runs vLLM's vision tower with hooks that keep what the suite's methods read (the
  projector's input, and the CLS query and keys of the layers a method asks for), calls the method's
  own `select` (the function `hired-bench run` times with transformers) and projects its selection.
Layer L's queries and keys are L's q and k projections of layer_norm1 of layer L - 1's output, as
transformers computes them; vLLM fuses q, k and v, so its output is split. vLLM builds the tower only
up to the projector's input layer; a method that reads the next layer (PruMerge's and GlobalCom2's
last layer) gets that layer's layer_norm1, q and k projections loaded beside it, not the whole layer.
The picture-changing step of a method (the resize baseline's `prepare`) runs before the HF processor.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from vllm.model_executor.models.llava import LlavaDummyInputsBuilder
from vllm.model_executor.models.llava_next import (
    LlavaNextForConditionalGeneration,
    LlavaNextImageEmbeddingInputs,
    LlavaNextMultiModalProcessor,
    LlavaNextProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig

from hired.capture import VisionBatch
from hired.glue import project_selections, shown_pictures, uses_stock_path
from hired.layout import image_layout
from hired.methods import METHODS, expected_tokens
from hired.shape import shape_of
from hired.vllm_plugin import CONFIG_KEY

# a vision layer's tensors in either checkpoint layout (hub: vision_tower.vision_model.*; transformers 5)
LAYER_WEIGHT = re.compile(
    r"(?:model\.)?vision_tower\.(?:vision_model\.)?encoder\.layers\.(\d+)\."
    r"(layer_norm1|self_attn\.q_proj|self_attn\.k_proj)\.(weight|bias)$"
)


def point_spec(config) -> dict | None:
    """The point's method spec, or None for stock LLaVA-Next (no method, `none`, or the stock path)."""
    spec = getattr(config, CONFIG_KEY, None)
    if not spec:
        return None
    if uses_stock_path(METHODS[spec["method"]], spec["budget"], spec["fidelity"]):
        return None
    return spec


class HiredProcessingInfo(LlavaNextProcessingInfo):
    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        config = self.get_hf_config()
        spec = point_spec(config)
        if spec is None:
            return super().get_num_image_tokens(image_width=image_width, image_height=image_height)
        layout = image_layout((image_height, image_width), config)
        count = expected_tokens(spec["method"], spec["budget"], spec["fidelity"], layout, spec["params"])
        if count is None:  # refused before an engine starts; said here too should one get through
            raise ValueError(f"{spec['method']}'s token count depends on the weights: vLLM needs it before")
        return count


class HiredProcessor(LlavaNextMultiModalProcessor):
    """A method's picture preparation (resize) before the HF processor; the pictures' sizes before it
    travel with the pixels (`source_sizes`), as hired.glue passes them to the method's `select`. A picture
    the method encodes as its base partition alone is preprocessed whole (vLLM's processor makes every
    partition); the model encodes the base alone."""

    def _call_hf_processor(self, hf_data, hf_kwargs):
        config = self.info.get_hf_config()
        spec = point_spec(config)
        images = hf_data.get("images")
        if spec is None or not images or METHODS[spec["method"]].prepare is None:
            return super()._call_hf_processor(hf_data, hf_kwargs)
        images = images if isinstance(images, list) else [images]
        method = METHODS[spec["method"]]
        shown, _ = shown_pictures(method, images, spec["budget"], spec["params"], spec["fidelity"], config)
        processed = super()._call_hf_processor({**hf_data, "images": shown}, hf_kwargs)
        processed["source_sizes"] = torch.tensor([[img.height, img.width] for img in images])
        return processed

    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs):
        fields = dict(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))
        fields["source_sizes"] = MultiModalFieldConfig.batched("image", keep_on_cpu=True)
        return fields


class NextLayerQK(nn.Module):
    """Layer L's layer_norm1, q and k projections: the CLS query and keys of a layer vLLM does not build."""

    def __init__(self, hidden: int, eps: float) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(hidden, eps=eps)
        self.q_proj = nn.Linear(hidden, hidden)
        self.k_proj = nn.Linear(hidden, hidden)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.layer_norm1(hidden_states)
        return self.q_proj(x), self.k_proj(x)


@MULTIMODAL_REGISTRY.register_processor(
    HiredProcessor, info=HiredProcessingInfo, dummy_inputs=LlavaDummyInputsBuilder
)
class HiredLlavaNext(LlavaNextForConditionalGeneration):
    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        config = self.config
        self.hired_spec = point_spec(config)
        self.hired_layers: set[int] = set()
        self.next_layer = None
        self.selections: list = []  # (picture size, kept positions), when the spec asks to keep them
        self.source_sizes: list | None = None  # (height, width) before a method's picture preparation
        if self.hired_spec is None:
            return
        method = METHODS[self.hired_spec["method"]]
        self.hired_layers = set(method.layers(self.hired_spec["params"]))
        built = len(self.vision_tower.vision_model.encoder.layers)
        beyond = sorted(layer for layer in self.hired_layers if layer >= built)
        if beyond and beyond != [built]:
            raise ValueError(f"vision layer(s) {beyond}: vLLM builds the tower to layer {built - 1} only")
        if beyond:
            vision = config.vision_config
            self.next_layer = NextLayerQK(vision.hidden_size, vision.layer_norm_eps)

    def load_weights(self, weights) -> set[str]:
        built = len(self.vision_tower.vision_model.encoder.layers)
        mine: set[str] = set()

        def divert(named):
            for name, tensor in named:
                match = LAYER_WEIGHT.search(name)
                if self.next_layer is not None and match and int(match[1]) == built:
                    part = match[2].removeprefix("self_attn.")
                    getattr(getattr(self.next_layer, part), match[3]).data.copy_(tensor)
                    mine.add(f"next_layer.{part}.{match[3]}")
                    continue
                yield name, tensor

        loaded = super().load_weights(divert(weights))
        return set(loaded) | mine

    def embed_multimodal(self, **kwargs):
        sources = kwargs.pop("source_sizes", None)
        self.source_sizes = None if sources is None else [tuple(int(v) for v in s) for s in sources]
        return super().embed_multimodal(**kwargs)

    def _process_image_input(self, image_input):
        if self.hired_spec is None or isinstance(image_input, LlavaNextImageEmbeddingInputs):
            return super()._process_image_input(image_input)
        spec = self.hired_spec
        method = METHODS[spec["method"]]
        sizes = [tuple(int(v) for v in size) for size in image_input["image_sizes"]]
        sources = self.source_sizes
        base_only = [False] * len(sizes)
        if sources is not None and method.prepare is not None:
            plan = method.prepare([(w, h) for h, w in sources], spec["budget"], spec["params"], self.config)
            base_only = [flag for _, flag in plan]
        layouts = [image_layout(size, self.config, flag) for size, flag in zip(sizes, base_only, strict=True)]
        pixel_values = image_input["pixel_values"]
        stacked = torch.cat(
            [pv[: layout.partitions] for pv, layout in zip(pixel_values, layouts, strict=True)]
        )
        vision = self.encode(stacked, layouts)
        vision.source_sizes = sources
        selections = method.select(vision, spec["budget"], spec["fidelity"], spec["params"])
        if spec.get(
            "keep_selections"
        ):  # the kept positions, for the tests that compare them with transformers'
            self.selections.extend((size, s.kept) for size, s in zip(sizes, selections, strict=True))
        return project_selections(self.multi_modal_projector, selections)

    def encode(self, pixels: torch.Tensor, layouts: list) -> VisionBatch:
        """vLLM's vision tower over every partition, keeping what hired.capture keeps with transformers."""
        layers = self.vision_tower.vision_model.encoder.layers
        feature = shape_of(self.config).feature_layer
        store: dict = {}
        handles = [layers[feature].register_forward_hook(lambda _m, _i, out: store.__setitem__("h", out))]
        for index in sorted(self.hired_layers):
            if index < len(layers):

                def keep(_m, _i, out, index=index):
                    q, k, _v = out[0].chunk(3, dim=-1)
                    store[index] = (q, k)

                handles.append(layers[index].self_attn.qkv_proj.register_forward_hook(keep))
        try:
            self.vision_tower(pixels.to(self.vision_tower.dtype))
        finally:
            for handle in handles:
                handle.remove()
        hidden = store["h"]
        if self.next_layer is not None:
            store[len(layers)] = self.next_layer(hidden)
        features = hidden[:, 1:] if self.config.vision_feature_select_strategy == "default" else hidden
        return VisionBatch(
            layouts,
            features,
            self.config.vision_config.num_attention_heads,
            {index: store[index][0] for index in self.hired_layers},
            {index: store[index][1] for index in self.hired_layers},
            project=self.multi_modal_projector,
            newline=self.image_newline,
        )
