"""Data-parallel training over MPI: two ranks (`mpiexec -n 2`) give the result of one process.

One launch of tests/distributed_ranks.py runs every scenario on two ranks (each launch costs
numba's start-up in every rank) and writes what each rank saw; the tests compare that with
the same scenarios run here in one process. A second launch, of five ranks on two pretend
machines, runs one scenario through the all-reduce across machines. Skipped without mpi4py
or mpiexec (`pip install "gradfuse[mpi]"` brings both).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import distributed_ranks as ranks
import numpy as np
import pytest

from compiler.training import train_step
from runtime import optim

HERE = Path(__file__).resolve().parent
TIMEOUT = 600  # seconds: compiling from an empty cache on two busy cores, then the abort


def _mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or _mpiexec() is None,
    reason='needs mpi4py and mpiexec: pip install "gradfuse[mpi]"')


def launch(out: Path, *names: str, n_ranks: int = 2, **variables: str):
    """(the finished run, each rank's results) of distributed_ranks.py on `n_ranks` ranks."""
    one_thread = {name: "1" for name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                                         "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    env = {**os.environ, **one_thread, "PYTHONPATH": str(HERE.parent), **variables}
    try:
        run = subprocess.run([_mpiexec(), "-n", str(n_ranks), sys.executable,
                              str(HERE / "distributed_ranks.py"), str(out), *names],
                             capture_output=True, text=True, timeout=TIMEOUT, env=env)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"the ranks did not finish in {TIMEOUT} s (a rank hangs?):\n"
                    f"{err.stdout}\n{err.stderr}")
    files = [out / f"rank{r}.npz" for r in range(n_ranks)]
    if not all(f.exists() for f in files):
        pytest.fail(f"a rank failed before writing its results:\n{run.stdout}\n{run.stderr}")
    results = []
    for f in files:
        with np.load(f) as loaded:
            results.append(dict(loaded))
    return run, results


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """(the finished run, each rank's results, their folder): one launch for the module."""
    out = tmp_path_factory.mktemp("ranks")
    return (*launch(out), out)


def _assert_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12)


@needs_mpi
@pytest.mark.parametrize("name", list(ranks.SCENARIOS))
def test_fit_on_two_ranks_equals_one_process(two_ranks, name):
    """SGD (Nesterov, weight decay; last batch split 2 + 3) and Adam (clipping; the last
    batch is one row, so rank 0 has none of it): parameters and the loss of every step as
    one process gets them, up to summation order."""
    _, results, _ = two_ranks
    assert_fit_equals_one_process(name, results)
    expected = {"shared": "shared memory, summed in the update over 1",
                "mpi": "MPI_Allreduce over 1"}
    assert str(results[0][f"{name}/allreduce"]) == expected[ranks.SCENARIOS[name][-1]]


def assert_fit_equals_one_process(name: str, results: list[dict]) -> None:
    params, history, _, _ = ranks.run_fit(name)
    if ranks.UNUSED in params:  # the loss never reads it: left as it was, as PyTorch leaves it
        np.testing.assert_array_equal(params[ranks.UNUSED].data, np.ones(3))
    for found in results:
        _assert_close(found[f"{name}/losses"], history.losses)
        for key, p in params.items():
            _assert_close(found[f"{name}/{key}"], p.data)
            assert found[f"{name}/{key}"].tobytes() == results[0][f"{name}/{key}"].tobytes()


@needs_mpi
def test_across_machines_each_machines_first_rank_all_reduces(tmp_path):
    """MPICH's MPIR_CVAR_NUM_CLIQUES=2 splits five ranks into two pretend machines (ranks 0,
    2, 4 and 1, 3): each sums its ranks' rows in shared memory, then the machines' first
    ranks all-reduce through MPI. Every rank ends with the parameters of one process."""
    _, results = launch(tmp_path, "sgd", n_ranks=5, MPIR_CVAR_NUM_CLIQUES="2")
    assert str(results[0]["sgd/allreduce"]) == "shared memory over 2"
    assert_fit_equals_one_process("sgd", results)


@needs_mpi
@pytest.mark.parametrize("backend", ["numba", "interpreter", "staggered"])
def test_train_step_on_unequal_shards_equals_the_full_batch(two_ranks, backend):
    """Rank 0 passes 3 rows, rank 1 five: the weights make it the mean over all 8, so the
    losses, the parameters and the kept gradients are those of one step on the 8 rows.
    "staggered": the ranks take turns to lag 50 ms between the all-reduce and the update,
    so the other writes its next gradients before the late one has read this step's
    (the shared buffers alternate between steps; one buffer would mix two steps here)."""
    _, results, _ = two_ranks
    params, losses, grads, _ = ranks.run_steps(backend=backend.replace("staggered", "numba"))
    for r in range(2):
        _assert_close(results[r][f"steps-{backend}/losses"], losses)
        for key, p in params.items():
            _assert_close(results[r][f"steps-{backend}/{key}"], p.data)
            _assert_close(results[r][f"steps-{backend}/grad/{key}"], grads[key])


@needs_mpi
def test_train_step_takes_numbers_and_big_endian_rows_as_one_process_does(two_ranks):
    """`step(X_mine, y_mine, 0.5)`: the number was taken for a data array of 1 row (a
    ValueError), and a big-endian X reached numba as it was (its TypeError)."""
    _, results, _ = two_ranks
    params, losses = ranks.run_scaled_steps()
    for r in range(2):
        _assert_close(results[r]["scaled/losses"], losses)
        for key, p in params.items():
            _assert_close(results[r][f"scaled/{key}"], p.data)


@needs_mpi
def test_parameters_are_bit_identical_across_ranks(two_ranks):
    _, results, _ = two_ranks
    first, second = results
    for backend in ("numba", "interpreter", "staggered"):
        shown = backend != "interpreter"  # and step.source("step") showed both kernels
        assert first[f"steps-{backend}/identical"].tolist() == [True] * (ranks.STEPS + shown)
    parameters = [k for k in first if "/W" in k or "/b" in k or k.endswith(ranks.UNUSED)]
    runs = len(ranks.SCENARIOS) + 4  # each fit scenario, train_step on three backends, scaled
    unused = sum(name.endswith("-unused") for name in ranks.SCENARIOS)
    assert len(parameters) == runs * 4 + 3 * 4 + unused  # the kept gradients of three
    for key in parameters:
        assert first[key].tobytes() == second[key].tobytes(), key


@needs_mpi
def test_callbacks_and_checkpoints_happen_on_rank_0_only(two_ranks):
    """The callback runs on rank 0 (with the loss over both ranks, checked above; the learning
    rate it halves reaches rank 1, or the parameters would differ), so the checkpoint it
    writes exists once, holding the final parameters; `stop`'s answer reaches rank 1."""
    _, results, out = two_ranks
    assert results[0]["sgd/callback_epochs"].tolist() == [0, 1]  # 0-based, as Keras
    assert results[1]["sgd/callback_epochs"].tolist() == []
    assert results[0]["sgd/stopped_early"] and results[1]["sgd/stopped_early"]
    assert not list(out.glob("*-checkpoint-rank1.npz"))
    for name in ranks.SCENARIOS:
        with np.load(out / f"{name}-checkpoint-rank0.npz") as saved:
            for key in ("W0", "b0", "W1", "b1"):
                assert saved[f"param/{key}"].tobytes() == results[0][f"{name}/{key}"].tobytes()


@needs_mpi
def test_a_failing_rank_ends_every_rank_instead_of_hanging(two_ranks):
    """Rank 1 gets data of the wrong width while rank 0 waits in the all-reduce: rank 1
    reports the user's error, and MPI_Abort ends both (the fixture's timeout is the hang)."""
    run, _, _ = two_ranks
    assert run.returncode != 0
    assert "rank 1 of 2 failed during distributed training" in run.stderr
    error = "TraceError: distributed_ranks.py:26: matmul (@): shapes (37, 3) and (5, 6)"
    assert error in run.stderr
    assert "not aborted" not in run.stdout


@needs_mpi
def test_a_bad_communicator_and_ranks_that_disagree_are_refused(two_ranks):
    _, results, _ = two_ranks
    assert "intra-communicator" in str(results[0]["errors/comm"])
    for r in range(2):  # every rank raises, so none waits for the others
        assert "these differ: epochs: rank 0 1, rank 1 2" in str(results[r]["errors/fit"])
        assert "these differ: max_norm: rank 0 1.0, rank 1 2.0" in str(
            results[r]["errors/max_norm"])
        assert ("these differ: Parameter 'W0': rank 0 '(5, 6) float64', rank 1 '(5, 7) "
                "float64'") in str(results[r]["errors/shapes"])



@needs_mpi
def test_arguments_one_rank_refuses_raise_on_every_rank(two_ranks):
    """fit's and train_step's checks of their arguments failing on rank 1 alone: rank 1 raised
    while rank 0 went on into the first collective and waited there forever."""
    _, results, _ = two_ranks
    refused = "fit: batch_size must be a positive int (or None for the whole data), got 0"
    assert str(results[1]["errors/fit_rank1"]) == refused
    assert str(results[0]["errors/fit_rank1"]) == (
        "fit with comm: rank 1 refused its arguments (every rank must pass the same ones): "
        f"ValueError: {refused}")
    assert str(results[1]["errors/step_rank1"]).startswith(
        "NotImplementedError: loss_fn has has_aux=True")
    assert str(results[0]["errors/step_rank1"]).startswith(
        "ValueError: train_step with comm: rank 1 refused its arguments (every rank must pass "
        "the same ones): NotImplementedError: loss_fn has has_aux=True")


@needs_mpi
def test_check_finite_stops_a_distributed_step_before_it_writes(two_ranks):
    """compile_grad(..., check_finite=True) with comm: the NaN in the first batch stops the
    step, naming the op and the user's line, before any parameter is written (the
    distributed kernels checked nothing: the parameters became NaN without an error)."""
    _, results, _ = two_ranks
    for r in range(2):
        error = str(results[r]["errors/nan"])
        assert error.startswith("AnomalyError: distributed_ranks.py:26: anomaly mode: matmul "
                                "produced nan"), error
        assert results[r]["errors/nan_untouched"].all()


def test_comm_without_mpi4py_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if it were not installed
    _, _, params = ranks.problem()
    with pytest.raises(ImportError, match=r'pip install "gradfuse\[mpi\]"'):
        train_step(ranks.loss_fn, params, optim.SGD(params, lr=0.1), comm=object())
