"""A linear model's mean absolute error and its gradient.

    coeffs [0.5, 0.5], inputs [[1, 2], [3, 4]], targets [5, 6] -> loss 3.0, gradient [-2, -3]
"""

import numpy as np

from compiler import compile_grad


@compile_grad
def mae(params, inputs, targets):
    preds = (inputs * params).sum(axis=1)
    return np.abs(preds - targets).mean()


def main() -> dict:
    coeffs = np.array([0.5, 0.5])
    inputs = np.array([[1.0, 2.0], [3.0, 4.0]])
    targets = np.array([5.0, 6.0])
    loss, grad = mae.value_and_grad(coeffs, inputs, targets)
    print(f"loss = {loss}, gradient = {grad}")
    return {"loss": loss, "grad": grad}


if __name__ == "__main__":
    main()
