"""Compiled gradients against central finite differences at random inputs, in float64.

For each differentiated input, up to `samples` randomly chosen elements are
perturbed by +-eps; the function, run eagerly with NumPy (independently of the
compiler), gives (f(x + eps) - f(x - eps)) / 2 eps, which is compared with the
compiled gradient. The error of an element is |fd - grad| / max(1, |fd|, |grad|):
absolute for small values, relative for large ones. A function with a
non-scalar result is checked through a fixed random projection, sum(w * f(x)),
as JAX's check_vjp does.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler import compile_grad, pytree
from compiler.cli.targets import leaf, with_leaf


@dataclass(frozen=True)
class InputError:
    name: str
    max_error: float
    checked: int  # elements compared
    size: int


def check_gradients(fn: Callable, inputs: dict[str, Any], wrt: list[str], leaves: list[str],
                    backend: str, eps: float, samples: int, seed: int) -> list[InputError]:
    """One report per name of `leaves`: the arrays of the `wrt` arguments, an argument's own
    name or a dotted path into its tree (`params.W`)."""
    rng = np.random.default_rng(seed)
    # traced first: what the function cannot do with these inputs is reported at the user's
    # line, before NumPy runs it for the finite differences
    compile_grad(fn, wrt=tuple(wrt), backend="interpreter").specialize(**inputs)
    objective = scalar_objective(fn, inputs, rng)
    compiled = compile_grad(objective, wrt=tuple(wrt), backend=backend)
    _, grads = compiled.value_and_grad(**inputs)
    grads = dict(zip(wrt, grads))
    reports = []
    for name in leaves:
        x, grad = leaf(inputs, name), leaf(grads, name)
        count = min(samples, x.size)
        worst = 0.0
        for flat in rng.choice(x.size, size=count, replace=False):
            fd = _central_difference(objective, inputs, name, int(flat), eps)
            analytic = float(np.asarray(grad).flat[flat])
            error = abs(fd - analytic) / max(1.0, abs(fd), abs(analytic))
            worst = max(worst, error if math.isfinite(error) else math.inf)
        reports.append(InputError(name, worst, count, x.size))
    return reports


def scalar_objective(fn: Callable, inputs: dict[str, np.ndarray],
                     rng: np.random.Generator) -> Callable:
    """`fn` itself if it returns one scalar, else sum(w * f(x)) over its results' leaves."""
    leaves, _ = pytree.flatten(fn(**inputs))
    if len(leaves) == 1 and np.ndim(leaves[0]) == 0:
        return fn
    weights = [rng.standard_normal(np.shape(leaf)) for leaf in leaves]

    def projected(*args, **kwargs):
        results, _ = pytree.flatten(fn(*args, **kwargs))
        return sum(np.sum(r * w) for r, w in zip(results, weights))

    projected.__signature__ = inspect.signature(fn)
    projected.__name__ = fn.__name__
    return projected


def _central_difference(fn: Callable, inputs: dict[str, Any], name: str, flat: int,
                        eps: float) -> float:
    values = []
    for step in (eps, -eps):
        x = leaf(inputs, name).copy()
        x.flat[flat] += step
        values.append(float(np.asarray(fn(**with_leaf(inputs, name, x)))))
    return (values[0] - values[1]) / (2 * eps)
