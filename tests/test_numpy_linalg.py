"""Linear algebra as NumPy users write it: einsum, norms, solve/inv/det/slogdet/cholesky. Values
against NumPy, gradients against PyTorch and JAX (where installed) through numba, and the errors
users get (the generated code of batched products: test_codegen_blas.py).

The idioms compared with PyTorch and JAX are fused into one function per library, so the whole
file compiles a handful of numba kernels (module-scoped)."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import central_differences

from compiler import compile_grad
from compiler.errors import TraceError, UnsupportedError

RNG = np.random.default_rng(14)


# --- einsum reads subscripts as NumPy does -------------------------------------------------------
EINSUMS = [
    ("ij,jk->ik", (3, 4), (4, 5)), ("ij,jk", (3, 4), (4, 5)), ("ii->i", (4, 4)), ("ii", (4, 4)),
    ("ij->", (3, 4)), ("ji", (3, 4)), ("i,i", (4,), (4,)), ("i,j->ij", (3,), (4,)),
    ("bij,bjk->bik", (2, 3, 4), (2, 4, 5)), ("...ij,...jk->...ik", (2, 3, 4), (4, 5)),
    ("iij->ij", (3, 3, 2)), ("ij,ij->ij", (3, 1), (3, 4)), ("ijk,kj->i", (2, 3, 4), (4, 3)),
    ("bhtd,bhsd->bhts", (2, 3, 4, 5), (2, 3, 6, 5)), ("nchw,oc->nohw", (2, 3, 4, 4), (5, 3)),
    ("i,ij,jk->k", (3,), (3, 4), (4, 2)), ("Ba,ab", (2, 3), (3, 2)), ("...,...", (2, 3), (3,)),
    ("ijk->kji", (2, 3, 4)), ("iji->j", (3, 2, 3)), ("a b c , c d -> a d b", (2, 3, 4), (4, 5)),
    ("abc,cd,de->abe", (2, 3, 4), (4, 5), (5, 2)), ("i...,i...->...", (2, 3), (2, 1)),
]


@pytest.mark.parametrize("subscripts, shapes", [(e[0], e[1:]) for e in EINSUMS],
                         ids=[e[0] for e in EINSUMS])
def test_einsum_values_and_gradients(subscripts, shapes):
    xs = [RNG.normal(size=s) for s in shapes]
    expected = np.einsum(subscripts, *xs)
    f = compile_grad(lambda *a: np.einsum(subscripts, *a), backend="interpreter")
    np.testing.assert_allclose(f(*xs), expected, rtol=1e-12, atol=1e-12)
    weights = RNG.normal(size=np.shape(expected))

    def objective(*a):
        return np.sum(np.einsum(subscripts, *a) * weights)

    wrt = tuple(range(len(xs)))
    grads = compile_grad(objective, wrt=wrt, backend="interpreter").grad(*xs)
    for i, g in zip(wrt, grads):
        np.testing.assert_allclose(g, central_differences(objective, xs, i, 1e-6), rtol=1e-6,
                                   atol=1e-8)


def test_einsum_interleaved_form_and_dtype():
    x, y = RNG.normal(size=(2, 3)), RNG.normal(size=(3, 4))
    f = compile_grad(lambda x, y: np.einsum(x, [0, 1], y, [1, Ellipsis], [0, Ellipsis]),
                     backend="interpreter")
    np.testing.assert_allclose(f(x, y), x @ y)
    g = compile_grad(lambda x: np.einsum("ij->i", x, dtype=np.float32), backend="interpreter")
    assert g(x).dtype == np.float32


@pytest.mark.parametrize("subscripts, shapes, message", [
    ("ij,jk", [(2, 3), (4, 2)], "label 'j' has lengths 3 and 4"),
    ("...i,...i", [(2, 3), (4, 3)], "the '...' dimensions have lengths 2 and 4"),
    ("ij->k", [(2, 3)], "output subscript 'k' appears in no operand"),
    ("ijk", [(2, 3)], "operand 0 has 2 dimensions but subscripts 'ijk'"),
    ("...i->i", [(2, 3)], "no '...'"),
    ("i,j", [(2,)], "2 subscript terms for 1 operands"),
    ("i2", [(2, 3)], "invalid subscript term"),
])
def test_einsum_errors_name_the_user_line(subscripts, shapes, message):
    arrays = [np.ones(s) for s in shapes]
    with pytest.raises(TraceError, match=message) as caught:
        compile_grad(lambda *a: np.einsum(subscripts, *a), backend="interpreter")(*arrays)
    assert "test_numpy_linalg.py" in str(caught.value)


def test_matrix_power_and_multi_dot():
    A = RNG.normal(size=(3, 3)) + 3 * np.eye(3)
    for n in (0, 1, 3, 5, -2):
        f = compile_grad(lambda a, n=n: np.sum(np.linalg.matrix_power(a, n)), backend="interpreter")
        assert np.isclose(f(A), np.sum(np.linalg.matrix_power(A, n)))
        if n:
            np.testing.assert_allclose(f.grad(A), central_differences(f.fn, [A], 0, 1e-6),
                                       rtol=1e-6, atol=1e-7)
    g = compile_grad(lambda a, b, c: np.linalg.multi_dot([a, b, c]), backend="interpreter")
    arrays = [RNG.normal(size=s) for s in ((3, 5), (5, 4), (4, 2))]
    np.testing.assert_allclose(g(*arrays), np.linalg.multi_dot(arrays), rtol=1e-12)


@pytest.mark.parametrize("name, arity", [("svd", 1), ("eigh", 1), ("qr", 1), ("lstsq", 2),
                                         ("pinv", 1)])
def test_unsupported_decompositions_say_what_to_use(name, arity):
    with pytest.raises(UnsupportedError, match=f"np.linalg.{name} is not supported by gradfuse; "):
        compile_grad(lambda a: getattr(np.linalg, name)(*[a] * arity),
                     backend="interpreter")(np.eye(3))


def test_einsum_of_booleans_says_to_cast():
    with pytest.raises(UnsupportedError, match="cast them"):
        compile_grad(lambda x: np.einsum("i->", x > 0), backend="interpreter")(np.ones(3))


def integer_matrices(scale, a, b):
    """LAPACK's functions of integer matrices (NumPy converts them to float64), and the
    singular values of a matrix that is not differentiated (its rows are a batch axis)."""
    return (scale * np.linalg.svdvals(a), np.linalg.norm(a, 2), np.linalg.inv(a),
            np.linalg.det(a), np.linalg.slogdet(a)[1], np.linalg.cholesky(a),
            np.linalg.matrix_power(a, -2), scale * np.linalg.solve(a, b),
            np.linalg.solve(a, b * 1.5))


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_integer_matrices_are_computed_as_float64(backend):
    # numba failed to compile the LAPACK call of an int matrix (an InternalError); svdvals of a
    # non-differentiated argument was a TraceError ('the matrices' shape must be known')
    a = np.array([[4, 1, 0], [1, 3, 1], [0, 1, 2]])
    b = np.array([1, 2, 3])
    values = compile_grad(integer_matrices, backend=backend)(2.0, a, b)
    for k, (got, expected) in enumerate(zip(values, integer_matrices(2.0, a, b))):
        assert np.asarray(got).dtype == np.asarray(expected).dtype, k
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14, err_msg=f"value {k}")


def batch_of_matrices(w, X):
    return (np.sum(np.linalg.svdvals(X * w)) + np.sum(np.linalg.inv(X) @ w)
            + np.sum(np.linalg.det(X * w)) + np.sum(np.linalg.slogdet(X * w)[1])
            + np.sum(np.linalg.solve(X, w[:, None] * np.ones((3, 2)))))


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_matrix_functions_of_a_batch_any_size_empty_too(backend):
    # the interpreter's SVD factors could not reshape an empty batch (a bare ValueError)
    f = compile_grad(batch_of_matrices, backend=backend)
    w = np.array([1.0, 2.0, 0.5])
    for n in (3, 0):
        X = RNG.normal(size=(n, 3, 3)) + 4 * np.eye(3)
        value, grad = f.value_and_grad(w, X)
        np.testing.assert_allclose(value, batch_of_matrices(w, X), rtol=1e-12)
        np.testing.assert_allclose(grad, central_differences(batch_of_matrices, [w, X], 0),
                                   rtol=1e-6, atol=1e-8)


def lapack_values(a):
    sign, logdet = np.linalg.slogdet(a)
    return np.linalg.det(a), sign, logdet, np.linalg.inv(a), np.linalg.solve(a, np.ones(2))


LAPACK_VALUES = compile_grad(lapack_values)


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
@pytest.mark.parametrize("a", [[[np.nan, 0.0], [0.0, 1.0]], [[1.0, 2.0], [np.nan, 4.0]],
                               [[np.inf, 1.0], [1.0, 1.0]], [[1.0, np.inf], [0.0, 1.0]],
                               [[2.0, 1.0], [1.0, 3.0]]])
def test_lapack_functions_of_nan_and_inf_give_numpys_values(backend, a):
    # the kernels factored A^T, NumPy A: det([[nan, 0], [0, 1]]) was 0 (an exact zero pivot
    # of A^T), inv/solve of [[1, inf], [0, 1]] raised 'Singular matrix', and gesdd's refusal
    # of a NaN matrix (info -4) left svdvals' output unwritten (garbage, silently)
    a = np.array(a)
    with np.errstate(all="ignore"):
        expected = lapack_values(a)
    f = LAPACK_VALUES if backend == "numba" else compile_grad(lapack_values, backend=backend)
    for got, e in zip(f(a), expected):
        np.testing.assert_allclose(got, e, rtol=1e-12, equal_nan=True)
    g = compile_grad(np.linalg.svdvals, backend=backend)
    if np.isnan(a).any():
        with pytest.raises(np.linalg.LinAlgError, match="SVD did not converge"):
            g(a)


def mask_products(W, labels):
    onehot = labels[:, None] == np.arange(3)  # booleans, as a comparison gives them
    return (np.sum(np.sin(onehot @ W)) + np.sum(np.dot(onehot, W) ** 2)
            + np.sum(np.einsum("nc,cd->nd", onehot, W) * 0.5) + np.sum(W.T @ onehot.T)
            + np.sum(np.tensordot(onehot, W, 1)) + np.vdot(onehot[0], W[:, 0]))


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_a_boolean_mask_times_numbers_computes_in_their_dtype(backend):
    # mask @ W (one-hot rows from a comparison) was refused: 'matmul of boolean arrays is not
    # supported'; NumPy computes it in W's dtype
    W = RNG.normal(size=(3, 5))
    labels = np.array([0, 2, 1, 2])
    value, grad = compile_grad(mask_products, backend=backend).value_and_grad(W, labels)
    np.testing.assert_allclose(value, mask_products(W, labels), rtol=1e-12)
    np.testing.assert_allclose(grad, central_differences(mask_products, [W, labels], 0),
                               rtol=1e-6, atol=1e-8)
    with pytest.raises(TraceError, match="matmul of boolean arrays"):  # NumPy: logical
        compile_grad(lambda W: (W > 0) @ (W > 0).T, backend=backend)(W)


# --- the idioms against PyTorch and JAX, through numba --------------------------------------------
SPD_SHIFT = 3.0


def idioms(xp, A, B, v, X):
    """Each idiom's value, from the NumPy-like namespace `xp` (numpy or jax.numpy)."""
    eye = SPD_SHIFT * xp.eye(4, dtype=A.dtype)
    M = A @ A.T + eye  # symmetric positive definite
    return [
        xp.einsum("ij,jk->ik", A, B), xp.einsum("bij,bjk->bik", X, X), xp.einsum("ii->i", A),
        xp.einsum("nchw,oc->nohw", X[:, None], A[:1, :1]), xp.outer(v, v), xp.inner(A, A),
        xp.vdot(A, B[:, :4]), xp.tensordot(X, A, axes=([2], [0])),
        xp.linalg.norm(v), xp.linalg.norm(A, axis=1), xp.linalg.norm(A, 1, axis=0),
        xp.linalg.norm(v, xp.inf), xp.linalg.norm(A, "fro"), xp.linalg.norm(A, 1),
        xp.linalg.norm(A, -xp.inf), xp.linalg.norm(X, 3, axis=-1),
        xp.linalg.solve(M, B), xp.linalg.solve(M, v), xp.linalg.inv(M), xp.linalg.det(M),
        xp.linalg.slogdet(M)[1], xp.linalg.cholesky(M), xp.linalg.det(X + eye),
        xp.linalg.inv(X + eye), xp.linalg.norm(B, 2), xp.linalg.norm(X, "nuc", axis=(1, 2)),
        xp.linalg.norm(B.T, -2),
    ]


def torch_idioms(torch, A, B, v, X):
    linalg = torch.linalg
    M = A @ A.T + SPD_SHIFT * torch.eye(4, dtype=A.dtype)
    eye = SPD_SHIFT * torch.eye(4, dtype=A.dtype)
    return [
        torch.einsum("ij,jk->ik", A, B), torch.einsum("bij,bjk->bik", X, X),
        torch.einsum("ii->i", A), torch.einsum("nchw,oc->nohw", X[:, None], A[:1, :1]),
        torch.outer(v, v), torch.inner(A, A), torch.vdot(A.reshape(-1), B[:, :4].reshape(-1)),
        torch.tensordot(X, A, dims=([2], [0])), linalg.vector_norm(v),
        linalg.vector_norm(A, dim=1), linalg.vector_norm(A, 1, dim=0),
        linalg.vector_norm(v, float("inf")), linalg.matrix_norm(A, "fro"),
        linalg.matrix_norm(A, 1), linalg.matrix_norm(A, float("-inf")),
        linalg.vector_norm(X, 3, dim=-1), linalg.solve(M, B), linalg.solve(M, v),
        linalg.inv(M), linalg.det(M), linalg.slogdet(M)[1], linalg.cholesky(M),
        linalg.det(X + eye), linalg.inv(X + eye), linalg.matrix_norm(B, 2),
        linalg.matrix_norm(X, "nuc"), linalg.matrix_norm(B.T, -2),
    ]


def _inputs(dtype=np.float64):
    return [RNG.normal(size=(4, 4)).astype(dtype), RNG.normal(size=(4, 5)).astype(dtype),
            RNG.normal(size=4).astype(dtype), RNG.normal(size=(3, 4, 4)).astype(dtype)]


INPUTS = _inputs()
WEIGHTS = [RNG.uniform(0.5, 1.5, np.shape(r)) for r in idioms(np, *INPUTS)]


def fused_idioms(A, B, v, X):
    return sum(np.sum(r * w) for r, w in zip(idioms(np, A, B, v, X), WEIGHTS))


@pytest.fixture(scope="module")
def fused():
    return compile_grad(fused_idioms, wrt=(0, 1, 2, 3))


def test_idiom_values_match_numpy_through_numba():
    values = compile_grad(lambda *a: tuple(idioms(np, *a)))(*INPUTS)
    for k, (got, expected) in enumerate(zip(values, idioms(np, *INPUTS))):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12, err_msg=f"idiom {k}")


def test_idiom_gradients_match_finite_differences(fused):
    value, grads = fused.value_and_grad(*INPUTS)
    assert np.isclose(value, fused_idioms(*INPUTS), rtol=1e-12)
    for i, g in enumerate(grads):
        np.testing.assert_allclose(g, central_differences(fused_idioms, INPUTS, i, 1e-6),
                                   rtol=1e-6, atol=1e-6, err_msg=f"input {i}")


def test_idiom_gradients_match_pytorch(fused):
    torch = pytest.importorskip("torch")
    tensors = [torch.tensor(x, requires_grad=True) for x in INPUTS]
    total = sum((r * torch.tensor(w)).sum()
                for r, w in zip(torch_idioms(torch, *tensors), WEIGHTS))
    total.backward()
    _, grads = fused.value_and_grad(*INPUTS)
    for i, (g, t) in enumerate(zip(grads, tensors)):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-9, atol=1e-10, err_msg=f"input {i}")


def test_idiom_gradients_match_jax(fused):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy

    def total(*args):
        return sum(jnp.sum(r * w) for r, w in zip(idioms(jnp, *args), WEIGHTS))

    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)  # float64, for this test only
    try:
        expected = jax.grad(total, argnums=(0, 1, 2, 3))(*INPUTS)
    finally:
        jax.config.update("jax_enable_x64", x64)
    _, grads = fused.value_and_grad(*INPUTS)
    for i, (g, e) in enumerate(zip(grads, expected)):
        np.testing.assert_allclose(g, np.asarray(e), rtol=1e-9, atol=1e-10, err_msg=f"input {i}")


def test_float32_stays_float32_through_lapack():
    inputs = _inputs(np.float32)
    f = compile_grad(lambda *a: idioms(np, *a)[16:])  # solve ... inv, batched, and the SVD's
    for got, expected in zip(f(*inputs), idioms(np, *inputs)[16:]):
        assert np.asarray(got).dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)


# --- kinks and singular matrices ---------------------------------------------------------------
def test_the_norm_of_the_zero_vector_has_gradient_zero():
    f = compile_grad(lambda x: np.linalg.norm(x) + np.linalg.norm(x, 3) + np.linalg.norm(x, 1),
                     backend="interpreter")
    assert np.array_equal(f.grad(np.zeros(3)), np.zeros(3))
    torch = pytest.importorskip("torch")
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    (torch.linalg.vector_norm(x) + torch.linalg.vector_norm(x, 1)).backward()
    assert np.array_equal(x.grad.numpy(), np.zeros(3))  # PyTorch's choice too


NAN_NORMS = [lambda x: np.linalg.norm(x), lambda x: np.linalg.norm(x, 3),
             lambda x: np.linalg.vector_norm(x), lambda x: np.linalg.norm(x.reshape(1, 3), "fro"),
             lambda x: np.linalg.norm(x, -2.5)]


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_a_norm_of_nan_is_nan_as_in_numpy(backend):
    # (the zero vector's gradient is 0 by a where(): it must not turn NaN into 0)
    fn = lambda x: sum(norm(x) for norm in NAN_NORMS)  # noqa: E731
    f = compile_grad(fn, backend=backend)
    assert np.isnan(f(np.array([np.nan, 1.0, 2.0])))
    x = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(f(x), fn(x), rtol=1e-12)
    if backend == "interpreter":
        np.testing.assert_allclose(f.grad(x), central_differences(fn, [x], 0), rtol=1e-6)


def test_ties_of_the_inf_norm_share_the_gradient():
    f = compile_grad(lambda x: np.linalg.norm(x, np.inf), backend="interpreter")
    np.testing.assert_array_equal(f.grad(np.array([2.0, -2.0, 1.0])), [0.5, -0.5, 0.0])


SINGULAR = np.ones((3, 3))


@pytest.mark.parametrize("backend", ["numba", "interpreter"])
def test_singular_matrices_raise_numpys_error(backend):
    for fn, message in [(lambda a: np.linalg.inv(a), "Singular matrix"),
                        (lambda a: np.linalg.solve(a, np.ones(3)), "Singular matrix"),
                        (lambda a: np.linalg.cholesky(a - 2 * np.eye(3)), "not positive definite")]:
        with pytest.raises(np.linalg.LinAlgError, match=message):
            compile_grad(fn, backend=backend)(SINGULAR)
    det = compile_grad(lambda a: (np.linalg.det(a), *np.linalg.slogdet(a)), backend=backend)
    assert tuple(map(float, det(SINGULAR))) == (0.0, 0.0, -np.inf)


def test_second_derivatives_of_singular_values_are_refused():
    f = compile_grad(lambda a: np.linalg.norm(a, 2), backend="interpreter")
    assert np.isclose(f(np.diag([3.0, 1.0])), 3.0)
    np.testing.assert_allclose(f.grad(np.diag([3.0, 1.0])), [[1.0, 0.0], [0.0, 0.0]], atol=1e-15)
    with pytest.raises(UnsupportedError, match="second derivatives of singular values"):
        compile_grad(lambda a: np.sum(f.grad(a) ** 2), backend="interpreter").grad(np.eye(2))
