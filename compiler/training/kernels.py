"""The in-place kernels of a train step: one data kind's compiled module (`Kernels`), and
calling a kernel that updates Parameters in place (`run_updating`), which then bumps their
version counters (`updated`)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler.errors import KernelShapeError
from compiler.ir import Graph, Sym
from compiler.jit import NumbaKernel
from compiler.packing import Packing
from compiler.timings import CompileReport, kernel_report
from runtime import Parameter
from runtime.optim import Optimizer

_data = operator.attrgetter("data")


@dataclass
class Kernels:
    """One data kind's module: the step that updates `arrays` in place, and its `fit` loop.

    Both are compiled on first use only (a step compiles in seconds, and most
    programs call one of them).
    """

    kernel: NumbaKernel
    params: list[Parameter]
    state: dict  # the optimizer's state table (load_state_dict replaces it)
    arrays: tuple[np.ndarray, ...]  # the parameters' arrays, then optimizer-state arrays
    hypers: np.ndarray
    fits_batches: bool  # whether the module has the minibatch loop (a symbolic batch axis)
    arguments: tuple  # what the kernels take before the data (stacks: compiler/packing.py)
    packing: Packing | None = None
    step: Any = None
    fit: Any = None
    spec: Any = None  # the traced step function's Specialization (its compile times)
    # The state entries the kernels update, per Parameter (None: they read no state)
    held: list[dict[str, np.ndarray]] | None = None
    # Whether the step refuses a batch of 1 row (`refuses_one_row`): it has kernels of its own
    refuses_one_row: bool = False
    # The leading dim of each data input of the kernels (None for a number): see `takes`
    batch_dims: tuple = ()

    def __post_init__(self) -> None:
        self.replacements = Parameter.data_replacements
        self.state_changes = Optimizer.state_changes

    def takes(self, data: tuple) -> bool:
        """Whether kernels traced with symbolic batch axes answer `data`: the arrays whose
        leading axes share a symbol have one size (x of 7 rows with y of 1 row, which NumPy
        broadcasts, has kernels of its own, as a CompiledFunction gives it), and a batch of 1
        row only where the trace did not take the size for another (`refuses_one_row`)."""
        sizes: dict[Sym, int] = {}
        for dim, d in zip(self.batch_dims, data):
            if isinstance(dim, Sym):
                n = np.shape(d)[0]
                if sizes.setdefault(dim, n) != n or (n == 1 and dim.not_one):
                    return False
        return True

    def current(self, optimizer: Optimizer) -> bool:
        """Whether the Parameters and the optimizer still hold the arrays the kernels update:
        a state entry replaced, or a Parameter's state deleted (`opt.state.clear()` to reset
        the moments), must not leave the kernels updating arrays nobody else sees."""
        if self.state is not optimizer.state:
            return False
        if self.replacements == Parameter.data_replacements \
                and self.state_changes == Optimizer.state_changes:
            return True
        if not all(map(operator.is_, self.arrays, map(_data, self.params))):
            return False
        if self.held is not None and not all(map(_holds, map(self.state.get, self.params),
                                                 self.held)):
            return False
        self.replacements = Parameter.data_replacements
        self.state_changes = Optimizer.state_changes
        return True

    def compile_report(self, name: str) -> CompileReport:
        """The trace, then a row per function compiled from the module ("step" is its main
        function, "fit" the minibatch loop); the module's passes and code generation count
        for the first one compiled."""
        build = self.kernel.build
        shared = [self.spec.times_of("forward"), build.times]
        rows = {}
        for function, compiled in build.compiles.items():
            kind = "step" if function == self.kernel.dispatcher.__name__ else "fit"
            rows[kind] = kernel_report(kind, shared, build.lines, [compiled])
            shared = []
        return CompileReport(name, kernel_report("trace", [self.spec.times_of("trace")]), rows)

    def compile(self, name: str, data: tuple, *extra) -> Any:
        """Function `name` of the module, compiled for these arguments (`extra`: a loop's own)
        and the kernel's constant arrays, which it passes last; after that, arrays of another
        dtype or rank raise TypeError instead of compiling again."""
        constants = self.kernel._constants
        entry = self.kernel.entry(name, self.arguments + tuple(data) + extra + tuple(constants))
        if constants:
            return lambda *args: entry(*args, *constants)
        return entry


def held_state(optimizer: Optimizer, params: list[Parameter]) -> list[dict[str, np.ndarray]]:
    """The state entries of `params` as they are now (for `Kernels.held`)."""
    return [dict(optimizer.state[p]) for p in params]


def _holds(state: dict | None, held: dict[str, np.ndarray]) -> bool:
    return state is not None and len(state) == len(held) \
        and all(state.get(key) is array for key, array in held.items())


def data_kind(data: tuple) -> tuple:
    """What kernels with symbolic batch axes are kept by: each data array's dtype, rank and
    trailing shape (the rank too: a 0-d number and a vector have the same trailing shape)."""
    return tuple([(d.dtype.num, d.ndim, d.shape[1:]) for d in data])


def batch_dims(graph: Graph, first_data: int) -> tuple:
    """The leading dim of each data input of `graph` (its inputs from `first_data` on)."""
    return tuple(node.shape[0] if node.shape else None for node in graph.inputs[first_data:])


def refuses_one_row(graph: Graph, first_data: int) -> bool:
    """Whether kernels of `graph` refuse data (its inputs from `first_data` on) with a leading
    axis of 1: the trace took a symbolic batch for another size (`x.squeeze()` kept it;
    compiler/codegen/emit.py `_check_shapes`). Such data has kernels of its own, traced with
    the axis static, as CompiledFunction gives it (compiler/specialize.py)."""
    return any(node.shape and isinstance(node.shape[0], Sym) and node.shape[0].not_one
               for node in graph.inputs[first_data:])


def run_updating(params: list[Parameter], kernel: Callable, *args) -> Any:
    """`kernel(*args)`, which updates `params` in place, then their version counters.

    A Ctrl-C during the kernel is raised only as it returns (compiled code does not stop
    for signals), after every array was written: the counters are bumped then too. A
    TypeError or KernelShapeError comes before the kernel touches memory (numba's
    dispatcher, the kernel's shape check): nothing was written, nothing is counted.
    """
    try:
        result = kernel(*args)
    except (TypeError, KernelShapeError):
        raise
    except BaseException:
        updated(params)
        raise
    updated(params)
    return result


def updated(params: list[Parameter]) -> None:
    """Bump the version counters of Parameters a kernel updated in place, so that a backward
    through a graph recorded before refuses to read the new values (see runtime.tensor)."""
    for p in params:
        p._version += 1
