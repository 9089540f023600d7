"""What README.md, docs/*.md and examples/ say a user can do, where no other test checked it."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from gradcheck import central_differences

from compiler import compile_grad, dsl
from runtime import Parameter

ROOT = Path(__file__).resolve().parent.parent


def test_gradfuse_output_piped_into_a_reader_that_stops_early_is_no_traceback():
    # `gradfuse ir examples/mlp.gf | head -5`: head closes the pipe, the command's next
    # write fails; it printed a BrokenPipeError traceback from compiler/cli's main
    proc = subprocess.Popen([sys.executable, "-m", "compiler.cli", "ir",
                             str(ROOT / "examples" / "mlp.gf")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()  # before the command writes anything: it starts in about a second
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert err == ""


# --- README, symbolic dimensions: `np.zeros_like(X, shape=(X.shape[0], H))` keeps the batch
# symbolic, and a copy may be assigned into (`y[1:3] = v`, `y[0] += 1`) ------------------------
def _filled_by_assignments(W, X):
    h = np.zeros_like(X, shape=(X.shape[0], 2))
    h[:] = X @ W  # was a TraceError: 'shape entries must be ints, got Sym'
    h[:, 1] *= 3.0  # was refused: 'an in-place operator on a view of a copy ...'
    row = h[:, 0]
    row += 1.0  # a view of the copy: the copy changes where it shows, as in NumPy
    h[..., 1] /= 2.0
    return np.sum(np.tanh(h) ** 2)


@pytest.fixture(scope="module")
def filled_numba():
    return compile_grad(_filled_by_assignments)  # the one numba compilation of this file


@pytest.mark.parametrize("backend", ["interpreter", "numba"])
def test_a_copy_shaped_by_the_batch_is_assigned_into_and_traced_once(backend, filled_numba):
    f = filled_numba if backend == "numba" else \
        compile_grad(_filled_by_assignments, backend="interpreter")
    rng = np.random.default_rng(0)
    W = rng.normal(size=(3, 2))
    for n in (5, 9, 4):
        X = rng.normal(size=(n, 3))
        value, grad = f.value_and_grad(W, X)
        np.testing.assert_allclose(value, _filled_by_assignments(W, X), rtol=1e-12)
        np.testing.assert_allclose(grad, central_differences(_filled_by_assignments, (W, X), 0),
                                   rtol=1e-6, atol=1e-8)
    assert len(f._specs) == 1  # one trace serves every batch size


def test_an_in_place_operator_on_an_index_of_a_large_copy():
    # `y[0] += 1` on a copy past the size whose elements are followed (2**16) was refused
    def loss(w):
        y = np.zeros_like(w, shape=(300, 300))
        y += w[0]
        y[0] += 2.0 * w[1]
        y[:, 5] *= w[2]
        return np.sum(y ** 2)

    w = np.array([0.3, -0.7, 1.3])
    value, grad = compile_grad(loss, backend="interpreter").value_and_grad(w)
    np.testing.assert_allclose(value, loss(w), rtol=1e-12)
    np.testing.assert_allclose(grad, central_differences(loss, (w,), 0), rtol=1e-6)


# --- docs/dsl.md -----------------------------------------------------------------------------
def test_a_python_scalar_fits_a_scalar_annotation_of_its_kind_when_compiled_too():
    # compiled, a Python float argument is traced as a weak float64 scalar, which the
    # annotation check took for a float64 array: 'holds float64 values, but ... f32[]'
    source = ("def loss(x: f32[3], s: f32[], k: i64[], t: f64[]):\n"
              "    return sum(x * s) * t + k\n")
    f = compile_grad(source, backend="interpreter")
    x = np.array([1.0, 2.0, 4.0], np.float32)
    value, grad = f.value_and_grad(x, 0.5, 3, 2.0)
    assert value == np.float32(10.0) and value.dtype == np.float32  # weak, as in NumPy
    np.testing.assert_array_equal(grad, np.full(3, 1.0, np.float32))
    for args, message in [((x, 0.5, 3.5, 2.0), "argument 'k' of loss() is a Python float"),
                          ((x, True, 3, 2.0), "argument 's' of loss() is a Python bool"),
                          ((x, np.float64(0.5), 3, 2.0), "'s' of loss() holds float64 values")]:
        with pytest.raises(dsl.DslError, match=re.escape(message)):
            f(*args)


def test_a_loop_of_constants_only():
    # a counted loop whose carry starts as a number and reads no argument (`acc = acc + i`)
    # failed in constant folding with a bare AttributeError: 'TupleType' has no 'shape'
    source = ("def loss(x: f64[3]):\n"
              "    acc = 0.0\n"
              "    for i in range(4):\n"
              "        acc = acc + i * 0.5\n"
              "    return sum(x * x) + acc\n")
    value, grad = compile_grad(source, backend="interpreter").value_and_grad(np.ones(3))
    assert value == 3.0 + 3.0
    np.testing.assert_array_equal(grad, [2.0, 2.0, 2.0])


# --- README, the PyTorch table: Tensor arithmetic outside compiled functions --------------------
def test_a_python_float_beyond_float32_meets_a_float32_tensor_as_in_pytorch():
    # `t + 1e300` on a float32 Tensor is inf in PyTorch, with no warning; the runtime warned
    # 'overflow encountered in cast' (an error under -W error)
    torch = pytest.importorskip("torch")
    double = compile_grad(lambda p: p * 2.0, backend="interpreter")
    p = Parameter(np.array([1.0, -2.0], np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = [double(p) + 1e300, double(p) * 1e300, 1e300 - double(p)]
    t = torch.tensor([2.0, -4.0])
    theirs = [t + 1e300, t * 1e300, 1e300 - t]
    for a, b in zip(ours, theirs):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a.data, b.numpy())
