"""One request, in the phases it is timed by (metrics.PHASES): prepare the batch (preprocess, vision,
select, project), then generate T tokens (prefill, decode); the eager and compiled engines."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LogitsProcessorList

from hired.glue import PreparedBatch, pad_id, picture_sizes, prepare_batch, shown_pictures
from hired.llm import pruning
from hired.methods import METHODS
from profiler.instruments.timing import StepClock, Timeline
from workloads.models import LoadedModel
from workloads.plan import Workload
from workloads.point import Point


@dataclass
class RequestResult:
    times: dict[str, float]
    steps: list[float]
    tokens: torch.Tensor  # (B, T) generated ids, on the host
    batch: PreparedBatch


def run_request(
    lm: LoadedModel,
    workload: Workload,
    point: Point,
    first_logits: list | None = None,
    timeline: Timeline | None = None,
) -> RequestResult:
    """One request, timed from t0 (before preprocessing) to the last token on the host.

    first_logits: if given, the raw logits of the first generated token, (B, V) on the host, are
    appended to it (for agreement; never on a timed request). timeline: a Timeline of the caller's
    (the instrument checks ask for more time points), else a plain one.
    """
    timeline = timeline or Timeline(lm.device)
    clock = StepClock(timeline)
    timeline.start()
    batch = prepare_request(
        lm, workload.images, [workload.prompt] * workload.batch_size, point, timeline.mark
    )
    with llm_stage(lm, point, batch) as inside:
        tokens = generate_tokens(
            lm.model, batch, workload.new_tokens, [clock], point.engine, first_logits
        ).cpu()
    if inside is not None:  # an LLM-stage method: what layers >= K saw
        batch.entering, batch.kept = batch.kept, inside.kept
    timeline.mark_host("end")
    times, steps = timeline.times()
    if len(steps) != workload.new_tokens or tokens.shape[1] != workload.new_tokens:
        raise RuntimeError(
            f"generate made {tokens.shape[1]} tokens in {len(steps)} steps, not {workload.new_tokens}"
        )
    return RequestResult(times, steps, tokens, batch)


def prepare_request(
    lm: LoadedModel, images: list, prompts: list[str], point: Point, mark=None
) -> PreparedBatch:
    """Pictures and questions -> the language model's input under a point's method: the method's own
    picture preparation, preprocessing, vision tower, selection, projection (mark: each phase's end)."""
    mark = mark or (lambda _name: None)
    method = METHODS[point.method]
    shown, base_only = shown_pictures(
        method, images, point.budget, point.params, point.fidelity, lm.model.config
    )
    pixels = lm.image_processor(shown, return_tensors="pt")
    tokenized = {prompt: lm.prompt_ids(prompt) for prompt in dict.fromkeys(prompts)}  # once per question
    prompt_ids = [tokenized[prompt] for prompt in prompts]
    pixel_values = pixels["pixel_values"].to(lm.device)
    image_sizes = picture_sizes(pixels, shown)
    mark("preprocess")
    return prepare_batch(
        lm.model,
        pixel_values,
        image_sizes,
        prompt_ids,
        method,
        point.budget,
        point.params,
        point.fidelity,
        mark,
        base_only,
        [(img.height, img.width) for img in images],
    )


def llm_stage(lm: LoadedModel, point: Point, batch: PreparedBatch):
    """The context generation runs in: an LLM-stage method's pruning hooks (a no-op for the others)."""
    valid = batch.attention_mask.bool()
    return pruning(
        lm.model, METHODS[point.method], point.params, point.budget, batch.visual, valid, batch.full
    )


@torch.inference_mode()
def generate_tokens(
    model,
    batch: PreparedBatch,
    new_tokens: int,
    processors: list | None = None,
    engine: str = "eager",
    first_logits: list | None = None,
    stop_at_eos: bool = False,
) -> torch.Tensor:
    """Greedy decoding of exactly `new_tokens` per sample (EOS ignored): every request does the same work.

    EOS is neither a stop nor masked (vLLM's ignore_eos; optimum-benchmark): min_new_tokens would add
    logits processors that scan the vocabulary at every step, a cost a bare generate() does not pay.

    engine "compiled": a static KV cache sized to the prompt plus `new_tokens`, and the decoding step
    under torch.compile (CUDA graphs on a GPU: mode "reduce-overhead"; the default mode on a CPU);
    the first request of a shape compiles, later ones reuse the graphs.
    first_logits: if given, receives the first step's raw logits (B, V), float32 on the host.
    stop_at_eos: end each sample at its end-of-sequence token instead (answers, not timing); samples
    that end early are padded.
    """
    keep = first_logits is not None
    out = model.generate(
        inputs_embeds=batch.inputs_embeds,
        attention_mask=batch.attention_mask,
        max_new_tokens=new_tokens,
        **({} if stop_at_eos else {"eos_token_id": None}),
        do_sample=False,
        num_beams=1,
        pad_token_id=pad_id(model),
        logits_processor=LogitsProcessorList(processors or []),
        output_logits=keep,
        return_dict_in_generate=keep,
        **(compiled_engine(model.device) if engine == "compiled" else {}),
    )
    if not keep:
        return out
    first_logits.append(out.logits[0].float().cpu())
    return out.sequences


def compiled_engine(device: torch.device) -> dict:
    """generate()'s arguments for the compiled engine on this device."""
    from transformers import CompileConfig

    config = CompileConfig(mode="reduce-overhead" if device.type == "cuda" else "default", fullgraph=False)
    config._compile_all_devices = True  # transformers compiles only on accelerators unless told
    return {"cache_implementation": "static", "compile_config": config}
