"""backward(gradient=...) for non-scalar outputs: vector-Jacobian products.

    x = [2, 3], y = x**2, gradient [1, 1]       -> x.grad = [4, 6]
    z = (2x)**3 on a 2x2 x, gradient masks       -> a column, then a row, of 24 x**2
    out = z.mean()                               -> x.grad = 24 x**2 / 4
    out.backward(gradient of shape 2x2)          -> an error naming both shapes
"""

import numpy as np

from compiler import compile_grad
from runtime import Parameter


@compile_grad
def square(x):
    return x**2


@compile_grad
def cube_of_double(x):
    return (2 * x) ** 3


@compile_grad
def mean(z):
    return z.mean()


def main() -> dict:
    results = {}
    x = Parameter(np.array([2.0, 3.0]))
    square(x).backward(gradient=np.array([1.0, 1.0]))
    print(f"y = x**2, gradient=[1, 1]: x.grad = {x.grad}")
    results["vjp"] = x.grad.copy()

    x = Parameter(np.array([[1.0, 2.0], [3.0, 4.0]]))
    z = cube_of_double(x)
    z.backward(gradient=np.array([[0.0, 1.0], [0.0, 1.0]]), retain_graph=True)
    print(f"z = (2x)**3, gradient selects the second column:\n{x.grad}")
    results["column"] = x.grad.copy()
    x.zero_grad()
    z.backward(gradient=np.array([[1.0, 1.0], [0.0, 0.0]]), retain_graph=True)
    print(f"gradient selects the first row:\n{x.grad}")
    results["row"] = x.grad.copy()

    x.zero_grad()
    out = mean(z)
    out.backward(retain_graph=True)
    print(f"out = z.mean(): x.grad = 24 x**2 / 4 =\n{x.grad}")
    results["mean"] = x.grad.copy()
    try:
        out.backward(gradient=np.ones((2, 2)))
    except RuntimeError as err:
        print(f"out.backward(gradient of shape (2, 2)) raises: {err}")
        results["error"] = str(err)
    return results


if __name__ == "__main__":
    main()
