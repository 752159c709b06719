"""Model presets: the published LLaVA-Next and LLaVA-1.5 architectures (random or pretrained weights),
and tiny twins for tests.

Timing and memory depend on shapes, not weight values, so a preset built with random weights
measures the same as the real model; only its outputs are meaningless. Every architecture value
below is the published config's; the comment above each builder says where it was read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from workloads.errors import InputError
from workloads.text import ChatFormat

if TYPE_CHECKING:  # transformers is imported when a config is built, so the CLI starts fast
    from transformers import CLIPVisionConfig, PretrainedConfig

# LLaVA-Next's anyres resolutions (height, width), as in every llava-hf/llava-v1.6-* config.
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# The image-processor settings of llava-hf/llava-v1.6-vicuna-7b-hf (CLIP ViT-L/14 at 336 px).
CLIP_336_PROCESSOR = {
    "size": {"shortest_edge": 336},
    "crop_size": {"height": 336, "width": 336},
    "image_grid_pinpoints": PINPOINTS,
    "image_mean": CLIP_MEAN,
    "image_std": CLIP_STD,
    "resample": 3,
    "do_pad": True,
}
# llava-hf/llava-1.5-7b-hf: CLIPImageProcessor, shortest edge 336, then a 336 x 336 centre crop.
CLIP_336_CROP = {
    "size": {"shortest_edge": 336},
    "crop_size": {"height": 336, "width": 336},
    "do_center_crop": True,
    "image_mean": CLIP_MEAN,
    "image_std": CLIP_STD,
    "resample": 3,
}

DEFAULT_PROMPT = "What is shown in this image?"  # the question asked about every image unless told

# What llava-hf/llava-v1.6-vicuna-7b-hf's chat template writes for one image and one question.
VICUNA_TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"

WEIGHTS = ("auto", "pretrained", "random")  # pretrained if found locally, else random


def check_weights(weights: str, option: str = "weights") -> None:
    """InputError unless `weights` is one of WEIGHTS (`option`: how the message names it)."""
    if weights not in WEIGHTS:
        raise InputError(f"unknown {option} {weights!r} (use {', '.join(WEIGHTS)})")


IMAGE_TOKEN_ID = 32000  # "<image>" in llava-hf's Llama-2 and Mistral tokenizers
PAD_TOKEN_ID = 0  # llava-hf's v1.6 Vicuna config and generation_config pad with <unk>

# The real tokenizers' ids for each template around the default question, from the tokenizer files
# themselves (identified by SHA256 against the llava-hf repositories' Git LFS details), run with
# sentencepiece the way llava-hf's legacy tokenizers split text around <image>:
# Mistral: mistral-common's tokenizer.model.v1 (= llava-v1.6-mistral-7b-hf/tokenizer.model), 19 ids;
# transformers' test_modeling_llava_next asserts the same ids ('[INST]  \nWhat ...', a piece either side).
MISTRAL_CHAT = ChatFormat(
    "[INST] <image>\n{prompt} [/INST]",
    before=(1, 733, 16289, 28793, 28705, IMAGE_TOKEN_ID, 28705, 13),
    after=(733, 28748, 16289, 28793),
    words={"What": 3195, "is": 349, "shown": 4894, "in": 297, "this": 456, "image": 3469, "?": 28804},
)
# Yi (Nous-Hermes-2-Yi-34B's tokenizer.model, = llava-v1.6-34b-hf's), ChatML with the system prompt of
# transformers' llava-next conversion script; no BOS (add_bos_token false), 25 ids.
YI_CHAT = ChatFormat(
    "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\n{prompt}<|im_end|>"
    "<|im_start|>assistant\n",
    before=(6, 10707, 144, 47329, 567, 3275, 98, 7, 6, 3903, 144, 64000, 144),
    after=(7, 6, 765, 13611, 144),
    words={"What": 5697, "is": 620, "shown": 2709, "in": 594, "this": 719, "image": 2728, "?": 100},
)
# llava-1.5-7b-hf's legacy Llama-2 tokenizer puts a piece after <image> as well: 20 ids, exactly the list
# transformers' tests/models/llava/test_processor_llava.py asserts for this template.
LLAVA_15_CHAT = ChatFormat(
    VICUNA_TEMPLATE,
    before=(1, 3148, 1001, 29901, 29871, IMAGE_TOKEN_ID, 29871, 13),
    after=(319, 1799, 9047, 13566, 29901),
    words={"What": 5618, "is": 338, "shown": 4318, "in": 297, "this": 445, "image": 1967, "?": 29973},
)


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    config: Callable[[], PretrainedConfig]
    hf_id: str | None  # where pretrained weights are looked up (local Hugging Face cache only)
    template: str = VICUNA_TEMPLATE
    chat: ChatFormat | None = None  # the offline tokenizer's ids; None: the Vicuna v1.6 tokenizer
    anyres: bool = True  # LLaVA-Next's partitions; False: one 336 px partition (LLaVA-1.5)


def _llava_next(vision: CLIPVisionConfig, text: PretrainedConfig, image_token_id: int = IMAGE_TOKEN_ID):
    from transformers import LlavaNextConfig

    return LlavaNextConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_grid_pinpoints=PINPOINTS,
        image_token_id=image_token_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        image_seq_length=576,
        tie_word_embeddings=False,
    )


def _llava(vision: CLIPVisionConfig, text: PretrainedConfig):
    """llava-hf/llava-1.5-7b-hf's LlavaConfig: image token 32000, pad 32001, 576 image tokens."""
    from transformers import LlavaConfig

    return LlavaConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_id=IMAGE_TOKEN_ID,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        image_seq_length=576,
        pad_token_id=32001,
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
    # the vision_config of every llava-hf LLaVA-1.5/1.6 checkpoint: CLIP ViT-L/14-336
    return _clip_336(hidden=1024, intermediate=4096, layers=24, heads=16, projection=768)


def _llama(
    hidden: int,
    intermediate: int,
    layers: int,
    heads: int,
    kv_heads: int | None = None,
    vocab: int = 32064,
    context: int = 4096,
    rope_theta: float = 10000.0,
    eos: int = 2,
    pad: int = PAD_TOKEN_ID,
):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        max_position_embeddings=context,
        rms_norm_eps=1e-5,
        rope_theta=rope_theta,
        hidden_act="silu",
        bos_token_id=1,
        eos_token_id=eos,
        pad_token_id=pad,
        tie_word_embeddings=False,
    )


def _mistral(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int):
    # llava-v1.6-mistral-7b-hf's text_config (Mistral-7B-Instruct-v0.2): vocab 32064 (image and pad
    # tokens added, padded to 64), 32k context, rope_theta 1e6, no sliding window, 8 KV heads; its
    # tokenizer pads with <pad> = 32001. Read in a verbatim copy in NVIDIA/TensorRT-LLM's
    # tests/unittest/_torch/modeling/test_modeling_llava_next.py, agreeing with derived hub configs.
    from transformers import MistralConfig

    return MistralConfig(
        vocab_size=32064,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=32768,
        rms_norm_eps=1e-5,
        rope_theta=1_000_000.0,
        sliding_window=None,
        hidden_act="silu",
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=32001,
        tie_word_embeddings=False,
    )


def _vicuna_7b():
    # llava-hf/llava-v1.6-vicuna-7b-hf/config.json (78d9aec): lmsys/vicuna-7b-v1.5 = Llama-2-7B shapes
    return _llama(4096, 11008, 32, 32)


def _yi_34b():
    # llava-v1.6-34b-hf's text_config (Nous-Hermes-2-Yi-34B): hidden 7168, 60 layers, 56 heads, 8 KV heads,
    # vocab 64064, rope_theta 5e6, eos <|im_end|> = 7, pad 0. Read in the derived copy
    # mesolitica/llava-v1.6-34b-hf-awq (from llava-hf/llava-v1.6-34b-hf), agreeing with the base model's.
    return _llama(7168, 20480, 60, 56, kv_heads=8, vocab=64064, rope_theta=5_000_000.0, eos=7)


def _tiny_clip() -> CLIPVisionConfig:
    # Real geometry (336 px, patch 14, 576 tokens per partition) at toy widths.
    return _clip_336(hidden=64, intermediate=128, layers=4, heads=4, projection=32)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "tiny",
        "LLaVA-Next geometry at toy widths (tests, CPU)",
        lambda: _llava_next(_tiny_clip(), _llama(64, 128, 4, 4)),  # 4 layers: LLM-stage K in 1..3
        hf_id=None,
    ),
    "tiny-vllm": Preset(
        "tiny-vllm",
        "the tiny preset with 32-wide LLM attention heads (vLLM's CPU attention takes 32 to 512)",
        lambda: _llava_next(_tiny_clip(), _llama(64, 128, 4, 2)),
        hf_id=None,
    ),
    "tiny-mistral": Preset(
        "tiny-mistral",
        "llava-next-mistral-7b's shape at toy widths: grouped-query attention, 4 heads on 2 KV heads",
        lambda: _llava_next(_tiny_clip(), _mistral(64, 128, 4, 4, kv_heads=2)),
        hf_id=None,
        template=MISTRAL_CHAT.template,
        chat=MISTRAL_CHAT,
    ),
    "tiny-llava-1.5": Preset(
        "tiny-llava-1.5",
        "llava-1.5-7b's shape at toy widths: one 336 px partition, 576 visual tokens",
        lambda: _llava(_tiny_clip(), _llama(64, 128, 4, 4, pad=32001)),
        hf_id=None,
        chat=LLAVA_15_CHAT,
        anyres=False,
    ),
    "llava-next-7b": Preset(
        "llava-next-7b",
        "LLaVA-Next-7B: Vicuna-7B + CLIP ViT-L/14-336 (llava-hf/llava-v1.6-vicuna-7b-hf)",
        lambda: _llava_next(_clip_vit_l_336(), _vicuna_7b()),
        hf_id="llava-hf/llava-v1.6-vicuna-7b-hf",
    ),
    "llava-next-13b": Preset(
        "llava-next-13b",
        "LLaVA-Next-13B: Vicuna-13B + CLIP ViT-L/14-336 (llava-hf/llava-v1.6-vicuna-13b-hf)",
        lambda: _llava_next(_clip_vit_l_336(), _llama(5120, 13824, 40, 40)),
        hf_id="llava-hf/llava-v1.6-vicuna-13b-hf",
    ),
    "llava-next-mistral-7b": Preset(
        "llava-next-mistral-7b",
        "LLaVA-Next-Mistral-7B: Mistral-7B-Instruct-v0.2 (8 KV heads) + CLIP ViT-L/14-336 "
        "(llava-hf/llava-v1.6-mistral-7b-hf)",
        lambda: _llava_next(_clip_vit_l_336(), _mistral(4096, 14336, 32, 32, kv_heads=8)),
        hf_id="llava-hf/llava-v1.6-mistral-7b-hf",
        template=MISTRAL_CHAT.template,
        chat=MISTRAL_CHAT,
    ),
    "llava-next-34b": Preset(
        "llava-next-34b",
        "LLaVA-Next-34B: Nous-Hermes-2-Yi-34B + CLIP ViT-L/14-336 (llava-hf/llava-v1.6-34b-hf), GPU only",
        lambda: _llava_next(_clip_vit_l_336(), _yi_34b(), image_token_id=64000),
        hf_id="llava-hf/llava-v1.6-34b-hf",
        template=YI_CHAT.template,
        chat=YI_CHAT,
    ),
    "llava-1.5-7b": Preset(
        "llava-1.5-7b",
        "LLaVA-1.5-7B: Vicuna-7B + CLIP ViT-L/14-336, one partition (llava-hf/llava-1.5-7b-hf)",
        # llava-1.5-7b-hf/config.json (many identical copies on the hub): LlavaConfig, pad 32001
        lambda: _llava(_clip_vit_l_336(), _llama(4096, 11008, 32, 32, pad=32001)),
        hf_id="llava-hf/llava-1.5-7b-hf",
        chat=LLAVA_15_CHAT,
        anyres=False,
    ),
}
