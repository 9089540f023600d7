"""compile_report(): where a compiled function's compile time went, per phase and per kernel.

Times are never asserted (benchmarks/ measures them); what is asserted is which
phases and kernels the report holds, that its figures add up, and that line counts
and numba's cache verdict are those of the kernels actually built.
"""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad
from compiler.timings import PHASES, NumbaCompile, PhaseTimes, kernel_report


def tanh_layer(w, x):
    return np.mean(np.tanh(x @ w) ** 2)


RNG = np.random.default_rng(0)
W, X = RNG.normal(size=(3, 2)), RNG.normal(size=(5, 3))
LAYER = compile_grad(tanh_layer)  # compiled once for the module: value_and_grad and forward


def test_the_report_follows_the_kernels_built():
    with pytest.raises(RuntimeError, match="has not been called yet"):
        compile_grad(tanh_layer).compile_report()
    LAYER.value_and_grad(W, X)
    first = LAYER.compile_report()
    assert first.name == "tanh_layer" and list(first.kernels) == ["value_and_grad"]
    LAYER(W, X)
    report = LAYER.compile_report()
    assert list(report.kernels) == ["value_and_grad", "forward"]  # in the order built
    assert set(report.trace.seconds) == {"trace", "passes"}
    assert report.trace.lines is None and report.trace.cache_hit is None
    gradient = report.kernels["value_and_grad"]
    assert set(gradient.seconds) == {"autodiff", "passes", "codegen", "numba"}
    assert set(report.kernels["forward"].seconds) == {"passes", "codegen", "numba"}
    for kind, kernel in report.kernels.items():
        assert kernel.lines == LAYER.source(kind).count("\n")
        assert isinstance(kernel.cache_hit, bool)
        assert all(s >= 0 for s in kernel.seconds.values())
        assert kernel.seconds["numba"] > 0  # compiled, or loaded from numba's disk cache
    assert report.lines == sum(k.lines for k in report.kernels.values())
    assert report.total == pytest.approx(sum(r.total for r in report.rows))
    assert report.total == pytest.approx(sum(report.seconds.values()))
    assert list(report.seconds) == list(PHASES)


def test_a_kernel_already_compiled_in_this_process_is_reported_cached():
    LAYER.value_and_grad(W, X)
    twin = compile_grad(tanh_layer)  # the same source: the same module, compiled already
    twin.value_and_grad(W, X)
    kernel = twin.compile_report().kernels["value_and_grad"]
    assert kernel.cache_hit is True and kernel.seconds["numba"] == 0.0


def test_the_table_has_a_row_per_kernel_and_the_totals():
    LAYER.value_and_grad(W, X)
    LAYER(W, X)
    report = LAYER.compile_report()
    lines = str(report).splitlines()
    assert lines[0] == "compile report of tanh_layer (seconds)"
    assert lines[1].split() == [*PHASES, "total", "lines", "numba", "cache"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert list(rows) == ["trace", "value_and_grad", "forward", "total"]
    assert rows["trace"][2] == "-"  # no autodiff while tracing
    for kind in ("value_and_grad", "forward"):
        kernel = report.kernels[kind]
        assert rows[kind][-2] == str(kernel.lines)
        assert rows[kind][-1] == ("cached" if kernel.cache_hit else "compiled")
        assert rows[kind][6] == f"{kernel.total:.3f}"
    assert rows["total"][-1] == str(report.lines)


def test_the_interpreter_generates_and_compiles_nothing():
    f = compile_grad(tanh_layer, backend="interpreter")
    f.value_and_grad(W, X)
    kernel = f.compile_report().kernels["value_and_grad"]
    assert kernel.lines is None and kernel.cache_hit is None
    assert set(kernel.seconds) == {"autodiff", "passes"}
    total_row = str(f.compile_report()).splitlines()[-1].split()
    assert total_row[0] == "total" and len(total_row) == 1 + len(PHASES) + 1  # no lines


def test_the_runtime_split_is_timed_for_the_kind_asked_first():
    from runtime import Parameter

    f = compile_grad(tanh_layer, backend="interpreter")
    f(Parameter(W), X).backward()
    report = f.compile_report()
    assert list(report.kernels) == ["forward_save", "backward"]
    assert {"autodiff", "passes"} <= set(report.kernels["forward_save"].seconds)
    assert report.kernels["backward"].seconds == {}  # its graph came with forward_save's


def test_kernel_report_sums_clocks_and_compiles():
    a, b = PhaseTimes(), PhaseTimes()
    a.add("codegen", 0.25)
    b.add("codegen", 0.5)
    b.add("passes", 1.0)
    report = kernel_report("step", [a, b], 12, [NumbaCompile(2.0, True), NumbaCompile(1.0, False)])
    assert report.seconds == {"passes": 1.0, "codegen": 0.75, "numba": 3.0}
    assert report.total == 4.75 and report.lines == 12
    assert report.cache_hit is False  # one of its functions compiled
    assert kernel_report("k", [a], 1, [NumbaCompile(0.5, True)]).cache_hit is True


def test_phases_are_named():
    clock = PhaseTimes()
    with clock.phase("trace"):
        pass
    assert set(clock.seconds) == {"trace"} and clock.seconds["trace"] >= 0
    with pytest.raises(ValueError, match="unknown compile phase 'linking'"):
        clock.add("linking", 1.0)
