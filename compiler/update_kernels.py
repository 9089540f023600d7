"""`optimizer.step()` as one compiled kernel per parameter group (runtime.optim's hook).

The runtime offers a hook (`runtime.optim.optimizer.set_compiled_update`) and,
without it, runs each optimizer's NumPy rule (`runtime.optim.rules`) as ever.
The compiler registers `GroupUpdate` there: per parameter group, the rule is
traced once (as a train step traces it) into a kernel that updates one
parameter and its state in place, and a loop around it runs that kernel on
every row of a table of addresses (compiler/tables.py): each row a parameter's
data, gradient and state arrays. One call updates the whole group, whatever its
number of parameters, for the cost of checking that the arrays are still those
of the table (a few C-level comparisons per parameter) and bumping the version
counters.

Once a group's step has run on its tables twice, the step is written out as one
generated function (`GroupUpdate._written_out`): each parameter, gradient and
state dict compared by identity, the settings as one tuple, the kernels and the
version counters unrolled; anything that differs sends the step back here.

A table is built when a group's arrays (parameters, gradients, state) stayed
the same for two steps in a row: a training loop's gradients keep their arrays
from step to step (the backward engine refills the `.grad` arrays that
`zero_grad()` set aside), while code that assigns fresh gradient arrays every
step would pay for a new table every step, so the NumPy rules serve it, as
they serve anything the kernel cannot take (another dtype than the
parameter's, arrays that are not C-contiguous or not writable), and every
step until the group has settled.

An elementwise rule (`optimizer.elementwise`) runs on each parameter
flattened, so one kernel, with a symbolic length, serves every parameter of a
dtype; another rule runs on each parameter's own shape, one kernel per shape.
The kernels are compiled without fast-math, so every parameter gets the same
IEEE arithmetic whichever way it is updated, and an update does not depend on
which other parameters share its group.
"""

from __future__ import annotations

import copy
import functools
import operator
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain, compress
from typing import Any

import numpy as np

from compiler.codegen import GeneratedModule, generate
from compiler.codegen.emit import FASTMATH
from compiler.tables import address_of
from compiler.timings import KernelBuild
from compiler.tracer import weak
from runtime import Parameter, Tensor
from runtime.optim import Optimizer
from runtime.optim.optimizer import ParamList, rule_flags, set_compiled_update

_grad_of = operator.attrgetter("_grad")
_data_of = operator.attrgetter("data")
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
WRITTEN_OUT_PARAMETERS = 256  # a group of up to this many gets its settled step written out


# --- the kernels ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RuleKey:
    """What a compiled update depends on (its hyper-parameter values are arguments)."""

    rule: Callable
    numeric: tuple[str, ...]  # the rule's run-time options, in the order of `hypers`
    flags: tuple[tuple[str, bool], ...]  # its structural options
    # State entries in order: (name, whether it is one number per parameter, its dtype).
    state: tuple[tuple[str, bool, np.dtype], ...]
    dtype: np.dtype
    shape: tuple[int, ...] | None  # None: flattened (an elementwise rule)


class UpdateKernel:
    """`run(addresses, sizes, hypers)`: the rule on every row of a table; see the module doc.

    Columns of `addresses`: the parameter's data, its gradient, then its state entries in
    `key.state` order; `sizes` holds each parameter's number of elements."""

    def __init__(self, key: RuleKey) -> None:
        from compiler.api import CompiledFunction
        from compiler.jit import NumbaKernel

        self.key = key
        name = getattr(key.rule, "__name__", "update")
        names, flags = key.numeric, dict(key.flags)
        entries = [entry for entry, _, _ in key.state]

        def update(param, grad, state, hypers):
            # Python floats to the NumPy rules, and to PyTorch: weak, not cast to float32 first
            # (1 - beta1 in float32 drifted Adam's float32 steps by ulps from the rules')
            options = {option: weak(hypers[i]) for i, option in enumerate(names)}
            new_param, new_state = key.rule(param, grad, dict(zip(entries, state)), **options,
                                            **flags)
            # An entry the rule no longer uses (momentum turned off) is written back unchanged.
            old = dict(zip(entries, state))
            return new_param, [new_state.get(entry, old[entry]) for entry in entries]

        update.__name__ = name if name.isidentifier() else "update"
        # Static shapes for a rule on whole parameters (wrt = everything), a symbolic length
        # for a flattened one (wrt = the hyper-parameters only).
        compiled = CompiledFunction(update, wrt=(0, 1, 2, 3) if key.shape else (3,))
        shape = key.shape if key.shape is not None else (2,)
        state = [np.zeros(() if scalar else shape, dtype) for _, scalar, dtype in key.state]
        spec = compiled.specialize(np.zeros(shape, key.dtype), np.zeros(shape, key.dtype),
                                   state, np.zeros(len(names)))
        graph = spec.graph_of("forward")
        writes = {0: 0, **{1 + k: 2 + k for k in range(len(entries))}}
        build = KernelBuild()
        with build.times.phase("codegen"):
            generated = generate(graph, "optimizer update", writes, bare_scalars=True)
        if generated.constants:
            raise NotImplementedError("an update rule with constant arrays")
        # IEEE arithmetic (see the module doc), and the loop over the table's rows.
        source = generated.source.replace(f"fastmath={FASTMATH}", "fastmath=False")
        table_name = f"{generated.function_name}_table"
        source += _table_loop(table_name, generated.function_name, key)
        kernel = NumbaKernel(graph, GeneratedModule(source, generated.function_name, ()),
                             eager=False, build=build)
        self.source = source
        self.run = kernel.entry(table_name, (np.zeros((1, 2 + len(entries)), np.int64),
                                             np.zeros(1, np.int64), np.zeros(len(names))))


def _table_loop(name: str, kernel: str, key: RuleKey) -> str:
    dtype = f"np.{key.dtype.name}"
    shape = "(n,)" if key.shape is None else repr(tuple(key.shape))
    reads = [f"        param = array_at(addresses[row, 0], {shape}, {dtype})",
             f"        grad = array_at(addresses[row, 1], {shape}, {dtype})"]
    for k, (_, scalar, entry_dtype) in enumerate(key.state):
        where = f"addresses[row, {2 + k}]"
        reads.append(f"        state{k} = scalar_array_at({where}, np.{entry_dtype.name})"
                     if scalar else f"        state{k} = array_at({where}, {shape}, {dtype})")
    arguments = ", ".join(["param", "grad", *(f"state{k}" for k in range(len(key.state))),
                           "hypers"])
    return (
        "\n\nfrom compiler.tables import array_at, scalar_array_at  # noqa: E402\n\n\n"
        "@numba.njit(cache=True, error_model=\"numpy\")\n"
        f"def {name}(addresses, sizes, hypers):\n"
        f'    """{kernel} on every row of a table of parameters given by address."""\n'
        "    for row in range(addresses.shape[0]):\n"
        "        n = sizes[row]\n"
        + "\n".join(reads) + "\n"
        f"        {kernel}({arguments})\n")


_kernels: dict[RuleKey, UpdateKernel] = {}
_kernels_lock = threading.Lock()


def update_kernel(key: RuleKey) -> UpdateKernel:
    """The kernel for `key`, compiled once per process (numba's cache keeps it across)."""
    kernel = _kernels.get(key)
    if kernel is None:
        with _kernels_lock:
            if key not in _kernels:
                _kernels[key] = UpdateKernel(key)
            kernel = _kernels[key]
    return kernel


# --- one parameter group ---------------------------------------------------------------------
@dataclass
class _Table:
    """One kernel's rows: the parameters it updates and the arrays it reads and writes."""

    kernel: UpdateKernel
    params: list[Tensor]
    addresses: np.ndarray
    sizes: np.ndarray

    def __post_init__(self) -> None:
        self.run = self.kernel.run  # read once per step

@dataclass
class _Arrays:
    """What a group's arrays were at a step, by identity: each is gathered and compared with
    C-level operations (a few per parameter), which is all a settled step costs in Python."""

    params: list[Tensor]
    grads: list
    data: list | None  # None when every parameter is a Parameter: then its counter says
    replacements: int
    state: dict
    dicts: list  # the state dicts of the parameters with gradients
    entries: list  # their arrays
    identities: list | None = None  # params, grads, dicts: what a settled step compares

    def same(self, other: _Arrays) -> bool:
        return _same(self.params, other.params) and _same(self.grads, other.grads) \
            and self.replacements == other.replacements \
            and (self.data is None or _same(self.data, other.data)) \
            and self.state is other.state and _same(self.dicts, other.dicts) \
            and _same(self.entries, other.entries)


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(map(operator.is_, a, b))


def _arrays(optimizer: Optimizer, params: list[Tensor]) -> _Arrays:
    grads = list(map(_grad_of, params))
    data = None if all(map(_is_parameter, params)) else list(map(_data_of, params))
    state = optimizer.state
    dicts = list(map(state.get, compress(params, map(_not_none, grads))))
    entries = list(chain.from_iterable(map(_values, filter(None, dicts))))
    return _Arrays(params, grads, data, Parameter.data_replacements, state, dicts, entries)


def _is_parameter(p: Any) -> bool:
    return type(p) is Parameter


_not_none = functools.partial(operator.is_not, None)
_values = operator.methodcaller("values")


class GroupUpdate:
    """`update(group)`: one step of the optimizer on the group, compiled where it can be;
    returns the parameters left for the NumPy rules (empty when the kernels did it all)."""

    def __init__(self, optimizer: Optimizer, index: int) -> None:
        self.optimizer = optimizer
        self.index = index
        self._last: _Arrays | None = None  # the arrays of the last step, until tables exist
        self._settled: _Arrays | None = None  # the arrays the tables were made for
        self._n_entries = 0
        self._tables: list[_Table] = []
        self._rest: list[Tensor] = []  # parameters with a gradient that no kernel takes
        self._keys: tuple = ()  # the group's settings (but its params) when tables were made
        self._values: tuple = ()
        self._n_settings = 0
        self._settled_step: Callable[[dict], list | None] | None = None  # see `_written_out`
        self._hypers = np.zeros(0)
        self._options: dict[str, Any] = {}

    def __call__(self, group: dict) -> list[Tensor]:
        settled_step = self._settled_step
        if settled_step is not None:
            rest = settled_step(group)
            if rest is not None:
                return rest
        params = group["params"]
        try:
            # A settled step: the group's arrays still those of the tables, its settings too
            # (a setting deleted raises KeyError)
            unchanged = self._holds_settled(params) \
                and len(group) == self._n_settings and self._settings(group) == self._values
        except KeyError:
            unchanged = False
        if unchanged:  # the second settled step writes the next ones out (`_written_out`)
            if self._settled_step is None and len(params) <= WRITTEN_OUT_PARAMETERS \
                    and all(type(key) is str for key in self._keys):  # keys as literals
                self._settled_step = self._written_out(params)
        else:
            self._settled = self._tables = self._settled_step = None
            if self.index == 0:
                self.optimizer._settled_step = None
            arrays = _arrays(self.optimizer, list(params))
            last, self._last = self._last, arrays
            if last is None or not arrays.same(last):  # new arrays: the rules (tables later)
                return list(compress(arrays.params, map(_not_none, arrays.grads)))
            self._settings_of(group)
            self._plan(arrays, group)
            self._settled, self._n_entries = arrays, sum(map(len, filter(None, arrays.dicts)))
            arrays.identities = [*arrays.params, *arrays.grads, *arrays.dicts]
        hypers = self._hypers
        for table in self._tables:
            table.run(table.addresses, table.sizes, hypers)
            for p in table.params:
                p._version += 1  # as the rules do: an earlier graph must refuse backward
        return self._rest

    def _written_out(self, params_list: list) -> Callable[[dict], list | None]:
        """A settled step as one generated function: the checks of `__call__` one parameter
        at a time (its gradient's identity), the settings as one tuple, the kernels and the
        version counters; it returns None, having done nothing, where anything differs (then
        `__call__` looks again). The parameters and their state dicts are checked by
        counters: while the group's list is the one seen (`params_list`, a ParamList) and
        no optimizer's lists or state dicts changed (Optimizer.group_changes, state_changes),
        they are the tables'; else `_recheck` compares them one by one."""
        settled = self._settled
        params = settled.params
        names = [f"p{k}" for k in range(len(params))]
        index = {id(p): k for k, p in enumerate(params)}
        namespace: dict[str, Any] = {
            "Parameter": Parameter, "Optimizer": Optimizer, "optimizer": self.optimizer,
            "STATE": settled.state, "REPLACEMENTS": settled.replacements,
            "N_SETTINGS": self._n_settings, "VALUES": self._values, "HYPERS": self._hypers,
            "REST": self._rest, "recheck": self._recheck,
            **{f"G{k}": g for k, g in enumerate(settled.grads)},
        }
        self._namespace = namespace
        self._arm(params_list)
        checks = [" or ".join(f"{n}._grad is not G{k}" for k, n in enumerate(names)),
                  "Parameter.data_replacements != REPLACEMENTS or optimizer.state is not STATE"]
        if settled.data is not None:
            namespace.update({f"A{k}": a for k, a in enumerate(settled.data)})
            checks.append(" or ".join(f"{n}.data is not A{k}" for k, n in enumerate(names)))
        settings = "".join(f"group[{key!r}], " for key in self._keys)
        lines = ["def settled_step(group):",
                 "    params = group['params']",
                 "    if params is not PARAMS or Optimizer.group_changes != GROUP_CHANGES \\",
                 "            or Optimizer.state_changes != STATE_CHANGES:",
                 "        if not recheck(params):",
                 "            return None",
                 f"    {''.join(f'{n}, ' for n in names)}= params" if names else "    pass",
                 *(f"    if {check}:\n        return None" for check in checks if check),
                 "    if len(group) != N_SETTINGS:",
                 "        return None",
                 "    try:",
                 f"        if ({settings}) != VALUES:",
                 "            return None",
                 "    except KeyError:  # a setting deleted",
                 "        return None"]
        for t, table in enumerate(self._tables):
            namespace.update({f"run{t}": table.run, f"ADDRESSES{t}": table.addresses,
                              f"SIZES{t}": table.sizes})
            lines.append(f"    run{t}(ADDRESSES{t}, SIZES{t}, HYPERS)")
            # as the rules do: an earlier graph must refuse backward
            lines += [f"    {names[index[id(p)]]}._version += 1" for p in table.params]
        lines.append("    return REST\n")
        source = "\n".join(lines)
        if self.index == 0 and not self._rest:
            # The optimizer's whole step while it has this one group, which the kernels
            # update entirely: Optimizer.step() calls it first (`_settled_step`).
            whole = ["def settled_optimizer_step():",
                     "    groups = optimizer.param_groups",
                     "    if len(groups) != 1:",
                     "        return False",
                     "    group = groups[0]",
                     *(line.replace("return None", "return False") for line in lines[1:-1]),
                     "    return True\n"]
            source += "\n\n" + "\n".join(whole)
        exec(compile(source, "<a settled optimizer step>", "exec"), namespace)  # noqa: S102
        step = namespace["settled_step"]
        step.source = source  # for people reading a profile
        if self.index == 0:
            self.optimizer._settled_step = namespace.get("settled_optimizer_step")
        return step

    def _holds_settled(self, params: list) -> bool:
        """Whether `params`, their gradients, arrays and state dicts (and the dicts' entries)
        are still those of the tables: C-level comparisons only, as few as can say it, so that
        a step costs little more than its kernel."""
        settled = self._settled
        return settled is not None and len(params) == len(settled.params) \
            and Parameter.data_replacements == settled.replacements \
            and self.optimizer.state is settled.state \
            and all(map(operator.is_, chain(params, map(_grad_of, params),
                                            map(settled.state.get, self._with_grads)),
                        settled.identities)) \
            and (settled.data is None
                 or all(map(operator.is_, map(_data_of, params), settled.data))) \
            and (not settled.entries or self._same_entries(settled))

    def _recheck(self, params: list) -> bool:
        """Whether the group still holds the settled arrays, compared one by one (a counter
        moved: some list or state dict changed, maybe not this group's); if so, the next
        steps compare counters again."""
        same = self._holds_settled(params)
        if same:
            self._arm(params)
        return same

    def _arm(self, params: list) -> None:
        """Let the written-out step trust the counters while `params` is the group's list: only
        an optimizer's own list (ParamList) counts its changes; a user's list is compared one
        by one at every step."""
        counted = params if type(params) is ParamList else None
        self._namespace.update(PARAMS=counted, GROUP_CHANGES=Optimizer.group_changes,
                               STATE_CHANGES=Optimizer.state_changes)

    def _same_entries(self, settled: _Arrays) -> bool:
        """Whether the state dicts (the tables' own) still hold the tables' arrays."""
        dicts = settled.dicts
        return sum(map(len, dicts)) == self._n_entries \
            and all(map(operator.is_, chain.from_iterable(map(_values, dicts)),
                        settled.entries))

    def _settings_of(self, group: dict) -> None:
        """The group's hyper-parameters as the kernels take them (a scheduler's new lr, say,
        is a new vector, never a new kernel), and its flags, which choose the kernels."""
        self._keys = tuple(k for k in group if k != "params")
        # A copy, so that a setting changed in place (group["betas"][0] = 0.5) differs from it
        self._values = copy.deepcopy(tuple(map(group.get, self._keys)))
        self._n_settings = len(group)
        self._settings = operator.itemgetter(*self._keys) if len(self._keys) > 1 \
            else lambda group: tuple(map(group.__getitem__, self._keys))
        self._options = self.optimizer.rule_options(group)
        self._hypers = np.array([v for v in self._options.values() if not isinstance(v, bool)],
                                np.float64)

    def _plan(self, arrays: _Arrays, group: dict) -> None:
        """Sort the parameters with gradients into tables, one per kernel; the rest go to
        the NumPy rules."""
        optimizer = self.optimizer
        options = self._options
        numeric = tuple(k for k, v in options.items() if not isinstance(v, bool))
        flags = tuple((k, v) for k, v in options.items() if isinstance(v, bool))
        flag_values = rule_flags(options)
        rows: dict[RuleKey, list[tuple[Tensor, list[np.ndarray]]]] = {}
        self._rest = []
        for p, grad in zip(arrays.params, arrays.grads):
            if grad is None:
                continue
            state = optimizer.state.get(p)
            if state is not None:  # with the entries the current flags need (a parameter's
                # first update, by the rules, makes them all)
                state = optimizer.complete_state(p, group, flag_values)
            data = p.data
            if state is None or not _takes(data, grad, state):
                self._rest.append(p)
                continue
            key = RuleKey(type(optimizer).rule, numeric, flags,
                          tuple((k, v.ndim == 0, v.dtype) for k, v in state.items()),
                          data.dtype, None if optimizer.elementwise else data.shape)
            rows.setdefault(key, []).append((p, [data, grad, *state.values()]))
        self._with_grads = list(compress(arrays.params, map(_not_none, arrays.grads)))
        self._tables = []
        for key, found in rows.items():
            try:
                kernel = update_kernel(key)
            except NotImplementedError:
                self._rest += [p for p, _ in found]
                continue
            addresses = np.array([[address_of(a) for a in row] for _, row in found], np.int64)
            sizes = np.array([row[0].size for _, row in found], np.int64)
            self._tables.append(_Table(kernel, [p for p, _ in found], addresses, sizes))


def _takes(data: np.ndarray, grad: Any, state: dict) -> bool:
    """Whether a kernel can update this parameter in place through its table row: arrays of
    the parameter's float dtype and shape (a state entry may be one float number: the step
    count), C-contiguous and writable. 0-d parameters go to the rules (their state entries
    could not be told from per-parameter numbers)."""
    if type(data) is not np.ndarray or data.dtype not in _FLOATS or data.ndim == 0:
        return False
    arrays = [data, grad, *state.values()]
    return all(type(a) is np.ndarray and a.flags.c_contiguous and a.flags.writeable
               for a in arrays) \
        and grad.dtype == data.dtype and grad.shape == data.shape \
        and all(v.ndim == 0 and v.dtype in _FLOATS
                or v.shape == data.shape and v.dtype == data.dtype for v in state.values())


def register_compiled_update() -> None:
    """Give runtime.optim the compiled update (unless the default backend is the interpreter,
    which compiles nothing: then the NumPy rules keep running)."""
    if os.environ.get("GRADFUSE_BACKEND", "numba") == "numba":
        set_compiled_update(GroupUpdate)
