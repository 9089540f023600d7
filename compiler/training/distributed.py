"""Data-parallel training over MPI: every rank computes gradients on its share of a batch, one
all-reduce of one flat buffer sums them, and every rank applies the same update.

    from mpi4py import MPI
    history = fit(loss_fn, params, optimizer, (X, y), epochs=10, batch_size=256,
                  comm=MPI.COMM_WORLD)            # mpiexec -n 2 python train.py

A distributed step is two kernels with the all-reduce between them (docs/distributed.md
says why it is not inside one compiled loop):

1. the gradient kernel runs the loss's forward and backward on this rank's rows and
   stores each gradient, times the rank's row count, straight into its place in the
   rank's flat buffer; the rank adds its weighted loss and its row count at the end;
2. the buffers of all ranks are summed (`SharedMemoryAllreduce` between ranks on one
   machine, MPI_Allreduce between machines) -- or, between two ranks of one machine, only
   made readable to all: the update kernel adds up every rank's buffer as it reads them;
3. the update kernel divides the sums by the total row count -- so unequal shares give
   exactly the mean over the whole batch, as one process would -- then clips and applies
   the optimizer's rule in place, like the fused step.

Every rank reads the same reduced buffer (or adds up the same buffers in the same order)
and runs the same kernel on the same values, so parameters stay bit-identical across
ranks. The loss is assumed to be a mean over the batch's rows (as `F.mse_loss`,
`F.cross_entropy`); terms that do not depend on the rows (weight decay written into the
loss) are averaged back to themselves by the weights.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler import pytree
from compiler.api import CompiledFunction
from compiler.codegen import generate
from compiler.ir import Sym
from compiler.jit import NumbaKernel
from compiler.training.allreduce import ALIGN, check_comm, reducer
from compiler.training.kernels import (
    Kernels,
    batch_dims,
    data_kind,
    held_state,
    refuses_one_row,
    updated,
)
from compiler.training.slots import structural_flags
from compiler.training.step import data_arrays
from compiler.training.update import unreached

if TYPE_CHECKING:
    from compiler.training.step import TrainStep

ROOT = 0
MISSING = "(none)"  # what check_same shows for an argument a rank does not have


# --- the flat buffer --------------------------------------------------------------------------
@dataclass(frozen=True)
class GradientLayout:
    """Where each gradient lives in a rank's flat buffer: the gradients in the step's parameter
    order, then the rank's loss times its row count (`loss`), then the row count (`count`)."""

    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    dtype: np.dtype
    loss: int
    count: int
    length: int  # padded to ALIGN elements

    @classmethod
    def of(cls, arrays: list[np.ndarray]) -> GradientLayout:
        dtypes = sorted({a.dtype.name for a in arrays})
        if len(dtypes) != 1:
            raise TypeError("distributed training sums all gradients in one flat buffer, so "
                            f"every parameter must have one dtype; these have {dtypes}")
        offsets = np.concatenate([[0], np.cumsum([a.size for a in arrays])]).tolist()
        used = offsets[-1] + 2
        return cls(tuple(a.shape for a in arrays), tuple(offsets[:-1]), arrays[0].dtype,
                   offsets[-1], offsets[-1] + 1, -(-used // ALIGN) * ALIGN)

    def views(self, buffer: np.ndarray) -> list[np.ndarray]:
        """The gradients as arrays of their parameters' shapes, sharing `buffer`'s memory."""
        return [buffer[o:o + int(np.prod(s))].reshape(s) for o, s in zip(self.offsets,
                                                                          self.shapes)]


@contextmanager
def failing_together(comm: Any, caller: str) -> Iterator[None]:
    """Run the block, then raise on every rank of `comm` if it raised on any: a rank its own
    error, the others a ValueError naming the rank that failed and its error. For the checks
    before a collective: a rank that raised would skip it, and the others wait in it forever."""
    comm = check_comm(comm)
    error = None
    try:
        yield
    except Exception as err:  # noqa: BLE001 - every kind is sent to the other ranks
        error = err
    found = comm.allgather(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(rank, message) for rank, message in enumerate(found) if message is not None]
    if failed:
        rank, message = failed[0]
        raise ValueError(f"{caller} with comm: rank {rank} refused its arguments (every rank "
                         f"must pass the same ones): {message}")


# --- the distributed step ---------------------------------------------------------------------
class DataParallel:
    """The distributed side of a `TrainStep`: its kernels, the flat buffer and the all-reduce.

    Made by `train_step(..., comm=comm)` on every rank (it broadcasts the parameters and the
    optimizer's state from rank 0). `step(data)` takes this rank's rows and returns the loss
    over all ranks' rows; `reduce_seconds` adds up the time spent in the all-reduce (when the
    update kernel sums the rows, in its barrier).
    """

    @staticmethod
    def check_supported(step: TrainStep) -> None:
        """Refuse what a distributed step cannot do, before any collective."""
        if step.loss_fn.has_aux:
            raise NotImplementedError(
                f"{step.loss_fn.__name__} has has_aux=True: distributed training records the "
                "loss only; compile the loss without aux values for comm=")
        GradientLayout.of(list(step._arguments()[0].values()))  # one dtype

    def __init__(self, step: TrainStep, comm: Any) -> None:
        self.comm = check_comm(comm)
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.root = self.rank == ROOT
        self.train_step = step
        params, states = step._arguments()
        self.layout = GradientLayout.of(list(params.values()))
        # Before the broadcasts: ranks whose parameters or optimizer state differ in shape
        # would wait in them forever, and a Parameter frozen on one rank only (or another
        # clipping) would make the ranks' updates part ways without an error.
        optimizer = step.optimizer
        self.check_same("train_step", {
            "optimizer": f"{type(optimizer).__name__} with " + ", ".join(
                str(structural_flags(optimizer.rule_options(g))) for g in optimizer.param_groups),
            "max_norm": step.max_norm, "norm_type": step.norm_type,
            **{f"Parameter '{slot.name}'": f"{a.shape} {a.dtype.name}"
               + (" frozen" if slot.frozen else "")
               for slot, a in zip(step._slots, params.values())}})
        self.sync_from_root()
        self.reducer = reducer(comm, self.layout.length, self.layout.dtype)
        layout = self.layout
        # per buffer set: the views the gradient kernel writes; the update kernel's arguments
        # (each source row's gradients, then each row's loss and count); the rows' counts
        self._segment_grads = [layout.views(s) for s in self.reducer.segments]
        self._source_rows = [[layout.views(row) for row in rows] for rows in
                             self.reducer.sources]
        self._source_totals = [[row[layout.loss:layout.count + 1] for row in rows]
                               for rows in self.reducer.sources]
        self._source_arguments = [tuple(v for views in rows for v in views) + tuple(totals)
                                  for rows, totals in zip(self._source_rows,
                                                          self._source_totals)]
        self._weight = np.zeros(1)
        self._weighted_loss = _traced(step, self._weighted, "weighted", wrt=0)
        self._grads_fn = _traced(step, self._grads_function, "grads", wrt=(0, 1, 2))
        self._unused: list[bool] | None = None  # per slot, once the gradients are traced
        self._update_fn = _traced(step, self._update_function, "update", wrt=(0, 1, 2, 3, 4))
        self._grads_by_data: dict[tuple, tuple[Kernels, list[tuple]]] = {}
        self._update_calls: list[tuple] = []  # the update kernel's arguments by buffer set
        self._last_grads: Kernels | None = None
        self._update: Kernels | None = None
        self.reduce_seconds = 0.0
        self.steps = 0

    # --- consistency between ranks ------------------------------------------------------
    def sync_from_root(self) -> None:
        """Give every rank rank 0's parameters, optimizer state and hyper-parameters (at the
        start, and after callbacks, which run on rank 0 only)."""
        step = self.train_step
        params, states = step._arguments()
        for array in list(params.values()) + pytree.flatten(states)[0]:
            self.comm.Bcast(array, root=ROOT)
        groups = step.optimizer.param_groups
        settings = self.comm.bcast([{k: v for k, v in g.items() if k != "params"}
                                    for g in groups] if self.root else None, root=ROOT)
        if not self.root:
            for group, chosen in zip(groups, settings):
                group.update(chosen)

    def agree(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (a decision taken on rank 0, such as stopping)."""
        return self.comm.bcast(value, root=ROOT)

    def check_same(self, caller: str, arguments: dict[str, Any]) -> None:
        """Raise the same ValueError on every rank unless all ranks passed equal `arguments`
        (a collective that some ranks skipped would wait forever instead)."""
        gathered = self.comm.allgather(arguments)
        keys = list(dict.fromkeys(k for g in gathered for k in g))  # all ranks' keys, in order
        differ = [k for k in keys if any(g.get(k, MISSING) != gathered[0].get(k, MISSING)
                                         for g in gathered)]
        if differ:
            found = "; ".join(f"{k}: " + ", ".join(f"rank {r} {g.get(k, MISSING)!r}"
                                                   for r, g in enumerate(gathered))
                              for k in differ)
            raise ValueError(f"{caller} with comm: every rank must pass the same arguments (the "
                             f"full data, the same settings); these differ: {found}")

    def abort(self) -> None:
        """Called while an exception is handled: print it, and abort every rank of the
        communicator (the others wait in a collective for this one, and would wait forever)."""
        if self.size == 1:
            return
        sys.stderr.write(f"gradfuse: rank {self.rank} of {self.size} failed during distributed "
                         "training; aborting all ranks (MPI_Abort) so that none waits forever:\n"
                         + traceback.format_exc())
        sys.stderr.flush()
        self.comm.Abort(1)

    # --- the traced halves of a step ----------------------------------------------------
    def _grads_function(self, params: dict, grads_out: list, weight, *data):
        """(loss x weight, gradients x weight); grads_out only names where they are stored.
        The weight multiplies the loss, so it reaches the gradients through backward's seed
        and the last matrix products of backward write straight into the buffer (no pass
        over the gradients just to scale them)."""
        step = self.train_step
        traced = params
        params = pytree.unflatten(step._tree, step._leaf_values(params))
        loss, grads = self._weighted_loss.value_and_grad(params, weight, *data)
        grads = step._slot_grads(pytree.flatten(grads)[0])
        # The update reads gradients from the all-reduced buffer, where a parameter the loss
        # does not depend on has zeros like any other: the trace here says which it is.
        self._unused = unreached(loss, [traced[s.name] for s in step._slots])
        return loss, grads

    def _weighted(self, params, weight, *data):
        loss = self.train_step.loss_fn(params, *data)
        return loss * weight[0].astype(loss.dtype)

    def _update_function(self, params: dict, states: list, hypers, rows: list, totals: list):
        """The optimizer step on the sum of the rows' gradients (each row a list of them, in
        rank order, or one row that holds the sums already) divided by the total row count;
        `totals` holds each row's weighted loss and row count."""
        step = self.train_step
        params = [params[s.name] for s in step._slots]
        sums, loss, count = rows[0], totals[0][0], totals[0][1]
        for row, total in zip(rows[1:], totals[1:]):  # rank order: the same bits everywhere
            sums = [a + b for a, b in zip(sums, row)]
            loss, count = loss + total[0], count + total[1]
        per_row = 1.0 / count  # one division, then a product per element
        grads = [g * per_row.astype(g.dtype) for g in sums]
        return step._update(params, states, hypers, loss * per_row, grads, self._unused)

    # --- running --------------------------------------------------------------------------
    def step(self, data: tuple) -> Any:
        """One step on this rank's rows `data`; the mean loss over all ranks' rows."""
        try:
            return self.run(data_arrays(data, "data"))
        except BaseException:
            self.abort()
            raise

    def run(self, data: tuple) -> Any:
        """`step` without the conversions and the abort guard (fit's loop has both)."""
        shaped = [d for d in data if d.ndim]  # a number (0-d) is the same for every row
        rows = shaped[0].shape[0] if shaped else 0
        if any(d.shape[0] != rows for d in shaped):
            raise ValueError("train_step with comm: the data arrays must share their first "
                             f"axis (this rank's rows), got {[d.shape for d in data]}")
        step, layout, reducer = self.train_step, self.layout, self.reducer
        written = reducer.current
        segment = reducer.segments[written]
        # check_finite (or anomaly mode): the traced halves, whose checks stop at a NaN before
        # this rank's gradients or any parameter are written, as the fused step's do
        compiled = step.loss_fn.backend.name == "numba" and not step.checking()
        step._pack_hypers()
        if rows == 0:  # this rank has nothing of this batch: it adds zeros
            segment[:layout.count + 1] = 0
            if self._unused is None:
                self._trace_unused(data)
        else:
            self._weight[0] = rows
            if compiled:
                grads, calls = self._grads_kernel(data)
                loss = grads.step(*calls[written], *data)
            else:
                loss = self._general_grads(data, self._segment_grads[written])
            segment[layout.loss] = loss
            segment[layout.count] = rows
        start = time.perf_counter()
        ready = reducer.reduce()
        self.reduce_seconds += time.perf_counter() - start
        self.steps += 1
        if not any([row[layout.count] for row in reducer.sources[ready]]):
            raise ValueError("train_step with comm: no rank had any rows in this step")
        if not compiled:
            return self._general_update(ready)
        update = self._update_kernel()
        result = update.step(*self._update_calls[ready])
        updated(update.params)
        return step._unpacked(update, result) if step.keep_grads else result

    def _trace_unused(self, data: tuple) -> None:
        """Set `_unused` on a rank whose first share is empty (fit's batches of 1 row leave
        rank 0 none): the update it traces next must skip the Parameters the loss does not
        read as the other ranks' updates do (else AdamW decays them here only and the ranks
        part ways). Traced, not run, on stand-in rows of the data's kind."""
        rows = tuple(np.zeros((2,) + d.shape[1:], d.dtype) if d.ndim else d for d in data)
        params, _ = self.train_step._arguments()
        self._grads_fn.specialize(params, self._segment_grads[0], self._weight, *rows)

    def _grads_kernel(self, data: tuple) -> tuple[Kernels, list[tuple]]:
        """The gradient kernel for data of this kind (dtypes and trailing shapes; the batch
        size too when the loss needs it as a number), rebuilt if a Parameter's array was
        replaced, and its arguments before the data for each buffer set (built once: a
        step's Python runs on caches that the kernels have just filled). It stores the
        gradients times the row count into this rank's buffer of the set."""
        key = data_kind(data)
        found = self._grads_by_data.get(key)
        if found is not None and not found[0].takes(data):
            found = None  # batch sizes those kernels refuse (a rank's single row) have their own
        found = found or self._grads_by_data.get((key, tuple(d.shape[:1] for d in data)))
        if found is not None and found[0].current(self.train_step.optimizer):
            return found
        step = self.train_step
        params, _ = step._arguments()
        n = len(params)
        spec = self._grads_fn.specialize(params, self._segment_grads[0], self._weight, *data)
        graph = spec.graph_of("forward")
        writes = {1 + k: n + k for k in range(n)}  # gradient k into this rank's view k
        module = NumbaKernel(graph, generate(graph, "distributed gradient", writes,
                                             bare_scalars=True), eager=False)
        arrays = tuple(params.values()) + tuple(self._segment_grads[0])
        kernels = Kernels(module, [s.param for s in step._slots], step.optimizer.state,
                           arrays, self._weight, fits_batches=False,
                           arguments=arrays + (self._weight,),
                           refuses_one_row=refuses_one_row(graph, 2 * n + 1),
                           batch_dims=batch_dims(graph, 2 * n + 1))
        kernels.step = kernels.compile(module.dispatcher.__name__, data)
        symbolic = all(isinstance(i.shape[0], Sym) for i in graph.inputs[2 * n + 1:]
                       if i.shape)
        calls = [arrays[:n] + tuple(views) + (self._weight,) for views in self._segment_grads]
        self._grads_by_data[key if symbolic else (key, tuple(d.shape[:1] for d in data))] = \
            kernels, calls
        self._last_grads = kernels
        return kernels, calls

    def _update_kernel(self) -> Kernels:
        """The kernel that adds up the rows, divides by the row count and updates in
        place (`_update_calls` holds its arguments for each buffer set)."""
        step = self.train_step
        kernels = self._update
        if kernels is not None and kernels.current(step.optimizer):
            return kernels
        step.optimizer.tracked_state()  # the kernel holds its arrays: its changes are counted
        params, states = step._arguments()
        spec = self._update_fn.specialize(params, states, step._hypers, self._source_rows[0],
                                          self._source_totals[0])
        graph = spec.graph_of("forward")
        arrays = tuple(params.values()) + tuple(pytree.flatten(states)[0])
        writes = {1 + k: k for k in range(len(arrays))}  # new parameters and state in place
        module = NumbaKernel(graph, generate(graph, "distributed update", writes,
                                             bare_scalars=True), eager=False)
        slot_params = [s.param for s in step._slots]
        kernels = Kernels(module, slot_params, step.optimizer.state, arrays, step._hypers,
                          fits_batches=False, arguments=arrays + (step._hypers,),
                          held=held_state(step.optimizer, slot_params))
        kernels.step = kernels.compile(module.dispatcher.__name__, self._source_arguments[0])
        self._update = kernels
        self._update_calls = [kernels.arguments + a for a in self._source_arguments]
        return kernels

    def _general_grads(self, data: tuple, segment_grads: list[np.ndarray]) -> Any:
        """The gradient half through the general path (the interpreter backend, or checks)."""
        params, _ = self.train_step._arguments()
        loss, grads = self._grads_fn(params, segment_grads, self._weight, *data)
        for view, g in zip(segment_grads, grads):
            view[...] = g
        return loss

    def _general_update(self, ready: int) -> Any:
        params, states = self.train_step._arguments()
        loss, new_params, new_states, grads = self._update_fn(
            params, states, self.train_step._hypers, self._source_rows[ready],
            self._source_totals[ready])
        step = self.train_step
        for slot, new_p, new_state in zip(step._slots, new_params, new_states):
            slot.param.data[...] = new_p
            state = step._state(slot)
            for key, value in new_state.items():
                state[key][...] = value
        for k, g in zip(step._kept, grads):
            step._slots[k].param.grad = np.array(g, copy=True)
        updated([s.param for s in step._slots])
        return loss

    def epoch_runner(self, data: tuple, batch_size: int) -> Callable[..., None]:
        """run(orders, losses) for `fit`: each global batch of each epoch split among the
        ranks (rank r takes rows [size*r // P, size*(r+1) // P) of a batch of `size`), one
        step per batch; `losses` gets the loss over the whole batch."""
        n = data[0].shape[0]
        starts = np.arange(0, n, batch_size)
        sizes = np.minimum(batch_size, n - starts)
        lows = starts + sizes * self.rank // self.size
        highs = starts + sizes * (self.rank + 1) // self.size
        counts = highs - lows
        local = np.concatenate([[0], np.cumsum(counts)])  # the shares, one after the other

        def run(orders: np.ndarray, losses: np.ndarray) -> None:
            k = 0
            for order in orders:
                if order.size:  # one gather of this rank's rows per epoch, then views
                    rows = np.concatenate([order[lo:hi] for lo, hi in zip(lows, highs)])
                    mine = tuple(d[rows] for d in data)
                    shares = [tuple(d[a:b] for d in mine) for a, b in zip(local, local[1:])]
                else:
                    shares = [tuple(d[lo:hi] for d in data) for lo, hi in zip(lows, highs)]
                for share in shares:
                    losses[k] = self.run(share)
                    k += 1

        return run

    def source(self) -> str:
        """The generated source of the gradient and update kernels that the last step ran."""
        if self._last_grads is None or self._update is None:
            raise RuntimeError("the step has not run yet: call it (or fit) once first")
        return self._last_grads.kernel.source + "\n\n" + self._update.kernel.source

    def close(self) -> None:
        """Release the shared buffer (collective: every rank calls it)."""
        self.reducer.close()


def _traced(step: TrainStep, function: Callable, suffix: str,
            wrt: int | tuple) -> CompiledFunction:
    """`function` as a compiled function named after the loss (`loss_grads`), with the
    arguments in `wrt` of static shape."""
    compiled = CompiledFunction(function, wrt=wrt, backend=step.loss_fn.backend.name,
                                check_finite=step.loss_fn.check_finite)
    compiled.__name__ = f"{step.loss_fn.__name__}_{suffix}"
    compiled._graph_name = f"{step.loss_fn._graph_name}_{suffix}"
    return compiled
