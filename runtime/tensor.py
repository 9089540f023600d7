"""Tensor and Parameter: NumPy arrays that remember how they were made, for backward().

A `Tensor` wraps a NumPy array (`.data`) and carries PyTorch's autograd fields:
`requires_grad`, `grad`, `grad_fn` (the graph node that produced it, None on
leaves) and its hooks. Compiled functions compute on the arrays and call
`runtime.graph.record` to link the results into the graph; outside them, a
Tensor has the arithmetic PyTorch users write around their calls (`+ - * / **`,
comparisons, `.sum()`, `.mean()`: runtime/arithmetic.py), recorded the same way.
A `Parameter` is a leaf Tensor that owns a copy of its data.

Every Tensor also has PyTorch's version counter, `_version`: a plain int that
each in-place update of `.data` made by the library adds one to (optimizer
steps, `utils.load`, the compiled train step). Backward reads the inputs'
arrays as they are when it runs, so `record` remembers the versions at forward
time and backward refuses to run on an input whose version has moved on.
As in PyTorch, writes the user makes through `.data` (`p.data[...] = 0`) are
not counted: code that does that must bump `p._version` itself to be caught.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .graph import Node

Hook = Callable[[np.ndarray], "np.ndarray | None"]


def check_can_require_grad(dtype: np.dtype) -> None:
    """Raise PyTorch's error when an integer, bool or complex array is asked for gradients."""
    if not np.issubdtype(dtype, np.floating):
        raise RuntimeError(
            "only Tensors of floating point dtype can require gradients "
            f"(got dtype {dtype}); pass float data, e.g. 2.0 instead of 2, "
            "or an array of dtype float32/float64"
        )


class RemovableHandle:
    """What `register_hook` returns: `.remove()` unregisters the hook."""

    _next_id = 0

    def __init__(self, hooks: dict[int, Hook], hook: Hook) -> None:
        self._hooks = hooks
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1
        hooks[self.id] = hook

    def remove(self) -> None:
        self._hooks.pop(self.id, None)


class Tensor:
    """A NumPy array with autograd metadata; `Tensor(array)` wraps without copying."""

    # NumPy must not turn a Tensor into a plain array inside a ufunc (np.exp(t),
    # np.float64(2) * t): the result would silently drop out of the graph.
    __array_ufunc__ = None

    # Defaults every Tensor starts with, as class attributes: a compiled call makes a Tensor
    # per result, and setting eight attributes per Tensor cost a microsecond per call.
    grad_fn: Node | None = None  # the graph node that produced this tensor; None on leaves
    output_nr = 0  # which output of grad_fn this tensor is
    _requires_grad = False
    _grad: np.ndarray | None = None
    _hooks: dict[int, Hook] | None = None  # a leaf's hooks (a non-leaf's live on its grad_fn)
    _retains_grad = False
    # In-place updates of `data` by the library so far; see the module docstring.
    _version = 0
    # The gradient array the runtime made for this Tensor and has never handed out (reading
    # `.grad` hands it out). Nobody else can see it, so the backward engine may store into it
    # inside a kernel: added to while it is `_grad`, refilled once zero_grad() has set `_grad`
    # to None. A training loop's gradients keep their arrays that way, from step to step.
    _own_grad: np.ndarray | None = None
    # How many times any Tensor's requires_grad was set or a leaf got a hook (class-wide): a
    # call site that found its leaves requiring grad and without hooks need not look again
    # while this stays the same (runtime/autograd.py `_stored_into_leaves`).
    _leaf_changes = 0

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        self.data: np.ndarray = np.asarray(data)
        if requires_grad:  # the setter checks the dtype; False needs no check
            self.requires_grad = requires_grad

    @classmethod
    def _from_node(cls, data: np.ndarray, node: Node, output_nr: int) -> Tensor:
        """A result of a recorded call: output `output_nr` of `node` (used by `record`)."""
        tensor = cls.__new__(cls)
        tensor.data = data
        tensor._requires_grad = True
        tensor.grad_fn = node
        tensor.output_nr = output_nr
        return tensor

    # -- autograd fields ------------------------------------------------------------

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if not self.is_leaf:
            if value:  # a result in the graph requires grad already: PyTorch's no-op
                return
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables; "
                "use .detach() to get a leaf that shares this tensor's data"
            )
        if value:
            check_can_require_grad(self.data.dtype)
        self._requires_grad = bool(value)
        Tensor._leaf_changes += 1

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set `requires_grad` in place and return the Tensor (`w.detach().requires_grad_()`)."""
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self) -> bool:
        """True unless the tensor is the result of a recorded call that requires grad."""
        return self.grad_fn is None

    @property
    def grad(self) -> np.ndarray | None:
        """Accumulated gradient: filled on leaves, and on results that called retain_grad()."""
        if self._own_grad is not None and self._own_grad is self._grad:
            self._own_grad = None  # handed out: the caller may keep it, or read it later
        return self._grad

    @grad.setter
    def grad(self, value: np.ndarray | None) -> None:
        if value is not None:
            value = np.asarray(value)
            if value.shape != self.shape:
                raise RuntimeError(
                    f"assigned grad has shape {value.shape}, but the tensor has shape {self.shape}"
                )
            if value.dtype != self.dtype:  # PyTorch refuses it too: a float32 .grad of a
                # float64 tensor would accumulate, clip and step in float32 unnoticed
                raise RuntimeError(
                    f"assigned grad has dtype {value.dtype}, but the tensor has dtype "
                    f"{self.dtype}; convert it first (grad.astype(np.{self.dtype}))")
        self._grad = value

    @property
    def retains_grad(self) -> bool:
        return self._retains_grad

    def retain_grad(self) -> None:
        """Ask a non-leaf result to keep its gradient in `.grad` (a no-op on leaves)."""
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self.is_leaf or self._retains_grad:
            return
        self.grad_fn.retain(self.output_nr, self)
        self._retains_grad = True

    def register_hook(self, hook: Hook) -> RemovableHandle:
        """Call `hook(grad)` whenever a gradient for this tensor is computed.

        The hook may return a replacement gradient (same shape) or None to keep
        it. Hooks run in registration order, before the gradient is accumulated
        into a leaf's `.grad` or passed on to the node that produced this tensor.
        """
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        # A non-leaf's hooks are kept by its graph node, so they keep working
        # after the Python object of the intermediate result is gone.
        if self.is_leaf:
            if self._hooks is None:
                self._hooks = {}
            hooks = self._hooks
            Tensor._leaf_changes += 1
        else:
            hooks = self.grad_fn.tensor_hooks[self.output_nr]
        return RemovableHandle(hooks, hook)

    def backward(self, gradient: Any = None, retain_graph: bool = False,
                 inputs: Any = None, create_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf), weighted by `gradient`, into every leaf's `.grad` (with
        `inputs`, into those Tensors' `.grad`s only)."""
        node = self.grad_fn
        if inputs is not None or create_graph:  # (create_graph: refused there, clearly)
            _autograd.backward([self], [gradient], retain_graph=retain_graph, inputs=inputs,
                               create_graph=create_graph)
            return
        if gradient is None and node is not None:
            settled = node.site.settled_backward  # a training loop's loss: one function
            if settled is not None and settled(node, retain_graph):
                return
        if gradient is None and node is not None and not node.site.producers \
                and self.data.ndim == 0:
            # a loss of one compiled call on leaves: the common case, without the lists
            seed = _autograd._UNIT_SEEDS.get(self.data.dtype)  # unit_seed, without the call
            if seed is None:
                seed = _autograd.unit_seed(self.data.dtype)
            _autograd._backward_one_node(self, seed, retain_graph)
            return
        _autograd.backward([self], [gradient], retain_graph=retain_graph)

    def detach(self) -> Tensor:
        """A new leaf sharing this tensor's data (and, as in PyTorch, its version counter),
        outside the graph."""
        return _Detached(self)

    # -- array views ----------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    def numpy(self) -> np.ndarray:
        """The wrapped array itself (not a copy)."""
        return self.data

    def item(self) -> float | int | bool:
        """The value of a one-element tensor as a Python number."""
        data = self.data
        if data.size != 1:
            raise RuntimeError(f"a Tensor with {data.size} elements cannot be converted to Scalar")
        return data.item()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        """The truth of a one-element Tensor (`if loss < best:`); ambiguous otherwise."""
        if self.data.size != 1:
            what = "no values" if self.data.size == 0 else "more than one value"
            raise RuntimeError(f"Boolean value of Tensor with {what} is ambiguous")
        return bool(self.data.item())

    def __format__(self, spec: str) -> str:
        """`f"{loss:.4f}"` formats a 0-d Tensor's value, as PyTorch does."""
        if self.data.ndim == 0:
            return format(self.data.item(), spec)
        return object.__format__(self, spec)

    # -- arithmetic outside compiled functions (runtime/arithmetic.py) ----------------

    def __add__(self, other: Any) -> Tensor:
        return _arithmetic.binary("add", self, other)

    def __radd__(self, other: Any) -> Tensor:  # sum([l1, l2]) starts with 0 + l1
        return _arithmetic.binary("add", other, self)

    def __sub__(self, other: Any) -> Tensor:
        return _arithmetic.binary("sub", self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return _arithmetic.binary("sub", other, self)

    def __mul__(self, other: Any) -> Tensor:
        return _arithmetic.binary("mul", self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return _arithmetic.binary("mul", other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return _arithmetic.binary("div", self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _arithmetic.binary("div", other, self)

    def __pow__(self, other: Any) -> Tensor:
        return _arithmetic.binary("pow", self, other)

    def __rpow__(self, other: Any) -> Tensor:
        return _arithmetic.binary("pow", other, self)

    def __neg__(self) -> Tensor:
        return _arithmetic.neg(self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return _arithmetic.absolute(self)

    def __lt__(self, other: Any) -> Tensor:
        return _arithmetic.compare("lt", self, other)

    def __le__(self, other: Any) -> Tensor:
        return _arithmetic.compare("le", self, other)

    def __gt__(self, other: Any) -> Tensor:
        return _arithmetic.compare("gt", self, other)

    def __ge__(self, other: Any) -> Tensor:
        return _arithmetic.compare("ge", self, other)

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _arithmetic.compare("eq", self, other)

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _arithmetic.compare("ne", self, other)

    # Elementwise ==, as in PyTorch; hashing stays by identity, so Tensors remain dict keys
    # (optimizer state) and set members.
    __hash__ = object.__hash__

    # -- in-place updates (runtime/inplace.py): `p -= lr * p.grad` under no_grad ----------

    def __iadd__(self, other: Any) -> Tensor:
        return _inplace.update("add", self, other)

    def __isub__(self, other: Any) -> Tensor:
        return _inplace.update("sub", self, other)

    def __imul__(self, other: Any) -> Tensor:
        return _inplace.update("mul", self, other)

    def __itruediv__(self, other: Any) -> Tensor:
        return _inplace.update("div", self, other)

    def __ipow__(self, other: Any) -> Tensor:
        return _inplace.update("pow", self, other)

    def add_(self, other: Any, alpha: Any = 1) -> Tensor:
        return _inplace.update("add", self, other, alpha)

    def sub_(self, other: Any, alpha: Any = 1) -> Tensor:
        return _inplace.update("sub", self, other, alpha)

    def mul_(self, other: Any) -> Tensor:
        return _inplace.update("mul", self, other)

    def div_(self, other: Any) -> Tensor:
        return _inplace.update("div", self, other)

    def zero_(self) -> Tensor:
        return _inplace.fill(self, 0, "zero_()")

    def fill_(self, value: Any) -> Tensor:
        return _inplace.fill(self, value, "fill_()")

    def copy_(self, src: Any) -> Tensor:
        return _inplace.fill(self, src, "copy_()")

    def sum(self, dim: int | tuple[int, ...] | None = None, keepdim: bool = False) -> Tensor:
        """The sum over `dim` (all axes by default), recorded for backward."""
        return _arithmetic.reduce("sum", self, dim, keepdim)

    def mean(self, dim: int | tuple[int, ...] | None = None, keepdim: bool = False) -> Tensor:
        """The mean over `dim` (all axes by default), recorded for backward."""
        return _arithmetic.reduce("mean", self, dim, keepdim)

    def abs(self) -> Tensor:
        return _arithmetic.absolute(self)

    def sqrt(self) -> Tensor:
        return _arithmetic.unary("sqrt", self)

    def exp(self) -> Tensor:
        return _arithmetic.unary("exp", self)

    def log(self) -> Tensor:
        return _arithmetic.unary("log", self)

    def tanh(self) -> Tensor:
        return _arithmetic.unary("tanh", self)

    def sigmoid(self) -> Tensor:
        return _arithmetic.unary("sigmoid", self)

    def __getitem__(self, key: Any) -> Tensor:
        """x[key] as NumPy indexes it: a new Tensor (a copy), recorded for backward."""
        return _arithmetic.index(self, key)

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self.data)

    def __iter__(self):
        """The rows along the first axis (each recorded as x[i]), as PyTorch iterates."""
        if self.data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(len(self.data)))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """`np.asarray(t)`: the array itself, as `t.numpy()` (writes through it are the user's,
        not counted by `_version`, as PyTorch's through `.numpy()`); `np.array(t)` a copy."""
        if copy:
            return np.array(self.data, dtype=dtype, copy=True)
        if dtype is None or np.dtype(dtype) == self.data.dtype:
            return self.data
        if copy is False:  # NumPy 2's contract: refuse what cannot be had without a copy
            raise ValueError(f"Unable to avoid copy while creating an array as requested: the "
                             f"Tensor holds {self.data.dtype}, not {np.dtype(dtype)}")
        return self.data.astype(dtype)

    # -- copies and pickles: as PyTorch's (runtime/copies.py) --------------------------

    def __reduce_ex__(self, protocol: Any) -> tuple:
        return _copies.reduced(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> Tensor:
        return _copies.deep_copy(self, memo)

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix=type(self).__name__ + "(")
        extras = []
        if self.data.dtype != np.float64:
            extras.append(f"dtype={self.data.dtype}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{self.grad_fn.name}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return f"{type(self).__name__}({', '.join([body, *extras])})"


class _Detached(Tensor):
    """What `detach()` gives: a leaf Tensor over another one's array that shares its version
    counter, as PyTorch's does. An in-place update through either one changes what the other
    holds, so a graph that saved either refuses backward afterwards (a version of its own
    would let backward read the changed array without a word)."""

    def __init__(self, base: Tensor) -> None:
        while type(base) is _Detached:
            base = base._base
        self._base = base
        self.data = base.data

    @property
    def _version(self) -> int:  # type: ignore[override]
        return self._base._version

    @_version.setter
    def _version(self, value: int) -> None:
        self._base._version = value

    def __repr__(self) -> str:
        return "Tensor" + super().__repr__()[len("_Detached"):]


class Parameter(Tensor):
    """A leaf Tensor holding its own copy of the data; optimizers update it in place.

    float32 stays float32 and float64 stays float64; a Python float becomes a
    float64 scalar. Integer data cannot require gradients.
    """

    # How many times any Parameter's `data` was bound to another array. Compiled train steps
    # keep the arrays they update in place and compare this one number before each call,
    # instead of checking every Parameter's array.
    data_replacements = 0

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        if isinstance(data, Tensor):
            data = data.data
        # Always a copy, so an optimizer step never writes into the caller's array; in native
        # byte order, which compiled kernels (and their in-place updates) work in.
        array = np.array(data, copy=True)
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        super().__init__(array, requires_grad=requires_grad)

    def _set_data(self, value: np.ndarray) -> None:
        if not isinstance(value, np.ndarray):  # p.data = p.data - lr * g of a 0-d p: a scalar
            value = np.asarray(value)
        self._data = value
        Parameter.data_replacements += 1

    # Read through a C-level getter: every compiled call reads each Parameter's array.
    data = property(operator.attrgetter("_data"), _set_data,
                    doc="The Parameter's array; binding another one is counted.")

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the accumulated gradient (or fill it with zeros, in place)."""
        if set_to_none or self._grad is None:
            self._grad = None
        else:
            self._grad[...] = 0


# Last, because autograd builds on Tensor; a module-level name, because an import inside
# Tensor.backward costs more than a microsecond on every call.
from . import arithmetic as _arithmetic  # noqa: E402
from . import autograd as _autograd  # noqa: E402
from . import copies as _copies  # noqa: E402
from . import inplace as _inplace  # noqa: E402
