"""Rows of the value-and-gradient cases (W2, W3): one call gives the loss and its gradients.

Every implementation differentiates the same function of `args` with respect
to the first `len(wrt)` of them; each row's result is normalized to
{"loss", "grad <name>"} for the agreement check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from benchmarks import peers
from benchmarks.harness import (
    GRADFUSE,
    JAX,
    NUMBA,
    NUMPY,
    TORCH,
    TORCH_COMPILE,
    Config,
    Impl,
    Outcome,
    build_rows,
)


@dataclass
class Function:
    """One workload function in every implementation.

    `gradfuse` is a CompiledFunction (wrt= the leading arguments); `numba` and
    `numpy` return (loss, *gradients); `torch` and `jax` are the plain function
    written with their library, differentiated by it.
    """

    wrt: tuple[str, ...]
    gradfuse: Callable
    numba: Callable
    numpy: Callable
    torch: Callable
    jax: Callable

    def outcome(self, loss, grads) -> Outcome:
        return {"loss": np.asarray(loss),
                **{f"grad {name}": np.asarray(g) for name, g in zip(self.wrt, grads)}}

    def reference(self, args: list[np.ndarray]) -> Outcome:
        loss, *grads = self.numpy(*(a.astype(np.float64) for a in args))
        return self.outcome(loss, grads)

    def rows(self, args: list[np.ndarray], config: Config, notes: list[str]) -> list[Impl]:
        n = len(self.wrt)

        def from_gradfuse(result):
            loss, grads = result
            return self.outcome(loss, grads if isinstance(grads, tuple) else (grads,))

        def from_flat(result):
            return self.outcome(result[0], result[1:])

        def from_pair(result):
            return self.outcome(result[0], [np.asarray(g) for g in result[1]])

        def torch_row(compiled: bool) -> Impl:
            call = peers.torch_value_and_grad(self.torch, args, n, compiled)
            return Impl(TORCH_COMPILE if compiled else TORCH, call, from_pair, peer=True)

        rows = {
            GRADFUSE: lambda: Impl(GRADFUSE, lambda: self.gradfuse.value_and_grad(*args),
                                   from_gradfuse),
            NUMBA: lambda: Impl(NUMBA, lambda: self.numba(*args), from_flat),
            NUMPY: lambda: Impl(NUMPY, lambda: self.numpy(*args), from_flat),
            TORCH: lambda: torch_row(compiled=False),
            TORCH_COMPILE: lambda: torch_row(compiled=True),
            JAX: lambda: Impl(JAX, peers.jax_value_and_grad(self.jax, args, n), from_pair,
                              peer=True),
        }
        return build_rows(config, rows, notes)


@dataclass
class ParamsFunction:
    """A loss of a dict of parameters and data in every implementation (W8): `gradfuse` is
    a CompiledFunction of (params, *data), differentiated w.r.t. params; `numpy` returns
    (loss, grads dict); `torch` and `jax` are the plain function, differentiated by them."""

    gradfuse: Callable
    numpy: Callable
    torch: Callable
    jax: Callable

    @staticmethod
    def outcome(loss, grads: dict) -> Outcome:
        return {"loss": np.asarray(loss), **{f"grad {k}": np.asarray(g) for k, g in grads.items()}}

    def reference(self, params: dict, data: tuple) -> Outcome:
        as64 = {k: v.astype(np.float64) for k, v in params.items()}
        data64 = tuple(d.astype(np.float64) if d.dtype.kind == "f" else d for d in data)
        return self.outcome(*self.numpy(as64, *data64))

    def rows(self, params: dict, data: tuple, config: Config, notes: list[str]) -> list[Impl]:
        def from_pair(result):
            return self.outcome(*result)

        def torch_row(compiled: bool) -> Impl:
            call = peers.torch_params_value_and_grad(self.torch, params, data, compiled)
            return Impl(TORCH_COMPILE if compiled else TORCH, call, from_pair, peer=True)

        rows = {
            GRADFUSE: lambda: Impl(GRADFUSE, lambda: self.gradfuse.value_and_grad(params, *data),
                                   from_pair),
            NUMPY: lambda: Impl(NUMPY, lambda: self.numpy(params, *data), from_pair),
            TORCH: lambda: torch_row(compiled=False),
            TORCH_COMPILE: lambda: torch_row(compiled=True),
            JAX: lambda: Impl(JAX, peers.jax_params_value_and_grad(self.jax, params, data),
                              from_pair, peer=True),
        }
        return build_rows(config, rows, notes)
