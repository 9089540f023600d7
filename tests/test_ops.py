"""Every op in the table, driven by tests/op_cases.py: values against NumPy, gradients against
central finite differences in float64, through the interpreter (per case) and the numba
kernels (all cases fused into one function, so the suite compiles two kernels, not hundreds)."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import central_differences
from op_cases import CASE_IDS, CASES, Case

from compiler import compile_grad, ops

FD_STEP = 1e-6


def _projection(case: Case, inputs: list[np.ndarray]) -> np.ndarray:
    """A fixed random cotangent: sum(out * R) checks a full vector-Jacobian product."""
    out = np.asarray(case.fn(*inputs))
    rng = np.random.default_rng(len(case.name))
    return rng.uniform(0.5, 1.5, out.shape)


def _float_args(case: Case) -> tuple[int, ...]:
    return tuple(i for i, a in enumerate(case.args) if not a.domain.startswith("int:"))


def _objective(case: Case, projection: np.ndarray):
    def objective(*args):
        return np.sum(case.fn(*args) * projection)

    objective.__name__ = f"case_{case.name}"
    return objective



@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_matches_numpy(case: Case):
    for dtype in (np.float64, np.float32):
        inputs = case.sample(seed=1, dtype=dtype)
        expected = np.asarray(case.fn(*inputs))
        got = compile_grad(case.fn, backend="interpreter")(*inputs)
        assert np.asarray(got).dtype == expected.dtype, dtype
        assert np.shape(got) == expected.shape
        tol = 1e-12 if dtype == np.float64 else 2e-5
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradient_matches_finite_differences(case: Case):
    wrt = _float_args(case)
    if not wrt or not case.finite_differences:
        pytest.skip("no float inputs" if not wrt else "checked in closed form below")
    inputs = case.sample(seed=2)
    objective = _objective(case, _projection(case, inputs))
    grads = compile_grad(objective, wrt=wrt, backend="interpreter").grad(*inputs)
    for i, g in zip(wrt, grads):
        expected = central_differences(objective, inputs, i, FD_STEP)
        np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-7,
                                   err_msg=f"gradient of input {i}")


def test_cast_gradient_closed_form():
    x = np.linspace(-1, 1, 6)
    f = compile_grad(lambda x: np.sum(x.astype(np.float32) * np.float32(3)), backend="interpreter")
    grad = f.grad(x)
    assert grad.dtype == np.float64
    np.testing.assert_array_equal(grad, np.full(6, 3.0))


def test_every_primitive_is_exercised_forward_and_backward():
    seen: set[str] = set()
    for case in CASES:
        wrt = _float_args(case)
        inputs = case.sample(seed=2)
        f = compile_grad(_objective(case, _projection(case, inputs)), wrt=wrt or 0,
                         backend="interpreter")
        spec = f.specialize(*inputs)
        seen |= {n.op for n in spec.graph.nodes()}
        if wrt:
            seen |= {n.op for n in spec.graph_of("value_and_grad").nodes()}
            seen |= {n.op for n in spec.graph_of("backward").nodes()}
    # "call" ops (custom_vjp) are exercised by tests/test_custom_vjp.py; check_finite is put
    # into kernel graphs by anomaly mode, never traced: tests/test_anomaly.py
    # matmul_add is made by code generation from `acc + a @ b`: tests/test_codegen_writes.py
    missing = {name for name, op in ops.REGISTRY.items() if op.kind != "call"} - seen \
        - {"check_finite", "matmul_add"}
    assert not missing, f"ops no case exercises: {sorted(missing)}"


def test_every_op_defines_all_of_its_parts():
    no_gradient = {"input", "const", "sign", "lt", "le", "gt", "ge", "eq", "ne", "logical_and",
                   "logical_or", "logical_xor", "logical_not", "size", "signbit",
                   "floor", "ceil", "trunc", "rint", "floor_divide", "argsort", "last_write",
                   "matmul_add"}  # made after reverse mode, by code generation
    for name, opdef in ops.REGISTRY.items():
        assert callable(opdef.infer) and callable(opdef.impl), name
        assert (opdef.vjp is None) == (name in no_gradient), f"{name}: VJP presence"
        if opdef.kind == "elementwise":
            assert opdef.code and "{0}" in opdef.code, name


# --- the same cases through numba: cases fused into a few functions --------------------------
# numba's compile time grows faster than linearly with a function's size, so the cases are
# fused in chunks: a handful of kernels for the whole table, each reused by two tests.
CHUNK = 12
CHUNKS = [CASES[i:i + CHUNK] for i in range(0, len(CASES), CHUNK)]


def _fused_cases(cases: list[Case]):
    inputs, ints, plans, no_fd = {}, {}, [], set()
    for k, case in enumerate(cases):
        sample = case.sample(seed=3)
        names = []
        for j, (arg, value) in enumerate(zip(case.args, sample)):
            name = f"c{k}_{j}"
            (ints if arg.domain.startswith("int:") else inputs)[name] = value
            names.append(name)
            if not case.finite_differences:
                no_fd.add(name)
        plans.append((case, names, _projection(case, sample)))

    def fused_cases(x, idx):
        total = 0.0
        for case, names, projection in plans:
            args = [x[n] if n in x else idx[n] for n in names]
            total = total + np.sum(case.fn(*args) * projection)
        return total

    return fused_cases, inputs, ints, no_fd


_compiled: dict[int, tuple] = {}


def fused(chunk: int):
    """The numba-compiled and interpreted fused function of one chunk, built once per session."""
    if chunk not in _compiled:
        fn, inputs, ints, no_fd = _fused_cases(CHUNKS[chunk])
        _compiled[chunk] = (compile_grad(fn), compile_grad(fn, backend="interpreter"), inputs,
                            ints, no_fd)
    return _compiled[chunk]


def _chunk_ids():
    return [f"{c[0].name}..{c[-1].name}" for c in CHUNKS]


@pytest.mark.parametrize("chunk", range(len(CHUNKS)), ids=_chunk_ids())
def test_numba_value_and_gradient_match_interpreter(chunk):
    compiled, interpreted, inputs, ints, _ = fused(chunk)
    value, grads = compiled.value_and_grad(inputs, ints)
    ref_value, ref_grads = interpreted.value_and_grad(inputs, ints)
    np.testing.assert_allclose(value, ref_value, rtol=1e-10)
    for name in inputs:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-9, atol=1e-12,
                                   err_msg=name)


@pytest.mark.parametrize("chunk", range(len(CHUNKS)), ids=_chunk_ids())
def test_numba_gradient_matches_finite_differences(chunk):
    compiled, _, inputs, ints, no_fd = fused(chunk)
    grads = compiled.grad(inputs, ints)
    for name, value in inputs.items():
        if name in no_fd:  # float32 rounding inside the case; compared with the interpreter
            continue
        expected = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            shifted = dict(inputs)
            for sign in (1.0, -1.0):
                v = value.copy()
                v[idx] += sign * FD_STEP
                shifted[name] = v
                expected[idx] += sign * compiled(shifted, ints) / (2 * FD_STEP)
        np.testing.assert_allclose(grads[name], expected, rtol=1e-5, atol=2e-6, err_msg=name)
