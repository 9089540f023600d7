"""W9: the runtime's PyTorch-style step, `opt.zero_grad(); loss = f(params, X, y);
loss.backward(); opt.step()`, on W1 and on W7's 100-layer tanh net; the optimizer step alone;
and value_and_grad called with a dict (or a list of per-layer dicts) and with keywords,
against the same computation called with flat positional arrays.

The W1 step is timed in alternation with the fused train step of the same model (their
ratio is a goal), the deep net's against PyTorch eager. The optimizer case times
`opt.step()` on the 200 Parameters of the 100-layer net with their gradients in place
(what a training loop's step finds) and reports its cost per parameter. Every row is
checked first: steps through the gradients SGD applied, calls through their value and
gradients, against the float64 NumPy reference.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from benchmarks import handwritten, peers, reference, steps, w1_mlp_step, w7_programs
from benchmarks.harness import (
    GRADFUSE,
    NUMBA,
    TORCH,
    Config,
    Impl,
    Tolerance,
    WorkloadResult,
    build_rows,
    run_case,
)
from compiler import compile_grad
from runtime import Parameter, optim

ID = "W9"
TITLE = "the runtime's PyTorch-style loop: W1 and W7's deep net, the optimizer step, pytree calls"
W1_STEP = "W1 runtime step"
DEEP_STEP = "deep net L=100 runtime step"
OPTIMIZER = "optimizer step, deep net L=100"
W1_CALLS = "W1 value_and_grad: dict, keywords, positional"
DEEP_CALLS = "deep net L=100 value_and_grad: list of dicts, positional"
TRAIN_STEP = "gradfuse train_step"
KEYWORDS = "gradfuse keywords"
POSITIONAL = "gradfuse positional"
LAYERS, QUICK_LAYERS = 100, 20
DEEP_LR = w7_programs.LEARNING_RATE


def _renamed(impl: Impl, name: str) -> Impl:
    return dataclasses.replace(impl, name=name)


# --- W1 ------------------------------------------------------------------------------------
@compile_grad(wrt=(0, 1, 2, 3))
def mlp_positional(W0, b0, W1, b1, X, y):
    """W1's loss with its parameters as four positional arrays."""
    return w1_mlp_step.mlp_mse.fn({"W0": W0, "b0": b0, "W1": W1, "b1": b1}, X, y)


def w1_step_rows(problem: steps.Problem) -> dict:
    loss_fn = w1_mlp_step.mlp_mse
    return {
        GRADFUSE: lambda: _renamed(steps.gradfuse_runtime_step(problem, loss_fn), GRADFUSE),
        TRAIN_STEP: lambda: _renamed(steps.gradfuse_step(problem, loss_fn), TRAIN_STEP),
        NUMBA: lambda: steps.numba_step(problem, handwritten.mlp_mse_sgd_step),
        TORCH: lambda: steps.torch_step(problem, peers.torch_mlp, peers.torch_mse, False),
    }


def _call_outcome(names: list[str]):
    def read(result) -> dict:
        value, grads = result
        if isinstance(grads, dict):
            grads = list(grads.values())
        return {"loss": np.asarray(value), **{f"grad {k}": g for k, g in zip(names, grads)}}
    return read


def w1_call_rows(problem: steps.Problem) -> dict:
    params, (X, y) = problem.copy_params(), problem.batch
    names = list(params)
    read = _call_outcome(names)
    f = w1_mlp_step.mlp_mse
    return {
        GRADFUSE: lambda: Impl(GRADFUSE, lambda: f.value_and_grad(params, X, y), read),
        KEYWORDS: lambda: Impl(KEYWORDS, lambda: f.value_and_grad(params, X=X, y=y), read),
        POSITIONAL: lambda: Impl(POSITIONAL, lambda: mlp_positional.value_and_grad(
            *params.values(), X, y), read),
    }


# --- the deep net --------------------------------------------------------------------------
deep_net = compile_grad(w7_programs.deep_net)


def deep_positional(X, y, *weights):
    """The deep net with its per-layer weights as positional arrays W0, b0, W1, b1, ..."""
    layers = [{"W": weights[k], "b": weights[k + 1]} for k in range(0, len(weights), 2)]
    return w7_programs.deep_net(layers, X, y)


_positional: dict[int, object] = {}


def deep_positional_of(layers: int):
    """deep_positional compiled with respect to all its weights."""
    if layers not in _positional:
        _positional[layers] = compile_grad(deep_positional, wrt=tuple(range(2, 2 + 2 * layers)))
    return _positional[layers]


def _layers(flat: dict) -> list[dict]:
    return [{"W": flat[f"W{k}"], "b": flat[f"b{k}"]} for k in range(len(flat) // 2)]


def deep_reference(params: dict, X: np.ndarray, y: np.ndarray):
    """w7_programs' hand-derived gradients, for flat {"W0", "b0", ...} params."""
    loss, grads = w7_programs.deep_net_reference(_layers(params), X, y)
    return loss, {f"{key}{k}": g[key] for k, g in enumerate(grads) for key in ("W", "b")}


def deep_problem(layers: int) -> steps.Problem:
    params, X, y = w7_programs.problem("deep", layers).args
    flat = {f"{key}{k}": layer[key] for k, layer in enumerate(params) for key in ("W", "b")}
    return steps.Problem(flat, [(X, y)], DEEP_LR, deep_reference)


def _runtime(problem: steps.Problem):
    """Parameters as the deep net takes them (a list of per-layer dicts), their arrays by
    flat name, and an SGD optimizer over them."""
    layers = [{key: Parameter(value) for key, value in layer.items()}
              for layer in _layers(problem.copy_params())]
    arrays = {f"{key}{k}": p.data for k, layer in enumerate(layers) for key, p in layer.items()}
    return layers, arrays, optim.SGD([p for layer in layers for p in layer.values()],
                                     lr=problem.lr)


def deep_step_rows(problem: steps.Problem) -> dict:
    def runtime_row() -> Impl:
        layers, arrays, opt = _runtime(problem)
        X, y = problem.batch

        def call():
            opt.zero_grad()
            loss = deep_net(layers, X, y)
            loss.backward()
            opt.step()
            return loss.item()

        return Impl(GRADFUSE, call, problem.step_reader(lambda: arrays),
                    steps._restorer(problem.params, arrays))

    return {
        GRADFUSE: runtime_row,
        TORCH: lambda: steps.torch_step(problem, peers.torch_tanh_net, peers.torch_mse, False),
    }


def optimizer_rows(problem: steps.Problem) -> dict:
    """opt.step() on every Parameter of the net, their gradients in place (the reference's),
    as each step of a training loop finds them; checked through one step's update."""
    _, grads = deep_reference(problem.params, *problem.batch)

    def read(state) -> dict:
        return {f"updated {k}": v for k, v in state().items()}

    def gradfuse_row() -> Impl:
        layers, arrays, opt = _runtime(problem)
        for k, layer in enumerate(layers):
            for key, p in layer.items():
                p.grad = grads[f"{key}{k}"].copy()
        return Impl(GRADFUSE, opt.step, lambda _: read(lambda: arrays),
                    steps._restorer(problem.params, arrays))

    def torch_row() -> Impl:
        torch = peers.load_torch()
        model, mapping = peers.torch_tanh_net(problem.params)
        trainer = peers.TorchTrainer(model, mapping, peers.torch_mse, problem.lr, False)
        trainer.load(problem.params)
        for name, (tensor, transposed) in mapping.items():
            g = grads[name].T if transposed else grads[name]
            tensor.grad = torch.from_numpy(np.ascontiguousarray(g)).reshape(tensor.shape)
        return Impl(TORCH, trainer.optimizer.step, lambda _: read(trainer.state),
                    lambda: trainer.load(problem.params), peer=True)

    return {GRADFUSE: gradfuse_row, TORCH: torch_row}


def optimizer_reference(problem: steps.Problem) -> dict:
    _, grads = deep_reference(problem.params, *problem.batch)
    return {f"updated {k}": v - problem.lr * grads[k] for k, v in problem.params.items()}


def deep_call_rows(problem: steps.Problem) -> dict:
    X, y = problem.batch
    layers = _layers(problem.copy_params())
    flat = [a for layer in layers for a in (layer["W"], layer["b"])]
    names = list(problem.params)
    positional = deep_positional_of(len(layers))

    def read_layers(result) -> dict:
        value, grads = result
        return _call_outcome(names)((value, [g[key] for g in grads for key in ("W", "b")]))

    return {
        GRADFUSE: lambda: Impl(GRADFUSE, lambda: deep_net.value_and_grad(layers, X, y),
                               read_layers),
        POSITIONAL: lambda: Impl(POSITIONAL, lambda: positional.value_and_grad(X, y, *flat),
                                 _call_outcome(names)),
    }


def call_reference(problem: steps.Problem) -> dict:
    loss, grads = problem.loss_and_grads(reference.as_float64(problem.params),
                                         *steps._float64(problem.batch))
    return {"loss": loss, **{f"grad {k}": g for k, g in grads.items()}}


def run(config: Config) -> WorkloadResult:
    result = WorkloadResult(ID, TITLE)
    w1 = w1_mlp_step.problem()
    run_case(result, W1_STEP, "µs", build_rows(config, w1_step_rows(w1), result.notes),
             w1.step_reference(), config, w1.step_tolerances(), max_number=2000,
             alternate=True, pair=(GRADFUSE, TRAIN_STEP))
    run_case(result, W1_CALLS, "µs", build_rows(config, w1_call_rows(w1), result.notes),
             call_reference(w1), config, alternate=True, pair=(GRADFUSE, KEYWORDS, POSITIONAL))
    layers = QUICK_LAYERS if config.quick else LAYERS
    deep = deep_problem(layers)
    labels = [label.replace(f"L={LAYERS}", f"L={layers}") for label in
              (DEEP_STEP, OPTIMIZER, DEEP_CALLS)]
    tight = {k: Tolerance(rtol=1e-8, scale=1e-8) for k in call_reference(deep)}
    run_case(result, labels[0], "ms", build_rows(config, deep_step_rows(deep), result.notes),
             deep.step_reference(), config, deep.step_tolerances())
    case = run_case(result, labels[1], "µs",
                    build_rows(config, optimizer_rows(deep), result.notes),
                    optimizer_reference(deep), config)
    for row in case.times:
        case.extra.setdefault(row, {})["µs per parameter"] = \
            case.times[row].median * 1e6 / (2 * layers)
    run_case(result, labels[2], "ms", build_rows(config, deep_call_rows(deep), result.notes),
             call_reference(deep), config, tight, alternate=True, pair=(GRADFUSE, POSITIONAL))
    result.info["parameters of the deep net"] = 2 * layers
    return result


# --- the W1 runtime step's parts in CPU time (`python -m benchmarks.w9_runtime_step`) ---------
def _best_cpu(run: Callable[[int], None], number: int, batches: int) -> float:
    """µs of CPU per call (time.thread_time: other processes' time is not counted), the best
    of `batches` batches of `number` calls."""
    best = float("inf")
    for _ in range(batches):
        start = time.thread_time()
        run(number)
        best = min(best, time.thread_time() - start)
    return best * 1e6 / number


def w1_cpu_breakdown(number: int = 2000, batches: int = 7) -> dict[str, float]:
    """The W1 runtime step and its parts, µs of CPU per step, beside the fused train_step and
    PyTorch eager. Every step does the same work (lr 0: nothing drifts). The parts are
    differences of loops that stop after them (zero_grad + forward; + backward; + step), so no
    timer runs inside a step."""
    problem = dataclasses.replace(w1_mlp_step.problem(), lr=0.0)
    loss_fn = w1_mlp_step.mlp_mse
    params, _, opt = steps._gradfuse_params(problem)
    X, y = problem.batch

    def forward(n: int) -> None:
        for _ in range(n):
            opt.zero_grad()
            loss = loss_fn(params, X, y)
        loss.item()

    def backward(n: int) -> None:
        for _ in range(n):
            opt.zero_grad()
            loss = loss_fn(params, X, y)
            loss.backward()

    def step(n: int) -> None:
        for _ in range(n):
            opt.zero_grad()
            loss = loss_fn(params, X, y)
            loss.backward()
            opt.step()

    fused = steps.gradfuse_step(problem, loss_fn).call
    eager = steps.torch_step(problem, peers.torch_mlp, peers.torch_mse, False).call

    def repeat(call: Callable[[], object]) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n):
                call()
        return run

    loops = {"step": step, "zero_grad + forward": forward, "+ backward": backward,
             "train_step": repeat(fused), "torch eager": repeat(eager)}
    for loop in loops.values():  # warm: kernels compiled, pools and tables settled
        loop(50)
    times = {name: float("inf") for name in loops}
    for _ in range(batches):  # interleaved, so that a busy moment hits every loop alike
        for name, loop in loops.items():
            calls = number if name != "torch eager" else max(number // 10, 1)
            times[name] = min(times[name], _best_cpu(loop, calls, 1))
    return {
        "W1 runtime step": times["step"],
        "zero_grad + forward": times["zero_grad + forward"],
        "backward": times["+ backward"] - times["zero_grad + forward"],
        "opt.step": times["step"] - times["+ backward"],
        "train_step": times["train_step"],
        "torch eager": times["torch eager"],
        "step / train_step": times["step"] / times["train_step"],
        "torch eager / step": times["torch eager"] / times["step"],
    }


def calls_cpu(number: int = 2000, batches: int = 7) -> dict[str, float]:
    """The rest of W9 in µs of CPU per call, interleaved as in `w1_cpu_breakdown`: W1's
    value_and_grad with a dict, keywords and positional arrays, and the 100-layer net's
    runtime step (lr 0), its opt.step() with gradients in place, and value_and_grad with a
    list of per-layer dicts."""
    w1 = w1_mlp_step.problem()
    rows = w1_call_rows(w1)
    deep = dataclasses.replace(deep_problem(LAYERS), lr=0.0)
    X, y = deep.batch
    layers, _, opt = _runtime(deep)

    def deep_step() -> None:
        opt.zero_grad()
        deep_net(layers, X, y).backward()
        opt.step()

    deep_step()
    optimizer = optimizer_rows(deep)[GRADFUSE]().call
    deep_calls = deep_call_rows(deep)
    calls = {"W1 value_and_grad(params dict, X, y)": rows[GRADFUSE]().call,
             "W1 value_and_grad(params, X=X, y=y)": rows[KEYWORDS]().call,
             "W1 value_and_grad(6 positional arrays)": rows[POSITIONAL]().call,
             "L=100 runtime step": deep_step,
             "L=100 opt.step, 200 parameters": optimizer,
             "L=100 value_and_grad(list of 100 dicts)": deep_calls[GRADFUSE]().call,
             "L=100 value_and_grad(positional arrays)": deep_calls[POSITIONAL]().call}
    deep_ones = {"L=100 runtime step", "L=100 value_and_grad(list of 100 dicts)",
                 "L=100 value_and_grad(positional arrays)"}

    def repeat(call: Callable[[], object]) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n):
                call()
        return run

    for call in calls.values():
        call()
    times = {name: float("inf") for name in calls}
    for _ in range(batches):
        for name, call in calls.items():
            n = max(number // 100, 3) if name in deep_ones else number
            times[name] = min(times[name], _best_cpu(repeat(call), n, 1))
    times["L=100 opt.step per parameter"] = times["L=100 opt.step, 200 parameters"] / 200
    return times


if __name__ == "__main__":
    import sys

    for label, value in w1_cpu_breakdown().items():
        print(f"{label:>40}: {value:8.2f}{'x' if '/' in label else ' µs'}")
    if "--all" in sys.argv:
        for label, value in calls_cpu().items():
            print(f"{label:>40}: {value:8.2f} µs")
