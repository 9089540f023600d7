"""Convolutions written with NumPy's sliding windows, and their gradients.

`sliding_window_view` is a view in gradfuse too: the generated kernel reads the input at
`x[n, i + a, j + b]` inside the loop that multiplies by the filter and sums, so the windows
are never stored (print `conv2d_loss.source("value_and_grad")` to see the loop nest). The
backward pass adds each output's cotangent back over its window.

    1-D: signals (8, 64), filter of 5; 2-D: images (16, 32, 32), filter 3x3
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from compiler import compile_grad


@compile_grad
def conv1d_loss(w, signals, targets):
    """A valid 1-D cross-correlation (what deep learning calls convolution) and an MSE."""
    windows = sliding_window_view(signals, w.shape[0], axis=1)  # (N, L - k + 1, k)
    out = np.sum(windows * w, axis=-1)
    return np.mean((out - targets) ** 2)


@compile_grad
def conv2d_loss(kernel, images):
    """A valid 2-D cross-correlation, tanh, and the mean of its squares."""
    windows = sliding_window_view(images, kernel.shape, axis=(1, 2))  # (N, H-2, W-2, 3, 3)
    out = np.sum(windows * kernel, axis=(-2, -1))
    return np.mean(np.tanh(out) ** 2)


def main() -> dict:
    rng = np.random.default_rng(0)
    signals, w = rng.standard_normal((8, 64)), rng.standard_normal(5)
    targets = rng.standard_normal((8, 60))
    images, kernel = rng.standard_normal((16, 32, 32)), rng.standard_normal((3, 3))
    loss1, grad1 = conv1d_loss.value_and_grad(w, signals, targets)
    loss2, grad2 = conv2d_loss.value_and_grad(kernel, images)
    print(f"1-D: loss = {loss1:.6f}, gradient = {np.round(grad1, 6)}")
    print(f"2-D: loss = {loss2:.6f}, gradient =\n{np.round(grad2, 6)}")
    return {"inputs": (w, signals, targets, kernel, images),
            "conv1d": (loss1, grad1), "conv2d": (loss2, grad2)}


if __name__ == "__main__":
    main()
