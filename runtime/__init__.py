"""gradfuse's runtime: PyTorch's autograd semantics, optimizers and building blocks.

`runtime` gives compiled kernels their semantics and never imports `compiler`:
the compiler hands it plain callables through `record`.
"""

from . import autograd, functional, init, optim, utils
from .autograd import enable_grad, is_grad_enabled, no_grad, record, set_grad_enabled
from .tensor import Parameter, Tensor

__all__ = [
    "Parameter",
    "Tensor",
    "autograd",
    "enable_grad",
    "functional",
    "init",
    "is_grad_enabled",
    "no_grad",
    "optim",
    "record",
    "set_grad_enabled",
    "utils",
]
