"""The hot paths of repeated calls: the last call's kernel, tried before the general path.

Small kernels run in microseconds, so the general path (binding the signature,
flattening nested arguments, computing the shape pattern) would dominate them.
A `CallPattern` remembers how a call was made: how many positional arguments,
which keywords in which order, the tree of each argument (dicts, lists, tuples)
and the class of every leaf. A later call made the same way is flattened by a
function built for that tree (compiler/pytree.py `flattener`) and checked with
one C-level comparison of the leaves' classes; a Python number the kernel was traced
with as a value (`if training:`) is compared with it too.

A `FastCall` runs the kernel of a call whose leaves were plain arrays (or
Python and NumPy scalars). A `TensorCall` does the same for calls with runtime
Tensors (Parameters in a dict, say) that were recorded for backward: a later
call with a Tensor of the same class, requiring grad or not as before, wherever
there was one, runs the forward kernel and records it without the general path.
An `UntrackedCall` serves calls with Tensors that record nothing (under no_grad, as an
evaluation loop makes them): the forward kernel on their arrays. A TensorCall's `run` is
generated per call tree (`print(f._tensor_call.run.source)`): each
leaf unpacked into a variable and checked by itself, and for a loss the whole
recording written in after the checks (compiler/recording.py `loss_body`), so a
training loop's forward is one Python function; the call site's own Tensors, with
no flag changed since they were checked, are recognized by their ids.

Nothing else is checked in Python: numba's dispatcher refuses arrays of another
dtype, rank or layout (the kernel compiles for one signature only), and the
kernel itself checks the shapes before it touches memory (and refuses a batch of 1
row where its trace took the batch for another size: `x.squeeze()`; compiler/codegen/
emit.py). So a Parameter whose `.data` was replaced by an array of another dtype or
shape is refused too (its array is read afresh on every call). Any refusal sends the call down the
general path, which finds or builds the right kernel or explains what is wrong.
Only kernels that check their arguments this way (`checks_arguments`: the numba
backend's) get a fast path.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from compiler import pytree
from compiler.arguments import CallArguments
from compiler.errors import KernelShapeError
from compiler.specialize import static_key
from runtime import Tensor
from runtime.grad_mode import _mode

REFUSED = object()  # what `run` returns when the arguments do not fit the kernel
UNPACKED_LEAVES = 16  # a call with up to this many leaves gets each in a variable of its own
_SCALARS = (bool, int, float)
_requires_grad_of = operator.attrgetter("_requires_grad")
_data_of = operator.attrgetter("data")


def _getter(positions: list[int]):
    """seq -> the items at `positions`, as a tuple."""
    if len(positions) >= 2:
        return operator.itemgetter(*positions)
    return lambda seq: tuple(seq[i] for i in positions)


def _plain_leaf(leaf: Any) -> bool:
    """Whether a fast path can pass this leaf the way the general path does: arrays as they
    are (numba refuses other layouts than the kernel's), scalars through np.asarray."""
    return type(leaf) is np.ndarray or type(leaf) in _SCALARS or isinstance(leaf, np.generic)


class CallPattern:
    """How one call was made; `leaves(args, kwargs)` flattens a call made the same way (the
    leaves in the order the general path gives them), else returns None."""

    def __init__(self, call: CallArguments, n_positional: int, keywords: tuple[str, ...],
                 static: tuple = ()):
        self.keywords = keywords
        # The Python numbers the kernel was traced with as values (`if training:`): a call
        # is the kernel's only with these values (specialize.py Signature.static).
        self.static = tuple((i, key) for i, _, key, _ in static)
        self.types = tuple(map(type, call.raw))
        # Positional arguments fill the first slots; each keyword goes to its slot.
        order = list(range(n_positional)) + [n_positional + keywords.index(name)
                                             for name in call.names[n_positional:]]
        self._n_slots = len(order)
        self._reorder = None if order == list(range(len(order))) else operator.itemgetter(*order)
        self.treedef = call.treedef
        self._collect = self.collect = pytree.collector(call.treedef)
        # Positional arrays only (W2's call): the arguments are the leaves.
        self.flat = not keywords and all(c.kind == "leaf" for c in call.treedef.children)
        # Positional arguments in their slots: `leaves` is `collect` and the classes' check.
        self.positional = not keywords and self._reorder is None and not self.flat
        # Scalars go to kernels as 0-d arrays, as in the general path.
        self.scalars = [i for i, leaf in enumerate(call.raw)
                        if not isinstance(leaf, Tensor | np.ndarray)]

    @staticmethod
    def possible(call: CallArguments, n_positional: int, keywords: tuple[str, ...]) -> bool:
        """Whether calls like this one can be recognized (each slot named once)."""
        names = call.names
        return len(set(names)) == len(names) == n_positional + len(keywords) \
            and set(names[n_positional:]) == set(keywords)

    def leaves(self, args: tuple, kwargs: dict | None) -> list | tuple | None:
        """The leaves as passed (Tensors stay Tensors, scalars stay scalars), or None."""
        if self.flat:
            return None if kwargs or tuple(map(type, args)) != self.types else args
        if kwargs:
            if tuple(kwargs) != self.keywords:
                return None
            args = args + tuple(kwargs.values())
        elif self.keywords:
            return None
        if self._reorder is not None:  # a permutation of two or more slots
            if len(args) != self._n_slots:
                return None
            args = self._reorder(args)
        leaves: list = []
        if not self._collect(args, leaves) or tuple(map(type, leaves)) != self.types:
            return None
        return leaves

    def holds_static(self, leaves: list | tuple) -> bool:
        """Whether the static numbers among `leaves` (of the classes this pattern checked)
        have the values the kernel was traced with."""
        return all(static_key(leaves[i]) == key for i, key in self.static)


class FastCall:
    """`run(args, kwargs)`: `pack(kernel results)` for arguments that fit the kernel, else
    REFUSED."""

    def __init__(self, spec, kernel, pack: Callable[[tuple], Any], pattern: CallPattern) -> None:
        self.spec = spec
        self.kernel = kernel
        self.pack = pack
        self.pattern = pattern
        self._call = kernel.call

    @staticmethod
    def eligible(call: CallArguments, args: tuple, kwargs: dict, kernel) -> bool:
        return getattr(kernel, "checks_arguments", False) \
            and CallPattern.possible(call, len(args), tuple(kwargs)) \
            and all(map(_plain_leaf, call.raw))

    def run(self, args: tuple, kwargs: dict | None = None) -> Any:
        # One C-level comparison (0.1 us) for the count and the classes: numba would refuse a
        # Parameter too, but only after 100 us of looking for a type to give it.
        leaves = self.pattern.leaves(args, kwargs)
        if leaves is None or (self.pattern.static and not self.pattern.holds_static(leaves)):
            return REFUSED
        if self.pattern.scalars:
            leaves = list(leaves)
            for i in self.pattern.scalars:
                leaves[i] = np.asarray(leaves[i])
        try:
            results = self._call(*leaves)
        except (TypeError, KernelShapeError):
            return REFUSED
        return self.pack(results)


class UntrackedCall(FastCall):
    """`run(args, kwargs)`: a call with runtime Tensors that records nothing (under no_grad,
    or no Tensor requires grad: an evaluation loop's), for arguments made the way the call
    it was made from was: the forward kernel on the Tensors' arrays, its results as Tensors
    that require no grad, as the general path gives them; else REFUSED."""

    def __init__(self, spec, kernel, pattern: CallPattern) -> None:
        tree = spec.out_tree
        if tree.kind == "leaf":
            pack = lambda results: Tensor(results[0])  # noqa: E731
        else:
            pack = lambda results: pytree.unflatten(tree, list(map(Tensor, results)))  # noqa: E731
        super().__init__(spec, kernel, pack, pattern)
        self._tensors = [i for i, t in enumerate(pattern.types) if issubclass(t, Tensor)]

    @staticmethod
    def eligible(call: CallArguments, args: tuple, kwargs: dict, kernel) -> bool:
        return TensorCall.eligible(call, args, kwargs, kernel)

    def run(self, args: tuple, kwargs: dict | None = None) -> Any:
        pattern = self.pattern
        leaves = pattern.leaves(args, kwargs)
        if leaves is None or (pattern.static and not pattern.holds_static(leaves)):
            return REFUSED
        leaves = list(leaves)
        tracking = _mode.enabled
        for i in self._tensors:
            tensor = leaves[i]
            if tracking and tensor._requires_grad:  # recorded: TensorCall or the general path
                return REFUSED
            leaves[i] = tensor.data
        for i in pattern.scalars:
            leaves[i] = np.asarray(leaves[i])
        try:
            results = self._call(*leaves)
        except (TypeError, KernelShapeError):
            return REFUSED
        return self.pack(results)


class TensorCall:
    """`run(args, kwargs)`: the result of a recorded call for arguments made the way the
    call it was made from was, with Tensors where it had them, whose arrays fit its forward
    kernel; else REFUSED.

    `recorded.call(arrays, leaves)` runs the numba forward kernel, which raises TypeError or
    KernelShapeError on arrays that do not fit it, and turns its results into the Tensors
    the user gets, recorded for backward (compiler/recording.py `RecordedKernels`)."""

    def __init__(self, spec, pattern: CallPattern, raw_leaves: list, recorded) -> None:
        self.spec = spec
        self.pattern = pattern
        positions = [i for i, leaf in enumerate(raw_leaves) if isinstance(leaf, Tensor)]
        self._tensors = positions
        # The Tensors' arrays first when the Tensors lead (a dict of Parameters, then data).
        self._leading = positions == list(range(len(positions)))
        self._tensors_of = _getter(positions)
        # Whether each Tensor requires grad decides what backward differentiates.
        self._requires_grad = tuple(raw_leaves[i].requires_grad for i in positions)
        self._recorded = recorded
        self._record = recorded.call
        if (pattern.positional or pattern.flat) \
                and pattern.treedef.num_leaves <= UNPACKED_LEAVES:
            self.run = self._unpacked()  # the usual call, one Python function
        elif pattern.positional and self._leading and not pattern.scalars \
                and not pattern.static:  # (numbers to compare: `_run` does that)
            self.run = self._written_out()

    def _unpacked(self) -> Callable:
        """`run` for positional arguments (arrays and Tensors, or a small tree of them) as
        one generated function: the
        tree's checks, each leaf in a variable, its class and (for a Tensor) its flag
        compared one by one, the arrays listed; what `run` does (it serves calls with
        keywords), without a container or a map."""
        pattern = self.pattern
        body, constants, leaves = pytree.unpacking_body(pattern.treedef, "args",
                                                        "return REFUSED")
        classes = " or ".join(f"type({v}) is not TYPE{k}" for k, v in enumerate(leaves))
        flags = " or ".join(f"{leaves[i]}._requires_grad is not {flag}"
                            for i, flag in zip(self._tensors, self._requires_grad))
        arrays = [f"{v}.data" if k in self._tensors else
                  f"asarray({v})" if k in pattern.scalars else v for k, v in enumerate(leaves)]
        checks = [f"    if {classes}:", "        return REFUSED",
                  *([f"    if {flags}:", "        return REFUSED"] if flags else [])]
        recorded = self._recorded
        if getattr(recorded, "records_loss", False):  # its statements follow ours
            names = [a if a == v else f"a{k}" for k, (a, v) in enumerate(zip(arrays, leaves))]
            call, recording = recorded.loss_body(names, leaves, "        ", site_found=True)
            call = [f"        {n} = {a}" for n, a in zip(names, arrays) if n != a] + call
            checks = self._checks_at_site(leaves, checks)
        else:
            call = [f"        return record([{', '.join(arrays)}], [{', '.join(leaves)}])"]
            recording = {"record": self._record}
        statics, static_values = self._static_checks(leaves)
        checks += [f"    if {statics}:", "        return REFUSED"] if statics else []
        source = "\n".join([
            "def run(args, kwargs=None):",
            "    if kwargs or not _mode.enabled:",
            "        return general(args, kwargs)",
            *body,
            *checks,
            "    try:",
            *call,
            "    except (TypeError, KernelShapeError):",
            "        return REFUSED",
            ""])
        namespace = {**recording, **constants, **static_values,
                     **{f"TYPE{k}": t for k, t in enumerate(pattern.types)},
                     "general": self._run, "_mode": _mode, "REFUSED": REFUSED,
                     "asarray": np.asarray, "KernelShapeError": KernelShapeError,
                     "TensorClass": Tensor}
        exec(compile(source, "<TensorCall.run, unpacked>", "exec"), namespace)  # noqa: S102
        run = namespace["run"]
        run.source = source  # for people reading a profile
        return run

    def _static_checks(self, leaves: list[str]) -> tuple[str, dict[str, Any]]:
        """An expression saying whether a static number among `leaves` (variables holding
        leaves of the pattern's classes, checked before it) differs from the one the kernel
        was traced with (`if training:`), and the names it reads: an int or bool compared by
        value, a float by its bits (CallPattern.holds_static)."""
        terms, values = [], {"static_key": static_key}
        for k, (i, key) in enumerate(self.pattern.static):
            if issubclass(self.pattern.types[i], float | np.floating):
                terms.append(f"static_key({leaves[i]}) != STATIC{k}")
            else:  # the same class: equal values are equal keys
                terms.append(f"{leaves[i]} != STATIC{k}")
            values[f"STATIC{k}"] = key
        return " or ".join(terms), values

    def _checks_at_site(self, leaves: list[str], checks: list[str]) -> list[str]:
        """`checks` (every leaf's class, every Tensor's flag) run only where the call's
        Tensors are not its site's own, or a flag or hook of some Tensor changed since they
        were last checked (Tensor._leaf_changes, which every requires_grad assignment
        moves): the same objects with unchanged flags pass them again. Leaves the site does
        not hold (plain arrays, Tensors backward does not read) are checked every call.
        Sets `site` for the statements of `loss_body` that follow."""
        recorded = self._recorded
        held = set(recorded._tensor_indices)
        pattern = self.pattern
        others = " or ".join(f"type({v}) is not TYPE{k}" for k, v in enumerate(leaves)
                             if k not in held)
        other_flags = " or ".join(f"{leaves[i]}._requires_grad is not {flag}"
                                  for i, flag in zip(self._tensors, self._requires_grad)
                                  if i not in held)
        at_site = recorded.site_check(leaves)
        assert pattern.types  # a call with Tensors has leaves
        return [
            "    site = recorded._site",
            f"    if {at_site} and recorded.site_flags_seen == TensorClass._leaf_changes:",
            *([f"        if {others}:", "            return REFUSED"] if others else []),
            *([f"        if {other_flags}:", "            return REFUSED"]
              if other_flags else []),
            *(["        pass"] if not (others or other_flags) else []),
            "    else:",
            "        changes = TensorClass._leaf_changes",
            *("    " + line for line in checks),
            f"        if {at_site}:",
            "            recorded.site_flags_seen = changes",
            "        else:",
            "            site = None",
        ]

    def _written_out(self) -> Callable:
        """`run` for positional arguments as one generated function: the tree's checks and
        leaves written out (compiler/pytree.py), then the classes, the Tensors' flags and
        their arrays, as `run` does them (which serves calls with keywords)."""
        pattern = self.pattern
        body, constants = pytree.collector_body(pattern.treedef, "args", "return REFUSED")
        n = len(self._tensors)
        source = "\n".join([
            "def run(args, kwargs=None):",
            "    if kwargs or not _mode.enabled:",
            "        return general(args, kwargs)",
            "    leaves = []",
            *body,
            "    if tuple(map(type, leaves)) != TYPES:",
            "        return REFUSED",
            f"    tensors = leaves[:{n}]",
            "    if tuple(map(requires_grad_of, tensors)) != REQUIRES_GRAD:",
            "        return REFUSED",
            f"    arrays = [*map(data_of, tensors), *leaves[{n}:]]",
            "    try:",
            "        return record(arrays, leaves)",
            "    except (TypeError, KernelShapeError):",
            "        return REFUSED",
            ""])
        namespace = {**constants, "general": self._run, "_mode": _mode, "REFUSED": REFUSED,
                     "TYPES": pattern.types, "REQUIRES_GRAD": self._requires_grad,
                     "requires_grad_of": _requires_grad_of, "data_of": _data_of,
                     "record": self._record, "KernelShapeError": KernelShapeError}
        exec(compile(source, "<TensorCall.run, written out>", "exec"), namespace)  # noqa: S102
        run = namespace["run"]
        run.source = source  # for people reading a profile
        return run

    @staticmethod
    def eligible(call: CallArguments, args: tuple, kwargs: dict, kernel) -> bool:
        return getattr(kernel, "checks_arguments", False) \
            and CallPattern.possible(call, len(args), tuple(kwargs)) \
            and all(isinstance(leaf, Tensor) or _plain_leaf(leaf) for leaf in call.raw)

    def run(self, args: tuple, kwargs: dict | None = None) -> Any:
        return self._run(args, kwargs)

    def _run(self, args: tuple, kwargs: dict | None = None) -> Any:
        if not _mode.enabled:  # under no_grad nothing is recorded: another kernel
            return REFUSED
        pattern = self.pattern
        if kwargs or not pattern.positional:
            leaves = pattern.leaves(args, kwargs)
            if leaves is None:
                return REFUSED
        else:  # pattern.leaves for positional arguments, without the call
            leaves = []
            if not pattern.collect(args, leaves) or tuple(map(type, leaves)) != pattern.types:
                return REFUSED
        if pattern.static and not pattern.holds_static(leaves):
            return REFUSED
        tensors = self._tensors_of(leaves)
        if tuple(map(_requires_grad_of, tensors)) != self._requires_grad:
            return REFUSED
        if self._leading:
            arrays = [*map(_data_of, tensors), *leaves[len(tensors):]]
        else:
            arrays = list(leaves)
            for i, tensor in zip(self._tensors, tensors):
                arrays[i] = tensor.data
        for i in self.pattern.scalars:
            arrays[i] = np.asarray(leaves[i])
        try:
            return self._record(arrays, leaves)
        except (TypeError, KernelShapeError):
            return REFUSED
