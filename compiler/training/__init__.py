"""Compiled training: a fused train step (`train_step`) and minibatch epochs (`fit`).

    step = train_step(loss_fn, params, optimizer, max_norm=1.0)
    loss = step(X, y)                       # params and optimizer state updated in place
    history = fit(loss_fn, params, optimizer, (X, y), epochs=10, batch_size=32)

With `comm=MPI.COMM_WORLD`, both train data-parallel over MPI ranks (distributed.py).
"""

from compiler.training.fit import History, epoch_orders, fit
from compiler.training.step import TrainStep, train_step

__all__ = ["History", "TrainStep", "epoch_orders", "fit", "train_step"]
