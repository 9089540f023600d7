"""`compile_grad`: the user's entry point, from a NumPy function to value, gradient and source.

A `CompiledFunction` keeps one `Specialization` (compiler/specialization.py) per
argument signature (tree structure, dtypes, static shapes; batch dims symbolic) and
set of differentiated leaves. Each specialization traces the function once and builds
kernels lazily, per kind:

- "forward": outputs only (plain calls, and calls under `no_grad`);
- "value_and_grad": outputs and gradients in one fused kernel (seeded with 1);
- "forward_save" / "backward": the split behind the runtime's `backward()`:
  outputs plus residuals, then residuals plus output cotangents to gradients
  (`RecordedKernels` runs the first and hands `runtime.record` the second).
"""

from __future__ import annotations

import copy
import functools
import inspect
import os
import pickle
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from compiler import backend as backends
from compiler import pytree
from compiler.arguments import CallArguments
from compiler.autodiff import vjp_graph
from compiler.captured import Captured
from compiler.errors import ArgumentError, TraceError
from compiler.fastpath import REFUSED, CallPattern, FastCall, TensorCall, UntrackedCall
from compiler.gradients_into import backward_into_graph
from compiler.ir import Graph, rebuild
from compiler.names import name_values
from compiler.ops.registry import TRACES
from compiler.passes import optimize
from compiler.results import plain, unflatten_grads, value_and_grad_packer, value_packer, wrt_items
from compiler.roll import roll
from compiler.specialization import KINDS, Specialization, verified
from compiler.specialize import Signature, is_number, positions_of, scalar_candidates, signature_of
from compiler.symdim import Concretize, ConcretizeScalars
from compiler.timings import CompileReport, PhaseTimes
from compiler.tracer import current_builder
from compiler.tracing import trace
from runtime import Tensor, is_grad_enabled
from runtime.anomaly_mode import _anomaly

# Call patterns whose fast paths a function keeps besides the last one's, per kind.
EARLIER_PATTERNS = 3


def _name_of(fn: Callable) -> str:
    """The name of what `fn` calls: a partial's function, a callable object's class."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__name__", type(fn).__name__)


def _setting(name: str, doc: str, checked: Callable[[Any, CompiledFunction], Any]) -> property:
    """A compiled function's setting `name` (kept in `_name`): assigning it checks the value and
    drops the traces and fast paths, which were made for the old value."""
    private = "_" + name

    def get(self: CompiledFunction) -> Any:
        return getattr(self, private)

    def assign(self: CompiledFunction, value: Any) -> None:
        value = checked(value, self)
        with self._lock:
            setattr(self, private, value)
            self._drop_traces()

    return property(get, assign, doc=doc)


class CompiledFunction:
    """A NumPy function compiled to forward and backward kernels; see `compile_grad`."""

    def __init__(self, fn: Callable, wrt: int | str | tuple = 0, has_aux: bool = False,
                 backend: str | None = None, check_finite: bool = False) -> None:
        # `@compile_grad` above `@staticmethod` / `@classmethod`: the function, bound as such
        self._binds = "instance"
        if isinstance(fn, staticmethod | classmethod):
            self._binds = "nothing" if isinstance(fn, staticmethod) else "class"
            fn = fn.__func__
        functools.update_wrapper(self, fn)
        if not hasattr(self, "__name__"):  # functools.partial(loss, ...), a callable object
            self.__name__ = self.__qualname__ = _name_of(fn)
        self.fn = fn
        # The name of generated functions and of the result variable (`loss = ...`).
        self._graph_name = self.__name__ if self.__name__.isidentifier() else "f"
        self._wrt = _checked_wrt(wrt, self.__name__)
        self._has_aux = bool(has_aux)
        # Kernels with a finite check after every op, always (else only in anomaly mode).
        self._check_finite = bool(check_finite)
        self.backend = backends.get(backend or os.environ.get("GRADFUSE_BACKEND", "numba"))
        self._signature = inspect.signature(fn)
        # Held while tracing and building kernels, so that concurrent first calls do that
        # once; calls that find what they need (the fast paths above all) never take it.
        self._lock = threading.RLock()
        self._specs: dict[tuple, Specialization] = {}
        self._static_positions: set[tuple[int, int]] = set()
        # Leaves whose Python numbers the code needs as values (`if training:`): static.
        self._static_scalars: set[int] = set()
        self._static_values_seen: dict[str, set] = {}  # by argument: the values traced
        self._last: Specialization | None = None
        self._fast: dict[str, FastCall] = {}  # per kind: the last plain-array call's kernel
        self._tensor_call: TensorCall | None = None  # the last call recorded for backward
        # Per kind ("forward", "value_and_grad", "tensor", "untracked"): the fast paths of
        # the few call patterns before the last, newest first (`_earlier_path`).
        self._earlier: dict[str, list] = {}
        # What the function reads from its globals, closure and `self`, as when the traces
        # were made (compiler/captured.py); `_watch` compares it on every call, if it reads
        # anything, and a change drops every trace and kernel.
        self._captured: Captured | None = None
        self._watch: Callable[[], None] | None = None
        self._forgotten = 0

    # --- public API --------------------------------------------------------------------
    # What the traces and kernels were made for: assigned, it answers the next call.
    wrt = _setting("wrt", "The argument(s) gradients are taken with respect to.",
                   lambda value, f: _checked_wrt(value, f.__name__))
    has_aux = _setting("has_aux", "Whether the function returns (loss, aux).",
                       lambda value, f: bool(value))
    check_finite = _setting("check_finite", "Whether kernels check every op for NaN and Inf.",
                            lambda value, f: bool(value))

    def __get__(self, instance, owner=None):
        """`@compile_grad` on a method: `instance.f` is compiled for that instance, with
        `self` bound and not traced (compiler/methods.py); over `@classmethod`, the class is
        bound as `cls`; over `@staticmethod`, nothing is."""
        if self._binds == "class":
            instance = owner if owner is not None else type(instance)
        if instance is None or self._binds == "nothing":
            return self
        from compiler.methods import bind_method

        return bind_method(self, instance)

    def __call__(self, *args, **kwargs):
        """The function's value. With runtime Tensors among the arguments, the results are
        Tensors, and `backward()` on them reaches every Tensor that requires grad."""
        if self._watch is not None:
            self._watch()
        anomaly = _anomaly.enabled  # fast paths hold the kernels without anomaly mode's checks
        tensor_call = self._tensor_call
        if tensor_call is not None and not anomaly and not TRACES.builders:  # not tracing
            value = tensor_call.run(args, kwargs)
            if value is not REFUSED:
                self._last = tensor_call.spec
                return value
        fast = self._fast.get("forward")
        if fast is not None and not anomaly:
            value = fast.run(args, kwargs)
            if value is not REFUSED:
                self._last = fast.spec
                return value
        untracked = self._fast.get("untracked")  # Tensors, recording nothing (no_grad)
        if untracked is not None and not anomaly and not TRACES.builders:
            value = untracked.run(args, kwargs)
            if value is not REFUSED:
                self._last = untracked.spec
                return value
        if self._earlier and not anomaly:
            kinds = ("forward",) if TRACES.builders else ("tensor", "forward", "untracked")
            for kind in kinds:
                value = self._earlier_path(kind, args, kwargs)
                if value is not REFUSED:
                    return value
        if current_builder() is not None:  # called while tracing another function: inline it
            return self.fn(*args, **kwargs)
        call = self._arguments(args, kwargs)
        tensors = [leaf if isinstance(leaf, Tensor) else None for leaf in call.raw]
        if not any(t is not None for t in tensors):
            spec = self._specialize(call, self._wrt_leaf_indices(call, strict=False))
            kernel, value = self._kernel(spec, "forward"), value_packer(spec)
            if FastCall.eligible(call, args, kwargs, kernel) and not anomaly:
                pattern = CallPattern(call, len(args), tuple(kwargs), spec.signature.static)
                self._newest("forward", FastCall(spec, kernel, value, pattern))
            return value(kernel.call(*call.leaves))
        return self._call_recorded(call, tensors, args, kwargs)

    def value_and_grad(self, *args, **kwargs):
        """(value, gradient) with the gradient shaped like the `wrt` argument(s).

        With `has_aux=True` the function returns `(value, aux)` and this returns
        `((value, aux), gradient)`, as JAX does."""
        if self._watch is not None:
            self._watch()
        anomaly = _anomaly.enabled
        fast = self._fast.get("value_and_grad")
        if fast is not None and not anomaly:
            value_and_grads = fast.run(args, kwargs)
            if value_and_grads is not REFUSED:
                self._last = fast.spec
                return value_and_grads
            value_and_grads = self._earlier_path("value_and_grad", args, kwargs)
            if value_and_grads is not REFUSED:
                return value_and_grads
        if current_builder() is not None:
            return self._inline_value_and_grad(args, kwargs)
        call = self._arguments(args, kwargs)
        spec = self._specialize(call, self._wrt_leaf_indices(call, strict=True))
        self._require_scalar(spec.graph, spec.n_differentiated)
        kernel = self._kernel(spec, "value_and_grad")
        if FastCall.eligible(call, args, kwargs, kernel) and not anomaly:
            self._newest("value_and_grad", FastCall(
                spec, kernel, value_and_grad_packer(spec, call, self.wrt),
                CallPattern(call, len(args), tuple(kwargs), spec.signature.static)))
        results = [plain(r) for r in kernel(call.leaves)]
        n_out = len(spec.graph.outputs)
        value = pytree.unflatten(spec.out_tree, results[:n_out])
        return value, unflatten_grads(call, results[n_out:], self.wrt)

    def grad(self, *args, **kwargs):
        """The gradient of the (scalar) result with respect to the `wrt` argument(s)
        (with `has_aux=True`: `(gradient, aux)`)."""
        value, grads = self.value_and_grad(*args, **kwargs)
        return (grads, value[1]) if self.has_aux else grads

    def source(self, kind: str = "backward") -> str:
        """Generated source of a kernel of the last specialization called: "forward",
        "backward", "value_and_grad" or "forward_save" (the kernel with finite checks when
        that is what runs: check_finite=True, or anomaly mode), or "backward_into" (the
        backward that `backward()` on Parameters runs: it stores gradients into `.grad`)."""
        spec = self._require_last(kind)
        if kind == "backward_into":
            return spec.into_kernel()[0].source
        return self._kernel(spec, kind).source

    def ir(self, kind: str = "forward") -> str:
        """The IR of a graph of the last specialization called, as text."""
        spec = self._require_last(kind)
        if kind == "backward_into":
            return str(backward_into_graph(spec.graph_of("backward"))[0])
        return str(spec.graph_of(kind))

    def compile_report(self) -> CompileReport:
        """Where the compile time of the last specialization called went: tracing, then per
        kernel kind built so far autodiff, passes, code generation and numba (or loading from
        numba's cache), with the lines of generated source. `print` it for a table."""
        if self._last is None:
            raise RuntimeError(f"{self.__name__} has not been called yet: call it (or .grad) "
                               "once so that there is a compilation to report")
        return self._last.compile_report(self.__name__)

    def specialize(self, *args, **kwargs) -> Specialization:
        """Trace (or find) the specialization that `.grad(*args)` uses, without running it."""
        if self._watch is not None:
            self._watch()
        call = self._arguments(args, kwargs)
        return self._specialize(call, self._wrt_leaf_indices(call, strict=False))

    # --- copies and pickles -------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        """What compile_grad was given besides the function, for a copy or an unpickling to
        compile it again."""
        return {"wrt": self.wrt, "has_aux": self.has_aux, "backend": self.backend.name,
                "check_finite": self.check_finite}

    def __copy__(self) -> CompiledFunction:
        """An independent compiled function of the same function and settings (its traces and
        kernels its own: assigning `wrt` to one leaves the other alone); kernels come from the
        on-disk cache."""
        return _recompiled(self.fn, self._binds, self._settings())

    def __deepcopy__(self, memo: dict[int, Any]) -> CompiledFunction:
        """As `copy.copy`, of the function deep-copied as Python copies it: a function is kept,
        a bound method (`compile_grad(model.loss)`) is bound to the copy of its instance."""
        if id(self) not in memo:
            memo[id(self)] = _recompiled(copy.deepcopy(self.fn, memo), self._binds,
                                         self._settings())
        return memo[id(self)]

    def __reduce__(self) -> str | tuple:
        """Pickled as Python pickles a function: by its module and name where that is where it
        lives (`@compile_grad` at a module's top level, or on a class there), so another
        process (multiprocessing's spawn) finds it by importing its module; else as its
        function (found by name the same way) and settings, compiled again on loading."""
        if _found_by_name(self) is self:
            return self.__qualname__
        fn = self.fn
        where = getattr(fn, "__qualname__", "")
        if "<locals>" in where or "<lambda>" in where:
            raise pickle.PicklingError(
                f"cannot pickle the compiled function {self.__name__}: its function "
                f"{where} is defined inside another function (or is a lambda), and pickle "
                "finds functions by their module and name; define it at a module's top "
                "level (where multiprocessing's workers can import it)")
        holder = _found_by_name(fn)
        if isinstance(holder, CompiledFunction) and holder.fn is fn:
            fn = holder  # `@compile_grad def loss` compiled again: its name finds the first
        return _recompiled, (fn, self._binds, self._settings())

    # --- calls with runtime tensors ------------------------------------------------------
    def _call_recorded(self, call: CallArguments, tensors: list[Tensor | None], args: tuple,
                       kwargs: dict):
        """Run forward and hand the runtime a backward callable over the saved residuals;
        remember how, for the next call with arguments like these (`TensorCall`)."""
        needs = [i for i, t in enumerate(tensors) if t is not None and t.requires_grad]
        spec = None
        if needs and is_grad_enabled():
            spec = self._specialize(call, needs)
            # As in PyTorch, a Tensor the results do not depend on is not in the graph: no
            # gradient (not even zeros) reaches its `.grad`, so an optimizer skips it.
            connected = spec.connected_wrt()
            if connected != needs:
                spec = self._specialize(call, connected) if connected else None
        if spec is None:  # nothing to save for backward
            spec = self._specialize(call, self._wrt_leaf_indices(call, strict=False))
            kernel = self._kernel(spec, "forward")
            if UntrackedCall.eligible(call, args, kwargs, kernel) and not _anomaly.enabled:
                pattern = CallPattern(call, len(args), tuple(kwargs), spec.signature.static)
                self._newest("untracked", UntrackedCall(spec, kernel, pattern))
            outputs = kernel(call.leaves)
            return pytree.unflatten(spec.out_tree, [Tensor(o) for o in outputs])
        positions = tuple(i for i, t in enumerate(tensors) if t is not None)
        checked = self.check_finite or _anomaly.enabled
        recorded = spec.recorded_kernels(self.__name__, positions, checked)
        if TensorCall.eligible(call, args, kwargs, spec.kernel_for("forward_save", checked)) \
                and not _anomaly.enabled:
            pattern = CallPattern(call, len(args), tuple(kwargs), spec.signature.static)
            self._newest("tensor", TensorCall(spec, pattern, call.raw, recorded))
        return recorded.call(call.leaves, call.raw)

    # --- internals ---------------------------------------------------------------------
    def _kernel(self, spec: Specialization, kind: str) -> backends.Kernel:
        """The kernel of `kind` to run now: with finite checks if this function always has
        them (check_finite=True) or anomaly mode is on (compiler/checks.py)."""
        return spec.kernel_for(kind, self.check_finite or _anomaly.enabled)

    def _arguments(self, args, kwargs) -> CallArguments:
        return CallArguments(self.__name__, self._signature, args, kwargs)

    def _require_last(self, kind: str) -> Specialization:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if self._last is None:
            raise RuntimeError(f"{self.__name__} has not been called yet: call it (or .grad) "
                               "once so that there is a specialization to show")
        return self._last

    def _front(self, kind: str) -> FastCall | TensorCall | None:
        """The fast path tried first for calls of `kind` (the Tensor one has its own field,
        read on every call)."""
        return self._tensor_call if kind == "tensor" else self._fast.get(kind)

    def _set_front(self, kind: str, path: FastCall | TensorCall) -> None:
        if kind == "tensor":
            self._tensor_call = path
        else:
            self._fast[kind] = path

    def _newest(self, kind: str, path: FastCall | TensorCall) -> None:
        """Make `path` the fast path tried first for calls of `kind`; the one it replaces
        becomes the newest of the earlier ones."""
        replaced = self._front(kind)
        if replaced is not None:
            earlier = self._earlier.setdefault(kind, [])
            earlier.insert(0, replaced)
            del earlier[EARLIER_PATTERNS:]
        self._set_front(kind, path)

    def _earlier_path(self, kind: str, args: tuple, kwargs: dict) -> Any:
        """The value of the call by the fast path of an earlier call pattern of `kind` that
        takes it (which becomes the one tried first again), else REFUSED. A caller that
        alternates patterns (a training loop's dict of Parameters, an evaluation's keyword
        arguments) would otherwise go the general way at every switch, looking up its trace
        and building a fast path again: about 200 us on W1."""
        earlier = self._earlier.get(kind)
        if not earlier:
            return REFUSED
        for k, path in enumerate(earlier):
            value = path.run(args, kwargs)
            if value is not REFUSED:
                earlier[k] = self._front(kind)  # the two trade places
                self._set_front(kind, path)
                self._last = path.spec
                return value
        return REFUSED

    def _specialize(self, call: CallArguments, wrt_leaves: list[int]) -> Specialization:
        with self._lock:
            if self._captured is None:  # the first trace: what it reads from outside, now
                self._captured = Captured(self.fn)
                self._captured.take()
                if self._captured.reads:
                    self._watch = self._captured.watcher(self._check_captured)
            spec = self._find_or_trace(call, wrt_leaves)
        self._last = spec
        return spec

    def _drop_traces(self) -> None:
        """Forget every trace, kernel and fast path (held under `_lock`): the next call traces
        again, finding its kernels in numba's on-disk cache where they are the same."""
        self._specs.clear()
        self._fast = {}
        self._tensor_call = None
        self._earlier = {}
        self._last = None
        self.__dict__.pop("_bound_methods", None)

    def _check_captured(self) -> None:
        """Drop every trace and kernel if a global, closure variable or attribute of `self`
        the function reads holds something else than when they were made: they baked the old
        value in (a rebound learning rate, a replaced mask, another activation function)."""
        if self._captured.unchanged():
            return
        with self._lock:  # another thread may have renewed them already: then nothing changed
            self._captured, what = self._captured.renewed()
            # the values noted anew (an equal number rebound, or a change), checked from now
            self._watch = self._captured.watcher(self._check_captured) \
                if self._captured.reads else None
            if what is None:
                return
            self._drop_traces()
            self._forgotten += 1
            if self._forgotten == 8:
                warnings.warn(
                    f"{self.__name__} has been traced and compiled again 8 times because what "
                    f"it reads from outside its arguments changed (last: {what}); pass a value "
                    "that changes from call to call as an argument", stacklevel=3)

    def _find_or_trace(self, call: CallArguments, wrt_leaves: list[int]) -> Specialization:
        tracing = PhaseTimes()  # every trace of this call, those a Concretize cut short too
        while True:
            signature = signature_of(call.leaves, set(wrt_leaves), self._static_positions,
                                     self._dim_names(call), call.raw, self._static_scalars)
            key = (call.treedef, tuple(call.names), signature, tuple(wrt_leaves))
            spec = self._specs.get(key)
            if spec is not None:
                return spec
            try:
                spec = self._trace(call, signature, wrt_leaves, tracing)
            except Concretize as c:
                self._static_positions |= positions_of(signature, c.sym)
                continue
            except ConcretizeScalars as c:
                self._static_scalars |= c.leaves
                continue
            self._specs[key] = spec
            self._count_static_values(call, signature)
            return spec

    def _count_static_values(self, call: CallArguments, signature: Signature) -> None:
        """Warn, once per argument, when a static number has been traced for 8 values: each
        value compiles anew (a learning rate that decays, read by an `if`)."""
        names = call.leaf_names()
        for i, cls, key, _ in signature.static:
            if cls is bool or cls is np.bool_:
                continue
            seen = self._static_values_seen.setdefault(names[i], set())
            seen.add((cls, key))
            if len(seen) == 8:
                warnings.warn(
                    f"{self.__name__} has been traced and compiled for 8 values of its argument "
                    f"'{names[i]}', which the code uses as a Python number (an `if`, a range, "
                    "an index or a shape): each new value compiles again. If it changes from "
                    "call to call, compute with it instead (np.where(lam > 0, a, b) in place "
                    "of an `if`)", stacklevel=4)

    def _dim_names(self, call: CallArguments) -> dict[int, str]:
        """By leaf: the name the user gave its leading axis (a DSL annotation), if any."""
        params = getattr(self.fn, "dsl_params", None)
        if not params:
            return {}
        names = {}
        for i, leaf_name in enumerate(call.leaf_names()):
            _, dims = params.get(leaf_name, (None, None))
            if dims and isinstance(dims[0], str):
                names[i] = dims[0]
        return names

    def _wrt_leaf_indices(self, call: CallArguments, strict: bool) -> list[int]:
        """Leaves of the `wrt` arguments; `strict` refuses non-float ones (for gradients),
        otherwise they are skipped (a plain call only uses this to keep shapes static)."""
        indices = []
        for item in wrt_items(self.wrt):
            if not strict and isinstance(item, int) and item >= len(call.names):
                continue
            slot = call.slot(item)
            for i in call.leaf_range(slot):
                if np.issubdtype(call.leaves[i].dtype, np.floating):
                    indices.append(i)
                elif strict:
                    raise ArgumentError(
                        f"cannot differentiate {self.__name__} with respect to "
                        f"'{call.names[slot]}': it holds {call.leaves[i].dtype} values, and only "
                        "float arrays and scalars have gradients (pass floats, or choose "
                        "another argument with wrt=)")
        return indices

    def _trace(self, call: CallArguments, signature: Signature, wrt_leaves,
               clock: PhaseTimes) -> Specialization:
        with clock.phase("trace"):
            graph, out_tree = trace(self.fn, list(signature.types), call.leaf_names(),
                                    call.rebuild, signature.sym_sizes(call.leaves),
                                    name=self._graph_name, weak=signature.weak,
                                    static=signature.static_values(),
                                    scalars=scalar_candidates(call.raw, set(wrt_leaves),
                                                              signature))
        with clock.phase("passes"):
            graph = verified(optimize(roll(graph)))
            name_values(graph)  # once: every kernel of this specialization shares these names
        return Specialization(signature, graph, out_tree, wrt_leaves,
                              self._n_differentiated(out_tree), self.backend, self._lock,
                              times={"trace": clock})

    def _n_differentiated(self, out_tree: pytree.TreeDef) -> int:
        if not self.has_aux:
            return out_tree.num_leaves
        if out_tree.kind not in ("tuple", "list") or len(out_tree.children) != 2:
            raise TraceError(f"{self.__name__} has has_aux=True, so it must return a pair "
                             "(value, aux)")
        return out_tree.children[0].num_leaves

    def _inline_value_and_grad(self, args, kwargs):
        """value_and_grad inside another trace: the joint graph is spliced into it, so it can
        be differentiated again (a second derivative is the gradient of a gradient)."""
        outer = current_builder()
        call = self._arguments(args, kwargs)
        leaves = [outer.wrap(outer.lift(leaf, [])) for leaf in call.leaves]
        wrt_leaves = self._wrt_leaf_indices(call, strict=True)
        # Numbers passed as themselves (not traced values of the outer function) stay numbers,
        # as in a plain call: `range(n)`, `if training:` work (the graph is inlined, so
        # nothing is reused for other values).
        static = {i: leaf for i, leaf in enumerate(call.raw)
                  if is_number(leaf) and i not in wrt_leaves}
        graph, out_tree = trace(self.fn, [t.type for t in leaves], call.leaf_names(),
                                call.rebuild, outer.sym_hints, name=self._graph_name,
                                static=static)
        n_diff = self._n_differentiated(out_tree)
        self._require_scalar(graph, n_diff)
        joint = optimize(vjp_graph(roll(graph), wrt_leaves, "ones", n_diff))
        spliced = rebuild(joint.outputs, {i.id: t.node for i, t in zip(graph.inputs, leaves)})
        results = [outer.wrap(node) for node in spliced]
        n_out = len(graph.outputs)
        return (pytree.unflatten(out_tree, results[:n_out]),
                unflatten_grads(call, results[n_out:], self.wrt))

    def _require_scalar(self, graph: Graph, n_differentiated: int) -> None:
        outs = graph.outputs[:n_differentiated]
        if len(outs) != 1 or outs[0].type.shape != ():
            shapes = ", ".join(str(o.type) for o in outs)
            raise ArgumentError(
                f"grad needs {self.__name__} to return one scalar, but it returned {shapes}; "
                "reduce it (e.g. with .sum()), return (value, aux) with has_aux=True, or use "
                "the runtime's backward(gradient=...)")

def _checked_wrt(wrt: Any, name: str) -> int | str | tuple:
    """`wrt` as given if it is an argument index, a parameter name or a tuple of them; a list
    as the tuple (JAX's argnums takes either); anything else refused, naming it."""
    if isinstance(wrt, list):
        wrt = tuple(wrt)
    items = wrt if isinstance(wrt, tuple) else (wrt,)
    for item in items:
        if not isinstance(item, (int, str)) or isinstance(item, bool):
            raise ArgumentError(
                f"compile_grad({name}, wrt={wrt!r}): wrt is an argument's index, a parameter's "
                "name, or a tuple of them (wrt=0, wrt='params', wrt=(0, 'b'))")
    return wrt


def _found_by_name(obj: Any) -> Any:
    """What `obj`'s module and qualified name lead to now (None if nothing), as pickle looks."""
    found: Any = sys.modules.get(getattr(obj, "__module__", None) or "")
    for part in getattr(obj, "__qualname__", "<none>").split("."):
        found = getattr(found, part, None)
    return found


def _recompiled(fn: Callable, binds: str, settings: dict[str, Any]) -> CompiledFunction:
    """`fn` (or a compiled function's function) compiled again with `settings`, bound as
    `binds` says: a copy, or a pickled compiled function loaded (its kernels from the disk
    cache)."""
    if isinstance(fn, CompiledFunction):
        fn = fn.fn
    wrap = {"nothing": staticmethod, "class": classmethod}.get(binds)
    return CompiledFunction(wrap(fn) if wrap else fn, **settings)


def compile_grad(fn: Callable | str | os.PathLike | None = None, *, wrt: int | str | tuple = 0,
                 has_aux: bool = False, backend: str | None = None, check_finite: bool = False):
    """Compile `fn` (a NumPy function) into fused forward and backward kernels.

    `wrt` picks the argument(s) `.grad` differentiates: an index, a parameter
    name, or a tuple of them. With `has_aux=True`, `fn` returns `(value, aux)`
    and only `value` is differentiated. `backend="interpreter"` runs the IR with
    NumPy and compiles nothing; the default is `$GRADFUSE_BACKEND`, else "numba".
    `check_finite=True` runs kernels that stop at the first NaN or Inf an op produces,
    forward or backward, with an `AnomalyError` naming the op and the user's line (what
    `runtime.detect_anomaly()` does for the calls made under it; compiler/checks.py).
    Usable as `@compile_grad` or `@compile_grad(wrt=...)`. `fn` may also be DSL
    source text or the path of a DSL file (compiler/dsl): its last function is compiled.
    """
    backend = backend or os.environ.get("GRADFUSE_BACKEND", "numba")
    if isinstance(fn, (str, os.PathLike)):
        from compiler import dsl

        fn = dsl.load(fn)
    if fn is None:
        return lambda f: CompiledFunction(f, wrt=wrt, has_aux=has_aux, backend=backend,
                                          check_finite=check_finite)
    return CompiledFunction(fn, wrt=wrt, has_aux=has_aux, backend=backend,
                            check_finite=check_finite)
