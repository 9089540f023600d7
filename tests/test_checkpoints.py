"""Checkpoints survive crashes and never give a parameter another one's state or half a load."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runtime import Parameter, optim, utils

ROOT = Path(__file__).resolve().parents[1]

SAVER = """
import sys
import numpy as np
from runtime import Parameter, utils

path = sys.argv[1]
params = {"W": Parameter(np.zeros(1_000_000)), "b": Parameter(np.zeros(3))}
k = 0
while True:  # ever newer checkpoints, each one consistent: every entry equals k
    k += 1
    for p in params.values():
        p.data[...] = k
    utils.save(path, params)
    print(k, flush=True)
"""


def test_a_save_killed_at_any_moment_leaves_a_whole_checkpoint(tmp_path):
    """kill -9 during save: the previous checkpoint or the new one, never a torn file."""
    path = tmp_path / "checkpoint.npz"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for delay in (0.0, 0.004, 0.011):
        saver = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], env=env,
                                 stdout=subprocess.PIPE, text=True)
        completed = int(saver.stdout.readline())  # one checkpoint is on disk
        time.sleep(delay)  # then somewhere in a later save
        saver.send_signal(signal.SIGKILL)
        saver.wait()
        restored = {"W": Parameter(np.zeros(1_000_000)), "b": Parameter(np.zeros(3))}
        utils.load(path, restored)
        k = restored["b"].data[0]
        assert k >= completed
        assert np.all(restored["W"].data == k) and np.all(restored["b"].data == k)
        saver.stdout.close()


def test_a_failed_save_keeps_the_previous_checkpoint_and_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint"
    w = Parameter(np.arange(3.0))
    utils.save(path, [w])

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    w.data[...] = -1.0
    with pytest.raises(OSError, match="disk full"):
        utils.save(path, [w])
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["checkpoint"]
    restored = Parameter(np.zeros(3))
    utils.load(path, [restored])
    assert restored.data.tolist() == [0.0, 1.0, 2.0]


def trained(params, steps=3):
    opt = optim.Adam(params, lr=0.1)
    for k in range(steps):
        for i, p in enumerate(params.values()):
            p.grad = np.cos(p.data * (k + 1) + i)  # different for each parameter
        opt.step()
    return opt


def test_optimizer_state_follows_parameter_names_not_positions(tmp_path):
    """Two same-shaped parameters listed in another order get their own Adam moments back."""
    rng = np.random.default_rng(0)
    params = {"a": Parameter(rng.normal(size=3)), "b": Parameter(rng.normal(size=3))}
    opt = trained(params)
    utils.save(tmp_path / "c.npz", params, opt)

    reordered = {"b": Parameter(np.zeros(3)), "a": Parameter(np.zeros(3))}
    opt2 = optim.Adam(reordered, lr=0.1)
    utils.load(tmp_path / "c.npz", reordered, opt2)
    for name in ("a", "b"):
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(opt2.state[reordered[name]][key],
                                          opt.state[params[name]][key], err_msg=(name, key))


def test_a_load_that_fails_writes_nothing(tmp_path):
    params = {"W": Parameter(np.ones((2, 2))), "b": Parameter(np.ones(2))}
    utils.save(tmp_path / "c.npz", params, trained(params))
    target = {"W": Parameter(np.zeros((2, 2))), "b": Parameter(np.zeros(2)),
              "extra": Parameter(np.zeros(2))}
    with pytest.raises(KeyError, match=r"missing \['extra'\]"):
        utils.load(tmp_path / "c.npz", target, strict=False)
    del target["extra"]
    two_groups = optim.Adam([{"params": [target["W"]]}, {"params": [target["b"]]}])
    with pytest.raises(ValueError, match="number of parameter groups"):
        utils.load(tmp_path / "c.npz", target, two_groups, strict=False)
    assert not target["W"].data.any() and not target["b"].data.any()
    assert target["W"]._version == 0 and two_groups.state == {}
    ints = {"W": Parameter(np.zeros((2, 2))), "b": Parameter(np.zeros(2, np.int64), False)}
    with pytest.raises(ValueError, match="cannot be stored"):
        utils.load(tmp_path / "c.npz", ints)
    assert not ints["W"].data.any()


def test_a_state_of_another_shape_is_refused():
    a, b = Parameter(np.ones(3)), Parameter(np.ones((2, 2)))
    opt = trained({"a": a, "b": b})
    state = opt.state_dict()
    state["state"][0], state["state"][1] = state["state"][1], state["state"][0]
    fresh = optim.Adam([Parameter(np.ones(3)), Parameter(np.ones((2, 2)))])
    with pytest.raises(ValueError, match=r"'exp_avg' of parameter 0 has shape \(2, 2\)"):
        fresh.load_state_dict(state)
    assert fresh.state == {}
    sgd = optim.SGD([Parameter(np.ones(3)), Parameter(np.ones((2, 2)))], momentum=0.9)
    with pytest.raises(ValueError, match=r"entries \['exp_avg'"):
        sgd.load_state_dict(opt.state_dict())


def test_nested_parameters_round_trip_by_path(tmp_path):
    def model(scale):
        return {"enc": {"W": Parameter(np.full(2, scale))},
                "dec": [{"W": Parameter(np.full(3, scale))}, {"W": Parameter(np.full(3, -scale))}]}

    params = model(1.5)
    opt = optim.SGD(utils.parameters(params), lr=0.1, momentum=0.9)
    for p in utils.parameters(params):
        p.grad = np.ones(p.shape)
    opt.step()
    utils.save(tmp_path / "c.npz", params, opt)
    with np.load(tmp_path / "c.npz") as npz:
        assert {"param/enc/W", "param/dec/0/W", "param/dec/1/W"} <= set(npz.files)
    restored = model(0.0)
    opt2 = optim.SGD(utils.parameters(restored), lr=0.1, momentum=0.9)
    utils.load(tmp_path / "c.npz", restored, opt2)
    for p, q in zip(utils.parameters(params), utils.parameters(restored), strict=True):
        np.testing.assert_array_equal(p.data, q.data)
        np.testing.assert_array_equal(opt.state[p]["momentum_buffer"],
                                      opt2.state[q]["momentum_buffer"])
