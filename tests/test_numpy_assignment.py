"""Assignment into copies as people write it: regions, masks, traced indices, repeated
indices, np.add.at, in-place operators, views read after a write, and scan bodies; with the
errors for assignments that cannot be traced (into arguments, chained through views).

Values are checked against NumPy, gradients against central differences (float64) and
against PyTorch, whose in-place assignment into a clone (index_put, with accumulation for
np.add.at) shares NumPy's semantics. The compiled functions here are module-level and built
once.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from gradcheck import check_interpreted_gradient as fd_check
from source_lines import marked_line

from compiler import TraceError, UnsupportedError, compile_grad, scan

torch = pytest.importorskip("torch")

HERE = os.path.basename(__file__)
RNG = np.random.default_rng(15)


def line_of(marker: str) -> int:
    return marked_line(__file__, marker)


def interpreted(fn, **kw):
    return compile_grad(fn, backend="interpreter", **kw)

# --- assignment into copies ---------------------------------------------------------------------
def assignments(x, v, idx):
    y = x.copy()
    y[1:3] = v[0]  # a region: y's old values there get no gradient
    y[0] += 1.0
    y[:, 0] = y[:, 1] * 2.0  # later reads see the updates
    z = np.zeros_like(x)
    z[idx, 1] = v[1, :3]  # traced indices
    z[x > 0.5] = -1.0  # a traced mask and a scalar
    z *= y
    return np.sum(y * y) + np.sum(z * v[2, 0])


def torch_assignments(x, v, idx):
    y = x.clone()
    y[1:3] = v[0]
    y[0] += 1.0
    y[:, 0] = y[:, 1] * 2.0
    z = torch.zeros_like(x)
    z[idx, 1] = v[1, :3]
    z[x > 0.5] = -1.0
    z *= y
    return (y * y).sum() + (z * v[2, 0]).sum()


COMPILED_ASSIGNMENTS = compile_grad(assignments, wrt=(0, 1))


def test_assignment_into_copies_matches_pytorch_compiled():
    x, v = RNG.normal(size=(4, 3)), RNG.normal(size=(3, 3))
    idx = np.array([3, 0, 2])  # no repeats: PyTorch leaves the winner of a repeat undefined
    value, (gx, gv) = COMPILED_ASSIGNMENTS.value_and_grad(x, v, idx)
    xt = torch.tensor(x, requires_grad=True)
    vt = torch.tensor(v, requires_grad=True)
    expected = torch_assignments(xt, vt, torch.tensor(idx))
    expected.backward()
    np.testing.assert_allclose(value, expected.item(), rtol=1e-12)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gv, vt.grad.numpy(), rtol=1e-12, atol=1e-14)
    fd_check(assignments, [x, v, idx])
    fd_check(assignments, [x, v, idx], wrt=1)


def test_filling_rows_in_a_loop_reads_back_rows_not_copies():
    # y[t] reads what y[t] = ... wrote (compiler/passes.py: a slice through where/pad_slice),
    # so the adjoint of each step is row-sized: no chain of whole-array copies in backward.
    def fill(x, a):
        y = np.zeros_like(x)
        y[0] = x[0]
        for t in range(1, x.shape[0]):
            y[t] = np.tanh(y[t - 1] * a + x[t])
        return np.sum(y * y)

    x, a = RNG.normal(size=(8, 3)), RNG.normal(size=3)
    f = interpreted(fill, wrt=(0, 1))
    value, (gx, ga) = f.value_and_grad(x, a)
    rows = [x[0]]
    for t in range(1, 8):
        rows.append(np.tanh(rows[-1] * a + x[t]))
    np.testing.assert_allclose(value, np.sum(np.square(rows)), rtol=1e-12)
    fd_check(fill, [x, a])
    fd_check(fill, [x, a], wrt=1)
    graph = f.specialize(x, a).graph_of("value_and_grad")
    assert not [n for n in graph.nodes() if n.op == "where" and n.grad_of is not None]
    assert len([n for n in graph.nodes() if n.op == "where"]) == 8  # y itself, row by row


def test_repeated_indices_keep_the_last_write_like_numpy():
    def f(x, v, idx):
        y = x.copy()
        y[idx] = v  # idx repeats: NumPy keeps the value written last
        y[np.array([1, 1, 0]), np.array([2, 2, 2])] = v[:3, 0]
        return y

    x, v = RNG.normal(size=(4, 3)), RNG.normal(size=(5, 3))
    idx = np.array([2, 0, 2, 3, 0])
    expected = x.copy()
    expected[idx] = v
    expected[np.array([1, 1, 0]), np.array([2, 2, 2])] = v[:3, 0]
    np.testing.assert_array_equal(interpreted(f)(x, v, idx), expected)
    np.testing.assert_array_equal(compile_grad(f)(x, v, idx), expected)

    def g(x, v, idx):
        return np.sum(f(x, v, idx) ** 2)

    gv = fd_check(g, [x, v, idx], wrt=1)
    # v[0] and v[1] are overwritten by the later writes to rows 2 and 0 (v[1, 0] is then
    # written at (1, 2) last); v[4, 2] is overwritten by v[2, 0] at (0, 2)
    assert np.all(gv[0] == 0.0) and np.all(gv[1, 1:] == 0.0) and gv[4, 2] == 0.0
    assert gv[1, 0] != 0.0 and gv[2, 0] != 0.0
    fd_check(g, [x, v, idx])


def test_assignment_along_an_axis_keeps_a_batch_of_indices_symbolic():
    def f(x, v, idx):
        y = x.copy()
        y[:, idx] = v  # v (3, 1) broadcast to (3, len(idx)); idx repeats
        y[0] *= 2.0
        return y

    compiled = compile_grad(f)
    x, v = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 1))
    for idx in (np.array([1, 3, 1, -4, 0]), np.array([2, 2])):
        expected = x.copy()
        expected[:, idx] = v
        expected[0] *= 2.0
        np.testing.assert_array_equal(compiled(x, v, idx), expected)
        np.testing.assert_array_equal(interpreted(f)(x, v, idx), expected)
    spec = compiled.specialize(x, v, np.array([1, 2, 3]))
    assert not all(isinstance(d, int) for d in spec.graph.inputs[2].shape)  # idx: (N,)
    fd_check(lambda x, v, idx: np.sum(np.sin(f(x, v, idx))), [x, v, np.array([1, 3, 1])],
             wrt=1)


def add_at(a, v, idx):
    acc = np.zeros_like(a)
    np.add.at(acc, idx, v)  # idx repeats: the values add up
    np.add.at(acc, (np.array([0, 0]), slice(None)), 1.0)
    np.subtract.at(acc, (idx, 1), v[:, 0])
    return np.sum(np.sin(acc) * a)


COMPILED_ADD_AT = compile_grad(add_at, wrt=(0, 1))


def test_add_at_matches_pytorch_compiled():
    a, v = RNG.normal(size=(4, 3)), RNG.normal(size=(5, 3))
    idx = np.array([1, 3, 1, 1, 0])
    value, (ga, gv) = COMPILED_ADD_AT.value_and_grad(a, v, idx)
    at, vt = torch.tensor(a, requires_grad=True), torch.tensor(v, requires_grad=True)
    acc = torch.zeros_like(at)
    acc = acc.index_put((torch.tensor(idx),), vt, accumulate=True)
    acc = acc.index_put((torch.tensor([0, 0]),), torch.ones(3, dtype=at.dtype), accumulate=True)
    acc = acc.index_put((torch.tensor(idx), torch.tensor(1)), -vt[:, 0], accumulate=True)
    expected = (torch.sin(acc) * at).sum()
    expected.backward()
    np.testing.assert_allclose(value, expected.item(), rtol=1e-12)
    np.testing.assert_allclose(ga, at.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gv, vt.grad.numpy(), rtol=1e-12, atol=1e-14)
    reference = np.zeros_like(a)
    np.add.at(reference, idx, v)
    reference[0] += 2.0
    np.subtract.at(reference, (idx, 1), v[:, 0])
    np.testing.assert_allclose(value, np.sum(np.sin(reference) * a), rtol=1e-12)


def test_add_at_on_a_plain_traced_array_says_to_copy_first():
    def f(x, idx):
        np.add.at(x, idx, 1.0)  # ADD_AT
        return np.sum(x)

    with pytest.raises(UnsupportedError, match=r"changes `a` in place.*a = a\.copy\(\)") as err:
        interpreted(f)(np.ones(3), np.array([0, 0]))
    assert f"{HERE}:{line_of('ADD_AT')}" in str(err.value)

    def g(x, idx):
        counts = np.zeros(3)
        np.add.at(counts, idx, x)
        return np.sum(counts)

    with pytest.raises(UnsupportedError, match=r"a NumPy array.*np\.zeros_like"):
        interpreted(g)(np.ones(2), np.array([0, 0]))


def test_in_place_operators_and_out_on_copies():
    def f(x, w):
        y = np.zeros_like(x, shape=(2, 3))
        y += x[:2]
        y *= w
        np.multiply(y, 2.0, out=y)
        y[1] -= 1.0
        e = np.empty_like(x)
        e[...] = 3.0
        return np.sum(y * y) + np.sum(e * x)

    x, w = RNG.normal(size=(3, 3)), RNG.normal(size=3)
    y = 2 * x[:2] * w
    y[1] -= 1.0
    np.testing.assert_allclose(interpreted(f)(x, w), np.sum(y * y) + 3 * np.sum(x), rtol=1e-12)
    fd_check(f, [x, w])
    fd_check(f, [x, w], wrt=1)


def test_the_caller_arrays_are_not_modified():
    x, v, idx = RNG.normal(size=(4, 3)), RNG.normal(size=(5, 3)), np.array([1, 3, 1, 1, 0])
    before = [x.copy(), v.copy(), idx.copy()]
    COMPILED_ASSIGNMENTS.value_and_grad(x, v[:3], idx[:3])  # kernels of the tests above
    COMPILED_ADD_AT.value_and_grad(x, v, idx)
    for array, copy in zip((x, v, idx), before):
        np.testing.assert_array_equal(array, copy)


def test_assigning_into_a_plain_traced_array_says_to_copy_first():
    def f(x):
        h = np.tanh(x)
        h[0] = 1.0  # PLAIN
        return np.sum(h)

    with pytest.raises(UnsupportedError, match=r"item assignment.*x = x\.copy\(\)") as err:
        interpreted(f)(np.ones(3))
    assert f"{HERE}:{line_of('PLAIN')}" in str(err.value)


def test_chained_assignment_through_a_view_says_to_index_once():
    def f(x):
        y = x.copy()
        y[0][1] = 5.0  # CHAINED
        return np.sum(y)

    with pytest.raises(UnsupportedError, match=r"y\[i, j\] = v. rather than .y\[i\]\[j\] = v") \
            as err:
        interpreted(f)(np.ones((2, 3)))
    assert f"{HERE}:{line_of('CHAINED')}" in str(err.value)


def test_a_view_read_after_an_assignment_that_changed_it_is_an_error():
    def stale(x):
        y = x.copy()
        row = y[1]  # VIEW
        y[1, 2] = 0.0  # WRITE
        return np.sum(row)  # STALE

    with pytest.raises(TraceError, match="a NumPy view would show the new values") as err:
        interpreted(stale)(np.ones((3, 3)))
    message = str(err.value)
    assert f"{HERE}:{line_of('STALE')}" in message
    assert f"{HERE}:{line_of('VIEW')}" in message and f"{HERE}:{line_of('WRITE')}" in message

    def transposed(x):
        y = x.copy()
        t = y.T
        y += 1.0
        return np.sum(t)

    with pytest.raises(TraceError, match="a NumPy view would show the new values"):
        interpreted(transposed)(np.ones((3, 3)))

    def untouched(x):  # the assignment changes none of the view's elements: NumPy agrees
        y = x.copy()
        row, col = y[1], y[:, 0]
        y[2, 1:] = 5.0
        y[0, 2] = 7.0
        return np.sum(row * row) + np.sum(col)

    x = RNG.normal(size=(3, 3))
    np.testing.assert_allclose(interpreted(untouched)(x), untouched(x), rtol=1e-12)


def test_a_copy_made_inside_a_scan_body_is_assigned_there():
    def f(x):
        def step(c, row):
            y = c.copy()  # c: the carry
            y[0] = row[1]
            y[1:] += y[0] * 0.5
            return y, np.sum(y)

        last, sums = scan(step, x[0] * 1.0, x)
        return np.sum(last * last) + np.sum(sums)

    def reference(x):
        c, total = x[0] * 1.0, 0.0
        for row in x:
            c = c.copy()
            c[0] = row[1]
            c[1:] += c[0] * 0.5
            total += np.sum(c)
        return np.sum(c * c) + total

    x = RNG.normal(size=(4, 3))
    np.testing.assert_allclose(interpreted(f)(x), reference(x), rtol=1e-12)
    fd_check(f, [x])


def test_a_copy_made_outside_a_scan_body_is_not_assigned_inside():
    def f(x):
        y = x.copy()

        def step(c, t):
            y[0] = c
            return c * 2.0, c

        scan(step, x[0], x)
        return np.sum(y)

    with pytest.raises(TraceError, match="make the copy inside the body"):
        interpreted(f)(np.ones((3, 2)))
