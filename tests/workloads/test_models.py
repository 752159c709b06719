"""Loading real weights from a local folder or the Hugging Face cache (made here from the tiny preset)."""

import json

from typer.testing import CliRunner

from profiler.cli import app
from tests.conftest import QUICK
from workloads.models import find_pretrained, load_model


def save(lm, folder):
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    lm.image_processor.save_pretrained(folder)
    return folder


def test_local_folder_loads_as_pretrained(tiny, tmp_path):
    folder = save(tiny, tmp_path / "my-llava")
    loaded = load_model(str(folder), "auto", "float32", "cpu")
    assert loaded.weights == "pretrained"
    for name, value in tiny.model.state_dict().items():
        assert loaded.model.state_dict()[name].equal(value), name
    assert loaded.prompt_ids("What is shown in this image?") == tiny.prompt_ids(
        "What is shown in this image?"
    )


def test_run_on_a_local_folder(tiny, tmp_path):
    folder = save(tiny, tmp_path / "my-llava")
    out = tmp_path / "r.jsonl"
    args = [
        "run",
        "--model",
        str(folder),
        "--batch",
        "1",
        *QUICK,
    ]
    result = CliRunner().invoke(app, [*args, "--output", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "pretrained weights from" in result.stderr
    assert {json.loads(line)["config"]["weights"] for line in out.read_text().splitlines()} == {"pretrained"}


def test_hugging_face_cache_is_found_offline(tiny, tmp_path, monkeypatch):
    repo = tmp_path / "hub" / "models--someone--tiny-llava"
    save(tiny, repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert find_pretrained("someone/tiny-llava") == repo / "snapshots" / "0123abc"
    assert find_pretrained("someone/not-cached") is None
