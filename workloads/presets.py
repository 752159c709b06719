"""Model presets: the real LLaVA-Next architectures (random or pretrained weights) and a tiny one for tests.

Timing and memory depend on shapes, not weight values, so a preset built with random weights
measures the same as the real model; only its outputs are meaningless.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers is imported when a config is built, so the CLI starts fast
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig

# LLaVA-Next's anyres resolutions (height, width), as in llava-hf/llava-v1.6-*.
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]

# The image-processor settings of llava-hf/llava-v1.6-vicuna-7b-hf (CLIP ViT-L/14 at 336 px).
CLIP_336_PROCESSOR = {
    "size": {"shortest_edge": 336},
    "crop_size": {"height": 336, "width": 336},
    "image_grid_pinpoints": PINPOINTS,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "do_pad": True,
}

DEFAULT_PROMPT = "What is shown in this image?"  # the question asked about every image unless told

# What llava-hf/llava-v1.6-vicuna-7b-hf's chat template writes for one image and one question.
VICUNA_TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"

WEIGHTS = ("auto", "pretrained", "random")  # pretrained if found locally, else random

IMAGE_TOKEN_ID = 32000  # "<image>" in llava-hf's Vicuna tokenizer
PAD_TOKEN_ID = 0  # llava-hf's config and generation_config pad with <unk>


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    config: Callable[[], LlavaNextConfig]
    hf_id: str | None  # where pretrained weights are looked up (local Hugging Face cache only)
    template: str = VICUNA_TEMPLATE


def _llava_next(vision: CLIPVisionConfig, text: LlamaConfig) -> LlavaNextConfig:
    from transformers import LlavaNextConfig

    return LlavaNextConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_grid_pinpoints=PINPOINTS,
        image_token_id=IMAGE_TOKEN_ID,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        image_seq_length=576,
        tie_word_embeddings=False,
    )


def _clip_336(hidden: int, intermediate: int, layers: int, heads: int, projection: int) -> CLIPVisionConfig:
    """CLIP ViT/14 at 336 px: 24 x 24 = 576 patch tokens per partition."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        image_size=336,
        patch_size=14,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        projection_dim=projection,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )


def _clip_vit_l_336() -> CLIPVisionConfig:
    return _clip_336(hidden=1024, intermediate=4096, layers=24, heads=16, projection=768)


def _vicuna(hidden: int, intermediate: int, layers: int, heads: int) -> LlamaConfig:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=32064,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        hidden_act="silu",
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=PAD_TOKEN_ID,
        tie_word_embeddings=False,
    )


def _tiny() -> LlavaNextConfig:
    # Real geometry (336 px, patch 14, 576 tokens per partition, the anyres pinpoints) at toy widths.
    vision = _clip_336(hidden=64, intermediate=128, layers=4, heads=4, projection=32)
    text = _vicuna(hidden=64, intermediate=128, layers=4, heads=4)  # 4 layers: LLM-stage K in 1..3
    return _llava_next(vision, text)


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", "LLaVA-Next geometry at toy widths (tests, CPU)", _tiny, hf_id=None),
    "llava-next-7b": Preset(
        "llava-next-7b",
        "LLaVA-Next-7B: Vicuna-7B + CLIP ViT-L/14-336 (llava-hf/llava-v1.6-vicuna-7b-hf)",
        lambda: _llava_next(_clip_vit_l_336(), _vicuna(4096, 11008, 32, 32)),
        hf_id="llava-hf/llava-v1.6-vicuna-7b-hf",
    ),
    "llava-next-13b": Preset(
        "llava-next-13b",
        "LLaVA-Next-13B: Vicuna-13B + CLIP ViT-L/14-336 (llava-hf/llava-v1.6-vicuna-13b-hf)",
        lambda: _llava_next(_clip_vit_l_336(), _vicuna(5120, 13824, 40, 40)),
        hf_id="llava-hf/llava-v1.6-vicuna-13b-hf",
    ),
}
