"""Write failures are separate: a failed healthy.npz, journal entry or record never stops the others.

A 20 kB per-file limit used to end all recording at the first healthy.npz (1 of 7 records
kept); a tiny disk kept 0 to 2.  Each kind of file is now retried at the next record, and
one warning at the end says exactly what is missing.  Real faults, in child processes: the
file-size limit (RLIMIT_FSIZE), a read-only directory for two records, a small tmpfs.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import weightwatch
from weightwatch.errors import WeightwatchError
from weightwatch.recording.session import RecordingSession, Variable

import reliability


def test_a_file_size_limit_below_healthy_npz_keeps_every_record(tmp_path):
    out = reliability.fault_file_size_limit(tmp_path, 20_000, 7)
    assert out["error"] is None
    assert out["attempted"] == out["kept"] == 7 and out["problems"] == 0
    [warning] = out["warnings"]
    assert "healthy.npz holds no weights, not record 6" in warning and "File too large" in warning
    assert "not written (" not in warning  # no record is missing


def test_a_directory_read_only_for_two_records_loses_only_those(tmp_path):
    out = reliability.fault_read_only_for_a_while(tmp_path, 8, (3, 5))
    if out is None:
        pytest.skip("cannot make a directory read-only for root here (no tmpfs)")
    assert out["error"] is None and out["problems"] == 0
    assert out["kept"] == out["expected"] == 6
    [warning] = out["warnings"]
    assert "2 records not written (epoch 3-4:" in warning


def test_a_full_small_disk_keeps_every_record_that_fitted(tmp_path):
    out = reliability.fault_small_tmpfs(tmp_path, 96, 40)
    if out is None:
        pytest.skip("cannot mount a tmpfs here")
    assert out["error"] is None and out["problems"] == 0 and out["in_order"]
    assert 3 <= out["kept"] < out["attempted"]
    assert out["kept"] + out["reported_missing"] == out["attempted"]  # each missing one is named
    [warning] = out["warnings"]
    assert f"{out['attempted'] - out['kept']} records not written" in warning


def _session(run_dir, **kw):
    s = RecordingSession(run_dir, **{"check": True, "keep_healthy": True, "verbose": 0, "halt_on": None, **kw})
    s.start_fit()
    s.open(model_name="m", info={}, initial_epoch=0)
    return s


def _record(s, k):
    a = np.full((4, 3), 1.0 + 0.05 * k, "float32")
    s.record([Variable(a, "m/d/kernel", True, False)], lambda x: x, epoch=k, batch=None, step=k,
             trigger="begin" if k == 0 else "epoch", logs={} if k == 0 else {"loss": 1.0 / k})


def test_each_kind_of_file_is_retried_at_the_next_record(tmp_path, monkeypatch):
    """healthy.npz fails at records 1-2 and the journal at record 3; record 4 writes both again."""
    from weightwatch.run import journal, writer as writer_module

    s = _session(tmp_path / "run")
    real_save, real_append = writer_module.save_npz, journal.append
    failing = {"healthy": {1, 2}, "journal": {3}}

    def save(path, arrays):
        if path.name == "healthy.npz" and s.writer.healthy_wanted in failing["healthy"]:
            raise OSError(28, "No space left on device")
        real_save(path, arrays)

    def append(path, *, record, **kw):
        if record in failing["journal"]:
            raise OSError(5, "Input/output error")
        real_append(path, record=record, **kw)

    monkeypatch.setattr(writer_module, "save_npz", save)
    monkeypatch.setattr(journal, "append", append)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in range(5):
            _record(s, k)
        s.end()
    run = weightwatch.open_run(tmp_path / "run")
    assert [r.index for r in run.records] == [0, 1, 2, 3, 4] and run.problems == []
    assert json.loads((tmp_path / "run" / "healthy.json").read_text())["record"] == 4
    assert sorted(journal.read(tmp_path / "run" / "history.bin")) == [0, 1, 2, 4]
    [warning] = [str(w.message) for w in caught]
    assert "history.bin lacks record 3" in warning and "healthy.npz" not in warning  # it caught up


def test_io_errors_raise_stops_at_the_first_failure(tmp_path, monkeypatch):
    from weightwatch.run import writer as writer_module

    s = _session(tmp_path / "run", io_errors="raise", keep_healthy=False)
    _record(s, 0)
    s.writer.wait_healthy()  # the background copy of record 0 is done before the disk "fills"

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer_module, "atomic_write", broken)
    with pytest.raises(WeightwatchError, match="cannot write the record of epoch 1 in .*: No space left on device"):
        _record(s, 1)


def test_a_trainable_only_run_whose_tensor_stops_being_trainable_reads_clean(tmp_path):
    """trainable_only leaves a tensor out once it is frozen: the manifest says so, no problem."""
    from runbuilder import record_arrays

    records = [{"m/a/kernel": np.full((2, 2), float(k), "float32"), "m/b/kernel": np.full((2, 2), float(k), "float32")}
               for k in range(3)]
    d = record_arrays(tmp_path / "run", records, trainable_only=True)
    assert json.loads((d / "manifest.json").read_text())["trainable_only"] is True
    s = RecordingSession(d, check=False, verbose=0, trainable_only=True)
    s.start_fit()
    s.open(model_name="m", info={}, initial_epoch=3)
    a = np.full((2, 2), 9.0, "float32")
    s.record([Variable(a, "m/a/kernel", True, False), Variable(a, "m/b/kernel", False, True)], lambda x: x,
             epoch=3, batch=None, step=3, trigger="begin", logs={})
    s.end()
    run = weightwatch.open_run(d)
    assert run.problems == [] and len(run.records) == 4
