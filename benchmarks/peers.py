"""The peers: every workload in PyTorch eager, torch.compile and JAX, written the idiomatic way.

A peer whose library is not installed raises `PeerMissing`, which the
workloads turn into a note. Parameters travel in gradfuse's layout (a dict of
NumPy arrays, W of shape (in, out)); the torch trainers use nn.Linear, so they
store the transposes and convert on `load` and `state`. Every call that
returns a result has finished computing it: JAX results are blocked on.
torch.compile compiles the model and loss (forward and, through AOTAutograd,
backward); the optimizer step stays eager, as in PyTorch's own recipes.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.harness import PeerMissing
from benchmarks.threads import THREADS

# Set by load_torch / load_jax. The peers' functions read these module globals, which
# torch.compile's tracer follows; calling a loader inside a compiled function would not be.
torch: Any = None
jax: Any = None
jnp: Any = None


def load_torch():
    global torch
    if torch is None:
        try:
            import torch as module
        except ImportError as err:
            raise PeerMissing("PyTorch is not installed (pip install 'gradfuse[peers]')") \
                from err
        module.set_num_threads(THREADS)
        try:
            module.set_num_interop_threads(THREADS)
        except RuntimeError:  # allowed only before the first parallel work
            pass
        torch = module
    return torch


def load_jax():
    global jax, jnp
    if jax is None:
        try:
            import jax as module
            import jax.numpy as numpy_module
        except ImportError as err:
            raise PeerMissing("JAX is not installed (pip install 'gradfuse[peers]')") from err
        module.config.update("jax_platforms", "cpu")
        jax, jnp = module, numpy_module
    return jax


def versions() -> dict[str, str]:
    """Versions of the installed peers (absent ones are left out), without importing them."""
    found = {}
    for name in ("torch", "jax", "jaxlib"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def torch_compile(fn: Callable) -> Callable:
    # dynamic=False: one graph specialized to each shape, the fastest code it makes
    return load_torch().compile(fn, dynamic=False)


# --- value and gradient of a function (W2, W3) -------------------------------------------
def torch_value_and_grad(fn: Callable, args: list[np.ndarray], n_wrt: int,
                         compiled: bool) -> Callable[[], tuple]:
    """call() -> (loss, grads): fn(*args) and its gradient w.r.t. the first n_wrt arguments."""
    load_torch()
    tensors = [torch.from_numpy(a.copy()).requires_grad_(i < n_wrt) for i, a in enumerate(args)]
    wrt = tensors[:n_wrt]
    loss_fn = torch_compile(fn) if compiled else fn

    def call():
        for t in wrt:
            t.grad = None
        loss = loss_fn(*tensors)
        loss.backward()
        return loss.detach(), [t.grad for t in wrt]

    return call


def jax_value_and_grad(fn: Callable, args: list[np.ndarray], n_wrt: int) -> Callable[[], tuple]:
    load_jax()
    arrays = [jnp.asarray(a) for a in args]
    compiled = jax.jit(jax.value_and_grad(fn, argnums=tuple(range(n_wrt))))

    def call():
        return jax.block_until_ready(compiled(*arrays))

    return call


def torch_mae(params, inputs, targets):
    preds = (inputs * params).sum(dim=1)
    return (preds - targets).abs().mean()


def jax_mae(params, inputs, targets):
    return jnp.abs((inputs * params).sum(axis=1) - targets).mean()


def torch_elementwise(w, b, x, y):
    return (torch.log(1 + torch.exp(-y * torch.tanh(w * x + b))) + 0.01 * (w * x) ** 2).mean()


def jax_elementwise(w, b, x, y):
    return jnp.mean(jnp.log(1 + jnp.exp(-y * jnp.tanh(w * x + b))) + 0.01 * (w * x) ** 2)


# --- training with SGD (W1, W4, W5) ------------------------------------------------------
class TorchTrainer:
    """An nn.Module trained by torch.optim.SGD, loaded from and read back as gradfuse params.

    `mapping` names, for each gradfuse parameter, the module's tensor holding it
    and whether it is stored transposed (nn.Linear's weight is (out, in)).
    """

    def __init__(self, model, mapping: dict[str, tuple[Any, bool]], loss: Callable, lr: float,
                 compiled: bool) -> None:
        load_torch()
        self.model, self.mapping = model, mapping
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr)

        def loss_of(X, y):
            return loss(model(X), y)

        self.loss_of = torch_compile(loss_of) if compiled else loss_of

    def load(self, params: dict[str, np.ndarray]) -> None:
        self.shapes = {k: v.shape for k, v in params.items()}
        with torch.no_grad():
            for name, (tensor, transposed) in self.mapping.items():
                value = params[name].T if transposed else params[name]
                tensor.copy_(torch.from_numpy(np.ascontiguousarray(value)).reshape(tensor.shape))

    def state(self) -> dict[str, np.ndarray]:
        out = {}
        for name, (tensor, transposed) in self.mapping.items():
            value = tensor.detach().numpy()
            out[name] = (value.T if transposed else value).reshape(self.shapes[name]).copy()
        return out

    def step(self, X, y):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_of(X, y)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def loop(self, batches: list[tuple], steps: int) -> np.ndarray:
        """`steps` steps cycling through `batches` (tensors); the losses."""
        losses = [self.step(*batches[k % len(batches)]) for k in range(steps)]
        return torch.stack(losses).numpy()


def torch_mlp(params: dict[str, np.ndarray]):
    """nn.Sequential(Linear, ReLU, ..., Linear) shaped like gradfuse's {"W0", "b0", ...}."""
    nn = load_torch().nn
    layers, mapping = [], {}
    n_layers = sum(1 for k in params if k.startswith("W"))
    for i in range(n_layers):
        n_in, n_out = params[f"W{i}"].shape
        linear = nn.Linear(n_in, n_out)
        mapping[f"W{i}"], mapping[f"b{i}"] = (linear.weight, True), (linear.bias, False)
        layers += [linear, nn.ReLU()] if i < n_layers - 1 else [linear]
    return nn.Sequential(*layers), mapping


def torch_tanh_net(params: dict[str, np.ndarray]):
    """nn.Sequential(Linear, Tanh, ...) shaped like W9's {"W0", "b0", ...} (W7's deep net), in
    the parameters' dtype."""
    nn = load_torch().nn
    layers, mapping = [], {}
    for i in range(sum(1 for k in params if k.startswith("W"))):
        n_in, n_out = params[f"W{i}"].shape
        linear = nn.Linear(n_in, n_out, dtype=torch.from_numpy(params[f"W{i}"]).dtype)
        mapping[f"W{i}"], mapping[f"b{i}"] = (linear.weight, True), (linear.bias, False)
        layers += [linear, nn.Tanh()]
    return nn.Sequential(*layers), mapping


def torch_logistic(params: dict[str, np.ndarray]):
    """nn.Linear(features, 1) whose output is flattened to one logit per row."""
    nn = load_torch().nn
    linear = nn.Linear(params["w"].shape[0], 1)
    return nn.Sequential(linear, nn.Flatten(0)), {"w": (linear.weight, False),
                                                  "b": (linear.bias, False)}


def torch_mse(output, target):
    return torch.nn.functional.mse_loss(output, target)


def torch_cross_entropy(logits, labels):
    return torch.nn.functional.cross_entropy(logits, labels)


def torch_bce_with_logits(logits, targets):
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)


class JaxTrainer:
    """SGD on a jnp loss of a params dict: a jitted step, and a jitted lax.fori_loop of steps."""

    def __init__(self, loss: Callable, lr: float) -> None:
        load_jax()
        self.params = None

        def step(params, *data):
            value, grads = jax.value_and_grad(loss)(params, *data)
            return jax.tree.map(lambda p, g: p - lr * g, params, grads), value

        def loop(params, batched, steps):
            """`steps` steps, step k on batch k % n: each array of `batched` is (n, ...)."""
            n_batches = batched[0].shape[0]

            def body(k, carry):
                params, losses = carry
                params, value = step(params, *[d[k % n_batches] for d in batched])
                return params, losses.at[k].set(value)

            return jax.lax.fori_loop(0, steps, body, (params, jnp.zeros(steps, jnp.float32)))

        self._step = jax.jit(step)
        self._loop = jax.jit(loop, static_argnums=2)

    def load(self, params: dict[str, np.ndarray]) -> None:
        self.params = {k: jnp.asarray(v) for k, v in params.items()}

    def state(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.params.items()}

    def step(self, *data):
        self.params, value = self._step(self.params, *data)
        return value.block_until_ready()

    def loop(self, batched: tuple, steps: int):
        self.params, losses = self._loop(self.params, batched, steps)
        return losses.block_until_ready()


def jax_mlp(params, X):
    n_layers = sum(1 for k in params if k.startswith("W"))
    h = X
    for i in range(n_layers):
        h = h @ params[f"W{i}"] + params[f"b{i}"]
        if i < n_layers - 1:
            h = jax.nn.relu(h)
    return h


def jax_mlp_mse(params, X, y):
    residual = jax_mlp(params, X) - y
    return jnp.mean(residual * residual)


def jax_mlp_cross_entropy(params, X, labels):
    log_probs = jax.nn.log_softmax(jax_mlp(params, X), axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))


def jax_logistic(params, X, y):
    logits = X @ params["w"] + params["b"]
    return jnp.mean(jnp.maximum(logits, 0) - logits * y + jnp.log1p(jnp.exp(-jnp.abs(logits))))


# --- value and gradient of a function of a params dict (W8) ----------------------------------
def torch_params_value_and_grad(fn: Callable, params: dict[str, np.ndarray], data: tuple,
                                compiled: bool) -> Callable[[], tuple]:
    """call() -> (loss, {name: grad}): fn(params, *data), differentiated w.r.t. params."""
    load_torch()
    tensors = {k: torch.from_numpy(v.copy()).requires_grad_(True) for k, v in params.items()}
    inputs = [torch.from_numpy(d.copy()) for d in data]
    loss_fn = torch_compile(fn) if compiled else fn

    def call():
        for t in tensors.values():
            t.grad = None
        loss = loss_fn(tensors, *inputs)
        loss.backward()
        return loss.detach(), {k: t.grad for k, t in tensors.items()}

    return call


def jax_params_value_and_grad(fn: Callable, params: dict[str, np.ndarray],
                              data: tuple) -> Callable[[], tuple]:
    load_jax()
    arrays = {k: jnp.asarray(v) for k, v in params.items()}
    inputs = [jnp.asarray(d) for d in data]
    compiled = jax.jit(jax.value_and_grad(fn))

    def call():
        return jax.block_until_ready(compiled(arrays, *inputs))

    return call


def torch_transformer(heads: int) -> Callable:
    """W8a in PyTorch: F.layer_norm, masked softmax, F.gelu(approximate="tanh")."""
    def block(p, x, target):
        F = torch.nn.functional
        B, T, C = x.shape
        D = C // heads
        h = F.layer_norm(x, (C,), p["ln1_g"], p["ln1_b"], 1e-5)
        q, k, v = (h @ p["W_qkv"] + p["b_qkv"]).split(C, dim=-1)
        q, k, v = (z.reshape(B, T, heads, D).transpose(1, 2) for z in (q, k, v))
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        att = ((q @ k.transpose(-2, -1)) * D ** -0.5).masked_fill(~mask, float("-inf"))
        y = (att.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ p["W_o"] + p["b_o"]
        h = F.layer_norm(x, (C,), p["ln2_g"], p["ln2_b"], 1e-5)
        x = x + F.gelu(h @ p["W_1"] + p["b_1"], approximate="tanh") @ p["W_2"] + p["b_2"]
        return F.mse_loss(x, target)

    return block


def jax_transformer(heads: int) -> Callable:
    def layer_norm(x, gain, bias):
        centered = x - x.mean(axis=-1, keepdims=True)
        return centered * jax.lax.rsqrt((centered ** 2).mean(axis=-1, keepdims=True) + 1e-5) \
            * gain + bias

    def block(p, x, target):
        B, T, C = x.shape
        D = C // heads
        qkv = layer_norm(x, p["ln1_g"], p["ln1_b"]) @ p["W_qkv"] + p["b_qkv"]
        q, k, v = (z.reshape(B, T, heads, D).transpose(0, 2, 1, 3)
                   for z in jnp.split(qkv, 3, axis=-1))
        att = jnp.where(jnp.tri(T, dtype=bool), (q @ k.transpose(0, 1, 3, 2)) * D ** -0.5,
                        -jnp.inf)
        y = (jax.nn.softmax(att, axis=-1) @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        x = x + y @ p["W_o"] + p["b_o"]
        h = layer_norm(x, p["ln2_g"], p["ln2_b"])
        x = x + jax.nn.gelu(h @ p["W_1"] + p["b_1"], approximate=True) @ p["W_2"] + p["b_2"]
        return jnp.mean((x - target) ** 2)

    return block


def torch_cnn(p, images, labels):
    """W8b in PyTorch: F.conv2d, ReLU, F.max_pool2d, a linear layer, F.cross_entropy."""
    F = torch.nn.functional
    h = F.max_pool2d(F.relu(F.conv2d(images, p["conv_W"], p["conv_b"])), 2)
    return F.cross_entropy(h.flatten(1) @ p["fc_W"] + p["fc_b"], labels)


def jax_cnn(p, images, labels):
    conv = jax.lax.conv_general_dilated(images, p["conv_W"], (1, 1), "VALID",
                                        dimension_numbers=("NCHW", "OIHW", "NCHW"))
    h = jax.nn.relu(conv + p["conv_b"][:, None, None])
    n, o, height, width = h.shape
    pooled = h.reshape(n, o, height // 2, 2, width // 2, 2).max(axis=(3, 5))
    log_probs = jax.nn.log_softmax(pooled.reshape(n, -1) @ p["fc_W"] + p["fc_b"], axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))
