"""Generated numba kernels against the NumPy interpreter, for every op in the table.

A handful of programs cover all primitives between them: one generated from
the op table (every elementwise op, through `bind`), elementwise math with
broadcasting and scalars as users write it, reductions over every kind of
axis set, layout and indexing, matrix products (loops and BLAS), scans.
Each runs through both backends in float64 and float32, at two batch sizes
(one kernel serves both), as a forward kernel, a fused value-and-gradient
kernel, and the runtime's forward_save / backward pair. Few programs means few
numba compiles; each kernel is shared by the tests through module-scoped fixtures.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from compiler import compile_grad, ops, scan
from compiler.ops import bind
from compiler.ops.lowering import Inlined, Lowering
from runtime import Parameter
from runtime import functional as F

BATCHES = (7, 13)  # two batch sizes: the second reuses the first one's kernels



# --- the programs ------------------------------------------------------------------------------
def elementwise_program(w, b, X, Z):
    u = X * w + b  # (N,4): a row and a scalar broadcast
    v = Z - u / (1.0 + w * w)  # (N,1) against (N,4)
    a = np.exp(u * 0.3) + np.expm1(v * 0.2) + np.log(1.0 + u * u) + np.log1p(np.abs(v))
    c = np.sqrt(u * u + 0.5) + np.sin(u) * np.cos(v) + np.tan(0.3 * np.tanh(u))
    d = np.arctan(v) + np.sinh(0.5 * u) - np.cosh(0.25 * v) + np.sign(u) * u
    d = d + np.abs(u) ** 1.5 + 1.5**v + (u * 0.5) ** w - v**3
    e = np.maximum(u, v) + np.minimum(u, 0.25) + np.clip(v, -0.3, 0.4) + 1.0 / (2.0 + u * u)
    mask = (u > v) & ~(v >= 0.5) | ((u < -0.2) ^ (u <= 0.1))
    f = np.where(mask, a, c) + np.where(u != v, d, e) + (u == 0.25) * 3.0
    g = np.logical_or(np.logical_not(u > 0), np.logical_xor(v > 0, u > 1)) * u
    h = u.astype(np.float32).astype(u.dtype) * (X > 0).astype(X.dtype) - (-v)
    return np.sum(f * e + g + h) + np.mean(d * c)


def reduction_program(W, X):
    T = np.tanh(X * W)  # (N,3,4)
    terms = [
        np.sum(T, axis=(0, 2)), np.mean(T, axis=0).sum(axis=1), np.sum(T, axis=2).mean(axis=0),
        np.sum(T * T, axis=(1, 2), keepdims=True).mean(axis=(1, 2)).sum(keepdims=True),
        np.max(T, axis=1).sum(axis=0)[:3], np.min(T, axis=(0, 2), keepdims=True).ravel(),
        np.prod(1.0 + 0.1 * T, axis=1).sum(axis=0)[1:], np.var(T, axis=0).sum(axis=1),
        np.std(T, axis=(0, 1))[:3],
        F.logsumexp(T, axis=2).sum(axis=0), F.softmax(T, axis=1).max(axis=(0, 2)),
        F.log_softmax(T, axis=-1).min(axis=(0, 2)), np.max(T) + np.min(T) + np.prod(W),
        np.cumsum(T, axis=2).sum(axis=(0, 1)), np.cumsum(T * T, axis=0).mean(axis=0)[:, 1],
        np.cumprod(1.0 + 0.1 * T, axis=2).sum(axis=(0, 1)),
        np.cumprod(0.5 + 0.1 * T, axis=0).mean(axis=0)[:, 1],  # along the batch: symbolic
        np.sort(T, axis=2)[:, :, -1].sum(axis=0) + np.argmax(T, axis=1).sum(axis=0)[:3],
    ]
    return sum(np.sum(t * (k + 1.0)) for k, t in enumerate(terms))


def layout_program(W, V, E, b, X, ids, picks):
    H = X @ W  # (N,4)@(4,3): BLAS, N is symbolic
    G = np.tanh(H) @ V + b  # (N,3)@(3,5)
    S = W.T @ W  # (3,4)@(4,3): a small loop
    big = np.tanh(E.T @ E * 0.1) @ (E.T @ E)  # (3,3), with a static BLAS-sized product below
    wide = np.tanh(np.concatenate([E] * 4, axis=0))  # (40,3)
    wide_sq = (wide @ wide.T) @ wide  # (40,40)@(40,3): static, large enough for BLAS
    emb = E[ids]  # traced gather (N,3); its adjoint is a scatter-add
    picked = np.take_along_axis(G, picks, axis=1)  # (N,1)
    const_cols = H[:, np.array([2, 0, -1])] + np.take(G, np.array([4, 4, 1]), axis=1)
    sl = G[:, 1::2] + G[:, ::-2][:, :2] + H[:, -1:]
    G3 = G[:, :4].reshape(G.shape[0], 2, 2)
    batched = np.transpose(G3, (0, 2, 1)) @ G3 + G3 @ S[:2, :2]
    cat = np.concatenate([H, emb, G[:, :1]], axis=1) * np.stack([H[:, 0], H[:, 1]], axis=-1).sum()
    moved = np.moveaxis(np.expand_dims(G, 0), 1, 2).squeeze(0)  # (5,N)
    vec = b @ V.T + V @ b + b @ b + W[0] @ S  # vector-matrix, matrix-vector, dot, row @ mat
    outer = np.broadcast_to(b, (3, 5)) * S.sum(axis=0)[:, None]
    pairs = E[ids[:, None], np.array([[0, 2]])]  # (N,2): two index arrays, traced and constant
    Y = np.zeros_like(E)  # a copy assigned into: repeated ids keep the last write (last_write)
    Y[ids] = emb * 0.5 + H[:, :3]
    Y[1:3, ::2] += b[:2]
    np.add.at(Y, ids, G[:, :3])  # repeated ids add up
    windows = np.sum(sliding_window_view(G, 3, axis=1) * b[:3], axis=-1)  # (N,3), fused
    return (np.sum(windows * windows) + np.sum(emb * emb) + np.sum(picked)
            + np.sum(const_cols[:, :2] * sl) + np.sum(batched) + np.sum(cat * cat)
            + np.sum(moved[::2] ** 2) + np.sum(vec)
            + np.sum(outer * big[:, :1]) + np.sum(wide_sq) * 1e-3
            + np.sum(pairs ** 2) + np.sum(Y * Y))


def loop_program(W, c, X):
    """Two scans: an array carry with consts the step closes over and xs through a transpose,
    then a reverse one with a scalar carry over the first one's stacked outputs."""
    def step(h, x):  # h (N,3), x (N,)
        h = np.tanh(h @ W + x[:, None] * c)
        return h, np.sum(h * h, axis=1)

    h, ys = scan(step, np.tanh(X[:, :3]), X.T)
    total, _ = scan(lambda a, y: (a * 0.5 + np.mean(y), None), 0.0, ys, reverse=True)
    return np.sum(h) + total


def linalg_program(W, A, X):
    """Batched products on BLAS (one gemm over N*T rows, a loop of gemms over strided and
    transposed slices, a contraction over the batch for W's gradient), einsum's products as
    loops, norms, and the LAPACK ops, batched."""
    H = np.tanh(X @ W)  # (N,6,24)@(24,24): one gemm over N*6 rows
    Q = H.reshape(H.shape[0], 6, 2, 12).transpose(0, 2, 1, 3)  # (N,2,6,12), a transposed view
    att = Q @ np.swapaxes(Q, -1, -2) * 0.1  # small per matrix: loops
    big = np.tanh(H[:, :, None, :] * W[:, :2].T[None, None]).reshape(H.shape[0], 12, 24)
    wide = np.tanh(np.concatenate([big, big], axis=1))  # (N,24,24)
    sq = wide @ np.swapaxes(wide, 1, 2)  # (N,24,24)@(N,24,24): a loop of gemms
    taps = np.einsum("ntc,oc->not", H[:, :, :3], A)  # a product of 3 terms: a loop
    S = np.einsum("nti,ntj->nij", H[:, :, :3], H[:, :, :3])  # (N,3,3): batched contraction
    M = A @ A.T + 3.0 * np.eye(3)
    L = np.linalg.cholesky(M)
    sol = np.linalg.solve(M, S)  # M broadcast over the batch
    logdet = np.linalg.slogdet(S + 4.0 * np.eye(3)).logabsdet
    terms = [np.sum(att ** 2), np.sum(sq) * 1e-3, np.sum(taps * taps), np.sum(sol * sol),
             np.sum(L * np.linalg.inv(M)), np.linalg.det(M), np.sum(logdet),
             np.sum(np.linalg.norm(H, axis=-1)), np.sum(np.linalg.norm(S, 1, axis=(1, 2))),
             np.sum(np.linalg.norm(S + 3.0 * np.eye(3), 2, axis=(1, 2)))]
    return sum(t * (k + 1.0) for k, t in enumerate(terms))


def registry_program(w, X):
    """Every elementwise op in the table, through `bind`: a new op is tested without new code."""
    u = 0.2 + 0.7 * np.tanh(X * w) ** 2  # (N,4), in [0.2, 0.9): inside every op's domain
    v = 0.3 + 0.5 * w * w / (1.0 + w * w)  # (4,), broadcast against u
    total = 0.0
    for k, (name, opdef) in enumerate(sorted(ops.REGISTRY.items())):
        if opdef.kind != "elementwise":
            continue
        arity = len(re.findall(r"\{\d\}", opdef.code))
        if name == "where":
            out = bind("where", u > v, u, v)
        elif name == "cast":
            out = bind("cast", u, dtype=np.float32 if u.dtype == np.float64 else np.float64)
        elif name == "check_finite":  # anomaly mode's check: the site is an int label
            out = bind(name, u, np.int64(k))
        elif name.startswith("logical_"):
            out = bind(name, *[u > 0.5, v > 0.5][:arity])
        else:
            out = bind(name, *[u, v][:arity])
        total = total + (k + 1.0) * np.sum(out.astype(X.dtype))
    return total


@dataclass(frozen=True)
class Program:
    fn: Callable
    wrt: tuple[int, ...]
    make_args: Callable[[int, type, np.random.Generator], list]


PROGRAMS = {
    "registry": Program(registry_program, (0,), lambda n, dt, rng: [
        rng.uniform(0.5, 1.5, 4).astype(dt), rng.uniform(-1.5, 1.5, (n, 4)).astype(dt)]),
    "elementwise": Program(elementwise_program, (0, 1), lambda n, dt, rng: [
        rng.uniform(0.5, 1.5, 4).astype(dt), np.asarray(0.3, dt),
        rng.uniform(-1.5, 1.5, (n, 4)).astype(dt), rng.uniform(-1, 1, (n, 1)).astype(dt)]),
    "reductions": Program(reduction_program, (0,), lambda n, dt, rng: [
        rng.uniform(-1.5, 1.5, (3, 4)).astype(dt), rng.uniform(-2, 2, (n, 3, 4)).astype(dt)]),
    "loops": Program(loop_program, (0, 1), lambda n, dt, rng: [
        rng.uniform(-1, 1, (3, 3)).astype(dt), rng.uniform(-1, 1, 3).astype(dt),
        rng.uniform(-1, 1, (n, 4)).astype(dt)]),
    "linalg": Program(linalg_program, (0, 1), lambda n, dt, rng: [
        rng.uniform(-0.4, 0.4, (24, 24)).astype(dt), rng.uniform(-1, 1, (3, 3)).astype(dt),
        rng.uniform(-1, 1, (n, 6, 24)).astype(dt)]),
    "layout": Program(layout_program, (0, 1, 2, 3), lambda n, dt, rng: [
        rng.uniform(-1, 1, (4, 3)).astype(dt), rng.uniform(-1, 1, (3, 5)).astype(dt),
        rng.uniform(-1, 1, (10, 3)).astype(dt), rng.uniform(-1, 1, 5).astype(dt),
        rng.uniform(-1, 1, (n, 4)).astype(dt), rng.integers(-10, 10, n),
        rng.integers(0, 5, (n, 1))]),
}


def tolerances(dtype) -> dict:
    # float64: libm vs NumPy's own exp/log (1 ulp), tanh via exp (<= 4 ulp), and
    # reassociated float64 sums; float32: the same in single precision.
    return dict(rtol=1e-9, atol=1e-11) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-5)


class Pair:
    """A program compiled by both backends for one dtype."""

    def __init__(self, program: Program, dtype) -> None:
        self.program, self.dtype = program, dtype
        self.numba = compile_grad(program.fn, wrt=program.wrt, backend="numba")
        self.reference = compile_grad(program.fn, wrt=program.wrt, backend="interpreter")

    def args(self, n: int) -> list:
        return self.program.make_args(n, self.dtype, np.random.default_rng(n))

    def assert_close(self, got, expected, what: str) -> None:
        got, expected = np.asarray(got), np.asarray(expected)
        assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype} != {expected.dtype}"
        assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
        np.testing.assert_allclose(got, expected, err_msg=what, **tolerances(self.dtype))


@pytest.fixture(scope="module", params=[
    (name, dtype) for name in PROGRAMS for dtype in (np.float64, np.float32)],
    ids=lambda p: f"{p[0]}-{np.dtype(p[1]).name}")
def pair(request):
    name, dtype = request.param
    return Pair(PROGRAMS[name], dtype)


def test_forward_matches_interpreter(pair):
    for n in BATCHES:
        args = pair.args(n)
        pair.assert_close(pair.numba(*args), pair.reference(*args), f"forward, N={n}")


def test_value_and_grad_matches_interpreter(pair):
    for n in BATCHES:
        args = pair.args(n)
        value, grads = pair.numba.value_and_grad(*args)
        ref_value, ref_grads = pair.reference.value_and_grad(*args)
        pair.assert_close(value, ref_value, f"value, N={n}")
        for k, (g, r) in enumerate(zip(grads, ref_grads)):
            pair.assert_close(g, r, f"gradient {k}, N={n}")


def test_backward_matches_interpreter(pair):
    """The runtime's split: forward_save kernel, then backward kernel on the residuals."""
    for n in BATCHES:
        results = []
        for f in (pair.numba, pair.reference):
            args = pair.args(n)
            params = {i: Parameter(args[i]) for i in pair.program.wrt}
            out = f(*[params.get(i, a) for i, a in enumerate(args)])
            out.backward(gradient=np.asarray(0.75, pair.dtype))
            results.append((out, [params[i].grad for i in pair.program.wrt]))
        (out, grads), (ref_out, ref_grads) = results
        pair.assert_close(out.data, ref_out.data, f"forward_save value, N={n}")
        for k, (g, r) in enumerate(zip(grads, ref_grads)):
            pair.assert_close(g, r, f"backward gradient {k}, N={n}")


def test_a_new_batch_size_reuses_the_kernels(pair):
    for n in BATCHES:
        pair.numba.value_and_grad(*pair.args(n))
    kernel = pair.numba.specialize(*pair.args(BATCHES[-1])).kernel("value_and_grad")
    assert len(kernel.dispatcher.signatures) == 1


# --- coverage: every op has code generation, and the programs exercise all of them -------------
def test_every_op_in_the_table_has_a_lowering():
    for name, opdef in ops.REGISTRY.items():
        assert isinstance(opdef.lowering, Lowering), name


def test_the_programs_compile_every_op_with_numba():
    seen: set[str] = set()
    for program in PROGRAMS.values():
        spec = compile_grad(program.fn, wrt=program.wrt, backend="interpreter").specialize(
            *program.make_args(5, np.float64, np.random.default_rng(0)))
        for kind in ("forward", "value_and_grad", "forward_save", "backward"):
            seen |= {n.op for n in spec.graph_of(kind).nodes()}
    inlined = {name for name, opdef in ops.REGISTRY.items()
               if isinstance(opdef.lowering, Inlined)}
    # made by code generation, never traced: tests/test_codegen_writes.py, test_scan.py
    made_by_codegen = {"matmul_add"}
    missing = set(ops.REGISTRY) - seen - inlined - made_by_codegen
    assert not missing, f"ops no program exercises: {sorted(missing)}"
