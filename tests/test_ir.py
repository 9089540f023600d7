"""The IR: printer, verifier, simplification passes, and the forward/backward split."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import compile_grad
from compiler.autodiff import split, vjp_graph
from compiler.interpreter import interpret
from compiler.ir import Graph, Node, TensorType
from compiler.passes import optimize
from compiler.verify import VerificationError, verify


def graph_of(fn, *args, kind="forward"):
    f = compile_grad(fn, backend="interpreter")
    spec = f.specialize(*args)
    return spec.graph_of(kind)


def ops_in(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes() if n.op not in ("input", "const")]


def test_printer_is_readable_and_deterministic():
    def model(w, x):
        z = x @ w
        return np.sum(np.tanh(z))

    args = (np.ones((3, 2)), np.ones((4, 3)))
    text = str(graph_of(model, *args))
    assert text == str(graph_of(model, *args))
    lines = text.splitlines()
    assert lines[0] == "def model(w: f64[3,2], x: f64[N,3]) -> (f64[]):"
    assert lines[1].startswith("  z: f64[N,2] = matmul(x, w)")
    assert "test_ir.py:" in lines[1]
    assert lines[-1] == "  return model"


def test_verifier_rejects_a_wrong_type():
    x = Node("input", (), {"index": 0, "type": TensorType(np.float64, (3,))},
             TensorType(np.float64, (3,)))
    bad = Node("exp", (x,), {}, TensorType(np.float32, (3,)))
    with pytest.raises(VerificationError, match="exp node has type f32\\[3\\]"):
        verify(Graph([x], [bad]))


def test_verifier_rejects_a_foreign_input():
    t = TensorType(np.float64, ())
    x = Node("input", (), {"index": 0, "type": t}, t)
    stray = Node("input", (), {"index": 1, "type": t}, t)
    with pytest.raises(VerificationError, match="not among the graph's inputs"):
        verify(Graph([x], [Node("add", (x, stray), {}, t)]))


def test_cse_merges_equal_nodes_and_dce_drops_dead_ones():
    def f(x):
        unused = np.exp(x) * 3.0  # noqa: F841 -- dead code
        return np.sum(np.sin(x) + np.sin(x))

    graph = graph_of(f, np.ones(3))
    assert ops_in(graph).count("sin") == 1
    assert "exp" not in ops_in(graph)


@pytest.mark.parametrize(
    "fn, absent",
    [
        (lambda x: np.sum(x * 1.0 + 0.0), ["mul", "add"]),  # x*1 -> x, x+0 -> x
        (lambda x: np.sum(np.negative(-x)), ["neg"]),  # -(-x) -> x
        (lambda x: np.sum(x / 1.0 - 0.0), ["div", "sub"]),
        (lambda x: np.sum(x**1), ["pow"]),
        (lambda x: np.sum(x.T.T), ["transpose"]),
        (lambda x: np.sum(x.reshape(6).reshape(2, 3)), ["reshape"]),
        (lambda x: np.sum(np.where(x > 0, x, x)), ["where", "gt"]),
    ],
)
def test_algebraic_simplification(fn, absent):
    graph = graph_of(fn, np.ones((2, 3)))
    for op in absent:
        assert op not in ops_in(graph), str(graph)
    x = np.arange(6.0).reshape(2, 3) - 2
    np.testing.assert_allclose(interpret(graph, [x])[0], fn(x))


def test_x_times_zero_is_not_simplified():
    # 0 * inf is NaN, so x * 0 -> 0 would change results.
    graph = graph_of(lambda x: x * 0.0, np.ones(2))
    assert ops_in(graph) == ["mul"]
    np.testing.assert_array_equal(interpret(graph, [np.array([np.inf, 1.0])])[0], [np.nan, 0.0])


def test_constant_folding():
    graph = graph_of(lambda x: x * (np.float64(2.0) * 3.0 + np.exp(0.0)), np.ones(2))
    consts = [n for n in graph.nodes() if n.op == "const"]
    assert ops_in(graph) == ["mul"] and len(consts) == 1
    assert consts[0].attrs["value"] == 7.0


def test_x_squared_becomes_a_product():
    graph = graph_of(lambda x: x**2, np.ones(2))
    assert ops_in(graph) == ["mul"]


def test_split_recomputes_cheap_values_and_saves_the_rest():
    def f(w, x):
        z = x @ w
        return np.sum(np.maximum(z, 0.0))

    fn = compile_grad(f, backend="interpreter")
    args = (np.ones((3, 2)), np.ones((4, 3)))
    spec = fn.specialize(*args)
    joint = optimize(vjp_graph(spec.graph, [0], seed="input"))
    parts = split(joint, n_primal=2, n_outputs=1)
    verify(parts.forward)
    verify(parts.backward)
    saved = parts.forward.outputs[1:]
    assert [n.name for n in saved] == ["z"], "z is saved once, not as two masks"
    assert parts.residual_sources == [("output", 1), ("input", 1)], "x is passed, not copied"
    backward_ops = ops_in(parts.backward)
    assert "gt" in backward_ops and "eq" in backward_ops, "relu's masks are recomputed"
    # the split computes the same gradient as the joint graph
    w, x = args
    outs = interpret(parts.forward, [w, x])
    residuals = [outs[i] if where == "output" else [w, x][i]
                 for where, i in parts.residual_sources]
    (g_split,) = interpret(parts.backward, residuals + [np.float64(1.0)])
    g_joint = interpret(joint, [w, x, np.float64(1.0)])[1]
    np.testing.assert_allclose(g_split, g_joint)


def test_inputs_that_need_no_gradient_cost_nothing():
    def f(w, x):
        return np.sum(np.exp(x) * w)

    graph = graph_of(f, np.ones(3), np.ones(3), kind="value_and_grad")
    # d/dw = exp(x): no node computes d/dx (which would need exp(x) * w)
    assert len(graph.outputs) == 2
    assert ops_in(graph).count("mul") == 1
