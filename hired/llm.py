"""The LLM-stage hook point: a method that drops visual tokens inside the language model, from decoder
layer K on, with SDPA kept and the KV cache consistent at every layer.

At prefill, layer K's input (layer K-1's output), layer K-1's keys (its KV cache, after RoPE) and
the query of the last prompt token at layer K-1 (hooked on q_proj, RoPE applied here) go to the
method, which says per sample which visual tokens to keep. From layer K on, the dropped tokens are
gone: hidden states, rotary position embeddings (kept tokens keep their original positions), the
attention mask and so the KV cache of layers >= K hold only the kept tokens. Samples of a batch that
keep different counts are left-padded with slots no token attends to. Decoding reuses that set:
layers < K attend over the whole prompt, layers >= K over what they cached. No modeling file is
copied or patched and no layer switches to eager attention: forward pre-hooks on the decoder layers
change their inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from hired.spec import Method, budget_tokens


@dataclass
class LayerInputs:
    """What an LLM-stage method sees at decoder layer K (prefill, L positions of the padded prompt)."""

    hidden: torch.Tensor  # (B, L, D) layer K's input: layer K-1's output
    keys: torch.Tensor | None  # (B, kv_heads, L, head_dim) layer K-1's keys after RoPE (its KV cache)
    last_query: torch.Tensor  # (B, heads, head_dim) layer K-1's query of the last prompt token, after RoPE
    visual: torch.Tensor  # (B, L) bool: the visual tokens (candidates; newline tokens included)
    valid: torch.Tensor  # (B, L) bool: not padding
    counts: torch.Tensor  # (B,) visual tokens each sample keeps
    norm: Callable[[torch.Tensor], torch.Tensor]  # the language model's final norm

    def last_token_attention(self) -> torch.Tensor:
        """(B, heads, L) softmax attention of the last prompt token at layer K-1, padding masked:
        one query row per head, never the (B, heads, L, L) matrix."""
        heads, d = self.last_query.shape[1:]
        keys = self.keys.repeat_interleave(heads // self.keys.shape[1], dim=1).float()
        scores = (keys @ self.last_query.float()[..., None])[..., 0] * d**-0.5
        return scores.masked_fill(~self.valid[:, None, :], float("-inf")).softmax(dim=-1)


# why the compiled engine is refused: its static KV cache has one length for every layer
LLM_STAGE_NOT_COMPILED = (
    "it drops tokens inside the LLM, so layers from K on cache fewer tokens than the first K: the "
    "compiled engine's static KV cache has one length for every layer, and the suite's vLLM plugin acts "
    "between the vision tower and the LLM only; use --engine eager"
)

LlmKeep = Callable[[LayerInputs, dict], torch.Tensor]  # (B, L) bool: the visual tokens kept


def text_model(model):
    """The decoder stack of a LLaVA model (transformers 5.x: model.model.language_model)."""
    return model.model.language_model


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of x (..., d) with cos and sin (..., d): the Llama/Mistral convention."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def layer_cache(kwargs: dict):
    """The KV cache a decoder layer was called with: `cache` from transformers 5.24, `past_key_values`
    before (5.24 keeps the old name as a deprecated alias until 5.40, but the model passes the new one)."""
    cache = kwargs.get("cache")
    return kwargs.get("past_key_values") if cache is None else cache


class Pruning:
    """Installs the hooks for one request (a context manager); afterwards `.kept` holds, per sample,
    the visual tokens layers >= K saw."""

    def __init__(
        self,
        model,
        method: Method,
        params: dict,
        budget: float,
        visual: torch.Tensor,
        valid: torch.Tensor,
        full,
    ):
        self.model, self.method, self.params = model, method, params
        self.k = params["layer"]
        self.visual, self.valid = visual, valid
        self.counts = torch.tensor([budget_tokens(budget, n) for n in full], device=visual.device)
        self.query: torch.Tensor | None = None
        self.index: torch.Tensor | None = None  # (B, L') positions of the prompt each slot holds
        self.slot_valid: torch.Tensor | None = None  # (B, L') False for the padding slots
        self.prefill_mask: torch.Tensor | None = None
        self.padded = False
        self.kept: list[int] | None = None
        self.chosen: torch.Tensor | None = None  # (B, L) bool: the visual tokens kept
        self.inputs: dict = {}  # what every layer >= K gets in this forward pass (the same for all)
        self.inputs_for: int | None = None  # the cache length they were made for (None: prefill)
        self.handles: list = []

    def __enter__(self) -> Pruning:
        layers = text_model(self.model).layers
        if not 1 <= self.k < len(layers):
            raise ValueError(f"layer must be a decoder layer in 1..{len(layers) - 1}, got {self.k}")
        self.handles.append(layers[self.k - 1].self_attn.q_proj.register_forward_hook(self._keep_query))
        for i in range(self.k, len(layers)):
            self.handles.append(layers[i].register_forward_pre_hook(self._layer_inputs(i), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def _keep_query(self, module, inputs, output) -> None:
        if output.shape[1] > 1:  # prefill: the last prompt token's query
            self.query = output[:, -1]

    def _layer_inputs(self, i: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            cache = layer_cache(kwargs)
            if hidden.shape[1] > 1:  # prefill: the kept tokens, at their original positions
                if i == self.k:
                    hidden = self._choose(hidden, kwargs, cache)
                    self.inputs, self.inputs_for = self._prefill_inputs(kwargs, hidden.device), None
            else:  # decode: the cached kept tokens, then what this request generated so far
                cached = cache.layers[i].get_seq_length()
                if self.inputs_for != cached:  # made once per step, not once per layer
                    self.inputs, self.inputs_for = (
                        self._decode_inputs(cached, len(hidden), hidden.device),
                        cached,
                    )
            for name, value in self.inputs.items():
                # transformers 5.17 passes cache_position (where this layer's cache is written); 5.23 does not
                if name != "cache_position" or name in kwargs:
                    kwargs[name] = value
            if args:
                return (hidden, *args[1:]), kwargs
            kwargs["hidden_states"] = hidden
            return args, kwargs

        return hook

    def _choose(self, hidden: torch.Tensor, kwargs: dict, cache) -> torch.Tensor:
        cos, sin = kwargs["position_embeddings"]
        layer = text_model(self.model).layers[self.k - 1].self_attn
        query = self.query.view(len(hidden), -1, layer.head_dim)
        last = rotate(query.float(), cos[:, -1, None, :].float(), sin[:, -1, None, :].float())
        inputs = LayerInputs(
            hidden=hidden,
            keys=None if cache is None else cache.layers[self.k - 1].keys,
            last_query=last,
            visual=self.visual,
            valid=self.valid,
            counts=self.counts,
            norm=text_model(self.model).norm,
        )
        chosen = self.method.keep(inputs, self.params) & self.visual
        self.chosen, self.kept = chosen, chosen.sum(dim=1).tolist()
        keep = (self.valid & ~self.visual) | chosen
        lengths = keep.sum(dim=1)
        width = int(lengths.max())
        b = len(keep)
        slot = keep.long().cumsum(dim=1) - 1 + (width - lengths)[:, None]  # left-padded slots
        self.index = torch.zeros(b, width, dtype=torch.long, device=keep.device)
        where = keep.nonzero()
        self.index[where[:, 0], slot[keep]] = where[:, 1]
        self.slot_valid = torch.arange(width, device=keep.device)[None, :] >= (width - lengths)[:, None]
        # no padding slot: plain causal attention, so SDPA keeps its fast kernels (no explicit mask)
        self.padded = not bool(self.slot_valid.all())
        self.prefill_mask = self._prefill_mask() if self.padded else None
        return self._gather(hidden)

    def _prefill_inputs(self, kwargs: dict, device) -> dict:
        """Mask, positions and rotary embeddings of the kept tokens, for every layer >= K."""
        inputs = {
            "attention_mask": self.prefill_mask,
            "cache_position": torch.arange(self.index.shape[1], device=device),
            "position_embeddings": tuple(self._gather(t) for t in kwargs["position_embeddings"]),
        }
        if kwargs.get("position_ids") is not None:
            inputs["position_ids"] = self._gather(kwargs["position_ids"])
        return inputs

    def _decode_inputs(self, cached: int, batch: int, device) -> dict:
        """A decoding step's mask (padding slots unattended) and cache position, for every layer >= K."""
        mask = None
        if self.padded:
            grown = cached + 1 - self.slot_valid.shape[1]
            mask = torch.cat([self.slot_valid, self.slot_valid.new_ones(batch, grown)], dim=1)[
                :, None, None, :
            ]
        return {"attention_mask": mask, "cache_position": torch.tensor([cached], device=device)}

    def _gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """(B, L, ...) -> (B, L', ...): the kept positions of each sample, in their slots."""
        tensor = tensor.expand(len(self.index), *tensor.shape[1:])
        index = self.index.view(*self.index.shape, *([1] * (tensor.dim() - 2)))
        return tensor.gather(1, index.expand(-1, -1, *tensor.shape[2:]))

    def _prefill_mask(self) -> torch.Tensor:
        """(B, 1, L', L') bool: causal over the kept tokens (they keep their order), padding slots masked as
        keys; each slot may see itself, so no row is empty."""
        width = self.index.shape[1]
        causal = torch.ones(width, width, dtype=torch.bool, device=self.index.device).tril()
        eye = torch.eye(width, dtype=torch.bool, device=self.index.device)
        return ((causal[None] & self.slot_valid[:, None, :]) | eye[None])[:, None]


@contextmanager
def pruning(model, method: Method, params: dict, budget: float | None, visual, valid, full):
    """The hooks of an LLM-stage method for one request, or nothing for any other method."""
    if method.stage != "llm" or budget is None or budget >= 1.0:
        yield None
        return
    with Pruning(model, method, params, budget, visual, valid, full) as hooks:
        yield hooks
