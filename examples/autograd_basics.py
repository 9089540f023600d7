"""PyTorch's first autograd examples, on compiled kernels: gradients, accumulation, retain_graph.

    z = x**2 + y**3 at x=2, y=3          -> z = 31, x.grad = 4, y.grad = 27
    backward of x**2, then of x**3 at 2   -> x.grad = 4, then 4 + 12 = 16; zeroed: None
    y = x**3, backward(retain_graph=True) -> 12; zeroed; backward -> 12; a third raises
"""

from compiler import compile_grad
from runtime import Parameter


@compile_grad
def f(x, y):
    return x**2 + y**3


@compile_grad
def square(x):
    return x**2


@compile_grad
def cube(x):
    return x**3


def main() -> dict:
    results = {}
    x, y = Parameter(2.0), Parameter(3.0)
    z = f(x, y)
    z.backward()
    print(f"z = {z.item()}, x.grad = {x.grad}, y.grad = {y.grad}")
    results["z"], results["x.grad"], results["y.grad"] = z.item(), x.grad, y.grad

    x = Parameter(2.0)
    square(x).backward()
    print(f"after backward of x**2: x.grad = {x.grad}")
    results["after x**2"] = x.grad.copy()
    cube(x).backward()
    print(f"after backward of x**3: x.grad = {x.grad} (accumulated: 4 + 12)")
    results["after x**3"] = x.grad.copy()
    x.zero_grad()
    print(f"after zero_grad: x.grad = {x.grad}")
    results["after zero_grad"] = x.grad

    x = Parameter(2.0)
    y = cube(x)
    y.backward(retain_graph=True)
    print(f"backward(retain_graph=True): x.grad = {x.grad}")
    results["retained"] = x.grad.copy()
    x.zero_grad()
    y.backward()
    print(f"backward again: x.grad = {x.grad}")
    results["again"] = x.grad.copy()
    try:
        y.backward()
    except RuntimeError as err:
        print(f"a third backward raises: {err}")
        results["third"] = str(err)
    return results


if __name__ == "__main__":
    main()
