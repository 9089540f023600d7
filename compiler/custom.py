"""User-defined derivative rules (like `jax.custom_vjp` or `torch.autograd.Function`).

    @custom_vjp
    def clip_gradient(x):
        return x

    @clip_gradient.defvjp
    def clip_gradient_vjp(g, out, x):      # cotangent, output, inputs: like the op table
        return (np.clip(g, -1.0, 1.0),)

Inside a traced function a call becomes one `custom_call` node that holds the
traced forward graph. The reverse pass sees that node and runs the user's rule
(traceable NumPy, so it becomes ordinary IR). Before code generation
`inline_calls` replaces each node by its forward graph, which then fuses like
any other ops.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

from compiler.errors import TraceError
from compiler.interpreter import interpret
from compiler.ir import Graph, Node, TensorType, rebuild
from compiler.ops.control import Loop
from compiler.ops.lowering import Inlined
from compiler.ops.registry import OpDef, ShapeError, register
from compiler.tracer import Tracer, current_builder
from compiler.tracing import trace
from compiler.user_code import user_loc


class CustomCall:
    """One traced call of a custom_vjp function: the rule and the forward graph (by identity).
    The forward graph's inputs are the function's `n_params` parameters, then the traced values
    it closes over (the node's last inputs), for which the rule gives no cotangent."""

    def __init__(self, function: custom_vjp, forward: Graph, n_params: int | None = None) -> None:
        self.function = function
        self.forward = forward
        self.n_params = len(forward.inputs) if n_params is None else n_params

    def __str__(self) -> str:
        return self.function.__name__


class custom_vjp:  # noqa: N801 -- named like jax.custom_vjp, used as a decorator
    """A NumPy function with its own VJP rule `rule(g, out, *inputs) -> cotangents`.

    The inputs are every parameter of the function, by position: keyword arguments are
    placed and defaults filled in (as in JAX), so the rule returns one cotangent per
    parameter however the function was called."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.rule: Callable | None = None
        try:
            self._signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            self._signature = None
        self.__name__ = getattr(fn, "__name__", "custom_vjp")
        self.__doc__ = fn.__doc__

    def defvjp(self, rule: Callable) -> Callable:
        self.rule = rule
        return rule

    def __call__(self, *args, **kwargs):
        args = self._positional(args, kwargs)
        builder = current_builder()
        if builder is None:  # plain NumPy values: just run it
            return self.fn(*args)
        if self.rule is None:
            raise TraceError(f"custom_vjp function {self.__name__} has no rule: decorate one "
                             f"with @{self.__name__}.defvjp", user_loc())
        from compiler.control import _BodyBuilder

        inputs = [builder.wrap(builder.lift(a, [])) for a in args]
        names = [f"arg{i}" for i in range(len(inputs))]
        # traced values the function closes over become inputs of the call, so that reverse
        # mode sees that the call reads them (and refuses to differentiate through them)
        closure = _BodyBuilder(builder)
        graph, out_tree = trace(self.fn, [t.type for t in inputs], names,
                                lambda traced: (tuple(traced), {}), builder.sym_hints,
                                name=self.__name__, builder=closure)
        if out_tree.kind != "leaf":
            raise TraceError(f"custom_vjp function {self.__name__} must return one array",
                             user_loc())
        captured = list(closure.captured.values())
        for k, node in enumerate(captured):
            node.attrs["index"] = len(inputs) + k
        graph = Graph(list(graph.inputs) + captured, graph.outputs, graph.name)
        inputs += [builder.wrap(node) for node in closure.enclosing]
        return builder.emit("custom_call", tuple(inputs),
                            {"call": CustomCall(self, graph, len(args))})


    def _positional(self, args: tuple, kwargs: dict) -> tuple:
        """Every input of the function by position, keywords placed and defaults filled in
        (as JAX's custom_vjp does): the node and the rule take them so, one cotangent each."""
        signature = self._signature
        if signature is None:  # a callable without one: its inputs are what the call gives
            return args
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as err:
            raise TypeError(f"{self.__name__}(): {err}") from None
        bound.apply_defaults()
        if bound.kwargs:
            raise TypeError(f"custom_vjp function {self.__name__} takes its inputs by "
                            "position (its rule receives them so): it cannot have keyword-only "
                            "parameters or **kwargs")
        return bound.args


def _infer(*types: TensorType, call: CustomCall) -> TensorType:
    expected = [x.type for x in call.forward.inputs]
    if list(types) != expected:
        raise ShapeError(f"{call} was traced for {expected}, got {list(types)}")
    return call.forward.outputs[0].type


def _impl(*arrays, call: CustomCall):
    return interpret(call.forward, list(arrays))[0]


def _vjp(g, out, *inputs, call: CustomCall):
    inputs, closed_over = inputs[:call.n_params], inputs[call.n_params:]
    cotangents = call.function.rule(g, out, *inputs)
    if not isinstance(cotangents, (tuple, list)) or len(cotangents) != len(inputs):
        raise TraceError(f"the VJP rule of {call} must return a tuple of {len(inputs)} "
                         f"cotangent(s), one per input (None for no gradient)", user_loc())
    for k, (c, x) in enumerate(zip(cotangents, inputs)):
        # a constant cotangent (np.ones(4)) too: broadcast against the input, a wrong shape
        # would otherwise surface as a broadcasting error that does not name the rule
        if c is not None and not _expands_to(x.shape, _shape_of(c)):
            raise TraceError(f"the VJP rule of {call} returned a cotangent of shape "
                             f"{_shape(c)} for input {k}, whose shape is {_shape(x)}: each "
                             "cotangent has its input's shape (or one the input broadcasts "
                             "to, summed as in PyTorch)", user_loc())
    # A rule may return plain numbers (say 0.0); they become arrays of the input's shape.
    return tuple(c if c is None or isinstance(c, Tracer) else np.zeros_like(x) + c
                 for c, x in zip(cotangents, inputs)) + (None,) * len(closed_over)


def check_closed_over(node: Node, needs: set[int]) -> None:
    """Refuse a gradient that would flow through a value a custom_vjp function closes over:
    its rule gives cotangents of the parameters only, so that gradient would silently be
    zero (JAX refuses it too). Pass the value as an argument, and give it a cotangent."""
    call = node.attrs["call"]
    for x in node.inputs[call.n_params:]:
        if x.id in needs and x.type.is_float:
            raise TraceError(f"custom_vjp function {call} closes over a traced value "
                             f"(a {x.type} array) that the gradient depends on; its "
                             "rule gives cotangents of its parameters only: pass the value as "
                             "a parameter and return its cotangent from the rule", node.loc)


def gradient_free_inputs(node: Node) -> frozenset[int]:
    """The inputs of a custom_call node to which its rule returns None: like a
    torch.autograd.Function's backward returning None, the call does not connect them to
    its output (a Parameter reached only so keeps `.grad` None). The rule is traced once per
    traced call, on values of the node's types, to see where its Nones are; a rule that
    cannot be traced so counts as giving every input a gradient."""
    call = node.attrs["call"]
    found = getattr(call, "gradient_free", None)
    if found is None:
        from compiler.builder import Builder
        from compiler.tracer import building

        builder = Builder()

        def value(k: int, t: TensorType) -> Tracer:
            return builder.wrap(Node("input", (), {"index": k, "type": t}, t))

        try:
            with building(builder):
                cotangents = _vjp(value(0, node.type), value(1, node.type),
                                  *(value(2 + k, x.type) for k, x in enumerate(node.inputs)),
                                  call=call)
            found = frozenset(k for k, c in enumerate(cotangents)
                              if c is None and k < call.n_params)
        except Exception:  # noqa: BLE001 -- the reverse pass reports the rule's errors
            found = frozenset()
        call.gradient_free = found
    return found


def _expands_to(shape: tuple, target: tuple) -> bool:
    """Whether an input of `shape` broadcasts to a cotangent of `target` (which the reverse
    pass then sums back to `shape`, as PyTorch does for a Function's gradient)."""
    if len(shape) > len(target):
        return False
    return all(d == t or d == 1 for d, t in zip(shape[::-1], target[::-1]))


def _shape_of(x) -> tuple:
    return x.shape if isinstance(x, Tracer) else np.shape(x)


def _shape(x) -> tuple:
    return tuple(d if isinstance(d, int) else str(d) for d in _shape_of(x))


register(OpDef("custom_call", "call", _infer, _impl, _vjp, lowering=Inlined(),
               doc="a custom_vjp function; inlined before code generation"))


def inline_calls(graph: Graph, loops: dict[int, Loop] | None = None) -> Graph:
    """Replace every custom_call node by the nodes of its forward graph (calls in that graph
    too), reading the values that replace its inputs, in one pass; and in loop bodies, each
    loop once (`loops`: a loop's id -> the loop with its calls inlined). `graph` itself if it
    has no calls."""
    loops = {} if loops is None else loops
    memo: dict[int, Node] = {}
    for node in graph.nodes():
        inputs = tuple(memo.get(x.id, x) for x in node.inputs)
        if node.op == "custom_call":
            forward = inline_calls(node.attrs["call"].forward, loops)
            mapping = {i.id: x for i, x in zip(forward.inputs, inputs)}
            (memo[node.id],) = rebuild(forward.outputs, mapping)
            continue
        attrs = node.attrs
        loop = attrs.get("loop")
        if node.op == "scan" and isinstance(loop, Loop):
            if id(loop) not in loops:
                body = inline_calls(loop.body, loops)
                loops[id(loop)] = loop if body is loop.body else Loop(
                    body, loop.n_consts, loop.n_carries, loop.length, loop.reverse, loop.grad,
                    loop.name)
            attrs = {**attrs, "loop": loops[id(loop)]} if loops[id(loop)] is not loop \
                else attrs
        if attrs is not node.attrs or any(a is not b for a, b in zip(inputs, node.inputs)):
            memo[node.id] = Node(node.op, inputs, attrs, node.type, node.name, node.loc,
                                 node.grad_of)
    if not memo:
        return graph
    return Graph(list(graph.inputs), [memo.get(o.id, o) for o in graph.outputs], graph.name)
