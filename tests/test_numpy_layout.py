"""Layout functions of issue 14 as users write them, against PyTorch: triangles, diagonals,
trace, pad, roll, tile, repeat, stacking, splitting, sliding windows and the convolutions
built from them (examples/convolution.py). Values and gradients through the interpreter
and numba (one fused kernel for the family); a batch axis stays symbolic; errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from op_cases import Arg
from torch_idioms import Idiom, lazy_family

from compiler import compile_grad
from compiler.errors import TraceError, UnsupportedError

torch = pytest.importorskip("torch")
F = torch.nn.functional

A = Arg


def _pieces(pieces) -> np.ndarray:
    return np.concatenate([p.ravel() * (k + 1.0) for k, p in enumerate(pieces)])


def _torch_pieces(pieces):
    return torch.cat([p.flatten() * (k + 1.0) for k, p in enumerate(pieces)])


IDIOMS = [
    Idiom("tril_triu", lambda x: np.tril(x) + np.triu(x, 1) * 2 + np.tril(x, -2) * 3,
          lambda x: torch.tril(x) + torch.triu(x, 1) * 2 + torch.tril(x, -2) * 3, (A((3, 4)),)),
    Idiom("tril_batched", lambda x: np.triu(x, -1), lambda x: torch.triu(x, -1), (A((2, 3, 4)),)),
    Idiom("diag_vector", lambda v: np.diag(v) + np.diag(v, 1)[:4, :4] + np.diag(v, -2)[2:, 2:],
          lambda v: torch.diag(v) + torch.diag(v, 1)[:4, :4] + torch.diag(v, -2)[2:, 2:],
          (A((4,)),)),
    Idiom("diag_matrix", lambda x: np.diag(x, 1) * np.diag(x)[:3],
          lambda x: torch.diag(x, 1) * torch.diag(x)[:3], (A((4, 4)),)),
    Idiom("diagonal_trace", lambda x: np.diagonal(x, -1, 2, 1) + np.trace(x, 1, 0, 2)[None, :],
          lambda x: torch.diagonal(x, -1, 2, 1) + torch.diagonal(x, 1, 0, 2).sum(-1)[None, :],
          (A((2, 3, 4)),)),
    Idiom("trace_2d", lambda x: np.trace(x) * x, lambda x: torch.trace(x) * x, (A((3, 3)),)),
    Idiom("pad_constant", lambda x: np.pad(x, ((1, 2), (0, 3)), constant_values=1.5),
          lambda x: F.pad(x, (0, 3, 1, 2), value=1.5), (A((3, 4)),)),
    Idiom("pad_constant_traced_value", lambda x, c: np.pad(x, 1, constant_values=c[0]),
          lambda x, c: F.pad(x, (1, 1, 1, 1)) + F.pad(torch.zeros_like(x), (1, 1, 1, 1),
                                                     value=1.0) * c[0], (A((3, 4)), A((1,)))),
    Idiom("pad_reflect", lambda x: np.pad(x, ((1, 1), (2, 3)), mode="reflect"),
          lambda x: F.pad(x[None], (2, 3, 1, 1), mode="reflect")[0], (A((3, 4)),)),
    Idiom("pad_edge", lambda x: np.pad(x, 2, mode="edge"),
          lambda x: F.pad(x[None], (2, 2, 2, 2), mode="replicate")[0], (A((3, 4)),)),
    Idiom("pad_wrap", lambda x: np.pad(x, ((0, 0), (2, 1)), mode="wrap"),
          lambda x: F.pad(x[None], (2, 1), mode="circular")[0], (A((3, 4)),)),
    Idiom("roll", lambda x: np.roll(x, (1, -3), axis=(0, 1)) + np.roll(x, 5),
          lambda x: torch.roll(x, (1, -3), (0, 1)) + torch.roll(x, 5), (A((3, 4)),)),
    Idiom("tile", lambda x: np.tile(x, (2, 1, 3)), lambda x: torch.tile(x, (2, 1, 3)),
          (A((3, 4)),)),
    Idiom("repeat", lambda x: np.repeat(x, [2, 0, 1], axis=0).sum(axis=0) + np.repeat(x, 2)[:4],
          lambda x: torch.repeat_interleave(x, torch.tensor([2, 0, 1]), 0).sum(0)
          + torch.repeat_interleave(x.flatten(), 2)[:4], (A((3, 4)),)),
    Idiom("stacks", lambda x, y: np.vstack([x, y]) @ np.hstack([x[0], y[1]])[:4]
          + np.dstack([x, y]).sum(axis=(1, 2)).sum() + np.column_stack([x[:, 0], y]).sum(),
          lambda x, y: torch.vstack([x, y]) @ torch.hstack([x[0], y[1]])[:4]
          + torch.dstack([x, y]).sum((1, 2)).sum() + torch.column_stack([x[:, 0], y]).sum(),
          (A((3, 4)), A((3, 4)))),
    Idiom("split", lambda x: _pieces(np.split(x, 2, axis=1) + np.array_split(x, 3, axis=1)
                                     + np.array_split(x, [1, 2])),
          lambda x: _torch_pieces(list(torch.split(x, 2, 1)) + list(torch.tensor_split(x, 3, 1))
                                  + list(torch.tensor_split(x, [1, 2]))), (A((3, 4)),)),
    Idiom("sliding_window_1d", lambda x: sliding_window_view(x, 3, axis=-1),
          lambda x: x.unfold(1, 3, 1), (A((2, 6)),)),
    Idiom("sliding_window_2d", lambda x: sliding_window_view(x, (2, 3), axis=(1, 2)),
          lambda x: x.unfold(1, 2, 1).unfold(2, 3, 1), (A((2, 4, 5)),)),
    Idiom("conv2d", lambda x, k: np.sum(sliding_window_view(x, (3, 3), axis=(1, 2)) * k,
                                        axis=(-2, -1)),
          lambda x, k: F.conv2d(x[:, None], k[None, None])[:, 0], (A((2, 5, 6)), A((3, 3)))),
]

family = lazy_family(IDIOMS, seed=14)


def test_idioms_agree_with_pytorch_under_numpy():
    family().check_numpy_values()


@pytest.mark.parametrize("backend", ["interpreter", "numba"])
def test_values_and_gradients_match_pytorch(backend):
    family().check(backend)


# --- a batch axis stays symbolic ---------------------------------------------------------------
def batched_layout(W, X):  # X (N, 3, 4): the batch axis is symbolic
    Y = np.pad(np.tril(X * W), ((0, 0), (1, 0), (2, 2)), mode="edge")
    Z = np.roll(np.tile(Y, (1, 1, 2)), 1, axis=2) + np.repeat(Y, 2, axis=2)
    windows = sliding_window_view(X, (2, 2), axis=(1, 2)).sum(axis=(-2, -1))
    return np.sum(Z * Z) + np.sum(np.diagonal(X, 0, 1, 2) * W[0, :3]) + np.sum(windows ** 2)


BATCHED = compile_grad(batched_layout)


def test_a_batch_axis_stays_symbolic():
    rng = np.random.default_rng(0)
    W = rng.uniform(-1, 1, (3, 4))
    reference = compile_grad(batched_layout, backend="interpreter")
    for n in (5, 9):
        X = rng.uniform(-1, 1, (n, 3, 4))
        value, grad = BATCHED.value_and_grad(W, X)
        ref_value, ref_grad = reference.value_and_grad(W, X)
        np.testing.assert_allclose(value, ref_value, rtol=1e-12)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-11, atol=1e-13)
    kernel = BATCHED.specialize(W, X).kernel("value_and_grad")
    assert len(kernel.dispatcher.signatures) == 1


# --- convolutions by sliding windows: fused, never stored ----------------------------------------
def test_convolution_example_matches_pytorch_and_fuses_the_windows():
    from examples import convolution

    result = convolution.main()
    w, signals, targets, kernel, images = result["inputs"]
    tw = torch.tensor(w[None, None], requires_grad=True)
    out = F.conv1d(torch.tensor(signals[:, None]), tw)[:, 0]
    loss1 = ((out - torch.tensor(targets)) ** 2).mean()
    loss1.backward()
    np.testing.assert_allclose(result["conv1d"][0], loss1.item(), rtol=1e-13)
    np.testing.assert_allclose(result["conv1d"][1], tw.grad.numpy()[0, 0], rtol=1e-12)
    tk = torch.tensor(kernel[None, None], requires_grad=True)
    loss2 = (torch.tanh(F.conv2d(torch.tensor(images[:, None]), tk)) ** 2).mean()
    loss2.backward()
    np.testing.assert_allclose(result["conv2d"][0], loss2.item(), rtol=1e-13)
    np.testing.assert_allclose(result["conv2d"][1], tk.grad.numpy()[0, 0], rtol=1e-11,
                               atol=1e-15)
    source = convolution.conv2d_loss.source("value_and_grad")
    # the windows are read from the images where they are, inside the product's loop...
    assert re.search(r"images\[i0, i1 \+ i3, i2 \+ i4\] \* kernel\[i3, i4\]", source), source
    # ... and never stored: no array of the windows' shape (N, 30, 30, 3, 3)
    assert "30, 30, 3, 3" not in source, source


# --- errors -----------------------------------------------------------------------------------
def _trace(fn, *args):
    return compile_grad(fn, backend="interpreter")(*args)


def test_layout_errors_name_the_problem():
    x = np.ones((3, 4))
    with pytest.raises(UnsupportedError, match=r"np\.pad\(mode='mean'\) is not supported; "
                                               r"gradfuse pads with modes 'constant', 'edge'"):
        _trace(lambda x: np.pad(x, 1, mode="mean"), x)
    with pytest.raises(TraceError, match="repeats must be known at trace time"):
        _trace(lambda x, r: np.repeat(x, r), x, np.array([1, 2, 1]))
    with pytest.raises(TraceError, match="array split does not result in an equal division"):
        _trace(lambda x: np.split(x, 3, axis=1)[0], x)
    with pytest.raises(TraceError, match="window shape 5 cannot be larger"):
        _trace(lambda x: sliding_window_view(x, 5, axis=1), x)
    with pytest.raises(TraceError, match="index can't contain negative values"):
        _trace(lambda x: np.pad(x, -1), x)
    with pytest.raises(TraceError, match="Input must be 1- or 2-d"):
        _trace(lambda x: np.diag(x), np.ones((2, 2, 2)))
