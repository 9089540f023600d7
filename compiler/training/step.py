"""The fused train step: zero-grad, forward, backward, clipping and the optimizer's update as
one in-place kernel call.

The step is ordinary traceable NumPy (`TrainStep._step_function`): it inlines the
loss's value-and-gradient graph, clips, and applies `optimizer.rule` per
parameter. Numeric hyper-parameters (lr, momentum, betas, ...) travel in one
float64 kernel argument rebuilt from `optimizer.param_groups` when they change,
so a learning-rate schedule never recompiles; structural flags (nesterov,
amsgrad, ...) are part of the trace. With the numba backend the step's graph
becomes a module (`Kernels`) whose kernels store the new parameters and state
straight into their arrays (compiler/codegen/writes.py): the step itself, and
the same body in the minibatch loop that `fit` runs (compiler/codegen/loops.py).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from compiler import pytree
from compiler.api import CompiledFunction, compile_grad
from compiler.arguments import as_array
from compiler.captured import Captured
from compiler.codegen import MinibatchLoop, generate
from compiler.errors import ArgumentError, KernelShapeError
from compiler.ir import Sym
from compiler.jit import NumbaKernel
from compiler.packing import Packing, pack
from compiler.timings import CompileReport, KernelBuild
from compiler.training.interrupts import held_interrupts
from compiler.training.kernels import (
    Kernels,
    batch_dims,
    data_kind,
    held_state,
    refuses_one_row,
    run_updating,
    updated,
)
from compiler.training.slots import Slot, plan_slots, structural_flags
from compiler.training.update import outside_graph, unreached, update_slots
from runtime import Parameter, Tensor
from runtime.anomaly_mode import _anomaly
from runtime.optim import Optimizer
from runtime.optim.optimizer import ParamList

_data = operator.attrgetter("data")


def _part_of_the_kernel(name: str) -> property:
    """A train step's setting that its kernels were traced with: read-only, saying so."""
    def get(step: TrainStep) -> Any:
        return getattr(step, "_" + name)

    def refuse(step: TrainStep, value: Any) -> None:
        raise AttributeError(f"a train step's {name} is part of its kernel: make a new one "
                             f"with train_step(..., {name}=...)")

    return property(get, refuse)


class TrainStep:
    """One optimizer step of `loss_fn(params, *data)` as one kernel call.

    `max_norm` clips the gradients' total `norm_type`-norm first, like
    `clip_grad_norm_`; `keep_grads=True` also stores each gradient in `.grad`. A loss compiled
    with `has_aux=True` returns `(loss, aux)`, and so does the step (aux computed before the
    update; `accumulate` gives a list of each micro-batch's aux). With an MPI
    communicator `comm`, each rank passes its own rows and the gradients are averaged over
    all ranks' rows before the update (compiler/training/distributed.py).
    """

    def __init__(self, loss_fn: Callable | CompiledFunction, params: Any, optimizer: Optimizer,
                 *, max_norm: float | None = None, norm_type: float = 2.0,
                 keep_grads: bool = False, comm: Any = None) -> None:
        self.parallel = None
        if comm is None:
            self._setup(loss_fn, params, optimizer, max_norm, norm_type, keep_grads)
            return
        from compiler.training.distributed import DataParallel, failing_together  # imports this

        # on every rank, or on none: a rank that raised would skip the broadcasts that the
        # others then wait in forever
        with failing_together(comm, "train_step"):
            self._setup(loss_fn, params, optimizer, max_norm, norm_type, keep_grads)
            DataParallel.check_supported(self)
        self.parallel = DataParallel(self, comm)

    def _setup(self, loss_fn: Callable | CompiledFunction, params: Any, optimizer: Optimizer,
               max_norm: float | None, norm_type: float, keep_grads: bool) -> None:
        if not isinstance(loss_fn, CompiledFunction):
            loss_fn = compile_grad(loss_fn)
        first = next(iter(loss_fn._signature.parameters), None)
        if loss_fn.wrt not in (0, first, (0,), (first,)):
            raise ValueError(
                f"train_step updates the parameters, the first argument of the loss, with its "
                f"gradient; {loss_fn.__name__} was compiled with wrt={loss_fn.wrt!r}: compile it "
                "with wrt=0 (the default)")
        self.loss_fn = loss_fn
        self.params = params
        self.optimizer = optimizer
        self._max_norm = max_norm
        if not float(norm_type) > 0:  # a norm of order 0 or below measures no size to clip
            raise ValueError(f"train_step: norm_type must be positive or inf, got {norm_type!r}")
        self._norm_type = float(norm_type)
        self._keep_grads = keep_grads
        # a step whose kernel returns more than the loss: gradients for .grad, or aux values
        self._unpacks = keep_grads or loss_fn.has_aux
        leaves, self._tree = pytree.flatten(params)
        self._leaves, self._names = leaves, pytree.paths(self._tree, "param")
        self._slots: list[Slot] | None = None  # planned by _replan
        self._kept: list[int] = []  # the slots whose gradients a step keeps (see _update)
        # What the loss reads from its globals, closure and `self` (compiler/captured.py):
        # rebound, it makes the step trace and compile again (`_pack_hypers` looks).
        self._captured = Captured(loss_fn)
        self._captured.take()
        self._replan()

    @property
    def max_norm(self) -> float | None:
        return self._max_norm

    @max_norm.setter
    def max_norm(self, value: float | None) -> None:
        """A new clipping threshold takes effect at the next step, without recompiling; turning
        clipping on or off changes the kernel, so that needs a new train_step."""
        if (value is None) != (self._max_norm is None):
            raise ValueError("clipping cannot be turned on or off in an existing train step; "
                             "make a new one with train_step(..., max_norm=...)")
        self._max_norm = value
        self._groups_seen = None  # rebuild the hyper-parameter vector at the next step

    # The norm type and keep_grads are traced into the kernels: set, they would be ignored.
    norm_type = _part_of_the_kernel("norm_type")
    keep_grads = _part_of_the_kernel("keep_grads")

    def _traced(self, function: Callable, suffix: str) -> CompiledFunction:
        # wrt = params, states and hypers: their shapes stay static; data keeps a symbolic batch
        compiled = CompiledFunction(function, wrt=(0, 1, 2), backend=self.loss_fn.backend.name,
                                    check_finite=self.loss_fn.check_finite)
        compiled.__name__ = f"{self.loss_fn.__name__}_{suffix}"
        compiled._graph_name = f"{self.loss_fn._graph_name}_{suffix}"
        return compiled

    # --- planning ----------------------------------------------------------------------
    def _replan(self) -> None:
        """Plan, and trace and compile afresh when the plan differs from the kernels' (a
        Parameter frozen or unfrozen, an optimizer flag such as nesterov changed)."""
        slots, leaf_slots = plan_slots(self._names, self._leaves, self.optimizer)
        self._leaf_changes = Tensor._leaf_changes
        old = self._slots
        if old is not None and [s.traced_as() for s in slots] == [s.traced_as() for s in old]:
            return
        if old is not None and self.parallel is not None:
            raise RuntimeError("a distributed train step cannot change what it traced (a "
                               "Parameter's requires_grad, an optimizer flag): make a new one")
        self._slots, self._leaf_slots = slots, leaf_slots
        self._hypers = np.zeros(sum(len(s.hyper_index) for s in self._slots) + 1)
        self._groups_seen: list[dict] | None = None  # param groups at the last _pack_hypers
        self._group_changes = -1  # Optimizer.group_changes then
        self._uncounted: list | None = None  # the groups' Parameters' ids then, if needed
        self._forget_kernels()

    def _forget_kernels(self) -> None:
        self._kernel = self._traced(self._step_function, "step")
        self._accumulating: CompiledFunction | None = None
        self._kernels_by_data: dict[tuple, Kernels] = {}
        self._last: Kernels | None = None  # what the last call ran: the hot path tries it first

    def _state(self, slot: Slot) -> dict[str, np.ndarray]:
        return self.optimizer.complete_state(slot.param, slot.group)

    def _pack_hypers(self) -> np.ndarray:
        """The hyper-parameter vector, rebuilt only when a group's settings changed (a
        scheduler set a new lr, say). On the hot path this is one comparison of the groups
        with copies taken at the last rebuild (0.1 us; their "params" lists are shared, so
        those compare by identity), and of one counter (requires_grad and hooks)."""
        if self._captured.reads and not self._captured.unchanged():
            captured, what = self._captured.renewed()
            if what is not None and self.parallel is not None:
                raise RuntimeError(f"the loss of a distributed train step reads {what}, which "
                                   "changed since it was traced: pass it as an argument, or "
                                   "make a new train step")
            self._captured = captured
            if what is not None:  # the loss read a value since rebound: trace it again
                self._forget_kernels()
        groups = self.optimizer.param_groups
        if self._leaf_changes == Tensor._leaf_changes \
                and self._group_changes == Optimizer.group_changes and groups == self._groups_seen \
                and (self._uncounted is None or self._uncounted == _ids(groups)):
            return self._hypers
        options = {id(g): self.optimizer.rule_options(g) for g in groups}
        group_of = {id(p): g for g in groups for p in g["params"]}
        if self._leaf_changes != Tensor._leaf_changes or any(
                group_of.get(id(slot.param)) is not slot.group  # moved to another group
                or slot.flags != structural_flags(options[id(slot.group)])
                for slot in self._slots):
            self._replan()  # requires_grad, a hook or a flag may change what to trace
        for slot in self._slots:
            for name, i in slot.hyper_index.items():
                self._hypers[i] = options[id(slot.group)][name]
        self._hypers[-1] = -1.0 if self.max_norm is None else self.max_norm
        # Copies of the settings (a list changed in place must differ), sharing "params": an
        # optimizer's lists count their changes (ParamList); one a user bound in place of
        # them (group["params"] = [...]) is compared by its Parameters' ids at every step
        self._groups_seen = [{k: v if k == "params" else copy.deepcopy(v) for k, v in g.items()}
                             for g in groups]
        self._group_changes = Optimizer.group_changes
        counted = all(type(g["params"]) is ParamList for g in groups)
        self._uncounted = None if counted else _ids(groups)
        return self._hypers

    def _leaf_values(self, params: dict) -> list:
        """The tree's leaves from the slots' values (a tied Parameter in each of its places)."""
        by_slot = [params[s.name] for s in self._slots]
        return [by_slot[k] for k in self._leaf_slots]

    def _slot_grads(self, leaf_grads: list) -> list:
        """Per slot, the sum of its leaves' gradients."""
        summed: list = [None] * len(self._slots)
        for k, g in zip(self._leaf_slots, leaf_grads, strict=True):
            summed[k] = g if summed[k] is None else summed[k] + g
        return summed

    # --- the traced steps -----------------------------------------------------------------
    def _step_function(self, params: dict, states: list, hypers, *data):
        tree = pytree.unflatten(self._tree, self._leaf_values(params))
        value, grads = self.loss_fn.value_and_grad(tree, *data)
        params = [params[s.name] for s in self._slots]
        loss, aux = value if self.loss_fn.has_aux else (value, None)
        result = self._update(params, states, hypers, loss,
                              self._slot_grads(pytree.flatten(grads)[0]),
                              unreached(loss, params))
        # aux comes last, so that the results the kernel stores (params, states) keep their
        # positions right after the loss
        return result + (aux,) if self.loss_fn.has_aux else result

    def _accumulated_step_function(self, params: dict, states: list, hypers, batches):
        """The step on the mean loss of several micro-batches (gradient accumulation)."""
        tree = pytree.unflatten(self._tree, self._leaf_values(params))
        params = [params[s.name] for s in self._slots]
        total, summed, auxes = 0.0, [0.0] * len(params), []
        unused = [True] * len(params)  # by every micro-batch's loss
        for batch in batches:
            value, grads = self.loss_fn.value_and_grad(tree, *batch)
            loss, aux = value if self.loss_fn.has_aux else (value, None)
            auxes.append(aux)
            total = total + loss
            grads = self._slot_grads(pytree.flatten(grads)[0])
            unused = [u and far for u, far in zip(unused, unreached(loss, params), strict=True)]
            summed = [acc + g for acc, g in zip(summed, grads, strict=True)]
        k = len(batches)
        result = self._update(params, states, hypers, total / k, [g / k for g in summed],
                              unused)
        return result + (auxes,) if self.loss_fn.has_aux else result

    def _update(self, params: list, states: list, hypers, loss, grads: list,
                unused: list[bool] | None = None):
        """The optimizer's step on the slots (compiler/training/update.py): (loss, the new
        parameters and states, the gradients kept for `.grad`: those of the slots in
        `_kept`, which it sets)."""
        clip = self.norm_type if self.max_norm is not None else None
        if unused is None:
            unused = [outside_graph(g) for g in grads]
        new_params, new_states, grads = update_slots(
            self._slots, self.optimizer.rule, params, states, hypers, grads, unused, clip)
        # Neither a frozen Parameter nor one the loss does not reach has a gradient: PyTorch
        # leaves their .grad None
        self._kept = [k for k, slot in enumerate(self._slots)
                      if not slot.frozen and not unused[k]]
        return (loss, new_params, new_states,
                [grads[k] for k in self._kept] if self.keep_grads else [])

    # --- calling -------------------------------------------------------------------------
    def _arguments(self) -> tuple[dict, list]:
        for slot in self._slots:
            _check_updatable(slot.name, slot.param.data)
        return {s.name: s.param.data for s in self._slots}, [self._state(s) for s in self._slots]

    # --- copies and pickles --------------------------------------------------------------
    def __reduce__(self) -> tuple:
        """A copy or a pickle of a train step is a train step of the same loss and options
        over the copies of its Parameters and optimizer (`deepcopy((params, opt, step))` keeps
        them together), compiled again on its first step; never one still updating the
        original's arrays."""
        if self.parallel is not None:
            raise TypeError("a distributed train step (comm=) cannot be copied or pickled: make "
                            "one in each process with train_step(..., comm=...)")
        options = {"max_norm": self.max_norm, "norm_type": self.norm_type,
                   "keep_grads": self.keep_grads}
        return _rebuilt_step, (self.loss_fn, self.params, self.optimizer, options)

    def __call__(self, *data) -> Any:
        """One step on `data`; returns the loss (before the update)."""
        if self.parallel is not None:
            return self.parallel.step(data)
        self._pack_hypers()  # first: a changed flag or requires_grad means other kernels
        kernels = self._last
        if kernels is not None and kernels.replacements == Parameter.data_replacements \
                and kernels.state_changes == Optimizer.state_changes \
                and kernels.state is self.optimizer.state and not _anomaly.enabled:
            try:  # numba checks the arrays' dtypes and ranks, the kernel their shapes
                return self._run_step(kernels, data)
            except (TypeError, KernelShapeError):
                pass  # other data than last time: the general path sorts it out
        data = data_arrays(data, "data")
        if self.loss_fn.backend.name != "numba" or self.checking():
            return self._run(self._kernel, data)
        kernels = self._kernels(data)
        if kernels.step is None:
            kernels.step = kernels.compile(kernels.kernel.dispatcher.__name__, data)
        self._last = kernels
        return self._run_step(kernels, data)

    def _run_step(self, kernels: Kernels, data: tuple) -> Any:
        """The step kernel on `data`, with the hyper-parameters packed; the loss."""
        try:  # as _run_updating does, inline: this is the hot path of every step
            result = kernels.step(*kernels.arguments, *data)
        except (TypeError, KernelShapeError):
            raise
        except BaseException:
            updated(kernels.params)
            raise
        updated(kernels.params)
        return self._unpacked(kernels, result) if self._unpacks else result

    def _unpacked(self, kernels: Kernels, result: Any) -> Any:
        """The loss (or `(loss, aux)`) of a step kernel that returns more than the loss: the
        gradients, which go to `.grad`, then the aux values' leaves."""
        if kernels.packing is not None:
            result = kernels.packing.unpacked(result)
        elif not isinstance(result, tuple):
            result = (result,)
        n_grads = len(self._kept) if self.keep_grads else 0
        for k, g in zip(self._kept, result[1:1 + n_grads]):
            param = self._slots[k].param
            # numba returns a 0-d gradient as a Python float: back to the Parameter's dtype
            param.grad = g if isinstance(g, np.ndarray) else np.array(g, dtype=param.dtype)
        if not self.loss_fn.has_aux:
            return result[0]
        aux_tree = kernels.spec.out_tree.children[-1]
        return result[0], pytree.unflatten(aux_tree, list(result[1 + n_grads:]))

    def accumulate(self, micro_batches: Sequence[tuple]) -> Any:
        """One step on the average of the losses of `micro_batches`, each a tuple of data
        arrays (gradient accumulation: the same update as one step on their union when the
        loss is a mean and the micro-batches have equal sizes)."""
        if self.parallel is not None:
            raise NotImplementedError("accumulate is not distributed: with comm, each rank "
                                      "passes its micro-batches' union to the step instead")
        batches = tuple(data_arrays(batch, f"micro_batches[{k}]")
                        for k, batch in enumerate(micro_batches))
        if not batches:  # the mean of no losses
            raise ValueError("accumulate: micro_batches is empty; pass a list of data tuples, "
                             "such as [(X1, y1), (X2, y2)]")
        self._pack_hypers()  # before choosing the traced step: a change may re-plan
        if self._accumulating is None:
            self._accumulating = self._traced(self._accumulated_step_function, "accumulate")
        return self._run(self._accumulating, (batches,))

    def _run(self, kernel: CompiledFunction, data: tuple) -> Any:
        """Call a traced step through the general path and write its results back."""
        params, states = self._arguments()
        loss, new_params, new_states, grads, *aux = kernel(params, states, self._pack_hypers(),
                                                           *data)
        if aux:  # before the write-back: an aux leaf may be an input array the step updates
            leaves, tree = pytree.flatten(aux[0])
            aux = [pytree.unflatten(tree, [a.copy() if isinstance(a, np.ndarray) else a
                                           for a in leaves])]
        with held_interrupts():  # all parameters and states take the step, or none does
            for slot, new_p, new_state in zip(self._slots, new_params, new_states):
                slot.param.data[...] = new_p
                state = self._state(slot)
                for key, value in new_state.items():
                    state[key][...] = value
            for k, g in zip(self._kept, grads):
                self._slots[k].param.grad = np.array(g, copy=True)
            updated([s.param for s in self._slots])
        return (loss, aux[0]) if aux else loss

    def _kernels(self, data: tuple) -> Kernels:
        """The in-place kernels for data of this kind, rebuilt if a Parameter's array was
        replaced (e.g. by loading). Kernels with a symbolic batch axis serve every batch size
        (keyed by dtypes and trailing shapes); a loss that reads the batch size as a number
        has kernels for each batch size (keyed by the whole shapes too)."""
        key = data_kind(data)
        sized = (key, tuple(d.shape[:1] for d in data))  # a number has no batch axis
        kernels = self._kernels_by_data.get(key)
        if kernels is not None and not kernels.takes(data):
            kernels = None  # batch sizes those kernels refuse (a batch of 1 row) have their own
        kernels = kernels or self._kernels_by_data.get(sized)
        if kernels is not None and kernels.current(self.optimizer):
            return kernels
        self.optimizer.tracked_state()  # the kernels hold its arrays: its changes are counted
        params, states = self._arguments()
        spec = self._kernel.specialize(params, states, self._hypers, *data)
        graph = spec.graph_of("forward")
        # outputs: loss, new params, new states (, grads); inputs: params, states, hypers, data
        n_arrays = len(params) + sum(len(state) for state in states)
        graph, packing, writes = pack(graph, {1 + k: k for k in range(n_arrays)})
        arguments = self._stacked_arguments(packing, len(graph.inputs) - len(data))
        arrays = self._step_arrays()
        first_data = len(graph.inputs) - len(data)
        # no data (a loss of the parameters alone) has no batches to loop over
        batch_axis_symbolic = bool(data) and all(n.shape and isinstance(n.shape[0], Sym)
                                                 for n in graph.inputs[first_data:])
        loops = (MinibatchLoop(tuple(range(first_data, len(graph.inputs))), loss=0),) \
            if batch_axis_symbolic else ()
        build = KernelBuild()
        with build.times.phase("codegen"):
            generated = generate(graph, "train step", writes, loops, bare_scalars=True)
        kernel = NumbaKernel(graph, generated, eager=False, build=build)
        slot_params = [s.param for s in self._slots]
        kernels = Kernels(kernel, slot_params, self.optimizer.state, arrays,
                          self._hypers, fits_batches=bool(loops), arguments=arguments,
                          packing=packing, spec=spec,
                          held=held_state(self.optimizer, slot_params),
                          refuses_one_row=refuses_one_row(graph, first_data),
                          batch_dims=batch_dims(graph, first_data))
        self._kernels_by_data[key if batch_axis_symbolic else sized] = kernels
        return kernels

    def _step_arrays(self) -> tuple[np.ndarray, ...]:
        """The arrays the step updates in place: the parameters', then the optimizer state's."""
        params, states = self._arguments()
        return tuple(params.values()) + tuple(a for state in states for a in state.values())

    def _stacked_arguments(self, packing: Packing | None, n: int) -> tuple:
        """The kernel's arguments before the data: the parameters, optimizer state and hypers,
        with the arrays the kernel takes as one stack (compiler/packing.py) moved into one:
        each Parameter's `.data` (and each state array) becomes a row of its stack, so the
        kernel updates them in place through the stack, with no copies."""
        arrays = self._step_arrays()
        if packing is None:
            return arrays + (self._hypers,)
        owners = [(s.param, None) for s in self._slots] + \
            [(self._state(s), key) for s in self._slots for key in self._state(s)]
        arguments = []
        for kind, which in packing.inputs[:n]:
            if kind == "arg":
                arguments.append(arrays[which] if which < len(arrays) else self._hypers)
                continue
            stack = np.stack([arrays[i] for i in which])
            for m, i in enumerate(which):
                owner, key = owners[i]
                if key is None:
                    owner.data = stack[m, ...]
                else:
                    owner[key] = stack[m, ...]  # a view, also of a 0-d entry (the step count)
            arguments.append(stack)
        return tuple(arguments)

    def checking(self) -> bool:
        """Whether steps run with finite checks (anomaly mode, compiler/checks.py): then they
        run the traced step's checked kernel and write back from Python, so that a NaN stops
        the step before any parameter is written."""
        return self.loss_fn.check_finite or _anomaly.enabled

    def runs_epochs(self, data: tuple, batch_size: int | None = None) -> bool:
        """Whether `run_epochs` can run epochs over `data` inside one compiled call (in batches
        of `batch_size`: not where one would have 1 row and the step refuses such a batch)."""
        if self.checking():
            return False
        kernels = self._fit_kernels(data)
        if kernels is None:
            return False
        n = len(data[0]) if data and np.ndim(data[0]) else 0
        return not (kernels.refuses_one_row and batch_size is not None
                    and (batch_size == 1 or n % batch_size == 1))

    def run_epochs(self, data: tuple, orders: np.ndarray, batch_size: int,
                   losses: np.ndarray) -> None:
        """One epoch per row of `orders` (a permutation of the rows, or no columns: in order)
        in batches of `batch_size`, inside one compiled call; the losses go to `losses`."""
        self._pack_hypers()  # before the kernels: a callback may have changed a flag
        kernels = self._fit_kernels(data)  # rebuilt if a callback replaced a Parameter
        run_updating(kernels.params, kernels.fit, *kernels.arguments, *data, orders, batch_size,
                      losses)

    def _fit_kernels(self, data: tuple) -> Kernels | None:
        """The kernels whose minibatch loop `fit` runs, or None where there is none (the
        interpreter backend; a loss that needs the batch size as a number)."""
        if self.loss_fn.backend.name != "numba":
            return None
        kernels = self._kernels(data)
        if not kernels.fits_batches:
            return None
        if kernels.fit is None:
            name = f"{kernels.kernel.dispatcher.__name__}_fit"
            no_orders, losses = np.empty((1, 0), np.int64), np.empty(1)
            kernels.fit = kernels.compile(name, data, no_orders, 1, losses)
        return kernels

    def compile_report(self) -> CompileReport:
        """Where the step's compile time went: the trace of the step function (the loss's
        reverse mode runs inside it), then the in-place kernels run so far ("step", and "fit"
        once fit has run) for the data of the last call. With the interpreter backend, the
        report of the traced step function."""
        kernels = self._last or next(iter(self._kernels_by_data.values()), None)
        if kernels is None:
            if self.loss_fn.backend.name == "numba":
                raise RuntimeError("the step has not run yet: call it (or fit) once first")
            return self._kernel.compile_report()
        return kernels.compile_report(self._kernel.__name__)

    def source(self, kind: str = "forward") -> str:
        """The generated source of the step: "step" (the in-place kernels that calls run, with
        the minibatch loop of `fit`), or a kind of the traced step function (`forward` ...)."""
        if kind == "step" and self.parallel is not None:
            return self.parallel.source()
        if kind == "step":
            kernels = self._last or next(iter(self._kernels_by_data.values()), None)
            if kernels is None:
                raise RuntimeError("the step has not run yet: call it (or fit) once first")
            return kernels.kernel.source
        return self._kernel.source(kind)


def _check_updatable(name: str, array: np.ndarray) -> None:
    """Refuse a Parameter array the step cannot update in place, naming it: one bound with
    `p.data = ...` to a read-only array (np.load with mmap_mode="r"), a byte-swapped or a
    misaligned one, which numba's kernels do not take (a bare numba error before)."""
    what = "is read-only" if not array.flags.writeable else \
        f"is in non-native byte order ({array.dtype.str})" if not array.dtype.isnative else \
        "is misaligned (a field of a packed record, a buffer at an odd offset)" \
        if not array.flags.aligned else None
    if what is not None:
        raise ArgumentError(
            f"train_step: the array of Parameter '{name}' {what}; the step writes the new "
            "values into it in place: bind a writable native copy, "
            f"p.data = np.array(p.data, dtype=np.{array.dtype.newbyteorder('=').name})")


def data_arrays(data: Sequence, owner: str) -> tuple[np.ndarray, ...]:
    """The data arguments of a step as arrays (a number becomes a 0-d array, nested lists of
    numbers an array); a dict or a tuple of arrays is refused, naming it: the step's kernels
    take one array per argument."""
    arrays = []
    for i, d in enumerate(data):
        if isinstance(d, dict) or (isinstance(d, (list, tuple))
                                   and any(isinstance(x, (dict, np.ndarray, Tensor)) for x in d)):
            raise ArgumentError(
                f"{owner}[{i}] is a {type(d).__name__}: a train step takes its data as arrays "
                "and numbers, one per argument of the loss after the parameters; pass the "
                f"{type(d).__name__}'s arrays as arguments of their own")
        arrays.append(as_array(np.asarray(d), f"{owner}[{i}]"))
    return tuple(arrays)


def _ids(groups: list[dict]) -> list[list[int]]:
    """The ids of each parameter group's Parameters, in order."""
    return [list(map(id, g["params"])) for g in groups]


def _rebuilt_step(loss_fn: CompiledFunction, params: Any, optimizer: Optimizer,
                  options: dict[str, Any]) -> TrainStep:
    return TrainStep(loss_fn, params, optimizer, **options)


def train_step(loss_fn: Callable | CompiledFunction, params: Any, optimizer: Optimizer,
               **options) -> TrainStep:
    """A `TrainStep` for `loss_fn(params, *data)`; see TrainStep for the options."""
    return TrainStep(loss_fn, params, optimizer, **options)


# --- fit: many steps inside compiled code ---------------------------------------------------
