"""Fuzzing: random programs from the op table (tests/fuzz_programs.py) give the same values
and gradients compiled as interpreted, and the interpreter's gradients match central
differences.

Deterministic (hypothesis derandomized, no example database), with few enough examples to
take seconds: the interpreter checks most programs; numba compiles a bounded number (a
compile costs about a second). Seeds that once failed stay as explicit examples.
"""

from __future__ import annotations

import numpy as np
from fuzz_programs import program
from gradcheck import central_differences
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from compiler import compile_grad

SEEDS = st.integers(0, 2**31 - 1)
SETTINGS = dict(derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])


# Seeds that once failed, with the program each one draws. Found against the code before
# `fusion._readers` counted an output reshape as a reader: a 0-d gradient viewing a size-1
# loop local was read as an array, which numba refused (the defect fuzzing found in 14 of
# 550 programs). If the generator changes (a new op in the table), a seed draws another
# program: test_regression_seeds_still_draw_their_programs says so, instead of the
# regression silently going away.
REGRESSIONS = {
    143963: "v0: f64[]\nv1 = reshape(v0, shape=(1,))\nv2 = abs(v1)",
    1621: "v0: f64[]\nv1 = reshape(v0, shape=(1,))\nv2 = max(v1, axes=(0,), keepdims=False)",
}


def test_regression_seeds_still_draw_their_programs():
    for seed, text in REGRESSIONS.items():
        assert str(program(seed)) == text, f"seed {seed} draws another program now: update " \
            "REGRESSIONS with a seed that draws this one"


def finite(*values) -> bool:
    return all(np.all(np.isfinite(v)) and np.all(np.abs(v) < 1e6) for v in values)


@settings(max_examples=300, **SETTINGS)
@given(seed=SEEDS)
def test_interpreted_gradients_of_random_programs_match_finite_differences(seed):
    prog = program(seed)
    inputs = prog.inputs()
    f = compile_grad(prog.function(), wrt=tuple(range(len(inputs))), backend="interpreter")
    value, grads = f.value_and_grad(*inputs)
    assume(finite(value, *grads))
    for position, (grad, x) in enumerate(zip(grads, inputs)):
        assert grad.shape == x.shape and grad.dtype == x.dtype, prog
        expected = central_differences(f, inputs, position)
        np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6,
                                   err_msg=f"d/dv{position} of\n{prog}")


@settings(max_examples=14, **SETTINGS)
@given(seed=SEEDS, dtype=st.sampled_from([np.float32, np.float64]))
@example(seed=143963, dtype=np.float64)
@example(seed=1621, dtype=np.float64)
def test_compiled_random_programs_match_the_interpreter(seed, dtype):
    prog = program(seed, dtype)
    inputs = prog.inputs()
    # wrt=0: a second input keeps a symbolic batch axis (when it has one of 2 or more rows)
    reference = compile_grad(prog.function(), backend="interpreter").value_and_grad(*inputs)
    assume(finite(*reference))
    value, grad = compile_grad(prog.function()).value_and_grad(*inputs)
    tolerance = dict(rtol=1e-9, atol=1e-12) if dtype == np.float64 else \
        dict(rtol=2e-4, atol=2e-5)
    assert np.asarray(value).dtype == np.asarray(reference[0]).dtype == dtype, prog
    assert grad.dtype == dtype and grad.shape == inputs[0].shape, prog
    np.testing.assert_allclose(value, reference[0], **tolerance, err_msg=str(prog))
    np.testing.assert_allclose(grad, reference[1], **tolerance, err_msg=str(prog))
