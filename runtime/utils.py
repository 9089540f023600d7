"""Gradient clipping, per-parameter gradient norms, parameters as one vector, and saving/loading
to `.npz`."""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from . import autograd
from .grad_mode import is_grad_enabled
from .optim import Optimizer
from .tensor import Tensor

Params = Tensor | Iterable[Tensor] | Mapping[str, Tensor]


def _named(params: Params) -> dict[str, Tensor]:
    """Parameters by name: a dict's own keys, else their positions "0", "1", ...; nested
    dicts and lists give paths (`{"enc": {"W": w}}` -> "enc/W", a list of layers -> "0/W")."""
    if isinstance(params, Tensor):
        return {"0": params}
    named: dict[str, Tensor] = {}
    _add_named(named, "", params)
    return named


def parameters(params: Params) -> list[Tensor]:
    """The Tensors of `params` (a Tensor, a list, or dicts and lists nested), in order: what
    an optimizer takes for a model whose layers are nested dicts."""
    return list(_named(params).values())


def _add_named(named: dict[str, Tensor], prefix: str, tree: Any) -> None:
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, (list, tuple)) or (isinstance(tree, Iterable)
                                             and not isinstance(tree, (str, bytes, np.ndarray))):
        items = enumerate(tree)
    else:
        where = f"at {prefix[:-1]!r}" if prefix else "given"
        raise TypeError(f"parameters must be Tensors, or dicts and lists of them; the value "
                        f"{where} is a {type(tree).__name__}")
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, Tensor):
            named[name] = value
        else:
            _add_named(named, name + "/", value)


def _vector_norm(values: np.ndarray, norm_type: float) -> float:
    flat = np.ravel(values)
    if norm_type == 2.0 and flat.dtype.kind == "f":  # np.linalg.norm's sqrt(x . x), quicker:
        # a clipped training step runs this per gradient. The square root in double, then
        # rounded to float32 for a float32 sum, is float32's correctly rounded square root.
        root = math.sqrt(flat.dot(flat))
        return root if flat.dtype == np.float64 else float(flat.dtype.type(root))
    return float(np.linalg.norm(flat, ord=norm_type))


# -- gradients -----------------------------------------------------------------------


def clip_grad_norm_(
    params: Params, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> float:
    """Scale all gradients together so their joint norm is at most max_norm; return the
    norm before clipping (an np.float64: a float, whose `.item()` works as on the tensor
    PyTorch returns).

    The joint norm is the norm of the per-parameter norms (`norm_type` may be
    float('inf') for the largest absolute entry). As in PyTorch the scale is
    max_norm / (norm + 1e-6), capped at 1, so a clipped norm lands just below max_norm.
    PyTorch's `foreach` is accepted and changes nothing (one implementation).
    """
    # `_grad`, not `.grad`: these arrays stay inside the runtime (see Tensor._own_grad)
    tensors = params if isinstance(params, list | tuple) \
        and all(isinstance(p, Tensor) for p in params) else _named(params).values()
    grads = [p._grad for p in tensors if p._grad is not None]
    if not grads:
        return np.float64(0.0)
    norm_type = float(norm_type)
    total = _vector_norm(np.array([_vector_norm(g, norm_type) for g in grads]), norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. To disable this error and scale the "
            "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`"
        )
    scale = float(max_norm / (total + 1e-6))
    if not scale < 1.0 and scale == scale:  # capped at 1; a nan norm gives a nan scale
        scale = 1.0
    if scale != 1.0:  # (times 1.0 changes no value, not even a nan or an inf)
        with np.errstate(invalid="ignore"):  # an inf gradient times a 0 scale: NaN, silently
            for g in grads:
                g *= g.dtype.type(scale)  # in place, like PyTorch's trailing underscore says
    return np.float64(total)


def clip_grad_value_(params: Params, clip_value: float, foreach: bool | None = None) -> None:
    """Clip every gradient entry into [-clip_value, clip_value], in place (`foreach`, as in
    PyTorch, changes nothing)."""
    for p in _named(params).values():
        if p._grad is not None:
            np.clip(p._grad, -clip_value, clip_value, out=p._grad)


def parameters_to_vector(params: Params) -> Tensor:
    """The parameters' entries in one 1-D Tensor, in order (torch.nn.utils.parameters_to_vector):
    differentiable, as PyTorch's, so `(parameters_to_vector(ps) ** 2).sum().backward()` gives
    each parameter its share of the gradient."""
    tensors = parameters(params)
    if not tensors:
        raise ValueError("parameters_to_vector of no parameters")
    out = np.concatenate([t.data.ravel() for t in tensors])
    if not (is_grad_enabled() and any(t.requires_grad for t in tensors)):
        return Tensor(out)
    ends = np.cumsum([t.data.size for t in tensors])

    def backward(cotangents):
        pieces = np.split(np.asarray(cotangents[0]), ends[:-1])
        return [piece.reshape(t.shape).astype(t.dtype) if t.requires_grad else None
                for t, piece in zip(tensors, pieces)]

    return autograd.record([out], tensors, backward, "parameters_to_vector")[0]


def vector_to_parameters(vec: Tensor | np.ndarray, params: Params) -> None:
    """Copy the slices of a 1-D `vec` into the parameters, in order, in place (their versions
    bumped, as by `load`): torch.nn.utils.vector_to_parameters. The length must be the
    parameters' total size."""
    data = vec.data if isinstance(vec, Tensor) else np.asarray(vec)
    tensors = parameters(params)
    total = sum(t.data.size for t in tensors)
    if data.ndim != 1 or data.size != total:
        raise ValueError(f"vector_to_parameters needs a 1-D vector of the parameters' {total} "
                         f"entries, got shape {data.shape}")
    start = 0
    for t in tensors:
        np.copyto(t.data, data[start:start + t.data.size].reshape(t.shape), casting="same_kind")
        t._version += 1
        start += t.data.size


def grad_norms(
    params: Params, norm_type: float = 2.0
) -> dict[str, float | None] | list[float | None]:
    """Each parameter's gradient norm (None where there is no gradient).

    A dict of parameters gives a dict by the same names, anything else a list.
    """
    named = _named(params)
    norms = {
        name: None if p._grad is None else _vector_norm(p._grad, float(norm_type))
        for name, p in named.items()
    }
    return norms if isinstance(params, Mapping) else list(norms.values())


# -- checkpoints ---------------------------------------------------------------------

_PARAM = "param/"
_GROUPS = "optimizer/param_groups"
_STATE = "optimizer/state/"
_NAMES = "optimizer/param_names"  # JSON: the name in `params` of each optimizer index


def save(path: str | os.PathLike, params: Params, optimizer: Optimizer | None = None) -> None:
    """Write parameters (and an optimizer's state_dict) to an `.npz` file at exactly `path`.

    Parameters are stored under "param/<name>" (positions for a list, paths such as
    "enc/W" for nested dicts); the optimizer's groups as JSON, its state arrays as
    "optimizer/state/<index>/<key>", and the name of the parameter at each optimizer
    index, so that `load` gives each parameter its own state even in another order.

    The file is replaced atomically: the checkpoint is written to a temporary file next
    to `path`, flushed to disk, and renamed over `path`, so a crash or `kill -9` at any
    moment leaves either the previous checkpoint or the new one, never a torn file.
    """
    _check_path_first("save", path, params)
    named = _named(params)
    arrays = {_PARAM + name: p.data for name, p in named.items()}
    if optimizer is not None:
        state_dict = optimizer.state_dict()
        arrays[_GROUPS] = np.array(_settings_json(state_dict["param_groups"]))
        for index, state in state_dict["state"].items():
            for key, value in state.items():
                arrays[f"{_STATE}{index}/{key}"] = value
        name_of = {id(p): name for name, p in named.items()}
        arrays[_NAMES] = np.array(json.dumps([name_of.get(id(p))
                                              for p in optimizer.parameters()]))
    _replace_atomically(path, lambda f: np.savez(f, **arrays))


def _settings_json(groups: list[dict[str, Any]]) -> str:
    """The groups' settings as JSON, NumPy numbers (an lr of np.float32, a 0-d array) as the
    Python numbers they hold; anything else JSON cannot hold is refused, naming it."""
    def plain(value: Any, where: str) -> Any:
        if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
            return value.item()
        if isinstance(value, (list, tuple)):
            return [plain(v, where) for v in value]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"save: the optimizer setting {where} is a {type(value).__name__}; a "
                        "checkpoint keeps numbers, bools, strings and lists of them")

    return json.dumps([{key: plain(value, f"{key!r} of param_groups[{i}]")
                        for key, value in group.items()} for i, group in enumerate(groups)])


def _check_path_first(what: str, path: Any, params: Any) -> None:
    if not isinstance(path, (str, os.PathLike)) and isinstance(params, (str, os.PathLike)):
        raise TypeError(f"{what}(path, params, optimizer=None) takes the path first "
                        f"(torch.save takes the object first)")


def _replace_atomically(path: str | os.PathLike, write: Any) -> None:
    """`write(file)` into a temporary file beside `path`, fsync it, rename it over `path`."""
    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 leaves the mode to the umask, as open(path, "wb") would.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)  # an open file: np.savez would append ".npz" to a path without it
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)  # the rename itself survives a power cut too


def _fsync_directory(directory: str) -> None:
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a directory
        pass
    finally:
        os.close(fd)


def load(
    path: str | os.PathLike,
    params: Params,
    optimizer: Optimizer | None = None,
    strict: bool = True,
) -> None:
    """Copy values saved by `save` into `params` (in place) and into `optimizer`.

    Every parameter must be in the file with the same shape and a dtype it can take
    (same kind); with `strict`, the file may not hold parameters that `params` lacks.
    The optimizer's state goes to the parameter of the same name, whatever the order of
    the optimizer's parameters now, and must fit it (keys and shapes, see
    `Optimizer.load_state_dict`). Nothing is written unless all checks pass.
    """
    _check_path_first("load", path, params)
    named = _named(params)
    with np.load(path, allow_pickle=False) as npz:
        saved = {key[len(_PARAM) :]: npz[key] for key in npz.files if key.startswith(_PARAM)}
        if not saved and not any(key.startswith(_STATE) or key == _GROUPS for key in npz.files):
            raise ValueError(
                f"{os.fspath(path)} is not a checkpoint written by runtime.utils.save (it holds "
                f"{npz.files[:3]}{'...' if len(npz.files) > 3 else ''}, no 'param/' arrays); a "
                "file of torch.save: read it with torch.load and copy each tensor into its "
                "Parameter (with no_grad(): p.copy_(t.numpy()))")
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
            if not np.can_cast(saved[name].dtype, p.dtype, casting="same_kind"):
                raise ValueError(
                    f"parameter {name!r}: saved dtype {saved[name].dtype} cannot be stored "
                    f"in the parameter's {p.dtype}"
                )
        restore_optimizer = None
        if optimizer is not None:
            state_dict = _read_optimizer_state(npz, path)
            state_dict = _by_name(state_dict, _read_names(npz), named, optimizer)
            restore_optimizer = optimizer.prepare_load(state_dict)
    for name, p in named.items():
        np.copyto(p.data, saved[name], casting="same_kind")
        p._version += 1
    if restore_optimizer is not None:
        restore_optimizer()


def _read_names(npz: Any) -> list[str | None] | None:
    return json.loads(str(npz[_NAMES])) if _NAMES in npz.files else None


def _by_name(
    state_dict: dict[str, Any],
    saved_names: list[str | None] | None,
    named: dict[str, Tensor],
    optimizer: Optimizer,
) -> dict[str, Any]:
    """`state_dict` with its optimizer indices renumbered so that each state follows the name
    of its parameter into the optimizer's current order (PyTorch matches by position only,
    which silently swaps the moments of same-shaped parameters listed in another order).
    Checkpoints without names, or optimizers over parameters that `params` does not name,
    keep positions."""
    current = optimizer.parameters()
    index_of = {id(p): i for i, p in enumerate(current)}
    by_name = {name: index_of[id(p)] for name, p in named.items() if id(p) in index_of}
    if saved_names is None or len(saved_names) != len(current) \
            or len(state_dict["param_groups"]) != len(optimizer.param_groups) \
            or len(by_name) != len(current) or None in saved_names \
            or any(name not in by_name for name in saved_names):
        return state_dict
    renumber = [by_name[name] for name in saved_names]  # saved index -> current index
    groups = []
    for saved, group in zip(state_dict["param_groups"], optimizer.param_groups):
        indices = [index_of[id(p)] for p in group["params"]]
        if sorted(renumber[i] for i in saved["params"]) != sorted(indices):
            raise ValueError(
                "the checkpoint's optimizer groups hold other parameters than this "
                "optimizer's groups (by name)"
            )
        groups.append({**saved, "params": indices})
    state = {renumber[int(i)]: s for i, s in state_dict["state"].items()}
    return {"state": state, "param_groups": groups}


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
