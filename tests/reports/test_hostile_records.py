"""Records with a field of the wrong type: every field of a record of every kind is replaced, one at a
time, by values of other types; each such record is either refused by the reader (skipped and counted,
naming the field) or reported, and `report` and `compare` never end in a traceback."""

import copy
import json
from pathlib import Path

import pytest

from profiler.bench.checks import Check, check_record
from profiler.results.schema import KIND_SPECS, record_problem, type_problem
from profiler.results.store import append_record
from reports.data import Results, load_results, problem
from reports.sections import build_compare, build_report

FIXTURES = Path(__file__).parents[1] / "fixtures" / "results"
SERVING = Path(__file__).parents[1] / "fixtures" / "serving" / "cpu.jsonl"
# a list, an object, text, a huge and a negative number, null, a boolean, a fraction
WRONG = [[7], {"x": 1}, "x", 10**12, -1, None, True, 0.5]


def accuracy_record() -> dict:
    return {
        "kind": "accuracy", "schema_version": 1, "run_id": "e", "status": "ok", "error": None,
        "config": {"model": "llava-next-7b", "weights": "random", "method": "hired", "budget": 0.2,
                   "fidelity": "paper", "limit": 50, "task": "textvqa_val", "tasks": ["textvqa_val"]},
        "hardware": {"gpu_name": "Fixture GPU A"},
        "metrics": {"task": "textvqa_val", "metric": "exact_match", "value": 0.5, "stderr": 0.05,
                    "samples": 50, "achieved_budget": 0.2},
    }  # fmt: skip


def sample_records() -> list[dict]:
    """One record of every kind (a point ok and one failed, with agreement), as the suite writes them."""
    loaded = load_results([FIXTURES])
    ok = copy.deepcopy(next(p for p in loaded.points if p["status"] == "ok"))
    ok["metrics"]["agreement"] = {
        "first_token": 0.75,
        "prefix": {"median": 0.5, "mean": 0.5, "stdev": 0.1, "values": [0.5]},
        "kl_first": {"median": 0.1, "mean": 0.1, "stdev": 0.0, "values": [0.1]},
    }
    ok["metrics"]["warnings"] = ["TTFT varies 6% run to run"]
    ok["metrics"]["unavailable"] = {"energy_j": "no counter"}
    failed = next(p for p in loaded.points if p["status"] != "ok")
    check = check_record(Check("ttft_clock", 1.0, 1.01, "pass"), "r", {"gpu_name": "GPU A"}, {"model": "x"})
    serving = json.loads(SERVING.read_text().splitlines()[1])  # a real serve-bench record (raw values cut)
    return [ok, failed, loaded.boundaries[0], loaded.predictions[0], accuracy_record(), check, serving]


def paths(value, path=()):
    """Every field of a record (the first item of each list), as key paths."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*path, key))
    elif isinstance(value, list) and value:
        yield from paths(value[0], (*path, 0))


def mutated(record: dict, path: tuple, value) -> dict:
    record = copy.deepcopy(record)
    holder = record
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    return record


def mutants() -> list[tuple[str, dict]]:
    found = []
    for record in sample_records():
        for path in list(paths(record))[1:]:
            for value in WRONG:
                found.append((f"{record.get('kind', 'point')}:{'.'.join(map(str, path))}={value!r}",
                              mutated(record, path, value)))  # fmt: skip
    return found


def test_the_samples_are_valid_and_every_kind_is_covered():
    records = sample_records()
    assert [problem(r) for r in records] == [None] * len(records)
    assert {r.get("kind", "point") for r in records} == set(KIND_SPECS)


@pytest.mark.slow
def test_every_wrong_typed_field_is_refused_or_reported(tmp_path):
    results, refused = Results(), 0
    kinds = {
        "point": results.points,
        "oom_boundary": results.boundaries,
        "prediction": results.predictions,
        "accuracy": results.accuracy,
        "instrument_check": results.checks,
        "serving": results.serving,
    }
    base = load_results([FIXTURES])
    for name in ("points", "boundaries", "predictions"):
        getattr(results, name).extend(getattr(base, name))
    cases = mutants()
    for label, record in cases:
        why = problem(record)  # never raises
        if why is None:
            kinds[record.get("kind", "point")].append(record)
        else:
            assert isinstance(why, str) and why, label
            refused += 1
    accepted = len(cases) - refused
    assert refused > 1000 and accepted > 300, (refused, accepted)
    build_report(results, tmp_path / "report")  # the accepted ones, all at once, drawn and tabled
    build_compare(results, tmp_path / "compare")
    assert (tmp_path / "report" / "report.html").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("config.weights", ["random"], "config.weights is not text"),
        ("config.engine", {"name": "eager"}, "config.engine is not text"),
        ("config.memory_cap_gib", "24GiB", "config.memory_cap_gib is not a number"),
        ("config.batch_size", 10**12, "config.batch_size is not a whole number in 0..1048576"),
        ("config.budget", 7, "config.budget is not a fraction in (0, 1] or text"),
        ("config.image_sizes", [[600]], "config.image_sizes[0] is not [width, height]"),
        ("config.method_params", "alpha=0.3", "config.method_params is not an object"),
        ("metrics.visual_tokens", "2880", "metrics.visual_tokens is not an object"),
        ("metrics.phases_s", [1], "metrics.phases_s is not an object"),
        ("metrics.agreement", 0.9, "metrics.agreement is not an object"),
        ("metrics.warnings", "slow", "metrics.warnings is not a list"),
        ("metrics.unavailable", "n/a", "metrics.unavailable is not an object"),
        ("metrics.ttft_s.stdev", -1, "metrics.ttft_s.stdev is not a number >= 0"),
        ("hardware.gpu_name", 7, "hardware.gpu_name is not text"),
        ("config.fidelity", 1, "config.fidelity is not text"),
        ("config.model", None, "no config.model"),
    ],
)
def test_the_reason_names_the_field(field, value, why):
    ok = sample_records()[0]
    assert problem(mutated(ok, tuple(field.split(".")), value)) == why


def test_a_record_of_one_kind_with_another_kinds_fields():
    point, prediction = sample_records()[0], sample_records()[3]
    assert problem({**prediction, "model": {"name": "x"}}) == "model is not text"
    assert problem({**point, "kind": "prediction"}) == "no model"
    assert problem({**prediction, "kind": "instrument_check"}) == "no check"
    assert record_problem({**point, "verdict": 3}, "point") is None  # unknown fields are newer writers'


def test_deep_values_stop_at_the_spec():
    deep: list = []
    for _ in range(10_000):
        deep = [deep]
    config = KIND_SPECS["point"]["config"]
    assert type_problem({"method_params": {"a": deep}}, config) == "method_params.a is nested deeper than 32"
    assert type_problem({"method_params": {"a": [[1]]}}, config) is None
    assert type_problem({"image_sizes": deep}, config).startswith("image_sizes[0]")


def test_a_point_measured_again_is_reported_from_its_newest_record(tmp_path):
    ok = sample_records()[0]
    ok["config"]["point_key"] = "p1"
    older = mutated(mutated(ok, ("created_at",), "2026-01-01T00:00:00+00:00"), ("run_id",), "old")
    newer = mutated(mutated(ok, ("created_at",), "2026-02-01T00:00:00+00:00"), ("run_id",), "new")
    other = mutated(newer, ("hardware", "gpu_name"), "Another GPU")  # the same point elsewhere: kept
    path = tmp_path / "r.jsonl"
    for record in (newer, older, newer, other):
        append_record(path, record)
    loaded = load_results([path])
    assert sorted(r["run_id"] for r in loaded.points) == ["new", "new"]
    assert loaded.superseded == 1 and loaded.duplicates == 1


def test_a_report_holds_a_bounded_number_of_records(tmp_path, monkeypatch):
    import reports.data

    ok = sample_records()[0]
    monkeypatch.setattr(reports.data, "MAX_POINTS", 3)
    path = tmp_path / "r.jsonl"
    with open(path, "w") as f:
        for i in range(5):
            f.write(json.dumps(mutated(ok, ("config", "point_key"), f"p{i}")) + "\n")
    loaded = load_results([path])
    assert len(loaded.points) == 3
    assert loaded.skipped == {(str(path), "beyond the 3 records one report holds"): 2}
