"""A model as a folder a serving engine loads (vLLM reads config, tokenizer and processor files, not objects).

Pretrained weights are their own folder. A preset with random weights becomes a folder of its config,
tokenizer and image processor alone (vLLM builds the same shapes with random weights: `load_format
"dummy"`), written once under the user's cache. `save_model_folder` writes a loaded model with its
weights, so that two engines load the very same random weights (the correctness tests).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from workloads.errors import InputError
from workloads.models import (
    LoadedModel,
    _cached_config,
    architecture,
    locate,
    offline,
)
from workloads.presets import VICUNA_TEMPLATE, Preset
from workloads.text import offline_tokenizer

CACHE = Path(os.environ.get("HIRED_BENCH_CACHE", Path.home() / ".cache" / "hired-bench"))


@dataclass
class ModelFolder:
    """What an engine loads, and how the suite asks it (the prompt's token ids come from `tokenizer`)."""

    name: str  # preset name, folder or Hugging Face id
    path: Path
    weights: str  # "pretrained" | "random"
    load_format: str  # vLLM's: "auto" (the folder's weights) or "dummy" (random, the same shapes)
    config: object  # the transformers config
    tokenizer: object  # text -> {"input_ids": [...]}
    template: str
    notes: list[str]

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer(self.template.replace("{prompt}", prompt))["input_ids"]


def model_folder(name: str, weights: str) -> ModelFolder:
    """The folder for a resolved model name: its pretrained weights, or a preset's files for random ones."""
    from transformers import AutoConfig, AutoTokenizer

    preset, source = locate(name, weights)
    template = preset.template if preset else VICUNA_TEMPLATE
    if source is not None:
        config = AutoConfig.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
        notes = [f"pretrained weights from {source}"]
        return ModelFolder(name, source, "pretrained", "auto", config, tokenizer, template, notes)
    config = preset.config() if preset else _cached_config(name)
    if config.model_type != "llava_next":
        raise InputError(f"{name} is not LLaVA-Next: the suite's vLLM plugin serves LLaVA-Next only")
    path = _random_folder(name, config, preset)
    why = "" if preset is None or preset.hf_id is None else f"; {preset.hf_id} not found locally"
    notes = [f"random weights (timing and memory are real, outputs are not{why})"]
    return ModelFolder(name, path, "random", "dummy", config, offline(config, preset), template, notes)


def _random_folder(name: str, config, preset: Preset | None) -> Path:
    """Config, tokenizer and processor files of a model with random weights, written once (atomically)."""
    text = config.to_json_string(use_diff=False)
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    path = CACHE / "models" / f"{Path(name).name}-{digest}"
    if (path / "config.json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=".staging-"))
    try:
        config.save_pretrained(staging)
        _save_processor(config, staging)
        os.replace(staging, path)  # a folder another process finished first is used as it is
    except OSError:
        if not (path / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _save_processor(config, path: Path) -> None:
    """The tokenizer (the offline stand-in: prompts are sent as token ids) and LLaVA-Next's processor."""
    from transformers import LlavaNextProcessor

    _, processor_class, settings = architecture(config)
    tokenizer = offline_tokenizer(config)
    processor = LlavaNextProcessor(
        image_processor=processor_class(**settings),
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(path)


def save_model_folder(lm: LoadedModel, path: Path) -> Path:
    """A loaded LLaVA-Next with its weights, tokenizer and processor, as a folder both engines load.

    The vision tower's weights get the hub's names (vision_tower.vision_model.*), which vLLM loads;
    transformers 5 writes them without `vision_model.`. The tokenizer must be a transformers one."""
    from safetensors.torch import load_file, save_file

    path = Path(path)
    lm.model.save_pretrained(path)
    for file in path.glob("*.safetensors"):
        tensors = load_file(file)
        renamed = {_hub_name(k): v for k, v in tensors.items()}
        if renamed.keys() != tensors.keys():
            save_file(renamed, file, metadata={"format": "pt"})
    _save_processor(lm.model.config, path)
    if hasattr(lm.tokenizer, "save_pretrained"):
        lm.tokenizer.save_pretrained(path)
    (path / "hired_bench.json").write_text(json.dumps({"saved_from": lm.name, "weights": lm.weights}))
    return path


def _hub_name(key: str) -> str:
    if key.startswith("vision_tower.") and not key.startswith("vision_tower.vision_model."):
        return "vision_tower.vision_model." + key.removeprefix("vision_tower.")
    return key
