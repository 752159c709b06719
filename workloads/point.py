"""A point, declared once: every option of a measured point with its default, help, bounds, unit, command-line
flag and sweep-file key. The command line's options (profiler.cli.options), the sweep files' keys, their
defaults and their checks (workloads.sweep) and a point's key (--resume) are all derived from `Point`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, Field, asdict, dataclass, field, fields

from workloads.presets import DEFAULT_PROMPT, PRESETS

# fields added after 0.1.0, left out of a point's key at these values so older files still match
LATER_FIELDS = {"images": None, "engine": "eager", "min_duration": 0.0, "accelerator": None}
ENGINES = ("eager", "compiled", "vllm")
SEED_TEXT = "2**63-1"  # torch generators take 64-bit seeds


def option(
    default=MISSING,
    help: str = "",
    *,
    flag: str | None = None,
    toml: str | None = None,
    axis: bool = False,
    bounds: tuple | None = None,
    unit: str = "",
    hash: bool = True,
    factory=MISSING,
) -> Field:
    """A point field with what the command line and the sweep files need to know of it.

    flag: the command-line name (None: the field's, dashed); toml: the sweep-file key (None: not in sweep
    files); axis: a list in sweep files (one point per value); bounds: (lowest, highest or None)."""
    meta = {"help": help, "flag": flag, "toml": toml, "axis": axis, "bounds": bounds, "unit": unit}
    if factory is not MISSING:
        return field(default_factory=factory, hash=hash, metadata=meta)
    return field(default=default, hash=hash, metadata=meta)


@dataclass(frozen=True)
class Point:
    """One measured point, as asked (auto values and default parameters unresolved, so its key is stable)."""

    method: str = option(
        help="Token-dropping method (hired-bench methods lists them), several comma-separated, or all "
        "(every method defined at the budget). The baseline (none, every visual token) is always measured."
    )
    budget: float | None = option(  # None: the method's adaptive count
        1.0,
        "Fraction of visual tokens kept per image, in (0, 1]; 1.0 = no dropping; 'adaptive' = the "
        "method's own count (prumerge, prumerge+). Comma-separated for several, e.g. 0.1,0.2,0.4.",
    )
    params: dict = option(  # noqa: RUF009  (a field with metadata) as asked; defaults fill in on the model
        help="A method parameter NAME=VALUE, repeatable (e.g. --param alpha=0.3 --param l_final=20); "
        "VALUE may be comma-separated to measure each. hired-bench methods lists every parameter.",
        flag="param",
        hash=False,
        factory=dict,
    )
    fidelity: str = option(
        "paper",
        "paper: the papers' definitions with exact budgets; reference: the released code's "
        "behaviour (hired; prumerge and prumerge+ adaptive), to compare with published numbers.",
        toml="fidelity",
    )
    model: str = option(
        "auto",
        "Preset (" + ", ".join(PRESETS) + "), a local model folder or a cached Hugging Face id; "
        "comma-separated for several, one after another. auto = llava-next-7b on a GPU, tiny on CPU.",
        toml="models",
        axis=True,
    )
    weights: str = option(
        "auto",
        "auto: pretrained if found locally, else random; pretrained; random (real shapes).",
        toml="weights",
    )
    dtype: str = option(
        "auto", "auto (float16 on GPU, float32 on CPU), float16, bfloat16, float32.", toml="dtype"
    )
    device: str = option("auto", "auto, cpu, cuda or cuda:N.", toml="device")
    memory_cap: str | None = option(
        None,
        "Emulate a smaller GPU: cap PyTorch's memory, e.g. 24GiB (GiB, GB, MiB; no unit = GiB).",
        toml="memory_cap",
    )
    batch_size: int = option(
        1, "Images (samples) per request.", flag="batch", toml="batch_sizes", axis=True, bounds=(1, None)
    )
    image_sizes: tuple[tuple[int, int], ...] | None = option(  # (width, height), cycled over the batch
        ((600, 600),),
        "Synthetic image size WIDTHxHEIGHT in pixels; repeat to mix sizes in a batch.",
        flag="image-size",
        toml="image_sizes",
        axis=True,
    )
    images: str | None = option(None, "Folder of real images (used in name order, cycled to fill the batch).")
    new_tokens: int = option(
        15,
        "New tokens generated per sample (exactly; EOS ignored).",
        toml="new_tokens",
        axis=True,
        bounds=(1, None),
    )
    prompt: str = option(DEFAULT_PROMPT, "Question asked about each image.", toml="prompt")
    warmup: int = option(2, "Unmeasured warm-up requests per point.", toml="warmup", bounds=(0, 10_000))
    repeats: int = option(
        5, "Measured requests per point (medians reported).", toml="repeats", bounds=(1, 10_000)
    )
    seed: int = option(
        0,
        "Seed for random weights, synthetic images and the random method.",
        toml="seed",
        bounds=(0, 2**63 - 1),
    )
    engine: str = option(  # "eager": transformers' generate; "compiled": static KV cache + torch.compile
        "eager",
        "eager: transformers' generate as is; compiled: a static KV cache and torch.compile (CUDA "
        "graphs on a GPU), compiled once per point outside the timed requests; vllm: vLLM's engine with "
        "the suite's plugin (the [vllm] extra, docs/engines.md). Comma-separated for several.",
        toml="engines",
        axis=True,
    )
    min_duration: float = option(
        0.0,
        "Measure until both --repeats requests and this many seconds are reached (MLPerf-style).",
        toml="min_duration",
        bounds=(0.0, 3600.0),
        unit="seconds",
    )
    accelerator: str | None = option(  # on a Ray cluster: the GPU type to measure on (Ray's names: "A100")
        None, "On a Ray cluster: the GPU type to measure on.", toml="accelerators", axis=True
    )

    @property
    def label(self) -> str:
        return budget_label("adaptive" if self.budget is None else self.budget)

    @property
    def key(self) -> str:
        """Stable identity of the point: what --resume matches records against.

        Fields added after the first release are left out at their default, so older files still match.
        """
        fields = asdict(self)
        for name, default in LATER_FIELDS.items():
            if fields[name] == default:
                del fields[name]
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    @property
    def model_group(self) -> tuple:
        """Points with the same group share one loaded model."""
        return (self.model, self.weights, self.dtype, self.device, self.memory_cap)

    @property
    def runner_group(self) -> tuple:
        """Points with the same runner group are measured by one runner: a model group on transformers'
        engines, or on vLLM's (whose engines start per method)."""
        return (*self.model_group, self.engine == "vllm")


OPTIONS: dict[str, Field] = {f.name: f for f in fields(Point)}
DEFAULTS: dict = {f.name: f.default for f in fields(Point) if f.default is not MISSING}
TOML_KEYS: dict[str, str] = {f.metadata["toml"]: f.name for f in fields(Point) if f.metadata["toml"]}


def check_option(name: str, value) -> str | None:
    """Why a value of a point option is out of its bounds (NaN too), in the same words on the command line
    and in sweep files: "must be in LOW..HIGH, got V" or "must be at least LOW, got V"; None when fine."""
    bounds = OPTIONS[name].metadata["bounds"]
    if bounds is None:
        return None
    low, high = bounds
    unit = f" {OPTIONS[name].metadata['unit']}" if OPTIONS[name].metadata["unit"] else ""
    if high is None:
        return None if value >= low else f"must be at least {low:g}{unit}, got {value:g}"
    if not low <= value <= high:  # False for NaN
        top = SEED_TEXT if high == 2**63 - 1 else f"{high:g}"
        return f"must be in {low:g}..{top}{unit}, got {value:g}"
    return None


def check_prompt(prompt: str) -> str | None:
    """The prompt is the question: the image placeholder is the template's, once."""
    if "<image>" in prompt:
        return "must not contain <image>: the chat template places the image itself"
    if not prompt.strip():
        return "is empty"
    return None


def budget_label(budget) -> str:
    """A budget as printed everywhere: 20% for a fraction, as is for "adaptive", n/a where missing."""
    if isinstance(budget, str):
        return budget
    return "n/a" if budget is None else f"{budget:.0%}"


@dataclass(frozen=True)
class MethodEntry:
    """What to measure: a method (or "all"), its budgets, fidelity and parameter values (a grid)."""

    name: str
    budgets: tuple[float | None, ...]
    fidelity: str = DEFAULTS["fidelity"]
    params: dict[str, tuple] = field(default_factory=dict, hash=False)  # name -> values


@dataclass(frozen=True)
class Inputs:
    """What each request is asked: images (synthetic sizes or a folder), prompt, new tokens."""

    image_sizes: tuple[tuple[int, int], ...] | None = DEFAULTS["image_sizes"]
    images: str | None = None
    new_tokens: int = DEFAULTS["new_tokens"]
    prompt: str = DEFAULTS["prompt"]
