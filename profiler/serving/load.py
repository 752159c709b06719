"""Load on a running server: the suite's pictures (base64 PNG in OpenAI chat messages) and prompt, sent by
vLLM's own benchmark client (`vllm bench serve`'s library entry point) at a request rate, Poisson
arrivals from a fixed seed; and what the server's /metrics says of its KV cache meanwhile."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import random
import re
import threading
import urllib.error

from profiler.serving.server import Server

OPENAI_CHAT = "openai-chat"
LABELS = re.compile(r'(\w+)="([^"]*)"')


def image_content(image) -> dict:
    """One picture as an OpenAI chat image part (a PNG data URL: lossless, so the server sees our pixels)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}


def sample_requests(images: list, prompt: str, prompt_tokens: list[int], new_tokens: int) -> list:
    """One request per picture (cycled by the caller to the number of requests)."""
    from vllm.benchmarks.datasets import SampleRequest

    return [
        SampleRequest(
            prompt=prompt, prompt_len=n, expected_output_len=new_tokens, multi_modal_data=image_content(img)
        )
        for img, n in zip(images, prompt_tokens, strict=True)
    ]


def drive(
    server: Server,
    model: str,
    tokenizer,
    requests: list,
    rate: float,
    seed: int,
    concurrency: int | None = None,
) -> dict:
    """vLLM's benchmark client at `rate` requests/s (inf: all at once), greedy, exactly each request's
    new tokens (EOS ignored): its result (per-request TTFTs, ITLs, latencies, output lengths, errors)."""
    import numpy as np
    from vllm.benchmarks.serve import TaskType, benchmark

    random.seed(seed)  # the client draws the Poisson gaps from these
    np.random.seed(seed)
    quiet = io.StringIO()  # its own summary and progress: the record and the table say it
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        return asyncio.run(
            benchmark(
                task_type=TaskType.GENERATION,
                endpoint_type=OPENAI_CHAT,
                api_url=f"{server.url}/v1/chat/completions",
                base_url=server.url,
                model_id=model,
                model_name=model,
                tokenizer=tokenizer,
                input_requests=requests,
                logprobs=None,
                request_rate=rate,
                burstiness=1.0,  # Poisson
                disable_tqdm=True,
                num_warmups=0,
                profile=False,
                selected_percentile_metrics=["ttft", "tpot", "itl", "e2el"],
                selected_percentiles=[50.0, 90.0, 99.0],
                ignore_eos=True,
                goodput_config_dict={},
                max_concurrency=concurrency,
                lora_modules=None,
                extra_headers=None,
                extra_body={"temperature": 0.0},
            )
        )


def cache_info(server: Server) -> dict:
    """The server's KV cache as its /metrics says: {"num_blocks", "block_size"} (empty if unreadable)."""
    try:
        text = server.get("/metrics").decode()
    except (urllib.error.URLError, OSError):
        return {}
    for line in text.splitlines():
        if line.startswith("vllm:cache_config_info{"):
            labels = dict(LABELS.findall(line))
            if labels.get("num_gpu_blocks", "None").isdigit():
                return {"num_blocks": int(labels["num_gpu_blocks"]), "block_size": int(labels["block_size"])}
    return {}


def kv_usage(server: Server) -> float | None:
    """The share of the KV cache in use now (vllm:kv_cache_usage_perc, 0..1)."""
    try:
        text = server.get("/metrics", timeout=2.0).decode()
    except (urllib.error.URLError, OSError):
        return None
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:kv_cache_usage_perc")
    ]
    return max(values) if values else None


class UsageWatch:
    """The peak KV-cache usage while a rate runs: /metrics read every `every` seconds in a thread."""

    def __init__(self, server: Server, every: float = 0.25) -> None:
        self.server, self.every, self.peak = server, every, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            usage = kv_usage(self.server)
            if usage is not None:
                self.peak = usage if self.peak is None else max(self.peak, usage)

    def __enter__(self) -> UsageWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
