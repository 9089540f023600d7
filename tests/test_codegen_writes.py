"""Outputs stored into input arrays (`writes`): in place inside the loop nest when no later code
reads the old value, else copied at the end; either way the values are those of the pure
function, and results never alias the caller's arrays."""

from __future__ import annotations

import numpy as np

from compiler import compile_grad
from compiler.codegen import generate
from compiler.jit import NumbaKernel

RNG = np.random.default_rng(5)


def compiled_with_writes(fn, args, writes, wrt=0):
    graph = compile_grad(fn, wrt=wrt, backend="interpreter").specialize(*args).graph_of("forward")
    generated = generate(graph, "forward", writes)
    return NumbaKernel(graph, generated), generated.source


def sgd(p, g, lr):
    return p - lr * g, np.sum(g * g)


def test_an_update_read_only_at_its_own_element_is_written_in_place():
    p, g, lr = np.linspace(-1.0, 1.0, 7), np.arange(7.0), np.array(0.5)
    expected = p - 0.5 * g
    kernel, source = compiled_with_writes(sgd, (p, g, lr), {0: 0})
    assert "p[i0] = p[i0] - " in source and "np.empty" not in source
    (norm,) = kernel([p, g, lr])
    np.testing.assert_array_equal(p, expected)
    assert norm == np.sum(g * g)


def test_a_transposed_read_in_the_same_nest_makes_a_copy_at_the_end():
    W = np.arange(9.0).reshape(3, 3)
    expected = W - 0.1 * W.T
    kernel, source = compiled_with_writes(lambda W: W - 0.1 * W.T, (W,), {0: 0})
    body = source[source.index("def "):]
    assert "np.empty((3, 3)" in body and body.rstrip().endswith("return ()")
    assert kernel([W]) == []
    np.testing.assert_allclose(W, expected, rtol=1e-15)


def test_a_read_by_a_later_unit_sees_the_old_value():
    p, X = np.arange(1.0, 6.0), np.ones((4, 5))
    kernel, _ = compiled_with_writes(lambda p, X: (p * 0.5, X @ p), (p, X), {0: 0})
    (product,) = kernel([p, X])
    np.testing.assert_array_equal(product, np.full(4, 15.0))
    np.testing.assert_array_equal(p, np.arange(1.0, 6.0) * 0.5)


def test_a_returned_input_is_copied_before_it_is_overwritten_and_0d_inputs_work():
    s, p = np.array(2.0), np.array([1.0, 2.0])
    kernel, _ = compiled_with_writes(lambda s, p: (p, s + 1.0, p + 1.0, p * s), (s, p),
                                     {1: 0, 2: 1})
    old_p, scaled = kernel([s, p])
    np.testing.assert_array_equal(old_p, [1.0, 2.0])
    np.testing.assert_array_equal(scaled, [2.0, 4.0])  # the old s
    assert s[()] == 3.0
    np.testing.assert_array_equal(p, [2.0, 3.0])
    assert not np.shares_memory(old_p, p)


def test_an_output_that_hands_out_an_input_reads_it_before_that_input_is_written():
    """A loop body's shape: the old carry goes out as a residual, the new one into its array."""
    c, s = np.arange(1.0, 6.0), np.zeros(5)
    kernel, source = compiled_with_writes(lambda c, s: (np.sin(c), c), (c, s), {0: 0, 1: 1})
    assert kernel([c, s]) == []
    np.testing.assert_array_equal(s, np.arange(1.0, 6.0))
    np.testing.assert_allclose(c, np.sin(np.arange(1.0, 6.0)), rtol=1e-15)


def test_outputs_that_swap_two_inputs_go_through_an_array_of_their_own():
    x, y = np.arange(4.0), -np.arange(4.0) - 1.0
    kernel, source = compiled_with_writes(lambda x, y: (y, x.T), (x, y), {0: 0, 1: 1})
    assert "_staged = np.empty" in source
    assert kernel([x, y]) == []
    np.testing.assert_array_equal(x, -np.arange(4.0) - 1.0)
    np.testing.assert_array_equal(y, np.arange(4.0))


def test_an_input_read_at_the_end_through_a_view_is_not_written_in_place():
    W, g = np.arange(9.0).reshape(3, 3), np.ones((3, 3))
    expected_T = W.T.copy()
    kernel, source = compiled_with_writes(lambda W, g, out: (W - 0.5 * g, W.T),
                                          (W, g, np.zeros((3, 3))), {0: 0, 1: 2})
    out = np.zeros((3, 3))
    kernel([W, g, out])
    np.testing.assert_array_equal(out, expected_T)
    np.testing.assert_array_equal(W, np.arange(9.0).reshape(3, 3) - 0.5)


def test_a_matrix_product_goes_from_blas_straight_into_an_input_nothing_reads():
    """As the distributed step's gradients go into the flat buffer: no array, no copy."""
    rng = np.random.default_rng(0)
    A, B, out = rng.normal(size=(20, 30)), rng.normal(size=(30, 40)), np.zeros((20, 40))
    kernel, source = compiled_with_writes(lambda A, B, out: A @ B, (A, B, out), {0: 2},
                                          wrt=(0, 1, 2))  # all of static shape
    assert "matmul(A, B, out)" in source and "np.empty" not in source
    assert kernel([A, B, out]) == []
    np.testing.assert_allclose(out, A @ B, rtol=1e-13)


def test_a_product_stored_into_its_own_operand_is_copied_at_the_end():
    """BLAS may not read and write one array: A = A @ B gets an array of its own first."""
    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(30, 30)), rng.normal(size=(30, 30))
    expected = A @ B
    kernel, source = compiled_with_writes(lambda A, B: A @ B, (A, B), {0: 0}, wrt=(0, 1))
    assert "matmul(A, B, A)" not in source and "np.empty((30, 30)" in source
    kernel([A, B])
    np.testing.assert_allclose(A, expected, rtol=1e-13)


def accumulate(G, h, g):
    return G + h.T @ g


def test_a_product_added_into_its_accumulator_is_one_blas_call_in_place():
    G, h, g = np.arange(1024.0).reshape(32, 32), RNG.normal(size=(16, 32)), \
        RNG.normal(size=(16, 32))
    expected = G + h.T @ g
    kernel, source = compiled_with_writes(accumulate, (G, h, g), {0: 0})
    assert "blas.matmul_add(h.T, g, G)" in source and "np.empty" not in source
    assert kernel([G, h, g]) == []
    np.testing.assert_allclose(G, expected, rtol=1e-13)


def test_an_accumulator_that_is_also_returned_is_added_into_a_copy():
    G, h, g = np.ones((32, 32)), RNG.normal(size=(16, 32)), RNG.normal(size=(16, 32))
    expected = G + h.T @ g
    kernel, source = compiled_with_writes(lambda G, h, g: (accumulate(G, h, g), G), (G, h, g),
                                          {0: 0})
    assert "blas.matmul_add(h.T, g, " in source and "blas.matmul_add(h.T, g, G)" not in source
    (old,) = kernel([G, h, g])
    np.testing.assert_array_equal(old, np.ones((32, 32)))
    np.testing.assert_allclose(G, expected, rtol=1e-13)
