"""The benchmark suite's own checks: wrong implementations are caught before any time is
reported, goals are judged from the figures, and W2 and a tiny W7 in quick mode write sane
JSON.

No test asserts a time: benchmarks/ measures, tests only check the machinery.
"""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import pytest
from gradcheck import central_differences

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/
from benchmarks import (  # noqa: E402
    goals,
    harness,
    reference,
    w2_mae,
    w7_programs,
    w10_data_parallel,
)
from benchmarks import w7_compile_scaling as w7  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    GRADFUSE,
    NUMBA,
    Case,
    Config,
    DisagreementError,
    Impl,
    PeerMissing,
    Timing,
    Tolerance,
    Unfinished,
    WorkloadResult,
    check_agreement,
    run_case,
)
from compiler import compile_grad  # noqa: E402

CONFIG = Config.quick_mode(frozenset())


def mae_case():
    args = w2_mae.arguments()
    return args, w2_mae.FUNCTION.reference(args)


def read_pair(result):
    loss, grad = result
    return {"loss": loss, "grad params": grad}


def test_a_correct_implementation_is_timed():
    args, expected = mae_case()
    result = WorkloadResult("W2", "test")
    impl = Impl("numpy", lambda: reference.mae(*args), read_pair, number=3)
    case = run_case(result, "value and grad", "µs", [impl], expected, CONFIG)
    assert case.times["numpy"].median > 0 and case.times["numpy"].number == 3


@pytest.mark.parametrize("wrong", ["gradient", "loss", "sign"])
def test_a_wrong_implementation_fails_before_any_time(wrong):
    args, expected = mae_case()

    def broken():
        loss, grad = reference.mae(*args)
        if wrong == "gradient":
            grad = grad * np.float32(1.01)  # 1% off: far beyond float32 rounding
        elif wrong == "loss":
            loss = loss * np.float32(1.001)
        else:
            grad = grad.copy()
            grad[3] = -grad[3]
        return loss, grad

    result = WorkloadResult("W2", "test")
    good = Impl("numpy", lambda: reference.mae(*args), read_pair)
    with pytest.raises(DisagreementError, match="bad"):
        run_case(result, "value and grad", "µs", [good, Impl("bad", broken, read_pair)],
                 expected, CONFIG)
    assert result.cases == [], "no row of a case is timed when one row disagrees"


def test_float32_rounding_is_within_tolerance():
    args, expected = mae_case()
    outcome = read_pair(reference.mae(*args))  # float32 arithmetic vs the float64 reference
    check_agreement("W2", "float32", outcome, expected)


@pytest.mark.parametrize("outcome, message", [
    ({"loss": np.nan, "grad params": np.zeros(10)}, "disagrees"),
    ({"loss": 1.0, "grad params": np.zeros(9)}, "shape"),
    ({"loss": 1.0}, "gives no"),
])
def test_nan_shape_and_missing_keys_fail(outcome, message):
    expected = {"loss": 1.0, "grad params": np.zeros(10)}
    with pytest.raises(DisagreementError, match=message):
        check_agreement("W", "impl", outcome, expected)


def test_sgd_gradients_read_back_from_a_float32_update():
    rng = np.random.default_rng(0)
    before = {"W": rng.normal(size=(4, 3)).astype(np.float32)}
    grad = rng.normal(size=(4, 3))
    after = {"W": (before["W"] - np.float32(0.01) * grad.astype(np.float32))}
    read = harness.sgd_gradients(before, after, 0.01)
    tol = harness.sgd_tolerance(before, 0.01)
    check_agreement("W1", "float32 step", {"g": read["W"]}, {"g": grad}, {"g": tol})
    with pytest.raises(DisagreementError):
        check_agreement("W1", "half step", {"g": read["W"] / 2}, {"g": grad}, {"g": tol})


def test_tolerance_scales_with_the_largest_entry():
    tol = Tolerance(rtol=1e-4, scale=1e-4)
    assert tol.atol(np.array([1000.0, 1e-9])) == pytest.approx(0.1)


def test_a_missing_peer_becomes_a_note():
    def missing():
        raise PeerMissing("JAX is not installed")

    notes: list[str] = []
    config = Config.quick_mode(frozenset({"JAX jit"}))
    rows = harness.build_rows(config, {"JAX jit": missing, "torch eager": missing}, notes)
    assert rows == [] and notes == ["JAX jit skipped: JAX is not installed"]


def figures(gradfuse: float, numba: float, peers: dict[str, float]) -> dict:
    case = Case(w2_mae.CASE, "µs")
    for name, seconds in {GRADFUSE: gradfuse, NUMBA: numba, **peers}.items():
        case.times[name] = Timing(seconds, seconds, 1, 1)
    return {"W2": WorkloadResult("W2", "test", [case])}


def verdicts(results) -> dict[str, str]:
    return {v.goal: v.status for v in goals.evaluate(results)}


def test_goals_are_judged_from_the_figures():
    met = verdicts(figures(7e-6, 5e-6, {"JAX jit": 30e-6, "torch eager": 60e-6}))
    assert met == {"<= 1.5x hand-written numba": "met",
                   ">= 4x faster than the fastest peer": "met"}
    missed = verdicts(figures(8e-6, 5e-6, {"JAX jit": 30e-6}))
    assert missed == {"<= 1.5x hand-written numba": "MISSED",
                      ">= 4x faster than the fastest peer": "MISSED"}
    assert verdicts(figures(7e-6, 5e-6, {}))[">= 4x faster than the fastest peer"] == "n/a"


def w10(one_process: float, two_ranks: float, reduce_share: float) -> dict:
    case = Case(w10_data_parallel.STEP, "ms")
    for name, seconds in ((w10_data_parallel.ONE_PROCESS, one_process),
                          (w10_data_parallel.TWO_RANKS, two_ranks)):
        case.times[name] = Timing(seconds, seconds, 1, 1)
    case.extra[w10_data_parallel.TWO_RANKS] = {"all-reduce ms": reduce_share * two_ranks * 1e3,
                                               "all-reduce share %": 100 * reduce_share}
    return {"W10": WorkloadResult("W10", "test", [case])}


def test_w10_goals_are_judged_from_the_ranks_figures():
    throughput = "2 ranks >= 1.7x the throughput of 1 rank (one thread each)"
    share = "all-reduce <= 10% of a step"
    assert verdicts(w10(6e-3, 3.4e-3, 0.05)) == {throughput: "met", share: "met"}
    assert verdicts(w10(6e-3, 3.6e-3, 0.12)) == {throughput: "MISSED", share: "MISSED"}
    skipped = {"W10": WorkloadResult("W10", "test", notes=["skipped: needs mpi4py"])}
    assert set(verdicts(skipped).values()) == {"n/a"}


def test_w2_quick_run_writes_sane_json(tmp_path, capsys):
    from benchmarks.run import main

    output = tmp_path / "results.json"
    markdown = tmp_path / "RESULTS.md"
    markdown.write_text("# Results\n\nanalysis kept\n")
    status = main(["W2", "--quick", "--peers", "numpy", "--output", str(output),
                   "--markdown", str(markdown), "--no-print-json"])
    assert status == 0
    document = json.loads(output.read_text())
    assert document["quick"] is True and document["errors"] == {}
    assert document["environment"]["threads per library"] == 2
    (case,) = document["workloads"]["W2"]["cases"]
    assert case["label"] == w2_mae.CASE and case["unit"] == "µs"
    assert set(case["times"]) == {GRADFUSE, NUMBA, "NumPy (hand-written)"}
    for timing in case["times"].values():
        assert math.isfinite(timing["median_s"]) and 0 < timing["best_s"] <= timing["median_s"]
    statuses = {g["goal"]: g["status"] for g in document["goals"]}
    assert statuses[">= 4x faster than the fastest peer"] == "n/a"  # no peer ran
    assert statuses["<= 1.5x hand-written numba"] in ("met", "MISSED")
    printed = capsys.readouterr().out
    assert "W2" in printed and "Goals" in printed
    text = markdown.read_text()
    assert text.startswith("# Results") and "analysis kept" in text and "| gradfuse |" in text


# --- W7: compile scaling ---------------------------------------------------------------------
W7_SMALL = {"deep": 2, "gru": 3, "euler": 4}


@pytest.mark.parametrize("program", list(W7_SMALL))
def test_w7_references_match_central_differences(program):
    """The hand-derived NumPy gradients that every W7 row is checked against."""
    problem = w7_programs.problem(program, W7_SMALL[program])
    expected = problem.expected()
    differentiated, rest = problem.args[0], problem.args[1:]
    leaves = [v for k, v in w7_programs.outcome(0.0, differentiated).items() if k != "loss"]
    names = [k for k in expected if k != "loss"]
    for name, leaf in zip(names, leaves):
        def loss_of(value, leaf=leaf):
            saved = leaf.copy()
            leaf[...] = value
            try:
                return problem.reference(differentiated, *rest)[0]
            finally:
                leaf[...] = saved

        numeric = central_differences(loss_of, [leaf.copy()], 0)
        np.testing.assert_allclose(expected[name], numeric, rtol=1e-6, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("program", list(W7_SMALL))
def test_w7_gradfuse_programs_agree_with_the_references(program):
    """The programs as gradfuse runs them (the interpreter: nothing to compile)."""
    problem = w7_programs.problem(program, W7_SMALL[program])
    function = w7_programs.gradfuse_function(program, problem.size, "loop")
    result = compile_grad(function, backend="interpreter").value_and_grad(*problem.args)
    check_agreement("W7", "gradfuse", w7_programs.outcome(*result), problem.expected(),
                    dict.fromkeys(problem.expected(), w7.AGREEMENT))


def test_w7_stops_a_configuration_at_its_time_and_memory_limits():
    deep = w7.Configuration("deep", 2, "loop", "gradfuse")
    stopped = w7.spawn(deep, Config(compile_timeout=0.3))
    assert stopped.report is None and stopped.unfinished.reason == "timeout >0.3 s"
    assert stopped.unfinished.at_least >= 0.3
    swollen = w7.spawn(deep, Config(compile_memory_gb=0.005))  # 5 MB: any Python is larger
    assert swollen.unfinished.reason.startswith("memory >0.005 GB after")
    assert swollen.peak_mb > 5


def test_w7_quick_machinery_runs_a_tiny_configuration_and_writes_sane_json(tmp_path,
                                                                           monkeypatch):
    from benchmarks.run import main

    tiny = [w7.Configuration("deep", 2, "loop", "gradfuse"),
            w7.Configuration("gru", 3, "scan", "gradfuse")]
    monkeypatch.setattr(w7, "plan", lambda config: tiny)
    output = tmp_path / "results.json"
    status = main(["W7", "--quick", "--peers", "none", "--output", str(output),
                   "--no-print-json"])
    assert status == 0
    document = json.loads(output.read_text())
    assert document["quick"] is True and document["errors"] == {}
    cases = {c["label"]: c for c in document["workloads"]["W7"]["cases"]}
    deep = cases["deep net L=2: value_and_grad"]
    assert deep["unit"] == "s" and set(deep["times"]) == {GRADFUSE}
    first = deep["times"][GRADFUSE]
    assert math.isfinite(first["median_s"]) and first["median_s"] > 0
    extra = deep["extra"][GRADFUSE]
    assert extra["lines"] > 0 and extra["peak MB"] > 0 and extra["steady µs"] > 0
    assert 0 < extra["numba s"] < first["median_s"]  # numba's share of the first result
    gru = cases["GRU T=3"]  # compiler.scan: runs once it exists, else not available
    assert set(gru["times"]) | set(gru["unfinished"]) == {w7.GRADFUSE_SCAN}
    if gru["unfinished"]:
        assert gru["unfinished"][w7.GRADFUSE_SCAN] == {"reason": "not available",
                                                       "at_least_s": None}
    statuses = {g["goal"]: g["status"] for g in document["goals"] if g["id"] == "W7"}
    assert statuses["peak memory while compiling <= 1 GB"] == "met"
    assert statuses["deep net L=100: first value_and_grad <= 3 s"] == "n/a"  # not run


def w7_figures(first: dict[int, float | None], timeout: float = 120.0) -> dict:
    """W7 results with the deep net's first value_and_grad at these L (None: timed out)."""
    result = WorkloadResult("W7", "test")
    for size, seconds in first.items():
        case = Case(w7.case_label("deep", size), "s")
        if seconds is None:
            case.unfinished[GRADFUSE] = Unfinished(f"timeout >{timeout:g} s", timeout)
            case.extra[GRADFUSE] = {"peak MB": 2500.0}
        else:
            case.times[GRADFUSE] = Timing(seconds, seconds, 1, 1)
            case.extra[GRADFUSE] = {"peak MB": 300.0, "steady µs": 400.0}
            case.extra["JAX jit"] = {"steady µs": 500.0}
        result.cases.append(case)
    gru = Case(w7.case_label("gru", 200), "s")
    gru.unfinished[w7.GRADFUSE_SCAN] = Unfinished("not available")
    result.cases.append(gru)
    return {"W7": result}


def test_w7_goals_judge_timeouts_as_missed_and_missing_scan_as_na():
    fast = {v.goal: (v.status, v.figures) for v in goals.evaluate(w7_figures({20: 0.9, 100: 2.1}))}
    assert fast["deep net L=100: first value_and_grad <= 3 s"][0] == "met"
    assert fast["<= 20 ms per additional identical layer (L=20 -> L=100)"] == (
        "met", "15 ms per layer (L=20 0.90 s, L=100 2.10 s; limit 20 ms)")
    assert fast["GRU T=200 with scan <= 3 s"][0] == "n/a"
    assert fast["peak memory while compiling <= 1 GB"][0] == "met"
    assert fast["steady time not slower than JAX jit"][0] == "met"
    slow = {v.goal: (v.status, v.figures) for v in goals.evaluate(w7_figures({20: 8.0, 100: None}))}
    assert slow["deep net L=100: first value_and_grad <= 3 s"] == (
        "MISSED", "gradfuse timeout >120 s (limit 3 s)")
    assert slow["<= 20 ms per additional identical layer (L=20 -> L=100)"][0] == "MISSED"
    assert slow["<= 20 ms per additional identical layer (L=20 -> L=100)"][1].startswith(
        "> 1400 ms per layer")  # (120 - 8) / 80
    assert slow["peak memory while compiling <= 1 GB"][0] == "MISSED"


# --- W9: the runtime's PyTorch-style loop ----------------------------------------------------


def test_w9_rows_agree_with_their_references():
    """Every W9 row, at a small size, passes the check that runs before it is timed."""
    from benchmarks import w1_mlp_step
    from benchmarks import w9_runtime_step as w9

    w1, deep = w1_mlp_step.problem(), w9.deep_problem(3)
    cases = [(w9.w1_step_rows(w1), w1.step_reference(), w1.step_tolerances()),
             (w9.w1_call_rows(w1), w9.call_reference(w1), None),
             (w9.deep_step_rows(deep), deep.step_reference(), deep.step_tolerances()),
             (w9.optimizer_rows(deep), w9.optimizer_reference(deep), None),
             (w9.deep_call_rows(deep), w9.call_reference(deep), None)]
    for rows, expected, tolerances in cases:
        impls = harness.build_rows(CONFIG, rows, [])
        assert any(impl.name == GRADFUSE for impl in impls)
        for impl in impls:
            impl.setup()
            check_agreement("W9", impl.name, impl.read(impl.call()), expected, tolerances)


def test_w9_goals_are_judged_from_the_figures():
    from benchmarks import w9_runtime_step as w9

    def case(label, unit, times):
        found = Case(label, unit)
        for name, seconds in times.items():
            found.times[name] = Timing(seconds, seconds, 1, 1)
        return found

    result = WorkloadResult("W9", "test", [
        case(w9.W1_STEP, "µs", {GRADFUSE: 6e-6, w9.TRAIN_STEP: 2.5e-6, "torch eager": 100e-6}),
        case(w9.DEEP_STEP, "ms", {GRADFUSE: 2e-3, "torch eager": 3e-3}),
        case(w9.OPTIMIZER, "µs", {GRADFUSE: 50e-6}),
        case(w9.W1_CALLS, "µs", {GRADFUSE: 5e-6, w9.KEYWORDS: 7e-6, w9.POSITIONAL: 4e-6}),
    ])
    statuses = verdicts({"W9": result})
    assert statuses["W1 runtime step <= 3x the fused train_step"] == "met"
    assert statuses["W1 runtime step >= 12x faster than PyTorch eager"] == "met"
    assert statuses["W1 runtime step <= 8 µs"] == "met"
    assert statuses["deep net L=100 runtime step <= 0.5x PyTorch eager"] == "MISSED"
    assert statuses["optimizer step <= 0.3 µs per parameter (L=100: 200 parameters)"] == "met"
    assert statuses["value_and_grad(params dict) <= 1.5x flat positional arrays"] == "met"
    assert statuses["value_and_grad with keywords <= 1.5x flat positional arrays"] == "MISSED"
    assert statuses["deep net L=100 value_and_grad(list of dicts) <= 1.5x positional "
                    "arrays"] == "n/a"
