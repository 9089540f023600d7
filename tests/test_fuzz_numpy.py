"""Fuzzing the NumPy surface: random programs of NumPy calls as users write them
(tests/numpy_programs.py) give NumPy's values under `compile_grad`, and gradients that match
central differences of the NumPy program itself; compiled by numba, the interpreter's.

Where tests/test_fuzz_programs.py checks the compiler's primitives against each other,
these check the whole way from the user's NumPy call: the tracer's dispatch, the
composites each call is lowered to (`np.median`, `np.einsum`, `np.pad`, `F.log_softmax`,
`np.linalg.solve`, ...) and their gradients, against NumPy running the same program.
Deterministic: fixed seeds, a few seconds on the interpreter; numba compiles a handful.
The fuzzer found std's NaN gradient for a lane of one entry (now the kink table's 0).
"""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import central_differences
from numpy_programs import program

from compiler import compile_grad

STEPS = 5


@pytest.mark.parametrize("seed", range(200))
def test_numpy_programs_match_numpy_and_finite_differences(seed):
    prog = program(seed, STEPS)
    loss, inputs = prog.function(), prog.inputs
    f = compile_grad(loss, wrt=tuple(range(len(inputs))), backend="interpreter")
    value, grads = f.value_and_grad(*inputs)
    with np.errstate(all="ignore"):  # NumPy on the inputs moved by central differences
        np.testing.assert_allclose(value, loss(*inputs), rtol=1e-9, atol=1e-12,
                                   err_msg=str(prog))
        for position, (grad, x) in enumerate(zip(grads, inputs, strict=True)):
            assert grad.shape == x.shape and grad.dtype == x.dtype, prog
            np.testing.assert_allclose(grad, central_differences(loss, inputs, position),
                                       rtol=1e-5, atol=1e-6, err_msg=f"d/dv{position} of\n{prog}")


@pytest.mark.parametrize("seed", [3, 17, 42, 64, 99, 123])
def test_compiled_numpy_programs_match_the_interpreter(seed):
    prog = program(seed, STEPS)
    loss, inputs = prog.function(), prog.inputs
    wrt = tuple(range(len(inputs)))
    expected_value, expected_grads = compile_grad(loss, wrt=wrt, backend="interpreter") \
        .value_and_grad(*inputs)
    value, grads = compile_grad(loss, wrt=wrt).value_and_grad(*inputs)
    np.testing.assert_allclose(value, expected_value, rtol=1e-9, atol=1e-12, err_msg=str(prog))
    for grad, expected in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(grad, expected, rtol=1e-9, atol=1e-12, err_msg=str(prog))


def test_programs_are_drawn_from_the_whole_table():
    """The generator reaches every kind of entry (a rejection rule that refused one kind
    always would make the fuzzing silently narrower)."""
    texts = "\n".join(str(program(seed, STEPS)) for seed in range(200))
    for call in ["np.einsum", "np.median", "np.pad", "F.log_softmax", "np.linalg.norm",
                 "np.take_along_axis", "np.quantile", "np.tile", "np.clip", "np.where",
                 "np.concatenate", "np.std", "[np.array(", "np.cumprod", "np.linalg"]:
        assert call in texts, call
