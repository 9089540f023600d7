"""y = x*w + b, loss = (y - 2)**2: gradients for x, w and b, then one SGD step at lr 0.01."""

import numpy as np

from compiler import compile_grad
from runtime import Parameter, optim


@compile_grad
def loss_fn(x, w, b):
    y = x * w + b
    return (y - 2) ** 2


def main() -> dict:
    x, w, b = Parameter(1.0), Parameter(2.0), Parameter(3.0)
    loss = loss_fn(x, w, b)
    loss.backward()
    grads = {"x": x.grad.copy(), "w": w.grad.copy(), "b": b.grad.copy()}
    print(f"loss = {loss.item()}, dx = {grads['x']}, dw = {grads['w']}, db = {grads['b']}")
    before = {"x": x.data.copy(), "w": w.data.copy(), "b": b.data.copy()}
    optim.SGD([x, w, b], lr=0.01).step()
    after = {"x": x.data.copy(), "w": w.data.copy(), "b": b.data.copy()}
    for name in after:
        moved = after[name] - before[name]
        print(f"{name}: {before[name]} -> {after[name]} (moved by {moved:+.4f})")
    return {"loss": loss.item(), "grads": grads, "before": before, "after": after}


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
