"""NumPy idioms checked against PyTorch: values and gradients, through the interpreter and numba.

A family's idioms (each a NumPy function, the same computation in PyTorch, and its inputs)
are fused into one scalar objective, sum_k sum(idiom_k(inputs_k) * R_k) with fixed random
R_k, so that each backend compiles one kernel for the whole family. The objective's value
and its gradient with respect to every float input are compared with PyTorch's autograd on
the same objective, and the numba kernel's with the interpreter's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from op_cases import Arg

from compiler import compile_grad


@dataclass(frozen=True)
class Idiom:
    name: str
    ours: Callable  # NumPy, traced by gradfuse
    theirs: Callable  # the same with torch tensors
    args: tuple[Arg, ...]
    distinct: bool = False  # inputs spread on a grid: no ties (sort, max)
    zeros: tuple = ()  # (argument, index) pairs set to exactly 0 (cumprod's zeros)


class Family:
    """The fused objective of a list of idioms, compiled by both backends once."""

    def __init__(self, idioms: list[Idiom], seed: int = 0) -> None:
        assert len({i.name for i in idioms}) == len(idioms)
        self.idioms = idioms
        rng = np.random.default_rng(seed)
        self.inputs: dict[str, np.ndarray] = {}
        self.plans = []
        for idiom in idioms:
            names = []
            for j, arg in enumerate(idiom.args):
                value = arg.sample(rng)
                if idiom.distinct:
                    n = value.size
                    value = ((rng.permutation(n) - n / 2) * 0.3 + 0.05).reshape(arg.shape)
                for argument, index in idiom.zeros:
                    if argument == j:
                        value[index] = 0.0
                names.append(f"{idiom.name}_{j}")
                self.inputs[names[-1]] = value
            out = np.asarray(idiom.ours(*(self.inputs[n] for n in names)))
            self.plans.append((idiom, names, rng.uniform(0.5, 1.5, out.shape)))
        self.numba = compile_grad(self.objective)
        self.interpreter = compile_grad(self.objective, backend="interpreter")

    def objective(self, x):
        total = 0.0
        for idiom, names, projection in self.plans:
            total = total + np.sum(idiom.ours(*(x[n] for n in names)) * projection)
        return total

    def torch_value_and_grad(self):
        import torch

        tensors = {n: torch.tensor(v, requires_grad=True) for n, v in self.inputs.items()}
        total = 0.0
        for idiom, names, projection in self.plans:
            out = idiom.theirs(*(tensors[n] for n in names))
            total = total + (out * torch.tensor(projection)).sum()
        total.backward()
        grads = {n: (t.grad.numpy() if t.grad is not None else np.zeros(t.shape))
                 for n, t in tensors.items()}
        return float(total.detach()), grads

    def check(self, backend: str) -> None:
        """Value and gradient of `backend`'s kernel against PyTorch, input by input."""
        compiled = self.numba if backend == "numba" else self.interpreter
        value, grads = compiled.value_and_grad(self.inputs)
        expected_value, expected = self.torch_value_and_grad()
        np.testing.assert_allclose(value, expected_value, rtol=1e-12)
        for name, g in grads.items():
            np.testing.assert_allclose(g, expected[name], rtol=1e-10, atol=1e-12,
                                       err_msg=f"gradient of {name}")

    def check_numpy_values(self) -> None:
        """Each idiom's value under plain NumPy against PyTorch (the idioms say the same)."""
        import torch

        for idiom, names, _ in self.plans:
            ours = np.asarray(idiom.ours(*(self.inputs[n] for n in names)))
            theirs = idiom.theirs(*(torch.tensor(self.inputs[n]) for n in names))
            np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-12, atol=1e-14,
                                       err_msg=idiom.name)


def lazy_family(idioms: list[Idiom], seed: int = 0) -> Callable[[], Family]:
    """A function giving the idioms' `Family`, built (and compiled) on first use only, so that
    collecting a test module compiles nothing."""
    return functools.cache(lambda: Family(idioms, seed))
