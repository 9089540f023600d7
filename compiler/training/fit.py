"""`fit`: many train steps over shuffled minibatches, inside compiled code between reports.

    history = fit(loss_fn, params, optimizer, (X, y), epochs=10, batch_size=32)
    history.losses, history.epoch_losses, history.plot("loss.png")
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler import pytree
from compiler.api import CompiledFunction
from compiler.training.step import TrainStep, data_arrays
from runtime.optim import Optimizer


@dataclass
class History:
    """What `fit` did: the loss of every step, each epoch's mean loss over its rows (a step's
    loss weighted by its batch's rows, so that a short last batch counts for its rows, as
    Keras reports it and as PyTorch's tutorials sum `loss * len(batch)`), and why it
    stopped."""

    losses: np.ndarray
    epoch_losses: np.ndarray
    steps_per_epoch: int
    stopped_early: bool = False

    def plot(self, path: str) -> str:
        """Save the loss curve as a PNG (needs matplotlib: `pip install gradfuse[plot]`)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as err:
            raise ImportError("History.plot needs matplotlib: pip install 'gradfuse[plot]'") \
                from err
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(np.arange(1, len(self.losses) + 1), self.losses, lw=0.8, label="step")
        ends = np.arange(1, len(self.epoch_losses) + 1) * self.steps_per_epoch
        ax.plot(ends, self.epoch_losses, "o-", ms=3, label="epoch mean")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log" if np.all(self.losses > 0) else "linear")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def epoch_orders(n: int, epochs: int, shuffle: bool, rng: np.random.Generator) -> np.ndarray:
    """The row order of each of `epochs` epochs over `n` rows: a fresh permutation from `rng`
    per epoch, or, without shuffling, an `(epochs, 0)` array (the rows as they are)."""
    if not shuffle:
        return np.empty((epochs, 0), np.int64)
    return np.stack([rng.permutation(n) for _ in range(epochs)]).astype(np.int64)


def fit(loss_fn: Callable | CompiledFunction, params: Any, optimizer: Optimizer,
        data: Sequence[np.ndarray], *, epochs: int, batch_size: int | None = None,
        shuffle: bool = True, seed: int = 0, max_norm: float | None = None,
        norm_type: float | None = None,
        progress: bool | None = None, callback: Callable[[int, History], Any] | None = None,
        stop: Callable[[History], bool] | None = None, chunk_steps: int | None = None,
        step: TrainStep | None = None, comm: Any = None, initial_epoch: int = 0) -> History:
    """Train `params` on `data` (a tuple of arrays sharing their first axis) for `epochs`.

    Each epoch visits the rows in a fresh order drawn from `seed` (or in order, with
    `shuffle=False`) in batches of `batch_size`, the last one holding what is left.
    Steps run inside compiled code in chunks of about `chunk_steps` whole epochs (default:
    one epoch when there is a `callback` or `stop`, else at least 256 steps); between
    chunks `fit` updates the progress bar
    (tqdm; on by default when stderr is a terminal), calls `callback(epoch, history)`
    with the 0-based index of the last epoch done (as Keras does), and stops early when
    `stop(history)` is true. Returns the `History` of the epochs run. `initial_epoch` (as in
    Keras) resumes a run at that epoch: epochs `initial_epoch` to `epochs - 1` run, in the row
    orders they would have had in one uninterrupted run from `seed`. `max_norm` clips the
    gradients' total `norm_type`-norm (default 2) first, as `clip_grad_norm_` does. Another
    `fit` with the same loss, parameters, optimizer and clipping reuses this one's compiled
    step. `step=` runs a `train_step` of the same loss (or None), parameters and optimizer
    instead, with its clipping (`max_norm` sets its threshold).

    With an MPI communicator `comm` (every rank passing the same arguments), each batch is
    split among the ranks and the gradients averaged over the whole batch: the result is
    that of one process, on every rank. The progress bar, `callback` and `stop` run on
    rank 0 (with the loss over all ranks); parameters, optimizer state and settings are
    sent from rank 0 to the others after each callback. See docs/distributed.md.
    """
    with _on_every_rank(comm if comm is not None else getattr(step, "parallel", None)):
        data = _check_arguments(data, epochs, batch_size, initial_epoch)
        if step is not None:
            _check_given_step(step, loss_fn, params, optimizer, max_norm, norm_type)
    n = data[0].shape[0]
    batch_size = n if batch_size is None else min(batch_size, n)
    if step is None:
        step = reused_step(loss_fn, params, optimizer, max_norm, comm,
                           2.0 if norm_type is None else norm_type)
    team = _team(step, comm, dict(data=[(d.shape, d.dtype.str) for d in data], epochs=epochs,
                                  initial_epoch=initial_epoch,
                                  batch_size=batch_size, shuffle=shuffle, seed=seed,
                                  chunk_steps=chunk_steps, callback=callback is not None,
                                  stop=stop is not None, max_norm=step.max_norm,
                                  norm_type=step.norm_type))
    per_epoch = -(-n // batch_size)
    batch_rows = np.full(per_epoch, batch_size)
    batch_rows[-1] = n - batch_size * (per_epoch - 1)  # the last batch holds what is left
    first = int(initial_epoch)
    losses = np.full((epochs - first) * per_epoch, np.nan)
    if chunk_steps is None and (callback is not None or stop is not None):
        chunk_epochs = 1  # as in Keras, a callback sees every epoch
    else:
        chunk_epochs = max(1, -(-(chunk_steps or 256) // per_epoch))
    rng = np.random.default_rng(seed)
    if first:
        epoch_orders(n, first, shuffle, rng)  # the orders of the epochs before: drawn, not run
    bar = _progress_bar(progress if team.root else False, epochs - first)
    history = History(losses, np.zeros(0), per_epoch)
    run = _epoch_runner(step, data, batch_size)
    done = first
    try:
        while done < epochs:
            last = min(epochs, done + chunk_epochs)
            run(epoch_orders(n, last - done, shuffle, rng),
                losses[(done - first) * per_epoch:(last - first) * per_epoch])
            # the steps done so far (the callback and stop read them; later steps are NaN)
            history.losses = losses[: (last - first) * per_epoch]
            history.epoch_losses = epoch_means(
                history.losses.reshape(last - first, per_epoch), batch_rows)
            if bar is not None:
                bar.update(last - done)
                bar.set_postfix(loss=f"{history.epoch_losses[-1]:.4g}")
            done = last
            if callback is not None:
                if team.root:
                    callback(done - 1, history)
                team.sync_from_root()  # the callback may have changed lr, or loaded weights
            if stop is not None and done < epochs and team.agree(team.root and stop(history)):
                history.stopped_early = True
                break
    except BaseException:
        team.abort()  # with comm: the other ranks wait for this one; end them all
        raise
    finally:
        if bar is not None:
            bar.close()
    history.losses = losses[: (done - first) * per_epoch]
    return history


def epoch_means(losses: np.ndarray, batch_rows: np.ndarray) -> np.ndarray:
    """Each row of `losses` (an epoch's step losses) averaged over the epoch's data rows."""
    if np.all(batch_rows == batch_rows[0]):
        return losses.mean(1)
    return losses @ batch_rows / batch_rows.sum()


def reused_step(loss_fn: Callable | CompiledFunction, params: Any, optimizer: Optimizer,
                max_norm: float | None, comm: Any = None, norm_type: float = 2.0) -> TrainStep:
    """The TrainStep an earlier `fit` made for this loss, these Parameters (the same objects,
    in the same tree), this optimizer (each Parameter in the same group, with the same
    structural flags) and clipping on or off, with its kernels compiled; else a new one,
    kept in the optimizer's compiler cache (`Optimizer._compiled`) for the next `fit`."""
    leaves, tree = pytree.flatten(params)
    groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    placed = tuple((id(g), tuple((k, v) for k, v in optimizer.rule_options(g).items()
                                 if isinstance(v, bool)))
                   for g in (groups.get(id(leaf)) for leaf in leaves) if g is not None)
    norm_type = float(norm_type)
    key = ("fit", loss_fn, tree, tuple(map(id, leaves)), placed, max_norm is None,
           None if max_norm is None else norm_type, id(comm))
    step = optimizer._compiled.get(key)  # its TrainStep holds the leaves: ids stay theirs
    if step is None:
        step = optimizer._compiled[key] = TrainStep(loss_fn, params, optimizer,
                                                    max_norm=max_norm, norm_type=norm_type,
                                                    comm=comm)
    elif max_norm is not None:
        step.max_norm = max_norm  # a new threshold is a kernel argument, not a new kernel
    return step


def _check_given_step(step: TrainStep, loss_fn: Callable | CompiledFunction, params: Any,
                      optimizer: Optimizer, max_norm: float | None,
                      norm_type: float | None) -> None:
    """Refuse a `step=` made for another loss, other parameters or another optimizer than
    fit's arguments (fit would train the step's, leaving the ones passed alone), and give it
    fit's `max_norm` (a step made without clipping, or for another `norm_type`, cannot take
    one: it would be ignored)."""
    if not isinstance(step, TrainStep):
        raise TypeError(f"fit: step must be a train_step(...), got a {type(step).__name__}")
    if loss_fn is not None and getattr(loss_fn, "fn", loss_fn) is not step.loss_fn.fn:
        raise ValueError("fit: the step given as step= was made for another loss function")
    if optimizer is not step.optimizer:
        raise ValueError("fit: the step given as step= was made for another optimizer")
    leaves, tree = pytree.flatten(params)
    if tree != step._tree or any(a is not b for a, b in zip(leaves, step._leaves)):
        raise ValueError("fit: the step given as step= was made for other parameters")
    if norm_type is not None and float(norm_type) != step.norm_type:
        raise ValueError(f"fit: norm_type={norm_type} but the step given as step= clips by "
                         f"norm_type={step.norm_type}")
    if max_norm is not None:
        if step.max_norm is None:
            raise ValueError("fit: max_norm= needs a step= made with clipping "
                             "(train_step(..., max_norm=...)), or no step=")
        step.max_norm = max_norm


def _on_every_rank(comm: Any):
    """With a communicator (or a DataParallel), a block that raises on every rank if it raises
    on any (distributed.failing_together); else nothing."""
    if comm is None:
        return contextlib.nullcontext()
    from compiler.training.distributed import DataParallel, failing_together

    return failing_together(comm.comm if isinstance(comm, DataParallel) else comm, "fit")


def _check_arguments(data: Any, epochs: Any, batch_size: Any, initial_epoch: Any) -> tuple:
    """The data as arrays, after refusing what would train on nothing or on the wrong rows."""
    if not isinstance(data, (tuple, list)):
        raise ValueError(f"fit: data must be a tuple of arrays sharing their first axis, such as "
                         f"(X, y) or (X,), got a {type(data).__name__}")
    data = data_arrays(data, "data")
    if not data:
        raise ValueError("fit: data is empty; pass a tuple of arrays, e.g. (X, y)")
    if any(d.ndim == 0 for d in data):
        raise ValueError(f"fit: data arrays need a first axis of rows, got shapes "
                         f"{[d.shape for d in data]}")
    n = data[0].shape[0]
    if any(d.shape[0] != n for d in data):
        raise ValueError(f"fit: data arrays must share their first axis, got "
                         f"{[d.shape for d in data]}")
    if n == 0:
        raise ValueError(f"fit: data has no rows (shapes {[d.shape for d in data]})")
    if not isinstance(epochs, (int, np.integer)) or isinstance(epochs, bool) or epochs < 0:
        raise ValueError(f"fit: epochs must be an int >= 0, got {epochs!r}")
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer))
                                   or isinstance(batch_size, bool) or batch_size <= 0):
        raise ValueError(f"fit: batch_size must be a positive int (or None for the whole "
                         f"data), got {batch_size!r}")
    if not isinstance(initial_epoch, (int, np.integer)) or isinstance(initial_epoch, bool) \
            or not 0 <= initial_epoch <= epochs:
        raise ValueError(f"fit: initial_epoch must be an int from 0 to epochs ({epochs}), got "
                         f"{initial_epoch!r}")
    return data


class _OneProcess:
    """What `fit` asks of the ranks (see distributed.DataParallel) when there is one process."""

    root = True

    def sync_from_root(self) -> None:
        pass

    def agree(self, value: Any) -> Any:
        return value

    def abort(self) -> None:
        pass


def _team(step: TrainStep, comm: Any, arguments: dict):
    """The step's ranks (its DataParallel), checked to have the same `arguments` (data shapes,
    settings), or one process."""
    if comm is not None and (step.parallel is None or step.parallel.comm != comm):
        raise ValueError("fit: pass comm= either to fit or to the train_step given as step=, "
                         "not different ones")
    if step.parallel is None:
        return _OneProcess()
    step.parallel.check_same("fit", arguments)
    return step.parallel


def _epoch_runner(step: TrainStep, data: tuple, batch_size: int):
    """run(orders, losses): one epoch per row of `orders`, recording each step's loss; inside
    one compiled call when the step has a minibatch loop (numba, a symbolic batch axis)."""
    if step.parallel is not None:
        return step.parallel.epoch_runner(data, batch_size)
    if step.runs_epochs(data, batch_size):
        return lambda orders, losses: step.run_epochs(data, orders, batch_size, losses)

    n = data[0].shape[0]
    has_aux = step.loss_fn.has_aux  # the step returns (loss, aux): fit records the loss

    def run_stepwise(orders: np.ndarray, losses: np.ndarray) -> None:
        k = 0
        for order in orders:
            for start in range(0, n, batch_size):
                if order.size:
                    rows = order[start:start + batch_size]
                    value = step(*(d[rows] for d in data))
                else:
                    value = step(*(d[start:start + batch_size] for d in data))
                losses[k] = value[0] if has_aux else value
                k += 1

    return run_stepwise


def _progress_bar(progress: bool | None, epochs: int):
    import sys

    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=epochs, unit="epoch", desc="fit")
