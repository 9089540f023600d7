"""gradfuse's runtime: PyTorch's autograd semantics, optimizers and building blocks.

`runtime` gives compiled kernels their semantics and never imports `compiler`:
the compiler hands it plain callables through `record`.
"""

from . import autograd, functional, init, optim, utils
from .anomaly_mode import detect_anomaly, is_anomaly_enabled, set_detect_anomaly
from .autograd import enable_grad, is_grad_enabled, no_grad, record, set_grad_enabled
from .tensor import Parameter, Tensor

__all__ = [
    "Parameter",
    "Tensor",
    "autograd",
    "detect_anomaly",
    "enable_grad",
    "functional",
    "init",
    "is_anomaly_enabled",
    "is_grad_enabled",
    "no_grad",
    "optim",
    "record",
    "set_detect_anomaly",
    "set_grad_enabled",
    "utils",
]
