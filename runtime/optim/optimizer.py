"""The Optimizer base class: parameter groups, per-parameter state, step, state_dict.

A subclass only says which pure update rule it uses (`runtime.optim.rules`),
how a group's hyper-parameters map to the rule's options, and what the state
starts as. `step()` calls the rule on each parameter with a gradient and writes
the results back in place, so Parameters keep their identity (and their arrays)
across steps; the parameters of an elementwise rule share calls (`foreach`). The
same three pieces let the compiler fuse the update into a kernel:
`optimizer.rule`, `optimizer.rule_options(group)` and `optimizer.state`.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from ..autograd import enable_grad
from ..tensor import Tensor
from . import foreach

ParamsArg = Iterable[Tensor] | Mapping[str, Tensor] | Iterable[dict[str, Any]] \
    | Iterable[tuple[str, Tensor]]

# The compiled update: `factory(optimizer, group_index)` makes a callable that updates a group
# in one kernel and returns the parameters it left to the NumPy rules. The compiler registers
# it (compiler/update_kernels.py); the runtime never imports the compiler, and without it the
# rules run as they always did.
CompiledUpdate = Callable[[dict[str, Any]], list[Tensor]]
_compiled_update: Callable[[Any, int], CompiledUpdate] | None = None


def rule_flags(options: dict[str, Any]) -> tuple[bool, ...]:
    """The structural options of a rule (its bools), which decide the state's entries."""
    return tuple(v for v in options.values() if isinstance(v, bool))


def set_compiled_update(factory: Callable[[Any, int], CompiledUpdate] | None) -> None:
    """Register (or, with None, remove) the factory of compiled group updates."""
    global _compiled_update
    _compiled_update = factory


class _Counted(dict):
    """A dict whose changes (not its arrays' values) add one to `Optimizer.state_changes`."""

    def __setitem__(self, key: Any, value: Any) -> None:
        Optimizer.state_changes += 1
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: Any) -> None:
        Optimizer.state_changes += 1
        dict.__delitem__(self, key)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def pop(self, *args: Any) -> Any:
        Optimizer.state_changes += 1
        return dict.pop(self, *args)

    def popitem(self) -> Any:
        Optimizer.state_changes += 1
        return dict.popitem(self)

    def clear(self) -> None:
        Optimizer.state_changes += 1
        dict.clear(self)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> _Counted:
        self.update(other)
        return self


class ParamState(_Counted):
    """One parameter's optimizer state: entry name -> array (a plain dict, counted)."""


class OptimizerState(_Counted):
    """`Optimizer.state`: parameter -> its ParamState (a dict given is stored as one).

    Compiled train steps hold the state's arrays between steps; counting the changes of
    these dicts lets a step see, with one comparison, that nobody replaced, deleted or
    cleared them (a user resetting the optimizer with `opt.state.clear()`, say)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.update(*args, **kwargs)

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value if type(value) is ParamState else ParamState(value))


class ParamList(list):
    """A group's "params": a list whose changes add one to `Optimizer.group_changes`, and
    whose equality is its Parameters' identity (a Parameter's `==` is elementwise).

    Compiled train steps hold the Parameters of the groups they were planned with; counting
    the changes of these lists lets a step see, with one comparison, that nobody removed,
    added or replaced a Parameter in place (`del group["params"][1]`), which PyTorch's next
    `step()` would follow."""

    __hash__ = None  # type: ignore[assignment]  # a list's

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, list):
            return NotImplemented
        return len(self) == len(other) and all(map(operator.is_, self, other))

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal


def _counted(name: str) -> Callable:
    """list's method `name`, adding one to `Optimizer.group_changes` first."""
    method = getattr(list, name)

    def counted(self: ParamList, *args: Any, **kwargs: Any) -> Any:
        Optimizer.group_changes += 1
        return method(self, *args, **kwargs)

    counted.__name__ = name
    return counted


for _name in ("__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend",
              "insert", "pop", "remove", "clear", "sort", "reverse"):
    setattr(ParamList, _name, _counted(_name))


class Optimizer:
    """Base of all optimizers, with PyTorch's param_groups / state / state_dict layout."""

    # Changes of every optimizer's state dicts so far (see OptimizerState), and of its
    # groups' lists of Parameters (see ParamList).
    state_changes: ClassVar[int] = 0
    group_changes: ClassVar[int] = 0

    rule: ClassVar[Callable[..., tuple[Any, dict[str, Any]]]]
    # Whether `rule` is made of elementwise operations only (a 0-d state entry such as the step
    # count used as a scalar), so that one call can update several parameters concatenated
    # (`foreach`); a rule with a reduction over a parameter, such as a norm, must say False.
    elementwise: ClassVar[bool] = False
    # Group settings under which `init_state` makes every entry this optimizer may keep (SGD's
    # momentum on, say): a state saved after such an option was turned off still holds its
    # entries, unread, and loads.
    every_entry: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: ParamsArg, defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Tensor, dict[str, np.ndarray]] = OptimizerState()
        # The compiler's caches for this optimizer (never read otherwise): its compiled group
        # updates by group index, and the train steps that `fit` reuses.
        self._compiled: dict[Any, Any] = {}
        # The compiler's whole step for an optimizer of one settled group: `step()` calls it
        # first; it returns False, having done nothing, unless it did the step.
        self._settled_step: Callable[[], bool] | None = None
        self._entries: dict[tuple, Any] = {}  # by the rule's flags: the state's entry names
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of "
                "Tensors or dicts, but got a single Tensor"
            )
        if isinstance(params, Mapping):
            groups: list[Any] = [{"params": params}]
        else:
            items = list(params)
            if not items:
                raise ValueError("optimizer got an empty parameter list")
            groups = items if isinstance(items[0], dict) else [{"params": items}]
        for group in groups:
            self.add_param_group(group)

    # -- subclass interface -----------------------------------------------------------

    def rule_options(self, group: dict[str, Any]) -> dict[str, Any]:
        """The keyword options of `rule` for this group: run-time values, and flags as Python
        bools (what tells them apart: a NumPy bool, or `momentum != 0` of an np.float64,
        would be taken for a run-time value and traced)."""
        raise NotImplementedError

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, np.ndarray]:
        """The state of `param` before its first update."""
        raise NotImplementedError

    def adopt_state(self, saved: dict[str, Any]) -> dict[str, Any]:
        """A loaded state with the entries this optimizer keeps and PyTorch's does not added
        (a state_dict of torch.optim's loads as it is); the base class adds none."""
        return saved

    def complete_state(self, param: Tensor, group: dict[str, Any],
                       flags: tuple | None = None) -> dict[str, np.ndarray]:
        """`param`'s state, made on its first update, with the entries that the group's current
        options need added fresh where missing: an option turned on mid-training (SGD's
        momentum from 0, say) starts its entries as PyTorch does, from the next gradient.
        Entries an option no longer uses stay, unread, as in PyTorch. `flags`, if given, is
        `rule_flags(rule_options(group))`, computed once for a group's parameters."""
        state = self.state.get(param)
        if state is None:
            self.state[param] = self.init_state(param, group)
            return self.state[param]  # the ParamState stored
        if flags is None:
            flags = rule_flags(self.rule_options(group))
        needed = self._entries.get(flags)
        if needed is None or not needed <= state.keys():
            fresh = self.init_state(param, group)
            self._entries[flags] = frozenset(fresh)
            for name, value in fresh.items():
                state.setdefault(name, value)
        return state

    # -- groups -----------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group: {"params": Tensors or a name->Tensor dict, **hyper-parameters}."""
        group = dict(param_group)
        params = group["params"]
        if isinstance(params, Tensor):
            params = [params]
        if isinstance(params, (set, frozenset)):  # PyTorch's refusal: state_dict goes by position
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        if not isinstance(params, Mapping):
            params = list(params)
            if params and all(_is_named(item) for item in params):  # named_parameters() pairs
                named = dict(params)
                if len(named) != len(params):
                    raise ValueError("a parameter name appears more than once in one "
                                     "parameter group")
                params = named
        if isinstance(params, Mapping):
            group["param_names"] = list(params.keys())
            params = list(params.values())
        group["params"] = ParamList(params)
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        if len({id(p) for p in group["params"]}) != len(group["params"]):
            raise ValueError("a parameter appears more than once in one parameter group")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        self.param_groups.append(group)

    def tracked_state(self) -> OptimizerState:
        """`self.state`, made an OptimizerState if someone assigned a plain dict (whose changes
        nobody counts): what compiled steps hold."""
        if type(self.state) is not OptimizerState:
            self.state = OptimizerState(self.state)
        return self.state

    def parameters(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    # -- stepping ---------------------------------------------------------------------

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's `.grad` (to None, or to zeros in place)."""
        for group in self.param_groups:
            if set_to_none:
                for p in group["params"]:
                    p._grad = None  # what the grad setter does with None, without the call
                continue
            for p in group["params"]:
                if p._grad is not None:
                    p._grad[...] = 0

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient, in place (adding one to its `_version`);
        return closure() if one is given."""
        if closure is None:
            settled = self._settled_step
            if settled is not None and settled():
                return None
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        compiled = _compiled_update
        for index, group in enumerate(self.param_groups):
            if compiled is not None:
                update = self._compiled.get(index)
                if update is None:
                    update = self._compiled[index] = compiled(self, index)
                params = update(group)  # what the kernel left to the rules below
                if not params:
                    continue
            else:
                params = group["params"]
            options = _python_numbers(self.rule_options(group))
            flags = rule_flags(options)
            shared = []  # parameters that may share calls of the rule (see foreach)
            for p in params:
                grad = p._grad
                if grad is None:
                    continue
                state = self.complete_state(p, group, flags)
                if self.elementwise and state:  # stateless rules are too short to share
                    shared.append((p, grad, state))
                else:
                    foreach.update_one(self.rule, options, p, grad, state)
            if shared:
                foreach.update(self.rule, options, shared)
        return loss

    # -- state_dict -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """{"state": {index: {name: array}}, "param_groups": [{..., "params": [index]}]}.

        Parameters are numbered in group order, as in PyTorch. The arrays are
        copies, so the dict is a snapshot that later steps do not change.
        """
        index = {id(p): i for i, p in enumerate(self.parameters())}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {
            index[id(p)]: {k: np.array(v, copy=True) for k, v in s.items()}
            for p, s in self.state.items()
        }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyper-parameters and state saved by `state_dict` (copying the arrays).

        As in PyTorch, parameters are matched by position. Each state must fit its
        parameter: the keys of a fresh state of that parameter under the loaded settings
        (and those of an option turned off since, kept unread), with their shapes (a state
        for another parameter is refused, not used). Nothing changes unless every check
        passes.
        """
        self.prepare_load(state_dict)()

    def prepare_load(self, state_dict: dict[str, Any]) -> Callable[[], None]:
        """Check `state_dict` against this optimizer and return the function that loads it
        (which cannot fail): callers restoring more than the optimizer check everything
        before they change anything."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    "loaded state dict contains a parameter group that doesn't match "
                    "the size of optimizer's group"
                )
        by_index: dict[int, tuple[Tensor, dict[str, Any]]] = {}
        settings = []
        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            loaded = {k: copy.deepcopy(v) for k, v in saved.items()
                      if k not in ("params", "param_names")}
            settings.append(loaded)
            for i, p in zip(saved["params"], group["params"], strict=True):
                by_index[int(i)] = (p, {**group, **loaded})
        state: dict[Tensor, dict[str, np.ndarray]] = {}
        for i, saved_state in state_dict["state"].items():
            if int(i) not in by_index:
                raise ValueError(f"loaded state dict has a state for parameter {i}, which "
                                 "no group of the state dict lists")
            p, group = by_index[int(i)]
            saved_state = self.adopt_state(dict(saved_state))
            _check_state(int(i), p, saved_state, self.init_state(p, group),
                         self.init_state(p, {**group, **self.every_entry}))
            state[p] = {
                # Moments follow the parameter's dtype; the step count stays float64. (asarray
                # first: a PyTorch tensor's __array__ takes no copy=)
                k: np.array(np.asarray(v), dtype=np.float64 if k == "step" else p.dtype,
                            copy=True)
                for k, v in saved_state.items()
            }

        def load() -> None:
            for group, loaded in zip(self.param_groups, settings, strict=True):
                group.update(loaded)
            self.state = OptimizerState(state)

        return load

    # -- copies and pickles ------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """What `copy.deepcopy` and `pickle` keep: everything but the compiler's caches,
        which hold kernels and generated steps bound to this optimizer's own Parameters and
        arrays (a copy that kept them stepped the original's Parameters, not its own); a
        copy compiles its own on its first steps."""
        state = self.__dict__.copy()
        state["_compiled"] = {}
        state["_settled_step"] = None
        return state

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join([*lines, ")"])


def _python_numbers(options: dict[str, Any]) -> dict[str, Any]:
    """The rule's numeric options as Python floats: a NumPy float64 (an lr from a NumPy
    schedule) times a float32 array is float64 (NEP 50), a Python float is not, so a float32
    parameter is stepped in float32 arithmetic, as PyTorch and the compiled kernels step it."""
    return {k: v if isinstance(v, bool) else float(v) for k, v in options.items()}


def _is_named(item: Any) -> bool:
    """A (name, Tensor) pair, as PyTorch's `named_parameters()` (or a dict's items) gives."""
    return isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) \
        and isinstance(item[1], Tensor)


def _check_state(index: int, p: Tensor, saved: dict[str, Any], fresh: dict[str, Any],
                 every: dict[str, Any]) -> None:
    """Refuse a saved state that is not one of `p`'s: without an entry the loaded settings
    use (`fresh`), with one this optimizer never keeps (`every`: another optimizer's), or of
    other shapes. Entries of an option turned off since (`every` less `fresh`) stay, unread,
    as in PyTorch."""
    if not set(fresh) <= set(saved) <= set(every):
        raise ValueError(
            f"loaded state of parameter {index} has entries {sorted(saved)}, but this "
            f"optimizer keeps {sorted(fresh)} for it"
            + (f" (and {sorted(set(every) - set(fresh))} under other settings)"
               if set(every) != set(fresh) else "")
        )
    for key, value in saved.items():
        if np.shape(value) != np.shape(every[key]):
            raise ValueError(
                f"loaded state {key!r} of parameter {index} has shape {np.shape(value)}, but "
                f"the parameter (shape {p.shape}) needs shape {np.shape(every[key])}: the "
                "state belongs to another parameter"
            )
