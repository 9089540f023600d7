"""`loss.backward()` of a training loop, written for its call site as one Python function.

The runtime's general `backward()` on a loss of one compiled call goes through
`_backward_one_node` and `_stored_into_leaves` (runtime/autograd.py) to the call's
`GradientsInto` (compiler/gradients_into.py): a few calls and list-building checks over the
site's Tensors, about a microsecond on W1 beside a kernel of about as much. Once the kernels
that store into `.grad` exist, the compiler writes those same checks out for the site's
number of Tensors, with the kernel call, and offers the function to the runtime as the
site's `settled_backward` (runtime/graph.py): `Tensor.backward` tries it first. It returns
False, having done nothing, whenever a check fails, and the general path then runs and
decides (raising the same errors, or storing another way).

What it checks is what the general path needs before it lets the kernel store into `.grad`:
the inputs' versions are those stamped at forward time, the node still has its kernels and
has no hooks or retained outputs, the leaves still require grad and have no hooks (the
site's `leaves_checked`, stamped by the general path), anomaly mode is off, and every leaf
either has no `.grad` but still owns the array it was handed last (it is overwritten) or
has that very array as its `.grad` (it is added to).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from compiler.errors import KernelShapeError
from runtime import Tensor
from runtime.anomaly_mode import _anomaly
from runtime.autograd import unit_seed

if TYPE_CHECKING:
    from compiler.gradients_into import GradientsInto


def settled_backward(into: GradientsInto, n_leaves: int, n_tensors: int,
                     dtype: np.dtype) -> Callable | None:
    """`settled_backward(node, retain_graph) -> bool` for the nodes whose backward_into is
    `into`, recorded with `n_tensors` Tensors, the first `n_leaves` of them the leaves that
    get gradients, and a 0-d output of `dtype`; None when `into` stores rows of stacks
    (the general path's `_stack` decides those)."""
    if into.has_stacks or not n_leaves:
        return None
    tensors = [f"t{k}" for k in range(n_tensors)]
    versions = [f"v{k}" for k in range(n_tensors)]
    arrays = [f"h{k}" for k in range(n_leaves)]
    leaves = list(zip(tensors[:n_leaves], arrays, strict=True))
    owned = " and ".join(f"{t}._grad is {h} and {t}._own_grad is {h}" for t, h in leaves)
    unchanged = " or ".join(f"{t}._version != {v}" for t, v in zip(tensors, versions,
                                                                        strict=True))
    lines = [
        "def settled_backward(node, retain_graph):",
        f"    {''.join(t + ', ' for t in tensors)}= node.tensors",
        f"    {''.join(v + ', ' for v in versions)}= node.versions",
        "    backward = node.backward_into",
        f"    if {unchanged} or backward is None or backward.__func__ is not into \\",
        "            or node._tensor_hooks is not None or node._retained is not None \\",
        "            or node.site.leaves_checked != TensorClass._leaf_changes or anomaly.enabled:",
        "        return False",
        f"    {''.join(h + ', ' for h in arrays)}= into._arrays",
        f"    if {' and '.join(f'{t}._grad is None' for t, _ in leaves)}:",
        "        # zero_grad() ran: each array handed out last is overwritten, if still owned",
        f"        if {' or '.join(f'{t}._own_grad is not {h}' for t, h in leaves)}:",
        "            return False",
        "        adds = STORE_ALL",
        f"    elif {owned}:",
        "        adds = ADD_ALL  # accumulation into the `.grad`s of the last backward()",
        "    else:",
        "        return False",
        "    try:",
        f"        call(*backward.__self__, SEED, adds, {', '.join(arrays)})",
        "    except (TypeError, KernelShapeError):  # arrays the kernel does not take",
        "        return False",
        *(f"    {t}._grad = {t}._own_grad = {h}" for t, h in leaves),
        "    if not retain_graph:",
        "        node._backward = node.backward_into = None  # node.release()",
        "    return True",
        "",
    ]
    source = "\n".join(lines)
    namespace = {
        "into": into, "call": into.kernel_call, "STORE_ALL": into.store_all,
        "ADD_ALL": into.add_all, "SEED": unit_seed(np.dtype(dtype)), "TensorClass": Tensor,
        "anomaly": _anomaly, "KernelShapeError": KernelShapeError,
    }
    exec(compile(source, "<settled backward()>", "exec"), namespace)  # noqa: S102
    function = namespace["settled_backward"]
    function.source = source  # for people reading a profile
    return function
