"""One writer per run: a second process writing the same run directory is refused.

A second ``fit(initial_epoch=k)`` into a directory another process was writing used to finish
without a warning, 85 of 343 records overwritten and interleaved.  A writer now holds an OS
lock on the run directory (released by the kernel when it dies).
"""

from __future__ import annotations

import numpy as np
import pytest

import weightwatch
from weightwatch import RunDirLockedError
from weightwatch.run.schema import COLUMNS
from weightwatch.run.writer import RunWriter

NONE = np.empty((0, len(COLUMNS)))  # a record of no tensor

import reliability


def test_a_second_process_is_refused_and_continues_once_the_first_is_gone(tmp_path):
    out = reliability.two_writers(tmp_path, trials=1)
    assert out == {"trials": 1, "silent_second_writers": 0, "refused": 1, "continued_after_kill": 1}


def test_the_error_names_the_run_and_what_to_do(tmp_path):
    import subprocess
    import sys

    d = tmp_path / "run"
    d.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()", str(d)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(RunDirLockedError) as err:
            RunWriter(d, model_name="m")
        assert str(d) in str(err.value) and "another process is writing this run" in str(err.value)
        assert "\n" not in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    RunWriter(d, model_name="m").close()  # released by the kernel with its holder


def test_within_a_process_a_new_writer_takes_over_and_the_old_one_stops(tmp_path):
    d = tmp_path / "run"
    old = RunWriter(d, model_name="m")
    old.write_record(epoch=0, batch=None, step=0, trigger="begin", paths=[], values=NONE,
                     logs={}, wall=0.0)
    new = RunWriter(d, model_name="m", resume=True)  # an interrupted fit's callback was never closed
    assert new.locked and not old.locked
    with pytest.raises(RunDirLockedError, match="took this run over"):
        old.write_record(epoch=1, batch=None, step=1, trigger="epoch", paths=[], values=NONE,
                         logs={}, wall=0.0)
    new.write_record(epoch=1, batch=None, step=1, trigger="epoch", paths=[], values=NONE,
                     logs={}, wall=0.0)
    new.close()
    assert [r.epoch for r in weightwatch.open_run(d).records] == [0, 1]


def test_a_session_releases_the_run_at_the_end_of_each_fit_and_takes_it_back(tmp_path):
    from weightwatch.recording.session import RecordingSession

    s = RecordingSession(tmp_path / "run", check=False, verbose=0)
    s.start_fit()
    s.open(model_name="m", info={}, initial_epoch=0)
    assert s.writer.locked
    s.end()
    assert not s.writer.locked
    s.start_fit()
    s.open(model_name="m", info={}, initial_epoch=3)  # a second fit with the same callback
    assert s.writer.locked
    s.end()
