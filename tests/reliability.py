"""Reliability harnesses: recording under faults, kill -9, two writers, fuzzing.

Each harness is a function that runs real processes and returns counts; the
test suite runs a fast slice of each (``tests/run/test_reliability.py``,
``tests/recording/test_faults.py``) and ``benchmarks/reliability.py`` the
full runs, printing the counts the reliability targets ask for.

No Keras anywhere: the writer children record numpy arrays through the real,
framework-free :class:`~weightwatch.recording.session.RecordingSession`, so
they start in a fraction of a second and many of them are cheap.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


# -- a recording child ------------------------------------------------------------------------

#: Records ``records`` records of a small model (a 64x80 kernel: healthy.npz is about 21 kB, each
#: snapshot about 1.3 kB), with live checks and healthy weights kept, under an optional file-size
#: limit; prints what it saw as JSON.  argv: run_dir, records, fsize_limit (0: none),
#: first_epoch (0: a new run), save_tensors (0/1), pace ("stdin": one record per line read, or "").
WRITER = r"""
import json, os, resource, signal, sys, warnings
import numpy as np
from weightwatch.errors import WeightwatchError
from weightwatch.recording.session import RecordingSession, Variable
run_dir, records, limit, first, save, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    int(sys.argv[4]), sys.argv[5] == "1", sys.argv[6]
rng = np.random.default_rng(first)
arrays = {"m/dense/kernel": rng.normal(size=(64, 80)).astype("float32") * 0.1,
          "m/dense/bias": np.zeros(80, "float32"), "m/out/kernel": rng.normal(size=(80, 1)).astype("float32")}
session = RecordingSession(run_dir, check=True, keep_healthy=True, save_tensors=save, verbose=0,
                           halt_on=None)
session.start_fit()
if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
out = {"attempted": 0, "error": None}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        begin = session.open(model_name="m", info={"framework": "numpy"}, initial_epoch=first)
        for k in range(records):
            epoch = first + k
            if k == 0 and not begin:
                continue
            arrays = {p: a * np.float32(1.01) + np.float32(0.001) for p, a in arrays.items()}
            if pause == "stdin":  # one record per line the parent sends
                sys.stdin.readline()
            out["attempted"] += 1
            session.record([Variable(a, p, True, False) for p, a in arrays.items()], lambda a: a,
                           epoch=epoch, batch=None, step=epoch * 10, trigger="begin" if k == 0 else "epoch",
                           logs={} if k == 0 else {"loss": 1.0 / (epoch + 1)})
            print("record", epoch, flush=True)
        session.end()
    except WeightwatchError as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
out["warnings"] = [str(w.message) for w in caught if "weightwatch" in str(w.message)]
print("RESULT " + json.dumps(out), flush=True)
"""


def run_writer(run_dir, records: int = 7, *, fsize: int = 0, first_epoch: int = 0, save_tensors: bool = False,
               pace: str = "", timeout: float = 120, wait: bool = True):
    """Run :data:`WRITER`; with ``wait``, return its RESULT dict, else the Popen."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(run_dir), str(records), str(fsize), str(first_epoch),
                             "1" if save_tensors else "0", pace], env=child_env(),
                            stdin=subprocess.PIPE if pace else None, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=timeout)
    result = next((json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")), None)
    assert result is not None, f"the writer child failed ({proc.returncode}): {err[-3000:]}"
    return result


def records_on_disk(run_dir) -> list[int]:
    import re

    try:
        names = os.listdir(run_dir)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := re.fullmatch(r"record-(\d{6,})\.json", n)))


# -- I/O faults --------------------------------------------------------------------------------

def fault_file_size_limit(tmp: Path, limit: int = 20_000, records: int = 7) -> dict:
    """RLIMIT_FSIZE below healthy.npz, above every snapshot: every record must be kept."""
    import weightwatch

    d = tmp / f"fsize{limit}"
    result = run_writer(d, records, fsize=limit)
    run = weightwatch.open_run(d)
    return {"case": f"RLIMIT_FSIZE {limit // 1000} kB", "attempted": result["attempted"],
            "kept": len(records_on_disk(d)), "problems": len(run.problems), "warnings": result["warnings"],
            "error": result["error"]}


def _mount_tmpfs(mnt: Path, size_kb: int) -> bool:
    mnt.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mnt)],
                          capture_output=True).returncode == 0


def fault_read_only_for_a_while(tmp: Path, records: int = 8, read_only: tuple = (3, 5)) -> dict | None:
    """The run directory turns read-only mid-run (records ``read_only[0]`` to ``read_only[1] - 1``),
    then writable again: every record written around the spell is kept, the writer never
    stops, and the warning names the records missing.

    Root ignores permissions, so as root the run lives on a tmpfs remounted read-only; None
    when that cannot be done here.
    """
    import weightwatch

    mnt = tmp / "readonly"
    mounted = os.geteuid() == 0 and _mount_tmpfs(mnt, 4096)
    if os.geteuid() == 0 and not mounted:
        return None
    mnt.mkdir(parents=True, exist_ok=True)
    d = mnt / "run"

    def writable(yes: bool):
        if mounted:
            subprocess.run(["mount", "-o", f"remount,{'rw' if yes else 'ro'}", str(mnt)], check=True)
        else:
            os.chmod(d, 0o755 if yes else 0o555)

    proc = run_writer(d, records, pace="stdin", wait=False)
    lines = []
    try:
        for k in range(records):  # one record at a time, the directory's mode set in between
            if k == read_only[0]:
                writable(False)
            if k == read_only[1]:
                writable(True)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            lines.append(line)
            if not line.startswith("record "):
                break
        rest, err = proc.communicate(timeout=60)
        text = "".join(lines) + rest
        result = next((json.loads(ln[7:]) for ln in text.splitlines() if ln.startswith("RESULT ")), None)
        assert result is not None, f"the writer child failed: {err[-3000:]}"
        run = weightwatch.open_run(d)
        return {"case": "read-only directory mid-run", "attempted": result["attempted"],
                "kept": len(records_on_disk(d)),
                "expected": result["attempted"] - (read_only[1] - read_only[0]),
                "problems": len(run.problems), "warnings": result["warnings"], "error": result["error"]}
    finally:
        if proc.poll() is None:
            proc.kill()
        if mounted:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        elif d.exists():
            os.chmod(d, 0o755)


def fault_small_tmpfs(tmp: Path, size_kb: int = 96, records: int = 60) -> dict | None:
    """A tmpfs of ``size_kb``: records fill it; every record that fitted is kept and readable.
    None when a tmpfs cannot be mounted here (not root, or no CAP_SYS_ADMIN)."""
    import weightwatch

    mnt = tmp / f"tmpfs{size_kb}"
    if not _mount_tmpfs(mnt, size_kb):
        return None
    try:
        d = mnt / "run"
        result = run_writer(d, records)
        kept = records_on_disk(d)
        run = weightwatch.open_run(d)
        contiguous_start = kept == list(range(len(kept)))
        return {"case": f"tmpfs of {size_kb} kB", "attempted": result["attempted"], "kept": len(kept),
                "problems": len(run.problems), "warnings": result["warnings"], "error": result["error"],
                "in_order": contiguous_start}
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# -- two writers ---------------------------------------------------------------------------------

def two_writers(tmp: Path, trials: int = 1) -> dict:
    """A writer is mid-run (between two records); a second process continues the same run with
    ``initial_epoch=k``.  The second must fail with RunDirLockedError, never interleave; once the
    first is killed (-9), the second continues the run.  Counts silent second writers."""
    import weightwatch

    silent = refused = continued = 0
    for t in range(trials):
        d = tmp / f"writers{t}"
        first = run_writer(d, 50, pace="stdin", wait=False)
        try:
            for _ in range(3):
                first.stdin.write("go\n")
                first.stdin.flush()
                assert first.stdout.readline().startswith("record ")
            second = run_writer(d, 3, first_epoch=10)
            if second["error"] and "RunDirLockedError" in second["error"]:
                refused += 1
            else:
                silent += 1
            first.stdin.write("go\n")
            first.stdin.flush()
            assert first.stdout.readline().startswith("record ")  # the first goes on untouched
        finally:
            first.kill()
            first.communicate()
        after = run_writer(d, 3, first_epoch=10)
        run = weightwatch.open_run(d)
        if after["error"] is None and not run.problems and [r.epoch for r in run.records][-3:] == [10, 11, 12]:
            continued += 1
    return {"trials": trials, "silent_second_writers": silent, "refused": refused,
            "continued_after_kill": continued}
