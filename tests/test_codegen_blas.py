"""Matrix products in kernels go through one BLAS gemm intrinsic: every operand layout the
generator passes (C-contiguous, transposed, 1-D, strided slices), both float dtypes, and empty
extents; batched products and convolutions of shifted slices in the generated code; kernels
without LAPACK."""

from __future__ import annotations

import os
import subprocess
import sys

import numba
import numpy as np
import pytest
from gradcheck import central_differences

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


# --- batched products on BLAS: the generated code -------------------------------------------------
def attention(W, x):
    n, t, c = x.shape
    h = np.tanh(x @ W)  # (N, T, C) @ (C, C): one gemm over N*T rows
    q = h.reshape(n, t, 2, c // 2).transpose(0, 2, 1, 3)  # (N, 2, T, C/2): a transposed view
    scores = q @ q.transpose(0, 1, 3, 2)  # a gemm per (n, head), read in place
    return np.sum(np.tanh(scores @ q))


@pytest.fixture(scope="module")
def attention_kernel():
    f = compile_grad(attention)
    W, x = RNG.normal(size=(64, 64)) * 0.1, RNG.normal(size=(3, 32, 64))
    value, grad = f.value_and_grad(W, x)
    reference = compile_grad(attention, backend="interpreter").value_and_grad(W, x)
    return f.source("value_and_grad"), (value, grad), reference, (W, x)


def test_batched_products_match_the_interpreter(attention_kernel):
    _, (value, grad), (ref_value, ref_grad), _ = attention_kernel
    assert np.isclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)


def test_a_matrix_times_a_batch_is_one_gemm_over_its_rows(attention_kernel):
    source = attention_kernel[0]
    assert "blas.matmul(x.reshape((N * 32, 64)), W, " in source
    # W's gradient sums over the batch inside one gemm, not a gemm per batch element
    assert "blas.matmul(x.reshape((N * 32, 64)).T, " in source


def test_batched_products_read_transposed_views_in_place(attention_kernel):
    source = attention_kernel[0]
    lines = [line.strip() for line in source.splitlines() if "blas.matmul(" in line]
    strided = [line for line in lines if ", :, i1]" in line]
    assert strided and any("].T" in line for line in strided), lines
    assert "for i1 in range(2):" in source  # a loop of gemms over the heads


def test_a_new_batch_size_reuses_the_batched_kernel(attention_kernel):
    W = attention_kernel[3][0]
    f = compile_grad(attention)
    for n in (1, 5):
        x = RNG.normal(size=(n, 32, 64))
        np.testing.assert_allclose(f.grad(W, x), compile_grad(
            attention, backend="interpreter").grad(W, x), rtol=1e-10, atol=1e-12)


# --- the gemm intrinsic on strided slices ---------------------------------------------------------
@numba.njit
def _per_head(q, k, out):
    for i in range(q.shape[0]):
        for j in range(q.shape[2]):
            blas.matmul(q[i, :, j, :], k[i, :, j, :].T, out[i, j])


@numba.njit
def _product(a, b, out):
    blas.matmul(a, b, out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_takes_strided_and_transposed_slices(dtype):
    q, k = (RNG.normal(size=(2, 5, 3, 4)).astype(dtype) for _ in range(2))
    out = np.full((2, 3, 5, 5), np.nan, dtype)
    _per_head(q, k, out)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, np.einsum("itjd,isjd->ijts", q, k), rtol=tol, atol=tol)
    a, b = RNG.normal(size=(6, 4)).astype(dtype), RNG.normal(size=(6, 3)).astype(dtype)
    column = np.empty(3, dtype)
    _product(a[::2, 1], b[::2], column)  # a strided vector as a row
    np.testing.assert_allclose(column, a[::2, 1] @ b[::2], rtol=tol, atol=tol)


def test_gemm_refuses_a_slice_without_a_unit_stride():
    a = RNG.normal(size=(4, 6))[::2, ::2]
    with pytest.raises(ValueError, match="no unit stride"):
        _product(a, RNG.normal(size=(3, 2)), np.empty((2, 2)))


# --- a convolution of shifted slices: loops that vectorize ----------------------------------------
def convolution(W, b, images):
    n, _, height, width = images.shape
    out = b[:, None, None]
    for di in range(3):
        for dj in range(3):
            patch = images[:, :, di:di + height - 2, dj:dj + width - 2]
            out = out + np.einsum("nchw,oc->nohw", patch, W[:, :, di, dj])
    return np.sum(np.tanh(out) ** 2)


def test_a_convolution_is_one_nest_whose_short_rows_vectorize():
    W, b = RNG.normal(size=(4, 3, 3, 3)) * 0.3, RNG.normal(size=4)
    images = RNG.normal(size=(2, 3, 16, 16))
    f = compile_grad(convolution, wrt=(0, 1))
    value, grads = f.value_and_grad(W, b, images)
    ref_value, ref_grads = compile_grad(convolution, wrt=(0, 1), backend="interpreter"
                                        ).value_and_grad(W, b, images)
    assert np.isclose(value, ref_value, rtol=1e-12)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12)
    source = f.source("value_and_grad")
    # the taps are 3-term loops inside the nest (no copies of the slices), over rows of 14
    # columns whose bound LLVM does not unroll, so that it vectorizes them
    assert "for i3 in range(vm.extent(14)):" in source and source.count("for k0 in range(3):") >= 9
    # b's gradient sums each (n, o) plane in a scalar before it touches its accumulator array
    assert "_part += " in source


def test_the_gradients_of_adjacent_slices_join_into_one_concatenation():
    """q, k, v = qkv[:, :C], qkv[:, C:2C], qkv[:, 2C:]: the gradient of qkv is one
    concatenation, not a zero-filled array per slice and their sum; and x ** 3 is x * x * x."""
    def split(x):
        q, k, v = x[:, :4], x[:, 4:8], x[:, 8:]
        return np.sum(np.tanh(q) * k ** 3 + v * 2.0)

    f = compile_grad(split, backend="interpreter")
    x = RNG.normal(size=(3, 12))
    np.testing.assert_allclose(f.grad(x), central_differences(split, [x], 0, 1e-6), rtol=1e-7,
                               atol=1e-8)
    ir = f.ir("value_and_grad")
    assert "concatenate(q_grad, k_grad, v_grad, axis=1)" in ir
    assert "pad_slice" not in ir and "pow" not in ir


NO_LAPACK = """
import ctypes
import sys
sys.modules["scipy"] = None
library = ctypes.CDLL


class WithoutLapack:  # NumPy's OpenBLAS as if it exported BLAS only
    def __init__(self, *args, **kwargs):
        self.found = library(*args, **kwargs)

    def __getattr__(self, name):
        if any(routine in name for routine in ("getrf", "getrs", "potrf", "gesdd")):
            raise AttributeError(name)
        return getattr(self.found, name)


ctypes.CDLL = WithoutLapack
import numpy as np
from compiler import compile_grad
from compiler.codegen import lapack
from compiler.errors import UnsupportedError
print(lapack.ABI, compile_grad(lambda a: np.sum(a @ a))(np.eye(2)))
print(compile_grad(lambda a: np.sum(np.linalg.inv(a)), backend="interpreter")(2 * np.eye(2)))
try:
    compile_grad(lambda a: np.sum(np.linalg.inv(a)))(2 * np.eye(2))
except UnsupportedError as error:
    print(str(error).splitlines()[0])
"""


def test_without_lapack_only_the_kernels_that_need_it_refuse(tmp_path):
    done = subprocess.run([sys.executable, "-c", NO_LAPACK], capture_output=True, text=True,
                          env={**os.environ, "GRADFUSE_CACHE_DIR": str(tmp_path)}, timeout=300)
    assert done.returncode == 0, done.stderr
    products, interpreted, refused = done.stdout.splitlines()
    assert products == "none 2.0" and interpreted == "1.0"
    assert "inv needs LAPACK in a compiled kernel, and gradfuse found no LAPACK" in refused
