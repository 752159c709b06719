"""serve-bench's loop: per planned point (method x budget, on the vllm engine) one server, started with the
point's method; per request rate one `serving` record through the one durable writer. A server that
cannot start, or dies during a rate, leaves error records with its log's last lines; the next point goes on.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from hired.vllm_plugin import engine_overrides
from profiler.measure.vllm_engine import CPU_KV_CACHE_GIB, engine_options, max_concurrency, vllm_version
from profiler.results.schema import PointConfig
from profiler.results.store import append_record, error_message, make_record, read_records
from profiler.serving.load import UsageWatch, cache_info, drive, sample_requests
from profiler.serving.metrics import serving_metrics
from profiler.serving.server import READY_TIMEOUT_S, ServerFailed, running_server
from workloads.point import Point


@dataclass(frozen=True)
class Load:
    """What each point is driven with: rates (requests/s; inf: all at once), requests per rate, the
    client's concurrency limit, the TTFT SLO goodput counts against, the arrivals' seed."""

    rates: tuple[float, ...]
    requests: int
    concurrency: int | None = None
    slo_ttft_ms: float | None = None
    seed: int = 0


def rate_value(rate: float) -> float | str:
    """A rate as JSON holds it: a number, or "inf"."""
    return "inf" if rate == float("inf") else rate


def serving_key(point: Point, load: Load, rate: float) -> str:
    """The identity --resume matches: the point's key and the load at this rate."""
    text = json.dumps(
        [point.key, rate_value(rate), load.requests, load.concurrency, load.slo_ttft_ms, load.seed]
    )
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def pending(points: list[Point], load: Load, output: Path, resume: bool) -> list[tuple[Point, list[float]]]:
    """Each point with the rates still to measure (all of them, or with --resume those without a record)."""
    done = set()
    if resume and output.exists():
        done = {
            r.get("config", {}).get("serving_key") for r in read_records(output) if r.get("kind") == "serving"
        }
    out = []
    for point in points:
        rates = [rate for rate in load.rates if serving_key(point, load, rate) not in done]
        if rates:
            out.append((point, rates))
    return out


def chat_template(template: str, bos: bool) -> str:
    """A preset's prompt template as a chat template: vLLM writes the image placeholder and a newline
    before the question in the user message ("<image>\\n" + question), as the template has them. vLLM
    tokenizes a chat prompt without special tokens: `bos` writes the BOS the suite's prompts start with."""
    before, after = template.split("<image>\n{prompt}")
    return ("{{ bos_token }}" if bos else "") + before + "{{ messages[-1]['content'] }}" + after


def server_options(folder, dtype: str, device: str, seed: int, template_file: Path | None) -> dict:
    """`vllm serve`'s options: the engine options `run --engine vllm` starts with, as flags."""
    options = {"dtype": dtype, "seed": seed, **engine_options(folder, device)}
    if template_file is not None:
        options["chat_template"] = str(template_file)
    return options


@dataclass
class Prepared:
    """One point's requests and what it keeps of each picture, before its server starts."""

    point: Point  # with its parameters filled in for the model
    pictures: list  # the distinct pictures (cycled over the requests)
    requests: list  # vLLM's SampleRequests
    full: list[int]  # N_full per request
    kept: list[int]  # visual tokens per request: the placeholders the plugin gives
    text: int  # text tokens of the prompt
    sequence_tokens: int  # the longest request: prompt + new tokens


def prepare(folder, point: Point, load: Load) -> Prepared:
    from hired.layout import image_layout
    from hired.methods import METHODS, expected_tokens, method_params
    from hired.shape import shape_of
    from profiler.measure.vllm_engine import sequence_tokens
    from workloads.images import folder_images, synthetic_images

    if point.images is not None:
        pictures = folder_images(Path(point.images), len(list(Path(point.images).iterdir())))
    else:
        pictures = synthetic_images(list(point.image_sizes), len(point.image_sizes), point.seed)
    params = method_params(METHODS[point.method], shape_of(folder.config), point.params, point.seed)
    point = replace(point, params=params)
    cycled = list(itertools.islice(itertools.cycle(pictures), load.requests))
    layouts = [image_layout((p.height, p.width), folder.config) for p in cycled]
    kept = [expected_tokens(point.method, point.budget, point.fidelity, layout, params) for layout in layouts]
    text = len(folder.prompt_ids(point.prompt)) - 1
    requests = sample_requests(cycled, point.prompt, [text + k for k in kept], point.new_tokens)
    length = sequence_tokens(folder, point, params, pictures, point.prompt)
    return Prepared(point, pictures, requests, [lay.n_full for lay in layouts], kept, text, length)


def run_serving(
    points: list[tuple[Point, list[float]]],
    load: Load,
    output: Path,
    run_id: str,
    folder,
    hardware: dict,
    dtype: str,
    device: str,
    say: Callable[[str], None] = lambda text: None,
    ready_timeout: float = READY_TIMEOUT_S,
) -> Iterator[dict]:
    """Measure each point at each of its rates; each record is appended before it is yielded."""
    from transformers import AutoTokenizer

    template_file = None
    tokenizer = AutoTokenizer.from_pretrained(folder.path)
    if folder.weights == "random":  # a preset's folder has no chat template: its prompt template is one
        template_file = folder.path / "hired_bench_chat_template.jinja"
        bos = folder.prompt_ids("")[:1] == [tokenizer.bos_token_id]
        template_file.write_text(chat_template(folder.template, bos))
    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB)}
    options = server_options(folder, dtype, device, load.seed, template_file)
    for point, rates in points:
        ready = prepare(folder, point, load)
        overrides = engine_overrides(point.method, point.budget, point.fidelity, ready.point.params)
        engine_options = {"hf_overrides": overrides, **options, "vllm_version": vllm_version()}

        def record(rate, status, metrics, error, point=point, ready=ready, engine_options=engine_options):
            config = PointConfig.from_point(
                point,
                model=folder.name,
                weights=folder.weights,
                dtype=dtype,
                device=device,
                method_params=ready.point.params,
                batch_size=1,
                image_sizes=[list(p.size) for p in ready.pictures],
                prompt_tokens=[ready.text + k for k in ready.kept[: len(ready.pictures)]],
                engine_options=engine_options,
                request_rate=rate_value(rate),
                requests=load.requests,
                concurrency=load.concurrency,
                slo_ttft_ms=load.slo_ttft_ms,
                serving_key=serving_key(point, load, rate),
            ).to_dict()
            made = make_record(run_id, status, config, hardware, metrics, error=error, kind="serving")
            append_record(output, made)
            return made

        say(f"starting vllm serve for {point.method} at {point.label}")
        recorded: set[float] = set()
        try:
            with running_server(folder.path, overrides, options, env, ready_timeout) as server:
                cache = cache_info(server)
                for rate in rates:
                    say(f"  {point.method} {point.label}: {load.requests} requests, {rate_value(rate)} req/s")
                    status, metrics, error = measure_rate(
                        server, ready, load, rate, tokenizer, str(folder.path), cache
                    )
                    recorded.add(rate)
                    yield record(rate, status, metrics, error)
                    if not server.alive():
                        raise ServerFailed(f"vllm serve died:\n{server.tail()}")
        except ServerFailed as exc:  # the rates it did not reach: each an error record saying why
            for rate in (r for r in rates if r not in recorded):
                yield record(rate, "error", None, str(exc))


def measure_rate(server, ready: Prepared, load: Load, rate: float, tokenizer, model: str, cache: dict):
    """(status, metrics, error) of one rate; a failure is the record's error, with the server's last lines
    when it died."""
    try:
        with UsageWatch(server) as usage:
            result = drive(server, model, tokenizer, ready.requests, rate, load.seed, load.concurrency)
    except Exception as exc:
        message = error_message(exc)
        if not server.alive():
            message += f"\nvllm serve died:\n{server.tail()}"
        return "error", None, message
    if not server.alive():
        return "error", None, f"vllm serve died during the rate:\n{server.tail()}"
    metrics = serving_metrics(result, ready.point.new_tokens, load.slo_ttft_ms)
    metrics["server_start_s"] = server.started_s
    concurrency = (
        max_concurrency(cache["num_blocks"], cache["block_size"], ready.sequence_tokens) if cache else None
    )
    metrics["kv_cache"] = {
        **cache,
        "sequence_tokens": ready.sequence_tokens,
        "max_concurrency": concurrency,
        "peak_usage": usage.peak,
    }
    # the server's own prompt lengths (its usage reports) less the text: the placeholders of each picture
    metrics["visual_tokens"] = {"full": ready.full, "kept": [n - ready.text for n in result["input_lens"]]}
    if not metrics["completed_requests"]:
        return "error", metrics, "every request failed: " + "; ".join(metrics["errors"])
    return "ok", metrics, None
