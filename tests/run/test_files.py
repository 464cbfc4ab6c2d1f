"""What a run file names stays inside the run directory, and only regular files are opened.

``tensors_file`` pointing at ``../../x.npz``, an absolute path, ``/proc/self/environ`` or
``/dev/zero``; a run file that is a symbolic link out of the run, a FIFO (which used to block
the reader forever) or a device: each is refused in one line, and an audit hook
(``sys.addaudithook``) that sees every ``open`` proves that nothing outside the run
directory is opened while a hostile run is read, checked and restored from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import weightwatch
from weightwatch.errors import RunFormatError
from weightwatch.run.reader import read_weights
from weightwatch.run.schema import COLUMNS

from conftest import subprocess_env
from runbuilder import record_arrays, write_healthy_run

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")


def within(seconds, fn, *args):
    """``fn(*args)``'s result or exception, failing the test if it does not return in time."""
    out = {}

    def target():
        try:
            out["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{getattr(fn, '__name__', fn)} hung"
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.fixture
def saved(tmp_path):
    """A run recorded with save_tensors=True and healthy weights kept."""
    rng = np.random.default_rng(0)
    records = [{"a/kernel": rng.normal(size=(4, 3)).astype("float32") + k, "a/bias": np.full(3, k, "float32")}
               for k in range(3)]
    d = record_arrays(tmp_path / "run", records, save_tensors=True)
    np.savez(d / "healthy.npz", **records[1])
    (d / "healthy.json").write_text(json.dumps({"record": 1, "file": "healthy.npz"}))
    return d


def replace_with_fifo(path):
    path.unlink()
    os.mkfifo(path)


@pytest.mark.parametrize("name", ["manifest.json", "record-000001.json", "history.bin", "verdict.json",
                                  "record-000001.npz", "healthy.npz", "healthy.json"])
def test_a_fifo_in_place_of_any_run_file_never_blocks(saved, name):
    if not (saved / name).exists():
        (saved / name).write_text("{}")
    replace_with_fifo(saved / name)

    def everything():
        outcomes = []
        for step in (lambda: weightwatch.open_run(saved), lambda: weightwatch.open_run(saved).verdict,
                     lambda: weightwatch.open_run(saved).tensors_at(1), lambda: read_weights(saved),
                     lambda: weightwatch.check(saved, config=None)):
            try:
                got = step()
                outcomes.append("; ".join(map(str, getattr(got, "problems", ()))) or "ok")
            except RunFormatError as exc:
                outcomes.append(str(exc))
        return outcomes

    outcomes = within(20, everything)
    assert any("a FIFO, not a regular file" in o for o in outcomes) or name in ("history.bin", "verdict.json"), outcomes
    run = within(20, weightwatch.open_run, saved) if name != "manifest.json" else None
    if name == "record-000001.json":
        assert "a FIFO" in str(run.problems[0]) and [r.index for r in run.records] == [0, 2]
    if name == "verdict.json":
        assert run.verdict is None and "a FIFO" in str(run.problems[0])


def test_a_fifo_among_naive_dumps_never_blocks(tmp_path):
    d = tmp_path / "dumps"
    d.mkdir()
    for n in range(3):
        (d / f"weights{n}.json").write_text(json.dumps({"dense": [[[1.0 + n, 2.0]], [0.5]]}))
    replace_with_fifo(d / "weights1.json")
    run = within(20, weightwatch.open_run, d)
    assert [r.epoch for r in run.records] == [0, 2] and "a FIFO" in str(run.problems[0])


@pytest.mark.parametrize("target", ["outside", "/dev/zero", "/proc/self/environ"])
def test_a_run_file_linking_out_of_the_run_is_refused(saved, tmp_path, target):
    outside = tmp_path / "outside.npz"
    np.savez(outside, **{"a/kernel": np.zeros((4, 3), "float32")})
    target = str(outside) if target == "outside" else target
    for name in ("record-000001.npz", "healthy.npz"):
        (saved / name).unlink()
        os.symlink(target, saved / name)
    run = weightwatch.open_run(saved)
    with pytest.raises(RunFormatError, match="symbolic link") as err:
        run.tensors_at(1)
    assert str(saved / "record-000001.npz") in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(RunFormatError, match="symbolic link"):
        read_weights(saved)
    with pytest.raises(RunFormatError, match="symbolic link"):
        read_weights(saved, 1)
    (saved / "record-000002.json").unlink()
    os.symlink(outside, saved / "record-000002.json")
    problems = [str(p) for p in weightwatch.open_run(saved).problems]
    assert any("record-000002.json" in p and "symbolic link" in p for p in problems)


@pytest.mark.parametrize("name", ["../../x.npz", "/proc/self/environ", "/dev/zero", "sub/record-000001.npz",
                                  "record-000002.npz", ".."])
def test_tensors_file_can_name_only_the_records_own_file(saved, name):
    f = saved / "record-000001.json"
    snap = json.loads(f.read_text())
    snap["tensors_file"] = name
    f.write_text(json.dumps(snap))
    run = weightwatch.open_run(saved)
    assert [r.index for r in run.records] == [0, 2]
    assert '"tensors_file" must be null or' in str(run.problems[0])
    with pytest.raises(RunFormatError, match="no saved tensors"):
        run.tensors_at(1)


def test_a_device_or_directory_under_a_run_files_name_is_refused(saved):
    (saved / "record-000001.npz").unlink()
    (saved / "record-000001.npz").mkdir()
    with pytest.raises(RunFormatError, match="a directory, not a regular file"):
        weightwatch.open_run(saved).tensors_at(1)


def test_npz_members_are_checked_before_they_are_read(saved):
    import zipfile

    npz = saved / "record-000001.npz"
    np.save(npz.with_suffix(".npy"), np.zeros(3))
    npz.with_suffix(".npy").replace(npz)  # an .npy, not an archive
    with pytest.raises(RunFormatError, match="cannot read tensors"):
        read_weights(saved, 1)
    with zipfile.ZipFile(npz, "w") as zf:
        zf.writestr("notes.txt", b"not an array")
    with pytest.raises(RunFormatError, match="is not a .npy array"):
        read_weights(saved, 1)
    header = b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000,), }"
    with zipfile.ZipFile(npz, "w") as zf:
        zf.writestr("a/kernel.npy", header.ljust(128 + 6, b" ")[:-1] + b"\n")
    with pytest.raises(RunFormatError, match="declares more data than it holds"):
        read_weights(saved, 1)


AUDIT = r"""
import json, os, sys
run_dir = os.path.realpath(sys.argv[1])
import numpy, rich, weightwatch, zipfile
import numpy.ma  # np.nanmedian imports it on first use: a module, not the run's data
from weightwatch.checking.config import load_rules
from weightwatch.checking.engine import evaluate
from weightwatch.run.reader import open_run, read_weights
import weightwatch.output.terminal, weightwatch.output.json_format
rules = load_rules(use_project_config=False)   # the rule packs are read before the hook
opened = []
def hook(event, args):
    if event == "open":
        path, flags = args[0], args[2]
        if isinstance(path, int):
            return
        opened.append((os.fsdecode(path), flags if isinstance(flags, int) else 0))
sys.addaudithook(hook)
run = open_run(run_dir)
for step in (lambda: evaluate(run, rules), lambda: run.verdict, lambda: run.tensors_at(1),
             lambda: run.tensors_at(2), lambda: read_weights(run_dir), lambda: read_weights(run_dir, 1)):
    try:
        step()
    except weightwatch.WeightwatchError:
        pass
sys.stdout.write(json.dumps(opened))
"""


def test_no_file_outside_the_run_directory_is_opened(saved, tmp_path):
    """An audit hook logs every open while a hostile run is read, checked and restored from."""
    secret = tmp_path / "secret.npz"
    np.savez(secret, **{"a/kernel": np.zeros((4, 3), "float32")})
    for name in ("record-000001.npz", "healthy.npz"):
        (saved / name).unlink()
        os.symlink(secret, saved / name)
    (saved / "verdict.json").symlink_to("/proc/self/environ")
    f = saved / "record-000002.json"
    snap = json.loads(f.read_text())
    snap["tensors_file"] = "../secret.npz"
    f.write_text(json.dumps(snap))
    out = subprocess.run([sys.executable, "-c", AUDIT, str(saved)], capture_output=True, text=True,
                         env=subprocess_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    opened = json.loads(out.stdout)
    assert any(p.endswith("record-000000.json") for p, _ in opened)  # the hook saw the reads
    root = os.path.realpath(saved)
    for path, flags in opened:
        real = os.path.realpath(path)
        inside = os.path.commonpath([root, os.path.abspath(path)]) == root
        # A symbolic link inside the run is opened with O_NOFOLLOW, which refuses it unread.
        assert inside and (real.startswith(root + os.sep) or flags & os.O_NOFOLLOW), (path, real)


def test_a_writer_never_blocks_on_a_fifo_journal(saved):
    """Continuing a run whose history.bin is a FIFO: the records are written, the journal skipped."""
    from weightwatch.run.writer import RunWriter

    replace_with_fifo(saved / "history.bin")

    def resume_and_write():
        w = RunWriter(saved, model_name="m", resume=True)
        w.write_record(epoch=3, batch=None, step=3, trigger="epoch", paths=[], values=np.empty((0, len(COLUMNS))),
                       logs={}, wall=0.0)
        return w

    within(20, resume_and_write)
    run = weightwatch.open_run(saved)
    assert [r.index for r in run.records][-1] == 3
