"""Optimizers with PyTorch's API whose update rules are traceable NumPy (see `rules`)."""

from . import lr_scheduler, rules
from .optimizer import Optimizer
from .optimizers import SGD, Adagrad, Adam, AdamW, RMSprop

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "lr_scheduler", "rules"]
