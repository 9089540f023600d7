"""Property: for elementwise binary ops on any pair of broadcastable shapes, the gradient of a
weighted sum of op(a, b) equals central finite differences (float64, interpreter backend).

Broadcasting is where reverse mode is easy to get wrong (the adjoint of a broadcast is a sum
over the broadcast axes, kept or dropped), so hypothesis chooses the shapes, scalars and
size-1 axes included; the values come from a seeded NumPy generator, which keeps them off
the kinks (ties of maximum, b = 0 of a division) where finite differences do not apply.
"""

from __future__ import annotations

import numpy as np
from gradcheck import central_differences
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

from compiler import compile_grad

# op -> (function, sampler of a, sampler of b); samplers take (rng, shape).
normal = lambda rng, shape: rng.normal(size=shape)  # noqa: E731
positive = lambda rng, shape: rng.uniform(0.5, 2.0, size=shape)  # noqa: E731
away_from_zero = lambda rng, shape: (rng.uniform(0.5, 2.0, size=shape)  # noqa: E731
                                     * rng.choice([-1.0, 1.0], size=shape))
OPS = {
    "add": (np.add, normal, normal),
    "sub": (np.subtract, normal, normal),
    "mul": (np.multiply, normal, normal),
    "div": (np.true_divide, normal, away_from_zero),
    "power": (np.power, positive, normal),
    "maximum": (np.maximum, normal, normal),
    "minimum": (np.minimum, normal, normal),
    "logaddexp": (np.logaddexp, normal, normal),
}



@settings(max_examples=60, deadline=None)
@given(op=st.sampled_from(sorted(OPS)),
       shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
       seed=st.integers(0, 2**32 - 1))
def test_gradient_of_a_broadcast_binary_op_matches_finite_differences(op, shapes, seed):
    ufunc, sample_a, sample_b = OPS[op]
    rng = np.random.default_rng(seed)
    (shape_a, shape_b), result_shape = shapes.input_shapes, shapes.result_shape
    a, b = sample_a(rng, shape_a), sample_b(rng, shape_b)
    weights = rng.normal(size=result_shape)  # a plain sum would hide permuted elements

    def objective(a, b, weights):
        return np.sum(ufunc(a, b) * weights)

    f = compile_grad(objective, wrt=(0, 1), backend="interpreter")
    value, (grad_a, grad_b) = f.value_and_grad(a, b, weights)
    np.testing.assert_allclose(value, objective(a, b, weights), rtol=1e-12, atol=1e-12)
    for grad, x, position in ((grad_a, a, 0), (grad_b, b, 1)):
        grad = np.asarray(grad)
        assert grad.shape == x.shape and grad.dtype == np.float64
        expected = central_differences(objective, (a, b, weights), position)
        np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-7,
                                   err_msg=f"{op}{shape_a, shape_b} d/d{'ab'[position]}")
