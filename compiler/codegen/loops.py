"""A kernel body run once per minibatch, over several epochs, inside one compiled call.

`fit` needs the train step's body in a loop, not a loop that calls the step's
kernel: numba compiles a callee again into every caller (and optimizes it
again), which doubled the cold start. With `MinibatchLoop` the kernel writer
emits

    def loss_step_fit(W, b, hypers, X_rows, y_rows, orders, batch_size, losses, <constants>):
        n_rows = X_rows.shape[0]
        n_batches = (n_rows + batch_size - 1) // batch_size
        for epoch in range(orders.shape[0]):
            if orders.shape[1] == 0:  # no shuffling: batches are views of the data
                X_epoch = X_rows
                ...
            else:  # one gather per epoch, then views
                X_epoch = X_rows[orders[epoch]]
                ...
            for batch in range(n_batches):
                start = batch * batch_size
                X = X_epoch[start:start + batch_size]
                ...
                <the step's body, written at this depth>
                losses[epoch * n_batches + batch] = loss

where the data inputs (`X`, `y`) keep their names inside the body. Each epoch
takes the rows in the order of its row of `orders` (a permutation), or as they
are when `orders` has no columns; the last batch of an epoch holds what is left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compiler.codegen.emit import KernelWriter
    from compiler.names import Namer

LOOP_NAMES = ("n_rows", "n_batches", "epoch", "orders", "batch", "batch_size", "start", "losses")


@dataclass(frozen=True)
class MinibatchLoop:
    data: tuple[int, ...]  # graph inputs sliced per batch (they share their first axis)
    loss: int  # the output recorded after every step
    suffix: str = "fit"

    def reserve(self, namer: Namer) -> None:
        for name in LOOP_NAMES:
            namer.reserve(name)

    def open(self, k: KernelWriter, params: list[str]) -> list[str]:
        """Write the loop headers; returns the kernel's parameters."""
        inputs = k.graph.inputs
        data = [k.arrays[inputs[j].id] for j in self.data]  # the body's names for a batch
        rows = [k.namer.fresh(f"{name}_rows") for name in data]
        epochs = [k.namer.fresh(f"{name}_epoch") for name in data]
        renamed = dict(zip(data, rows))
        params = [renamed.get(p, p) for p in params]
        # the loop's own arguments go before the constant arrays, which always come last
        params[len(inputs):len(inputs)] = ["orders", "batch_size", "losses"]
        k.line(f"n_rows = {rows[0]}.shape[0]")
        k.line("n_batches = (n_rows + batch_size - 1) // batch_size")
        k.line("for epoch in range(orders.shape[0]):")
        k.depth += 1
        k.line("if orders.shape[1] == 0:  # no shuffling: batches are views of the data")
        for source, epoch in zip(rows, epochs):
            k.line(f"    {epoch} = {source}")
        k.line("else:  # one gather per epoch, then views")
        for source, epoch in zip(rows, epochs):
            k.line(f"    {epoch} = {source}[orders[epoch]]")
        k.line("for batch in range(n_batches):")
        k.depth += 1
        k.line("start = batch * batch_size")
        for name, epoch in zip(data, epochs):
            k.line(f"{name} = {epoch}[start:start + batch_size]")
        return params

    def close(self, k: KernelWriter, loss: str) -> None:
        """Record the step's loss (`loss` reads it); the step's other results are dropped."""
        k.line(f"losses[epoch * n_batches + batch] = {loss}")
        k.depth -= 2
