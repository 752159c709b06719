"""Every timing metric of the suite, defined once (docs/metrics.md). Units are in the names.

A request is B samples each generating exactly T new tokens. Time points are seconds from t0
(request start, before image preprocessing): "preprocess", "vision", "select", "project" mark
the end of those phases, "first_token" the first token of the batch on the host, "end" the
last one; `steps` holds the time of every generation step (step 0 is the first token).
"""

from __future__ import annotations

from itertools import pairwise

# the per-request scalars every record keeps as stats objects
SCALAR_METRICS = (
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "decode_tokens_per_s",
    "e2e_tokens_per_s",
    "prefill_tokens_per_s",
)
PHASES = ("preprocess", "vision", "select", "project", "prefill", "decode")
# the time point that ends each phase; prefill ends at the first token, decode at the end
PHASE_ENDS = ("preprocess", "vision", "select", "project", "first_token", "end")


def request_metrics(
    times: dict[str, float], steps: list[float], batch_size: int, new_tokens: int, prompt_tokens: list[int]
) -> dict:
    """Per-request metrics; a value that is undefined (e.g. TPOT with T = 1) is None."""
    ttft_s = times["first_token"]
    e2e_s = times["end"]
    decode_s = e2e_s - ttft_s
    decode_steps = new_tokens - 1
    prefill_s = times["first_token"] - times["project"]
    starts = (0.0, *(times[name] for name in PHASE_ENDS[:-1]))
    return {
        "ttft_s": ttft_s,
        "e2e_s": e2e_s,
        "tpot_s": decode_s / decode_steps if decode_steps > 0 else None,
        "decode_tokens_per_s": batch_size * decode_steps / decode_s if decode_steps > 0 else None,
        "e2e_tokens_per_s": batch_size * new_tokens / e2e_s,
        "prefill_tokens_per_s": sum(prompt_tokens) / prefill_s if prefill_s > 0 else None,
        "itl_s": [b - a for a, b in pairwise(steps)],
        "phases_s": {
            phase: times[end] - start for phase, end, start in zip(PHASES, PHASE_ENDS, starts, strict=True)
        },
    }


def agreement(reference_tokens, reference_logits, tokens, logits) -> dict:
    """How closely a request followed the full model's on the same inputs (EffiVLM-Bench's loyalty).

    tokens: (B, T) generated ids; logits: (B, V) raw logits of the first generated token, or None where
    the engine returns no full distribution (vLLM: kl_first is then None); the reference ones are the
    baseline's. first_token: share of samples whose first token equals the
    baseline's; prefix: per sample, leading tokens equal to the baseline's over T; kl_first: per
    sample KL(baseline || method) of the first-token distribution, in nats.
    """
    import torch

    from profiler.measure.stats import summarize

    same = reference_tokens.eq(tokens)
    leading = same.int().cumprod(dim=1).sum(dim=1)  # tokens equal before the first difference
    shares = {
        "first_token": same[:, 0].double().mean().item(),
        "prefix": summarize((leading / tokens.shape[1]).tolist()),
    }
    if logits is None or reference_logits is None:
        return {**shares, "kl_first": None}
    base = torch.log_softmax(reference_logits.double(), dim=-1)
    ours = torch.log_softmax(logits.double(), dim=-1)
    # where the baseline gives a token probability 0 it adds nothing, whatever the method gives it
    terms = torch.where(base.isneginf(), 0.0, base.exp() * (base - ours))
    return {**shares, "kl_first": summarize(terms.sum(dim=-1).clamp(min=0.0).tolist())}
