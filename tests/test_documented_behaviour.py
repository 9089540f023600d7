"""What README.md, docs/*.md and examples/ say a user can do, where no other test checked it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gradcheck import central_differences

from compiler import compile_grad

ROOT = Path(__file__).resolve().parent.parent


def test_gradfuse_output_piped_into_a_reader_that_stops_early_is_no_traceback():
    # `gradfuse ir examples/mlp.gf | head -5`: head closes the pipe, the command's next
    # write fails; it printed a BrokenPipeError traceback from compiler/cli's main
    proc = subprocess.Popen([sys.executable, "-m", "compiler.cli", "ir",
                             str(ROOT / "examples" / "mlp.gf")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()  # before the command writes anything: it starts in about a second
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
