"""The model under test: a preset (random or pretrained weights), a local folder or a cached HF id."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoTokenizer,
    LlavaForConditionalGeneration,
    LlavaNextForConditionalGeneration,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

from workloads.device import resolve_device, resolve_dtype, resolve_model_name
from workloads.errors import InputError
from workloads.presets import (
    CLIP_336_CROP,
    CLIP_336_PROCESSOR,
    PRESETS,
    VICUNA_TEMPLATE,
    Preset,
    check_weights,
)
from workloads.text import ChatTokenizer, offline_tokenizer

# LLaVA-Next (anyres partitions) or LLaVA-1.5 (one partition): the model class and image processor of each
ARCHITECTURES = {
    "llava_next": (LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil, CLIP_336_PROCESSOR),
    "llava": (LlavaForConditionalGeneration, CLIPImageProcessorPil, CLIP_336_CROP),
}


def architecture(config):
    if config.model_type not in ARCHITECTURES:
        raise InputError(f"{config.model_type!r} is not a LLaVA-Next or LLaVA model (llava_next, llava)")
    return ARCHITECTURES[config.model_type]


@dataclass
class LoadedModel:
    """A model ready to measure, with the inputs it needs and a plain account of what it is."""

    model: LlavaNextForConditionalGeneration | LlavaForConditionalGeneration
    tokenizer: object  # text -> {"input_ids": [...]}: a transformers tokenizer or the offline stand-in
    image_processor: object  # LLaVA-Next's anyres processor, or CLIP's for LLaVA-1.5
    name: str  # preset name, folder or Hugging Face id
    weights: str  # "pretrained" | "random"
    template: str  # prompt format with "<image>" and "{prompt}"
    notes: list[str] = field(default_factory=list)  # said plainly to the user

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer(self.template.replace("{prompt}", prompt))["input_ids"]

    def decode(self, ids: list[int]) -> str:
        """Generated ids as text. Random weights come with an offline stand-in tokenizer that knows
        only the template's pieces, so their ids are spelled out as <id>: all such an answer is."""
        if self.weights == "pretrained":
            return self.tokenizer.decode(ids, skip_special_tokens=True)
        return " ".join(f"<{i}>" for i in ids)


def find_pretrained(name: str) -> Path | None:
    """A local folder, or a cached Hugging Face snapshot, with config and weights; never downloads."""
    path = Path(name).expanduser()
    if not path.is_dir():
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(name, local_files_only=True))
        except Exception:  # not cached, or not a valid repo id: both mean "not here"
            return None
    has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    return path if (path / "config.json").is_file() and has_weights else None


def locate(name: str, weights: str) -> tuple[Preset | None, Path | None]:
    """(preset or None, folder of pretrained weights or None) for a resolved model name; InputError
    when it cannot be built here. Reads no weights and builds nothing."""
    check_weights(weights)
    preset = PRESETS.get(name)
    lookup = preset.hf_id if preset else name
    source = find_pretrained(lookup) if weights != "random" and lookup else None
    if preset is None and source is None:
        try:
            if weights != "random":
                raise InputError("no weights")
            _cached_config(name)
        except InputError:
            raise InputError(
                f"unknown model {name!r}: not a preset ({', '.join(PRESETS)}), nor a local folder or cached "
                "Hugging Face id with weights (downloads are off)"
            ) from None
    if weights == "pretrained" and source is None:
        where = preset.hf_id if preset and preset.hf_id else name
        raise InputError(f"--weights pretrained: no local weights for {name} (looked for {where})")
    return preset, source


def check_model(model: str, weights: str, dtype: str, device: str, worker_gpu: bool | None = None) -> None:
    """Everything load_model would refuse (device, dtype, name, weights), without building anything;
    for a Ray worker (worker_gpu not None) what does not depend on its node (not its weights folder)."""
    dev = resolve_device(device, worker_gpu)
    resolve_dtype(dtype, dev)
    if worker_gpu is None:
        locate(resolve_model_name(model, dev), weights)
    else:
        check_weights(weights)


def load_model(model: str, weights: str, dtype: str, device: str, seed: int = 0) -> LoadedModel:
    """Build or load the model named by `model` (see `hired-bench run --help`) on `device`."""
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    name = resolve_model_name(model, dev)
    preset, source = locate(name, weights)
    notes = []
    if model == "auto":
        where = "a GPU" if dev.type == "cuda" else "no GPU found, CPU"
        notes.append(f"model auto -> {name} ({where})")
    if source is not None:
        loaded = _load_pretrained(name, source, torch_dtype, dev, preset)
    else:
        config = preset.config() if preset else _cached_config(name)
        loaded = _build_random(name, config, torch_dtype, dev, seed, preset)
        why = "" if preset is None or preset.hf_id is None else f"; {preset.hf_id} not found locally"
        loaded.notes.append(f"random weights (timing and memory are real, outputs are not{why})")
    loaded.notes[:0] = notes
    return loaded


def _cached_config(name: str):
    try:
        config = AutoConfig.from_pretrained(name, local_files_only=True)
    except Exception as exc:
        raise InputError(f"unknown model {name!r}: no local config for it (downloads are off)") from exc
    architecture(config)
    return config


def offline(config, preset: Preset | None):
    """The tokenizer of a model without local files: its preset's chat format, or the Vicuna stand-in."""
    return ChatTokenizer(preset.chat) if preset and preset.chat else offline_tokenizer(config)


def _build_random(name, config, dtype, device, seed, preset: Preset | None) -> LoadedModel:
    torch.manual_seed(seed)
    model_class, processor_class, processor_settings = architecture(config)
    with torch.device(device):  # initialise on the target device: fast on GPUs, no host copy
        model = model_class._from_config(config, dtype=dtype)
    model.eval()
    template = preset.template if preset else VICUNA_TEMPLATE
    processor = processor_class(**processor_settings)
    return LoadedModel(model, offline(config, preset), processor, name, "random", template)


def _load_pretrained(name, path: Path, dtype, device, preset) -> LoadedModel:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    model_class, processor_class, _ = architecture(AutoConfig.from_pretrained(path))
    # no device_map: that needs accelerate; safetensors load memory-mapped, then move once
    model = model_class.from_pretrained(path, dtype=dtype).to(device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    processor = processor_class.from_pretrained(path)
    template = preset.template if preset else VICUNA_TEMPLATE
    notes = [f"pretrained weights from {path}"]
    return LoadedModel(model, tokenizer, processor, name, "pretrained", template, notes)


def model_config(name: str):
    """A model's configuration without its weights: a preset's, or a local folder's / cached id's."""
    preset = PRESETS.get(name)
    if preset is not None:
        return preset.config()
    path = find_pretrained(name)
    return AutoConfig.from_pretrained(path) if path is not None else _cached_config(name)


def prompt_text_tokens(name: str, prompt: str) -> int:
    """Text tokens of the model's prompt around the image (the image placeholder not counted)."""
    preset = PRESETS.get(name)
    path = find_pretrained(preset.hf_id if preset and preset.hf_id else name)
    if path is not None:
        tokenizer = AutoTokenizer.from_pretrained(path)
    else:
        tokenizer = offline(model_config(name), preset)
    template = preset.template if preset else VICUNA_TEMPLATE
    return len(tokenizer(template.replace("{prompt}", prompt))["input_ids"]) - 1
