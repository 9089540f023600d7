"""A compiled call recorded for the runtime's `backward()`: its call site and its backward (the
one that stores gradients straight into `.grad` is compiler/gradients_into.py).

`RecordedKernels` links one specialization's forward_save and backward kernels
into the runtime's graph. A call site repeats: the same Parameters come back
call after call, so it keeps a `runtime.graph.CallSite` (the edges and the
Tensors whose versions are checked) and recording a call only stamps versions.
For a loss (one 0-d output) the whole call, from claiming the residual arrays to
the Node and the Tensor, is generated Python (`loss_body`), which the fast path of
repeated calls writes into its own function (compiler/fastpath.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import MethodType
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler import pytree
from compiler.gradients_into import GradientsInto
from compiler.residuals import FREE_REFCOUNT, SETS_PER_SIZE, BufferedForward, picker
from compiler.settled_backward import settled_backward
from runtime import Tensor
from runtime.anomaly_mode import _anomaly
from runtime.graph import CallSite
from runtime.graph import Node as GraphNode

if TYPE_CHECKING:
    from compiler.specialization import Specialization

_new_tensor = Tensor.__new__
_new_node = GraphNode.__new__


class RecordedKernels:
    """forward_save and backward of one specialization, linked into the runtime's graph.

    `call(arrays, leaves)` runs forward_save on the leaves' arrays and hands the runtime the
    outputs and a backward over the residuals, returning the user's Tensors; TypeError or
    KernelShapeError from the kernel, for arrays it does not take, come before anything is
    recorded. With the numba backend (and no finite checks) the residuals go into arrays
    kept per call site (compiler/residuals.py).
    """

    def __init__(self, name: str, spec: Specialization, tensor_positions: tuple[int, ...],
                 checked: bool = False):
        self.name = name
        spec.graph_of("forward_save")  # the split: sets spec.residual_sources
        self._checked = checked
        self._spec = spec
        self._backward: Callable | None = None  # built on first use: backward_into is usual
        self._into: GradientsInto | None = None
        # A loss's backward() for its sites, made with `_into` (compiler/settled_backward.py)
        self._settled_backward: Callable | None = None
        self._into_possible = spec.backend.name == "numba" and not checked
        self._buffered = BufferedForward.build(spec, tensor_positions) \
            if self._into_possible else None
        if self._buffered is None:
            self._forward = spec.kernel_for("forward_save", checked).call
        n_inputs = len(spec.graph_of("forward_save").inputs)
        # Without buffers (the interpreter, checked kernels): residuals index the inputs, then
        # forward_save's results. Inputs that backward needs are the caller's own arrays; a
        # plain array among them is copied (`_kept`), because nothing tells backward that the
        # caller refilled it (a batch buffer, say), while a Tensor's version counter does.
        self._residuals = picker([i if where == "input" else n_inputs + i
                                   for where, i in spec.residual_sources])
        self._plain_inputs = [(k, i) for k, (where, i) in enumerate(spec.residual_sources)
                              if where == "input" and i not in tensor_positions]
        self._n_outputs = len(spec.graph.outputs)
        self._n_differentiated = spec.n_differentiated
        # The Tensors the call records: those that require grad (differentiated), then those
        # that need no gradient but whose arrays backward reads (their versions count).
        saved = [i for where, i in spec.residual_sources if where == "input"
                 and i in tensor_positions and i not in spec.wrt_leaves]
        self._n_needs = len(spec.wrt_leaves)
        self._tensor_indices = list(spec.wrt_leaves) + saved
        self._tensors = picker(self._tensor_indices)
        self._single = spec.out_tree.kind == "leaf"
        # per differentiated Tensor, the outputs that depend on it (None: all of them)
        self._edge_outputs = spec.outputs_of_wrt()
        # Outputs that depend on no differentiated Tensor (np.ones(3), x * 2 of a plain x):
        # to PyTorch they do not require grad, as the aux ones
        reached = set().union(*self._edge_outputs) if self._edge_outputs is not None \
            else range(spec.n_differentiated)
        self._unreached_outputs = [k for k in range(spec.n_differentiated) if k not in reached]
        self._out_tree = spec.out_tree
        differentiated = spec.graph.outputs[:spec.n_differentiated]
        self._output_meta = [(tuple(o.shape), o.dtype) for o in differentiated] \
            if all(isinstance(d, int) for o in differentiated for d in o.shape) else None
        # The last call's site (it holds the caller's Tensors weakly).
        self._site: CallSite | None = None
        self.site_flags_seen = -1  # see `_new_site`
        # A loss (one 0-d output, differentiated) whose residuals are pooled by one batch
        # size: a training loop's call, which `call` runs in one function.
        buffered = self._buffered
        self._loss = buffered is not None and buffered._scalar is not None \
            and buffered._pool.sym_at is not None and self._single \
            and self._n_differentiated == 1 == self._n_outputs and self._output_meta is not None
        self.records_loss = self._loss  # `loss_body` can be asked for
        if self._loss:  # callers hold `call`: the loss's own, generated (see `loss_body`)
            self._pool = buffered._pool
            # (batch size, the pool's list for it), one tuple: a thread switch between two
            # attributes let another thread pair a size with another size's list, whose set
            # the kernel refused and the list then kept (every later call of that size failed)
            self._last_free = (-1, None)
            self.call = self._call_loss = self._generated_call_loss()

    def call(self, arrays: list, leaves: list) -> Any:
        if self._buffered is not None:
            results, residuals = self._buffered.run(arrays)
        else:
            results = self._forward(*arrays)
            residuals = self._residuals([*arrays, *results])
            if self._plain_inputs:
                residuals = self._kept(residuals, arrays, leaves)
        inputs = self._tensors(leaves)
        site = self._site
        # The site's Tensors by identity are all there is to check: which of them require
        # grad is this specialization's (it was chosen by that), so it cannot differ.
        if site is None or not (site.alive and tuple(map(id, inputs)) == site.ids):
            site = self._new_site(inputs)
        # One callable serves as the node's backward and its backward_into (see `either`).
        backward = MethodType(self._into or self.either, residuals)
        into = backward if self._into_possible else None
        n_diff = self._n_differentiated
        if self._single and n_diff == 1:  # a loss: one output, differentiated
            return site.record_one(inputs, results[0], backward, into, self._output_meta)
        tensors = site.record(inputs, results[:n_diff], backward, trusted=True,
                              backward_into=into, output_meta=self._output_meta)
        for k in self._unreached_outputs:
            tensors[k] = Tensor(results[k])
        if n_diff < self._n_outputs:  # aux: not differentiated
            tensors += [Tensor(o) for o in results[n_diff:self._n_outputs]]
        return tensors[0] if self._single else pytree.unflatten(self._out_tree, tensors)

    # --- a loss: the hot path of a training loop's forward --------------------------------
    def loss_body(self, arrays: list[str], leaves: list[str], indent: str = "    ",
                  site_found: bool = False) -> tuple[list[str], dict[str, Any]]:
        """What `call` does for a loss, as statements of a generated function whose variables
        `arrays` and `leaves` hold the call's arrays and leaves (names), ending in `return`;
        and the names those statements read. `BufferedForward.run` and
        `CallSite.record_one`, written out: every step of a training loop runs them, and a
        Python call or a list costs about what one of the comparisons below costs. A
        caller that has the leaves in variables of its own (compiler/fastpath.py) puts these
        statements after its checks: the whole call is then one function. With
        `site_found`, that caller has set `site` to the call site if the call's Tensors are
        its own (`site_check`), else to None."""
        buffered = self._buffered
        pool = buffered._pool
        at, axis = pool.sym_at
        n_buffers = len(pool._types)
        names = [*arrays, *(f"buffer{b}" for b in range(n_buffers))]
        residuals = "".join(f"{names[i]}, " for i in buffered.residual_indices)
        inputs = "".join(f"{leaves[i]}, " for i in self._tensor_indices)
        versions = ", ".join(f"{leaves[i]}._version" for i in self._tensor_indices)
        lines = [
            # len() reads the first axis without making the shape's tuple
            f"size = len({arrays[at]})" if axis == 0 else f"size = {arrays[at]}.shape[{axis}]",
            "last = recorded._last_free  # (size, its list): read at once (threads)",
            "if size == last[0]:  # the pool's list for the last batch size",
            "    free = last[1]",
            "else:",
            "    free = recorded._free_list(size)",
            "try:",
            "    buffers = free.pop()  # atomic: no other thread can take this set now",
            "except (AttributeError, IndexError):  # no list for this size yet, or it is empty",
            "    buffers = pool.claim_at((size,))",
            "else:",
            "    if list(map(getrefcount, buffers)) != FREE_COUNTS:",
            "        free.append(buffers)  # a graph still holds it: the pool looks further",
            "        buffers = pool.claim_at((size,))",
            f"{''.join(f'buffer{b}, ' for b in range(n_buffers))}= buffers" if n_buffers
            else "pass  # no residual needs an array",
            "try:",
            f"    returned = forward({', '.join(names)})",
            "except BaseException:",
            "    pool.give_back((size,), buffers)",
            "    raise",
            f"residuals = ({residuals})",
            "if free is not None and len(free) < SETS_PER_SIZE:  # in use while residuals is",
            "    free.append(buffers)",
            "else:",
            "    pool.give_back((size,), buffers)",
            "output = array(returned, DTYPE)",
            f"inputs = ({inputs})",
            *([] if site_found else [
                "site = recorded._site",
                f"if not ({self.site_check(leaves)}):",
                "    site = None"]),
            "if site is None:",
            "    site = recorded._new_site(inputs)",
            # Grad mode is on: every caller has checked (TensorCall.run, the general path).
            "if not site.needs_grad:" if buffered._scalar.kind == "f" else "if True:",
            "    return Tensor(output)  # what record_one gives: nothing to backpropagate",
            # The backward bound to its residuals, serving as backward_into too (`either`);
            # a method object is the cheapest such binding (a partial costs twice as much).
            "backward = MethodType(recorded._into or recorded.either, residuals)",
            # GraphNode(backward, site, inputs, OUTPUT_META, True, backward), written out:
            # half the cost of the call (tests/test_tensor_fastpath.py compares the two)
            "node = new_node(GraphNode)",
            "node._backward = node.backward_into = backward",
            "node.site = site",
            "node.tensors = inputs",
            f"node.versions = [{versions}]",
            "node.output_meta = OUTPUT_META",
            "node.trusted = True",
            "node._tensor_hooks = node._retained = None",
            "tensor = new_tensor(Tensor)",
            "tensor.data = output",
            "tensor._requires_grad = True",
            "tensor.grad_fn = node",
            "return tensor",
        ]
        namespace = {
            "recorded": self, "pool": pool, "forward": buffered._call,
            "getrefcount": sys.getrefcount, "FREE_COUNTS": [FREE_REFCOUNT] * n_buffers,
            "SETS_PER_SIZE": SETS_PER_SIZE, "array": np.array, "DTYPE": buffered._scalar,
            "Tensor": Tensor, "new_tensor": _new_tensor, "MethodType": MethodType,
            "GraphNode": GraphNode, "new_node": _new_node, "OUTPUT_META": self._output_meta,
        }
        return [indent + line.replace("\n", "\n" + indent) for line in lines], namespace

    def site_check(self, leaves: list[str]) -> str:
        """An expression, over the variables `leaves`, saying whether the call's Tensors are
        those of `self._site` (bound to `site`, None if there is none): their ids while the
        site watches that they all live."""
        ids = "".join(f"id({leaves[i]}), " for i in self._tensor_indices)
        return f"site is not None and site.alive and ({ids}) == site.ids"

    def _generated_call_loss(self) -> Callable[[list, list], Tensor]:
        """`call(arrays, leaves)` for a loss: `loss_body` over the lists' items."""
        n_arrays = len(self._spec.graph_of("forward_save").inputs)
        arrays = [f"array{k}" for k in range(n_arrays)]
        leaves = {i: f"leaf{i}" for i in self._tensor_indices}
        body, namespace = self.loss_body(arrays, [leaves.get(i, "") for i in
                                                  range(max(leaves, default=-1) + 1)])
        source = "\n".join([
            "def call_loss(arrays, leaves):",
            f"    {''.join(f'{a}, ' for a in arrays)}= arrays" if arrays else "",
            *(f"    {name} = leaves[{i}]" for i, name in leaves.items()),
            *body, ""])
        exec(compile(source, f"<{self.name}: a loss recorded>", "exec"), namespace)  # noqa: S102
        call_loss = namespace["call_loss"]
        call_loss.source = source  # for people reading a profile
        return call_loss

    def _free_list(self, size: int) -> list | None:
        """The pool's list of sets for a batch size, remembered for the next call."""
        free = self._pool.free.get((size,))
        if free is not None:
            self._last_free = (size, free)
        return free

    def _new_site(self, inputs: tuple) -> CallSite:
        site = CallSite(self.name, inputs[:self._n_needs], inputs[self._n_needs:])
        site.edge_outputs = self._edge_outputs
        if site.into_ready:
            site.settled_backward = self._settled_backward
        if site.reusable:  # kept for the next calls, which check it by the Tensors' ids
            site.watch()
            self._site = site
            # Tensor._leaf_changes when a caller last found the site's Tensors with the flags
            # its pattern wants (compiler/fastpath.py); none yet.
            self.site_flags_seen = -1
        return site

    def either(self, residuals: tuple, cotangents: list[np.ndarray], accumulate: Any = None,
               reuse: list | None = None) -> Any:
        """The node's backward (`accumulate` left out) and its backward_into in one callable,
        so that a call makes one partial, not two; `GradientsInto` takes over once built."""
        if accumulate is None:
            return self.backward(residuals, cotangents)
        return self.backward_into(residuals, cotangents, accumulate, reuse)

    def backward(self, residuals: tuple, cotangents: list[np.ndarray]) -> tuple:
        """The gradients, as fresh arrays (the usual path of the runtime's backward)."""
        if _anomaly.enabled and not self._checked:  # backward() under detect_anomaly()
            return self._spec.checked_kernel("backward").call(
                *residuals, *self._kernel_cotangents(cotangents))
        if self._backward is None:
            self._backward = self._spec.kernel_for("backward", self._checked).call
        try:
            return self._backward(*residuals, *cotangents)
        except TypeError:  # numba's dispatcher refused a cotangent's layout: retried below
            pass
        return self._backward(*residuals, *self._kernel_cotangents(cotangents))

    def _kernel_cotangents(self, cotangents: list[np.ndarray]) -> list[np.ndarray]:
        """The cotangents as the kernels take them: writable C-contiguous arrays of the outputs'
        dtypes. The runtime hands on what the user gave (backward(gradient=g.T), a broadcast
        or read-only array, a hook's Fortran-ordered result), which numba's dispatcher refuses
        with a bare TypeError; the usual ones pass unchanged."""
        outputs = self._spec.graph.outputs
        # np.require keeps a 0-d cotangent 0-d (np.ascontiguousarray makes it 1-d)
        return [np.require(c, outputs[k].dtype, ("C", "W")) for k, c in enumerate(cotangents)]

    def backward_into(self, residuals: tuple, cotangents: list[np.ndarray], accumulate: list,
                      reuse: list) -> list[np.ndarray] | None:
        """The gradients stored into arrays (see the module doc), or None where the usual
        path must run (the first call; later ones go to `GradientsInto` directly)."""
        if _anomaly.enabled:  # the usual path, with its checked kernel; nothing to build
            return None
        if self._into is None:
            self._into = GradientsInto(*self._spec.into_kernel(), self.backward)
            if self._loss:  # a training loop's backward(), written for its sites
                self._settled_backward = settled_backward(
                    self._into, self._n_needs, len(self._tensor_indices),
                    self._output_meta[0][1])
                if self._site is not None and self._site.into_ready:
                    self._site.settled_backward = self._settled_backward
        return self._into(residuals, cotangents, accumulate, reuse)

    def _kept(self, residuals: tuple, arrays: list, leaves: list) -> tuple:
        """`residuals` with a copy of each of the caller's own plain arrays among them (an
        array made from a scalar or a non-contiguous argument is ours already)."""
        kept = list(residuals)
        for k, i in self._plain_inputs:
            if arrays[i] is leaves[i]:
                kept[k] = kept[k].copy()
        return tuple(kept)
