"""hired-bench inside lmms-eval: the model `hired_llava_next`, which answers a task's questions through
this suite's own preprocessing, vision pass, token selection and generation, so a method's accuracy
comes from the very code whose speed the suite measures.

lmms-eval finds it through the entry point in pyproject.toml (group `lmms_eval.models`), e.g.
    lmms-eval --model hired_llava_next --model_args pretrained=llava-next-7b,method=hired,budget=0.2
model_args: pretrained (a preset, a local folder or a cached Hugging Face id), method, budget (a
fraction or "adaptive"), fidelity, param ("NAME=VALUE;NAME=VALUE"), weights, dtype, device, seed;
questions per batch from lmms-eval's --batch_size (it passes it to the model). Decoding is greedy,
up to the task's max_new_tokens, cut at its `until` strings. Generation tasks only (generate_until),
one picture per question.
"""

from __future__ import annotations

from itertools import islice

from lmms_eval.api.model import lmms
from tqdm import tqdm

from hired.glue import vision_shape
from hired.methods import METHODS
from hired.spec import check_point, method_params
from profiler.measure.request import generate_tokens, llm_stage, prepare_request
from workloads.models import LoadedModel, load_model
from workloads.point import Point

DEFAULT_MAX_NEW_TOKENS = 256  # a task that sets no max_new_tokens
MODEL_ARGS = ("pretrained", "method", "budget", "fidelity", "param", "weights", "dtype", "device", "seed")


def parse_param(text: str) -> dict[str, str]:
    """'alpha=0.3;l_final=20' -> {'alpha': '0.3', 'l_final': '20'} (typed by the method's spec)."""
    params = {}
    for item in filter(None, (part.strip() for part in str(text).split(";"))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"param must look like NAME=VALUE;NAME=VALUE, got {text!r}")
        params[name.strip()] = value.strip()
    return params


def eval_point(method: str, budget, fidelity: str, param, shape, seed: int) -> Point:
    """The point a model answers with: method, budget and parameters checked against the model."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    budget = None if str(budget).lower() == "adaptive" else float(budget)
    check_point(METHODS[method], budget, fidelity)
    overrides = param if isinstance(param, dict) else parse_param(param or "")
    params = method_params(METHODS[method], shape, overrides, seed)
    return Point(method, budget, params, fidelity, seed=seed)


class HiredLlavaNext(lmms):
    """An lmms-eval model whose answers go through one of this suite's methods."""

    is_simple = True

    def __init__(
        self,
        pretrained: str = "auto",
        method: str = "none",
        budget: float | str = 1.0,
        fidelity: str = "paper",
        param: str = "",
        weights: str = "auto",
        dtype: str = "auto",
        device: str = "auto",
        seed: int = 0,
        batch_size: int | str = 1,  # lmms-eval's --batch_size (it passes it beside the model_args)
        max_batch_size: int | None = None,  # lmms-eval passes it; answers are batched by batch_size
        loaded: LoadedModel | None = None,  # a model already built (hired-bench eval builds it once)
        **unknown,
    ) -> None:
        super().__init__()
        if unknown:
            raise ValueError(
                f"hired_llava_next: unknown model_args {', '.join(sorted(unknown))} "
                f"(it takes {', '.join(MODEL_ARGS)}; questions per batch: lmms-eval's --batch_size)"
            )
        if not str(batch_size).isdigit() or int(batch_size) < 1:
            raise ValueError(
                f"hired_llava_next: --batch_size must be a whole number of at least 1, got {batch_size!r}"
            )
        self.lm = loaded or load_model(str(pretrained), weights, dtype, device, int(seed))
        self.point = eval_point(method, budget, fidelity, param, vision_shape(self.lm.model), int(seed))
        self.batch_size = int(batch_size)
        self.kept_share: dict[str, list[float]] = {}  # per task and question: visual tokens kept / N_full

    def generate_until(self, requests) -> list[str]:
        answers: list[str] = []
        todo = iter(requests)
        with tqdm(total=len(requests), desc=f"{self.point.method} @ {self.point.label}") as bar:
            while chunk := list(islice(todo, self.batch_size)):
                answers += self._answer([request.args for request in chunk])
                bar.update(len(chunk))
        return answers

    def _answer(self, args: list[tuple]) -> list[str]:
        """One batch of (context, generation settings, doc_to_visual, doc_id, task, split)."""
        questions, pictures, settings, tasks = [], [], [], []
        for context, gen_kwargs, doc_to_visual, doc_id, task, split in args:
            visuals = doc_to_visual(self.task_dict[task][split][doc_id])
            if len(visuals) != 1:
                raise ValueError(
                    f"{task}: question {doc_id} comes with {len(visuals)} pictures; "
                    "hired_llava_next answers questions about one picture"
                )
            pictures.append(visuals[0].convert("RGB"))
            questions.append(context.replace("<image>", "").strip())  # the template places the picture
            settings.append(gen_kwargs or {})
            tasks.append(task)
        limits = [int(s.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS) for s in settings]
        batch = prepare_request(self.lm, pictures, questions, self.point)
        with llm_stage(self.lm, self.point, batch) as inside:
            ids = generate_tokens(self.lm.model, batch, max(limits), stop_at_eos=True).cpu().tolist()
        kept = inside.kept if inside is not None else batch.kept
        for task, k, f in zip(tasks, kept, batch.full, strict=True):
            self.kept_share.setdefault(task, []).append(k / f)
        return [
            self._text(row[:limit], s.get("until"))
            for row, limit, s in zip(ids, limits, settings, strict=True)
        ]

    def _text(self, ids: list[int], until) -> str:
        """The answer: up to the end-of-sequence token, cut at the first of the task's stop strings."""
        eos = self.lm.model.generation_config.eos_token_id
        for stop in [eos] if isinstance(eos, int) else eos or []:
            if stop in ids:
                ids = ids[: ids.index(stop)]
        text = self.lm.decode(ids)
        for stop in [until] if isinstance(until, str) else until or []:
            if stop:
                text = text.split(stop)[0]
        return text.strip()

    def loglikelihood(self, requests):
        raise NotImplementedError(
            "hired_llava_next answers generation tasks (generate_until), not log-likelihood ones"
        )

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("hired_llava_next answers single-round generation tasks")
