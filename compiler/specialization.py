"""One traced signature of a compiled function and the kernels built from it, lazily per kind.

A `Specialization` holds the optimized forward graph of one argument signature; asked for a
kind ("forward", "value_and_grad", "forward_save"/"backward", "backward_into"), it derives
that graph (reverse mode, the forward/backward split), lowers it and has the backend build
its kernel once (compiler/api.py's `CompiledFunction` keeps one per signature).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from compiler import backend as backends
from compiler import pytree
from compiler.autodiff import connected_inputs, split, vjp_graph
from compiler.checks import CheckedKernel, with_checks
from compiler.custom import inline_calls
from compiler.gradients_into import backward_into_graph, compile_backward_into
from compiler.ir import Graph
from compiler.names import name_values
from compiler.passes import optimize
from compiler.recording import RecordedKernels
from compiler.specialize import Signature
from compiler.timings import CompileReport, PhaseTimes, kernel_report
from compiler.verify import verify

KINDS = ("forward", "value_and_grad", "forward_save", "backward", "backward_into")


@dataclass
class Specialization:
    """The traced graph of one signature and the kernels built from it so far."""

    signature: Signature
    graph: Graph  # optimized forward graph
    out_tree: pytree.TreeDef
    wrt_leaves: list[int]
    n_differentiated: int  # leading outputs that are differentiated (the rest is aux)
    backend: backends.Backend
    # The compiled function's lock: graphs and kernels are built once, whichever threads ask.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    graphs: dict[str, Graph] = field(default_factory=dict)
    kernels: dict[str, backends.Kernel] = field(default_factory=dict)
    # Per tuple of leaf positions that hold Tensors (and checked or not): forward_save and
    # backward, recorded.
    recorded: dict[tuple, RecordedKernels] = field(default_factory=dict)
    # Compile time (compiler/timings.py): "trace", and per kind the work on its graphs. The
    # split made for forward_save or backward counts for the one asked for first.
    times: dict[str, PhaseTimes] = field(default_factory=dict)
    into_plan: list | None = None  # where backward_into stores each gradient
    _connected: list[int] | None = field(default=None, repr=False)

    def connected_wrt(self) -> list[int]:
        """The entries of `wrt_leaves` that the differentiated outputs depend on (a gradient
        flows from them); a Tensor not among them is, to PyTorch, not in the graph."""
        if self._connected is None:
            self._connected = connected_inputs(self.graph, self.wrt_leaves,
                                               self.n_differentiated)
        return self._connected

    def outputs_of_wrt(self) -> list[frozenset[int]] | None:
        """Per entry of `wrt_leaves`, the differentiated outputs that depend on it; None when
        each depends on every one (one output, say). A backward pass that reaches some outputs
        only gives no gradient to an input that none of them depends on, as PyTorch, whose
        graph would not reach it."""
        n = self.n_differentiated
        if n <= 1:
            return None
        by_output = [set(connected_inputs(self.graph, self.wrt_leaves, outputs=[k]))
                     for k in range(n)]
        outputs = [frozenset(k for k in range(n) if i in by_output[k])
                   for i in self.wrt_leaves]
        return None if all(len(o) == n for o in outputs) else outputs

    def times_of(self, what: str) -> PhaseTimes:
        return self.times.setdefault(what, PhaseTimes())

    def graph_of(self, kind: str) -> Graph:
        graph = self.graphs.get(kind)
        if graph is None:
            with self.lock:
                if kind not in self.graphs:
                    self.graphs[kind] = self._build(kind)
                graph = self.graphs[kind]
        return graph

    def _build(self, kind: str) -> Graph:
        """Kernel graphs: differentiated first (custom rules apply), then custom calls inlined."""
        clock = self.times_of(kind)
        if kind == "forward":
            with clock.phase("passes"):
                return _lowered(self.graph)
        seed = "ones" if kind == "value_and_grad" else "input"
        with clock.phase("autodiff"):
            joint = vjp_graph(self.graph, self.wrt_leaves, seed, self.n_differentiated)
        with clock.phase("passes"):
            joint = optimize(joint)
            if kind == "value_and_grad":
                return _lowered(joint)
            name_values(joint)  # before the split: a residual keeps its name on both sides
        with clock.phase("autodiff"):
            parts = split(joint, len(self.graph.inputs), len(self.graph.outputs))
        self.residual_sources = parts.residual_sources
        with clock.phase("passes"):
            self.graphs["forward_save"] = _lowered(parts.forward)
            self.graphs["backward"] = _lowered(parts.backward)
        return self.graphs[kind]

    def kernel(self, kind: str) -> backends.Kernel:
        kernel = self.kernels.get(kind)
        if kernel is None:
            with self.lock:
                if kind not in self.kernels:
                    self.kernels[kind] = self.backend.compile(self.graph_of(kind), kind)
                kernel = self.kernels[kind]
        return kernel

    def checked_kernel(self, kind: str) -> CheckedKernel:
        """The kernel of `kind` with a finite check after every op (anomaly mode)."""
        key = f"{kind}+checked"
        kernel = self.kernels.get(key)
        if kernel is None:
            with self.lock:
                if key not in self.kernels:
                    graph, sites = with_checks(self.graph_of(kind))
                    self.kernels[key] = CheckedKernel(self.backend.compile(graph, kind), sites,
                                                      kind, self.graph.name)
                kernel = self.kernels[key]
        return kernel

    def into_kernel(self) -> tuple[backends.Kernel, list]:
        """The backward kernel that stores gradients into arrays it is given, and where each
        gradient goes (compiler/recording.py); numba backend only."""
        kernel = self.kernels.get("backward_into")
        if kernel is None:
            with self.lock:
                if "backward_into" not in self.kernels:
                    with self.times_of("backward_into").phase("passes"):
                        into = backward_into_graph(self.graph_of("backward"))
                    kernel, self.into_plan = compile_backward_into(into)
                    self.kernels["backward_into"] = kernel
                kernel = self.kernels["backward_into"]
        return kernel, self.into_plan

    def kernel_for(self, kind: str, checked: bool) -> backends.Kernel:
        return self.checked_kernel(kind) if checked else self.kernel(kind)

    def recorded_kernels(self, name: str, tensor_positions: tuple[int, ...],
                         checked: bool = False) -> RecordedKernels:
        """forward_save and backward linked for calls with Tensors at `tensor_positions`."""
        key = (tensor_positions, checked)
        recorded = self.recorded.get(key)
        if recorded is None:
            with self.lock:
                if key not in self.recorded:
                    self.recorded[key] = RecordedKernels(name, self, tensor_positions, checked)
                recorded = self.recorded[key]
        return recorded

    def compile_report(self, name: str) -> CompileReport:
        """Where this specialization's compile time went, per kernel built so far."""
        kernels = {}
        for kind, kernel in self.kernels.items():
            build = getattr(kernel, "build", None)  # a numba kernel's KernelBuild
            if build is None:
                kernels[kind] = kernel_report(kind, [self.times_of(kind)])
            else:
                kernels[kind] = kernel_report(kind, [self.times_of(kind), build.times],
                                              build.lines, build.compiles.values())
        return CompileReport(name, kernel_report("trace", [self.times_of("trace")]), kernels)


def verified(graph: Graph) -> Graph:
    verify(graph)
    return graph


def _lowered(graph: Graph) -> Graph:
    """A graph ready for a backend: custom calls inlined, simplified, verified, and every
    value named (compiler/names.py: the IR and the generated code call it the same)."""
    graph = verified(optimize(inline_calls(graph)))
    name_values(graph)
    return graph
