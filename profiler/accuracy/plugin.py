"""lmms-eval's way in (pyproject.toml: [project.entry-points."lmms_eval.models"]): the model name
`hired_llava_next`. Kept apart from the model so that lmms-eval's start-up imports nothing heavy."""

from __future__ import annotations


def manifests() -> list:
    from lmms_eval.models.registry_v2 import ModelManifest

    return [
        ModelManifest(model_id="hired_llava_next", simple_class_path="profiler.accuracy.model.HiredLlavaNext")
    ]
