"""Matrix products in kernels go through one BLAS gemm intrinsic: every operand layout the
generator passes (C-contiguous, transposed, 1-D), both float dtypes, and empty extents."""

from __future__ import annotations

import os
import subprocess
import sys

import numba
import numpy as np
import pytest

from compiler import compile_grad
from compiler.codegen import blas


@numba.njit
def product(a, b, out):
    blas.matmul(a, b, out)


@numba.njit
def product_of_transposes(a, b, out):
    blas.matmul(a.T, b.T, out)


@numba.njit
def product_added(a, b, out):
    blas.matmul_add(a.T, b, out)


RNG = np.random.default_rng(0)


def assert_product_close(out, a, b):
    """out equals a @ b up to the rounding a sum of k products may carry.

    Each of out and NumPy's a @ b is within gamma_k * (|a| @ |b|) of the exact product
    (gamma_k ~ k * eps / 2, for k-term dot products in any order), so they differ by at most
    k * eps * (|a| @ |b|) entrywise. A tolerance relative to |a @ b| alone fails where the sum
    cancels, however correct the product.
    """
    k = a.shape[-1]
    bound = k * np.finfo(out.dtype).eps * (np.abs(a) @ np.abs(b))
    error = np.abs(out - a @ b)
    assert np.all(error <= bound), f"|error| {error.max():.3g} exceeds the bound {bound.max():.3g}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shapes", [((7, 5), (5, 3)), ((7, 5), (5,)), ((5,), (5, 3)),
                                    ((1, 1), (1, 1))], ids=["mat-mat", "mat-vec", "vec-mat", "1x1"])
def test_products_match_numpy(dtype, shapes):
    a, b = (RNG.normal(size=s).astype(dtype) for s in shapes)
    out = np.full((a @ b).shape, np.nan, dtype)
    product(a, b, out)
    assert_product_close(out, a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transposed_operands_are_read_in_place(dtype):
    a, b = RNG.normal(size=(5, 7)).astype(dtype), RNG.normal(size=(3, 5)).astype(dtype)
    out = np.empty((7, 3), dtype)
    product_of_transposes(a, b, out)
    assert_product_close(out, a.T, b.T)


def test_an_empty_contraction_gives_zeros_and_empty_results_are_fine():
    out = np.full((4, 3), 5.0)
    product(np.ones((4, 0)), np.ones((0, 3)), out)
    np.testing.assert_array_equal(out, np.zeros((4, 3)))
    product(np.ones((0, 5)), np.ones((5, 3)), np.empty((0, 3)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_product_added_into_its_target(dtype):
    a, b = RNG.normal(size=(5, 7)).astype(dtype), RNG.normal(size=(5, 3)).astype(dtype)
    start = RNG.normal(size=(7, 3)).astype(dtype)
    out = start.copy()
    product_added(a, b, out)
    k = a.shape[0]
    bound = (k + 1) * np.finfo(dtype).eps * (np.abs(a.T) @ np.abs(b) + np.abs(start))
    assert np.all(np.abs(out - (start + a.T @ b)) <= bound)
    product_added(np.ones((0, 7), dtype), np.ones((0, 3), dtype), out)  # adds nothing
    assert np.all(np.abs(out - (start + a.T @ b)) <= bound)


def test_a_gradient_over_an_empty_batch_is_zero():
    f = compile_grad(lambda W, X: np.sum(np.tanh(X @ W)))
    W = RNG.normal(size=(3, 2))
    f.grad(W, RNG.normal(size=(6, 3)))
    np.testing.assert_array_equal(f.grad(W, np.ones((0, 3))), np.zeros((3, 2)))
    assert "blas.matmul(X.T" in f.source("value_and_grad")


NO_SCIPY = """
import sys
sys.modules["scipy"] = None  # as on a machine with only gradfuse's own dependencies
import numpy as np
from compiler import compile_grad
from compiler.codegen import blas
f = compile_grad(lambda W, X: np.sum(X @ W))
print(blas.ABI, f.grad(np.ones((3, 2)), np.arange(12.0).reshape(4, 3)).tolist())
"""


def test_matrix_products_need_no_scipy(tmp_path):
    done = subprocess.run([sys.executable, "-c", NO_SCIPY], capture_output=True, text=True,
                          env={**os.environ, "GRADFUSE_CACHE_DIR": str(tmp_path)}, timeout=300)
    assert done.returncode == 0, done.stderr
    abi, grad = done.stdout.split(maxsplit=1)
    assert abi.startswith("numpy-openblas")
    assert grad.strip() == str([[18.0, 18.0], [22.0, 22.0], [26.0, 26.0]])
