"""Rows of the training cases (W1, W4, W5): every implementation's SGD step or loop from one start.

A step is checked through what it did: the loss it returns and the gradients
read back from its parameter update (harness.sgd_gradients). A loop is checked
on its whole loss history and its final parameters against the same loop run
in float64. `setup` puts the initial parameters back before every timed batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from benchmarks import peers, reference
from benchmarks.harness import (
    GRADFUSE,
    JAX,
    NUMBA,
    NUMPY,
    TORCH,
    TORCH_COMPILE,
    Impl,
    Outcome,
    Tolerance,
    sgd_gradients,
    sgd_tolerance,
)
from compiler.training import fit, train_step
from runtime import Parameter, optim

GRADFUSE_RUNTIME = "gradfuse backward()+step()"

Arrays = dict[str, np.ndarray]


def _float64(data: tuple) -> tuple:
    return tuple(d.astype(np.float64) if d.dtype.kind == "f" else d for d in data)


def _restorer(initial: Arrays, arrays: Arrays) -> Callable[[], None]:
    def restore() -> None:
        for k, a in arrays.items():
            a[...] = initial[k]

    return restore


@dataclass
class Problem:
    """SGD on `loss_and_grads` (a reference.py function) from `params`.

    `batches` holds the minibatches; a step case uses the first, a loop case
    runs `steps` steps cycling through them in order.
    """

    params: Arrays  # initial float32 values, gradfuse's layout
    batches: list[tuple[np.ndarray, ...]]
    lr: float
    loss_and_grads: Callable
    steps: int = 1

    @property
    def batch(self) -> tuple[np.ndarray, ...]:
        return self.batches[0]

    def copy_params(self) -> Arrays:
        return {k: v.copy() for k, v in self.params.items()}

    # --- one step ----------------------------------------------------------------------
    def step_reference(self) -> Outcome:
        loss, grads = self.loss_and_grads(reference.as_float64(self.params), *_float64(self.batch))
        return {"loss": loss, **{f"grad {k}": g for k, g in grads.items()}}

    def step_tolerances(self) -> dict[str, Tolerance]:
        tolerance = sgd_tolerance(self.params, self.lr)
        return {f"grad {k}": tolerance for k in self.params}

    def step_reader(self, state: Callable[[], Arrays]) -> Callable[[object], Outcome]:
        def read(loss) -> Outcome:
            grads = sgd_gradients(self.params, state(), self.lr)
            return {"loss": np.asarray(loss), **{f"grad {k}": g for k, g in grads.items()}}

        return read

    # --- a loop of steps ---------------------------------------------------------------
    def loop_reference(self) -> Outcome:
        params = reference.as_float64(self.params)
        losses = reference.sgd_loop(self.loss_and_grads, params, self.lr,
                                    [_float64(b) for b in self.batches], self.steps)
        return {"losses": losses, **{f"final {k}": v for k, v in params.items()}}

    def loop_tolerances(self, rtol: float) -> dict[str, Tolerance]:
        keys = ["losses", *(f"final {k}" for k in self.params)]
        return {k: Tolerance(rtol=rtol, scale=rtol) for k in keys}

    def loop_reader(self, state: Callable[[], Arrays]) -> Callable[[object], Outcome]:
        def read(losses) -> Outcome:
            finals = state()
            return {"losses": np.asarray(losses), **{f"final {k}": finals[k] for k in finals}}

        return read


# --- gradfuse ------------------------------------------------------------------------------
def _gradfuse_params(problem: Problem):
    params = {k: Parameter(v) for k, v in problem.copy_params().items()}
    arrays = {k: p.data for k, p in params.items()}
    return params, arrays, optim.SGD(params, lr=problem.lr)


def gradfuse_step(problem: Problem, loss_fn) -> Impl:
    """compiler.training.train_step: zero-grad, forward, backward and update in one kernel."""
    params, arrays, optimizer = _gradfuse_params(problem)
    step = train_step(loss_fn, params, optimizer)
    return Impl(GRADFUSE, lambda: step(*problem.batch), problem.step_reader(lambda: arrays),
                _restorer(problem.params, arrays), subject=step)


def gradfuse_runtime_step(problem: Problem, loss_fn) -> Impl:
    """The PyTorch-style path: opt.zero_grad(); loss_fn(...).backward(); opt.step()."""
    params, arrays, optimizer = _gradfuse_params(problem)

    def call():
        optimizer.zero_grad()
        loss = loss_fn(params, *problem.batch)
        loss.backward()
        optimizer.step()
        return loss.item()

    return Impl(GRADFUSE_RUNTIME, call, problem.step_reader(lambda: arrays),
                _restorer(problem.params, arrays))


def gradfuse_fit(problem: Problem, loss_fn) -> Impl:
    """compiler.training.fit over the batches in order (shuffle=False): the loop runs compiled.

    fit counts in epochs; a step count that is not a whole number of epochs
    runs as a second call on the leading batches (fit has no `steps=`).
    """
    params, arrays, optimizer = _gradfuse_params(problem)
    step = train_step(loss_fn, params, optimizer)
    batch_size = len(problem.batch[0])
    data = tuple(np.concatenate(columns) for columns in zip(*problem.batches))
    epochs, extra = divmod(problem.steps, len(problem.batches))
    head = tuple(d[:extra * batch_size] for d in data)

    def call():
        losses = fit(loss_fn, params, optimizer, data, epochs=epochs, batch_size=batch_size,
                     shuffle=False, progress=False, step=step).losses
        if extra:
            more = fit(loss_fn, params, optimizer, head, epochs=1, batch_size=batch_size,
                       shuffle=False, progress=False, step=step).losses
            losses = np.concatenate([losses, more])
        return losses

    return Impl(GRADFUSE, call, problem.loop_reader(lambda: arrays),
                _restorer(problem.params, arrays), number=1, subject=step)


# --- hand-written --------------------------------------------------------------------------
def numba_step(problem: Problem, kernel) -> Impl:
    """kernel(*params, *batch, lr) -> loss, updating params in place."""
    arrays = problem.copy_params()
    head = tuple(arrays.values())
    return Impl(NUMBA, lambda: kernel(*head, *problem.batch, problem.lr),
                problem.step_reader(lambda: arrays), _restorer(problem.params, arrays))


def numba_loop(problem: Problem, run: Callable[[Arrays, np.ndarray], None]) -> Impl:
    """run(params, losses) runs the whole loop in one hand-written kernel call."""
    arrays = problem.copy_params()
    losses = np.empty(problem.steps, np.float32)

    def call():
        run(arrays, losses)
        return losses

    return Impl(NUMBA, call, problem.loop_reader(lambda: arrays),
                _restorer(problem.params, arrays), number=1)


def numpy_step(problem: Problem) -> Impl:
    arrays = problem.copy_params()
    return Impl(NUMPY, lambda: reference.sgd_step(problem.loss_and_grads, arrays, problem.lr,
                                                  *problem.batch),
                problem.step_reader(lambda: arrays), _restorer(problem.params, arrays))


def numpy_loop(problem: Problem) -> Impl:
    arrays = problem.copy_params()
    return Impl(NUMPY, lambda: reference.sgd_loop(problem.loss_and_grads, arrays, problem.lr,
                                                  problem.batches, problem.steps),
                problem.loop_reader(lambda: arrays), _restorer(problem.params, arrays),
                number=1, slow=True)


# --- peers ---------------------------------------------------------------------------------
def _torch_trainer(problem: Problem, build, loss, compiled: bool):
    torch = peers.load_torch()
    model, mapping = build(problem.params)
    trainer = peers.TorchTrainer(model, mapping, loss, problem.lr, compiled)
    batches = [tuple(torch.from_numpy(d) for d in b) for b in problem.batches]
    return trainer, batches, lambda: trainer.load(problem.params)


def torch_step(problem: Problem, build, loss, compiled: bool) -> Impl:
    """`build(params) -> (module, mapping)` (peers.torch_mlp ...), `loss(output, target)`."""
    trainer, batches, setup = _torch_trainer(problem, build, loss, compiled)
    return Impl(TORCH_COMPILE if compiled else TORCH, lambda: trainer.step(*batches[0]),
                problem.step_reader(trainer.state), setup, peer=True)


def torch_loop(problem: Problem, build, loss, compiled: bool) -> Impl:
    """A Python loop of steps, the way PyTorch trains."""
    trainer, batches, setup = _torch_trainer(problem, build, loss, compiled)
    return Impl(TORCH_COMPILE if compiled else TORCH,
                lambda: trainer.loop(batches, problem.steps),
                problem.loop_reader(trainer.state), setup, peer=True, number=1, slow=True)


def _jax_trainer(problem: Problem, loss):
    peers.load_jax()
    trainer = peers.JaxTrainer(loss, problem.lr)

    def device(d: np.ndarray):
        return peers.jnp.asarray(d.astype(np.int32) if d.dtype.kind == "i" else d)  # x64 is off

    return trainer, device, lambda: trainer.load(problem.params)


def jax_step(problem: Problem, loss) -> Impl:
    """A jitted step, synchronized after every call."""
    trainer, device, setup = _jax_trainer(problem, loss)
    batch = tuple(device(d) for d in problem.batch)
    return Impl(JAX, lambda: trainer.step(*batch), problem.step_reader(trainer.state), setup,
                peer=True)


def jax_loop(problem: Problem, loss) -> Impl:
    """All steps in one jitted lax.fori_loop."""
    trainer, device, setup = _jax_trainer(problem, loss)
    stacked = tuple(device(np.stack(columns)) for columns in zip(*problem.batches))
    return Impl(JAX, lambda: trainer.loop(stacked, problem.steps),
                problem.loop_reader(trainer.state), setup, peer=True, number=1)


# --- all rows of a case --------------------------------------------------------------------
@dataclass(frozen=True)
class PeerModel:
    """The workload's model in the peers: `torch_model(params) -> (module, mapping)` (see
    peers.TorchTrainer), `torch_loss(output, target)`, and `jax_loss(params, *batch)`."""

    torch_model: Callable
    torch_loss: Callable
    jax_loss: Callable


def step_rows(problem: Problem, loss_fn, numba_kernel, model: PeerModel,
              runtime: bool = True) -> dict[str, Callable[[], Impl]]:
    """Builders of every row of a one-step case (`runtime`: add gradfuse's backward() path)."""
    rows = {
        GRADFUSE: lambda: gradfuse_step(problem, loss_fn),
        GRADFUSE_RUNTIME: lambda: gradfuse_runtime_step(problem, loss_fn),
        NUMBA: lambda: numba_step(problem, numba_kernel),
        NUMPY: lambda: numpy_step(problem),
        TORCH: lambda: torch_step(problem, model.torch_model, model.torch_loss, False),
        TORCH_COMPILE: lambda: torch_step(problem, model.torch_model, model.torch_loss, True),
        JAX: lambda: jax_step(problem, model.jax_loss),
    }
    if not runtime:
        del rows[GRADFUSE_RUNTIME]
    return rows


def loop_rows(problem: Problem, loss_fn, numba_run, model: PeerModel
              ) -> dict[str, Callable[[], Impl]]:
    """Builders of every row of a training-loop case; `numba_run(params, losses)`."""
    return {
        GRADFUSE: lambda: gradfuse_fit(problem, loss_fn),
        NUMBA: lambda: numba_loop(problem, numba_run),
        NUMPY: lambda: numpy_loop(problem),
        TORCH: lambda: torch_loop(problem, model.torch_model, model.torch_loss, False),
        TORCH_COMPILE: lambda: torch_loop(problem, model.torch_model, model.torch_loss, True),
        JAX: lambda: jax_loop(problem, model.jax_loss),
    }
