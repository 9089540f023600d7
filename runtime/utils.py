"""Gradient clipping, per-parameter gradient norms, and saving/loading to `.npz`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .optim import Optimizer
from .tensor import Tensor

Params = Tensor | Iterable[Tensor] | Mapping[str, Tensor]


def _named(params: Params) -> dict[str, Tensor]:
    """Parameters by name: a dict's own names, else their positions "0", "1", ..."""
    if isinstance(params, Tensor):
        return {"0": params}
    if isinstance(params, Mapping):
        return dict(params)
    return {str(i): p for i, p in enumerate(params)}


def _vector_norm(values: np.ndarray, norm_type: float) -> float:
    return float(np.linalg.norm(np.ravel(values), ord=norm_type))


# -- gradients -----------------------------------------------------------------------


def clip_grad_norm_(
    params: Params, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False
) -> float:
    """Scale all gradients together so their joint norm is at most max_norm; return the
    norm before clipping.

    The joint norm is the norm of the per-parameter norms (`norm_type` may be
    float('inf') for the largest absolute entry). As in PyTorch the scale is
    max_norm / (norm + 1e-6), capped at 1, so a clipped norm lands just below max_norm.
    """
    grads = [p.grad for p in _named(params).values() if p.grad is not None]
    if not grads:
        return 0.0
    norm_type = float(norm_type)
    total = _vector_norm(np.array([_vector_norm(g, norm_type) for g in grads]), norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. To disable this error and scale the "
            "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`"
        )
    # np.minimum, not min(): a nan norm must give a nan scale, as in PyTorch.
    scale = float(np.minimum(max_norm / (total + 1e-6), 1.0))
    for g in grads:
        g *= g.dtype.type(scale)  # in place, like PyTorch's trailing underscore says
    return total


def clip_grad_value_(params: Params, clip_value: float) -> None:
    """Clip every gradient entry into [-clip_value, clip_value], in place."""
    for p in _named(params).values():
        if p.grad is not None:
            np.clip(p.grad, -clip_value, clip_value, out=p.grad)


def grad_norms(
    params: Params, norm_type: float = 2.0
) -> dict[str, float | None] | list[float | None]:
    """Each parameter's gradient norm (None where there is no gradient).

    A dict of parameters gives a dict by the same names, anything else a list.
    """
    named = _named(params)
    norms = {
        name: None if p.grad is None else _vector_norm(p.grad, float(norm_type))
        for name, p in named.items()
    }
    return norms if isinstance(params, Mapping) else list(norms.values())


# -- checkpoints ---------------------------------------------------------------------

_PARAM = "param/"
_GROUPS = "optimizer/param_groups"
_STATE = "optimizer/state/"


def save(path: str | os.PathLike, params: Params, optimizer: Optimizer | None = None) -> None:
    """Write parameters (and an optimizer's state_dict) to an `.npz` file at exactly `path`.

    Parameters are stored under "param/<name>" (positions for a list); the
    optimizer's groups as JSON and its state arrays as "optimizer/state/<index>/<key>".
    """
    arrays = {_PARAM + name: p.data for name, p in _named(params).items()}
    if optimizer is not None:
        state_dict = optimizer.state_dict()
        arrays[_GROUPS] = np.array(json.dumps(state_dict["param_groups"]))
        for index, state in state_dict["state"].items():
            for key, value in state.items():
                arrays[f"{_STATE}{index}/{key}"] = value
    # An open file, because np.savez would append ".npz" to a path without it.
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load(
    path: str | os.PathLike,
    params: Params,
    optimizer: Optimizer | None = None,
    strict: bool = True,
) -> None:
    """Copy values saved by `save` into `params` (in place) and into `optimizer`.

    Every parameter must be in the file with the same shape; with `strict`, the
    file may not hold parameters that `params` lacks. Nothing is written unless
    all checks pass.
    """
    named = _named(params)
    with np.load(path, allow_pickle=False) as npz:
        saved = {key[len(_PARAM) :]: npz[key] for key in npz.files if key.startswith(_PARAM)}
        missing = [name for name in named if name not in saved]
        unexpected = [name for name in saved if name not in named] if strict else []
        if missing or unexpected:
            raise KeyError(
                f"{os.fspath(path)} does not match the parameters: missing {missing}, "
                f"unexpected {unexpected}"
            )
        for name, p in named.items():
            if saved[name].shape != p.shape:
                raise ValueError(
                    f"parameter {name!r}: saved shape {saved[name].shape} but the "
                    f"parameter has shape {p.shape}"
                )
        optimizer_state = _read_optimizer_state(npz, path) if optimizer is not None else None
    for name, p in named.items():
        np.copyto(p.data, saved[name], casting="same_kind")
        p._version += 1
    if optimizer is not None:
        optimizer.load_state_dict(optimizer_state)


def _read_optimizer_state(npz: Any, path: str | os.PathLike) -> dict[str, Any]:
    if _GROUPS not in npz.files:
        raise KeyError(f"{os.fspath(path)} holds no optimizer state")
    groups = json.loads(str(npz[_GROUPS]))
    for group in groups:
        for key, value in group.items():
            # JSON has no tuples: restore them (betas) but keep index/name lists.
            if isinstance(value, list) and key not in ("params", "param_names"):
                group[key] = tuple(value)
    state: dict[int, dict[str, np.ndarray]] = {}
    for key in npz.files:
        if key.startswith(_STATE):
            index, name = key[len(_STATE) :].split("/", 1)
            state.setdefault(int(index), {})[name] = npz[key]
    return {"state": state, "param_groups": groups}
