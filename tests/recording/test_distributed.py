"""Data-parallel training, for real: several devices in one process, and 2 processes.

Each test launches ``distributed_worker.py`` in fresh interpreters (device
and process set-up must come before the backend initialises) with a time
limit: a process that waits forever for another is a failure, not a hang of
the suite.  The setups and the exact commands are the README's ("Data-parallel
training"):

* ``mirrored``: TensorFlow, ``tf.distribute.MirroredStrategy`` over 2 logical CPUs;
* ``jax-devices``: JAX, ``keras.distribution.DataParallel`` over 2 host devices;
* ``jax-processes``: JAX, 2 processes, ``keras.distribution.initialize`` (gloo);
* ``torch-processes``: torch, 2 processes, ``torch.distributed`` (gloo), the
  gradient all-reduced in ``train_step``.

A setup whose backend is not installed here is skipped: the TensorFlow suite
runs ``mirrored``, the JAX and torch suites of ``.ci/run`` the others.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import weightwatch
from weightwatch.run.schema import HEALTHY, MANIFEST, VERDICT

from conftest import subprocess_env

WORKER = Path(__file__).with_name("distributed_worker.py")
LIMIT = 90  # seconds for a whole launch; a healthy one takes 5-15 s on 2 shared cores
KERNEL = "dp/hidden/kernel"

BACKEND = {"mirrored": "tensorflow", "jax-devices": "jax", "jax-processes": "jax",
           "torch-processes": "torch"}


def needs(setup):
    module = BACKEND[setup]
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"{setup} needs {module}, not installed in this environment")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(setup: str, tmp_path: Path, *, processes: int, fault: str = "none"):
    """Run the worker in ``processes`` processes; every one must exit 0 within LIMIT seconds.

    Process 0 records into ``tmp_path / "run"``; the others are given
    ``tmp_path / "run-of-rank-N"``, which must never appear: they write nothing.
    Returns (run directory, each process's report, seconds).
    """
    port = free_port()
    procs, logs = [], []
    start = time.monotonic()
    for rank in range(processes):
        run_dir = tmp_path / ("run" if rank == 0 else f"run-of-rank-{rank}")
        log = open(tmp_path / f"rank{rank}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, str(WORKER), setup, str(run_dir), str(tmp_path / f"rank{rank}.json"),
             "--rank", str(rank), "--port", str(port), "--fault", fault],
            stdout=log, stderr=subprocess.STDOUT, env=subprocess_env()))
    try:
        for rank, p in enumerate(procs):
            left = LIMIT - (time.monotonic() - start)
            try:
                p.wait(timeout=max(left, 1))
            except subprocess.TimeoutExpired:
                pytest.fail(f"rank {rank} of {setup} did not exit within {LIMIT} s (a hang):\n"
                            + _tail(tmp_path / f"rank{rank}.log"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    seconds = time.monotonic() - start
    for rank, p in enumerate(procs):
        assert p.returncode == 0, f"rank {rank} exited {p.returncode}:\n" + _tail(tmp_path / f"rank{rank}.log")
    for rank in range(1, processes):
        assert not (tmp_path / f"run-of-rank-{rank}").exists(), f"rank {rank} wrote a run directory"
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(processes)]
    return tmp_path / "run", reports, seconds


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def assert_stats_are_of_the_tensors(run, final_weights: dict):
    """Every record's figures are those of the tensors it saved; the last record's are the model's."""
    assert run.records and run.tensor_names
    for rec in run.records:
        arrays = run.tensors_at(rec.index)
        assert set(arrays) == set(run.tensor_names)
        for name, a in arrays.items():
            a64 = a.astype(np.float64)
            k = [r.index for r in run.records].index(rec.index)
            assert run.history(name, "l2")[k] == pytest.approx(np.linalg.norm(a64), rel=1e-5), name
            assert run.history(name, "mean")[k] == pytest.approx(a64.mean(), rel=1e-4, abs=1e-7), name
            assert run.history(name, "max")[k] == pytest.approx(a64.max()), name
            assert run.history(name, "min")[k] == pytest.approx(a64.min()), name
    last = run.tensors_at(run.records[-1].index)
    for name, values in final_weights.items():
        np.testing.assert_array_equal(last[name], np.asarray(values, dtype=last[name].dtype), err_msg=name)


def by_rule(run_dir):
    return {r.id: r for r in weightwatch.check(run_dir).results}


# -- one process, several devices ------------------------------------------------------------

@pytest.mark.parametrize("setup", [pytest.param("mirrored", marks=needs("mirrored")),
                                   pytest.param("jax-devices", marks=needs("jax-devices"))])
def test_several_devices_record_the_variable_as_the_model_holds_it(setup, tmp_path):
    run_dir, [report], _ = launch(setup, tmp_path, processes=1)
    run = weightwatch.open_run(run_dir)
    assert report["halted"] is None and report["epochs"] == 4 and len(run.records) == 5
    assert_stats_are_of_the_tensors(run, report["weights"])
    # Two replicas (one per device), in agreement bit for bit at every record.
    assert (run.metric("replica_spread") == 0).all()
    penalty = run.metric("penalty")[:, run.tensor_names.index("dp/out/kernel")]
    assert (penalty > 0).all(), penalty        # L2(1e-4) of the weights every replica holds
    results = by_rule(run_dir)
    assert results["replicas-diverged"].status == "passed" and results["negative-penalty"].status == "passed"
    assert not [r.id for r in results.values() if r.status == "failed"]


@pytest.mark.parametrize("setup", [pytest.param("mirrored", marks=needs("mirrored")),
                                   pytest.param("jax-devices", marks=needs("jax-devices"))])
def test_several_devices_a_diverged_replica_fails_and_halts(setup, tmp_path):
    run_dir, [report], _ = launch(setup, tmp_path, processes=1, fault="perturb")
    assert report["epochs"] == 2 and "replicas-diverged failed on " + KERNEL in report["halted"]
    res = by_rule(run_dir)["replicas-diverged"]
    assert res.status == "failed"
    assert {(f.tensor, f.record) for f in res.findings} == {(KERNEL, 2)}
    assert res.findings[0].value > 1e-4


# -- several processes -----------------------------------------------------------------------

PROCESSES = [pytest.param("jax-processes", marks=needs("jax-processes")),
             pytest.param("torch-processes", marks=needs("torch-processes"))]


@pytest.mark.parametrize("setup", PROCESSES)
def test_two_processes_process_0_writes_and_every_check_passes(setup, tmp_path):
    run_dir, reports, seconds = launch(setup, tmp_path, processes=2)
    assert [r["processes"] for r in reports] == [2, 2]
    assert [r["epochs"] for r in reports] == [4, 4] and [r["halted"] for r in reports] == [None, None]
    run = weightwatch.open_run(run_dir)
    assert run.manifest["processes"] == 2 and len(run.records) == 5
    # The statistics are of the weights both processes hold (rank 1's copy is compared).
    assert reports[0]["weights"] == reports[1]["weights"]
    assert_stats_are_of_the_tensors(run, reports[1]["weights"])
    assert (run.metric("replica_spread") == 0).all()
    penalty = run.metric("penalty")[:, run.tensor_names.index("dp/out/kernel")]
    assert (penalty > 0).all(), penalty        # L2(1e-4) of the weights both processes hold
    results = by_rule(run_dir)
    assert results["replicas-diverged"].status == "passed" and results["negative-penalty"].status == "passed"
    assert not [r.id for r in results.values() if r.status == "failed"]
    assert not (run_dir / "workers").exists() and not (run_dir / VERDICT).exists()
    assert seconds < LIMIT


@pytest.mark.parametrize("setup", PROCESSES)
def test_two_processes_one_verdict_stops_both_at_the_same_epoch(setup, tmp_path):
    """A learning rate far too high from epoch 2: process 0 halts, and so does process 1."""
    run_dir, reports, _ = launch(setup, tmp_path, processes=2, fault="lr")
    assert [r["epochs"] for r in reports] == [2, 2]
    assert "failed on" in reports[0]["halted"]
    assert reports[1]["halted"].startswith("process 0 halted training at epoch 2")
    verdict = json.loads((run_dir / VERDICT).read_text())
    assert (verdict["halted"], verdict["epoch"], verdict["record"]) == (True, 2, 2)
    assert verdict["reason"] == reports[0]["halted"]
    assert sorted(p.name for p in run_dir.iterdir() if p.name in (VERDICT, HEALTHY, MANIFEST)) == [
        HEALTHY, MANIFEST, VERDICT]
    assert len(weightwatch.open_run(run_dir).records) == 3  # begin, epoch 1, epoch 2


@pytest.mark.parametrize("setup", PROCESSES)
def test_two_processes_a_diverged_replica_fails_naming_the_tensor(setup, tmp_path):
    """Rank 1 alone adds noise to the hidden kernel at the end of epoch 2."""
    run_dir, reports, _ = launch(setup, tmp_path, processes=2, fault="perturb")
    assert [r["epochs"] for r in reports] == [2, 2]
    assert "replicas-diverged failed on " + KERNEL in reports[0]["halted"]
    assert reports[0]["weights"][KERNEL] != reports[1]["weights"][KERNEL]
    res = by_rule(run_dir)["replicas-diverged"]
    assert res.status == "failed"
    assert {(f.tensor, f.record) for f in res.findings} == {(KERNEL, 2)}
    spread = weightwatch.open_run(run_dir).metric("replica_spread")
    assert (spread[:2] == 0).all() and (spread[2, 1:] == 0).all()  # only that tensor, only then


# -- which process this is, without a launcher (in this process, on any backend) ---------------

def _fit(callback, epochs=2):
    import keras

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).standard_normal((64, 4)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(x, x[:, :1], epochs=epochs, verbose=0, callbacks=[callback])


def test_a_process_other_than_0_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    cb = weightwatch.WatchCallback(tmp_path / "run", halt_on=None, verbose=0)
    _fit(cb)
    assert not (tmp_path / "run").exists() and cb._processes.source == "RANK"
    cb = weightwatch.WatchCallback(tmp_path / "run0", halt_on=None, verbose=0, process_id=0)
    _fit(cb)  # the argument overrides the environment: process 0 records
    run = weightwatch.open_run(tmp_path / "run0")
    assert len(run.records) == 3 and run.manifest["processes"] == 2


def test_several_processes_without_a_collective_cannot_halt(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    with pytest.raises(weightwatch.WeightwatchError, match=r"process 1 of 2 \(from TF_CONFIG\) has no "
                                                            r"collective.*halt_on=None"):
        _fit(weightwatch.WatchCallback(tmp_path / "run", verbose=0))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kw, message", [
    ({"process_id": -1}, "`process_id` must be None or a non-negative integer. Received: process_id=-1"),
    ({"num_processes": "2"}, "`num_processes` must be None or a non-negative integer. Received: num_processes='2'"),
])
def test_process_arguments_are_validated(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        weightwatch.WatchCallback(tmp_path / "run", **kw)


def test_process_id_beyond_num_processes_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"Received: process_id=2, num_processes=2"):
        _fit(weightwatch.WatchCallback(tmp_path / "run", process_id=2, num_processes=2, halt_on=None))
