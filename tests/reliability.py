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


def reported_missing(warnings: list[str]) -> int:
    """How many records the end-of-training warning says were not written."""
    import re

    found = [re.search(r"(\d+) records? not written", w) for w in warnings]
    return sum(int(m.group(1)) for m in found if m)


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
            "reported_missing": reported_missing(result["warnings"]),
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
                "problems": len(run.problems), "warnings": result["warnings"],
                "reported_missing": reported_missing(result["warnings"]), "error": result["error"]}
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
                "problems": len(run.problems), "warnings": result["warnings"],
                "reported_missing": reported_missing(result["warnings"]), "error": result["error"],
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


# -- kill -9 -------------------------------------------------------------------------------------

def kill_nine(tmp: Path, points: int = 30, seed: int = 0) -> dict:
    """SIGKILL a recording child at ``points`` random moments (a random record count, then a
    random delay into the next write, tensors saved or not), then check each killed run: it
    must read with no problem and check (``checkable``), and a new writer must continue it
    (``continuable``: three more records, read back with no problem).  ``restore`` counts the
    healthy weights that read back, and those refused because the kill fell between
    healthy.npz and healthy.json (refused, never restored wrong)."""
    import weightwatch
    from weightwatch.checking.config import load_rules
    from weightwatch.checking.engine import evaluate
    from weightwatch.errors import RunFormatError
    from weightwatch.run.reader import read_weights

    rng = random.Random(seed)
    rules = load_rules(use_project_config=False)
    out = {"kill_points": 0, "checkable": 0, "continuable": 0, "restore_ok": 0, "restore_refused": 0,
           "no_healthy": 0, "failures": []}
    for k in range(points):
        d = tmp / f"killed{k}"
        target, delay, save = rng.randrange(1, 25), rng.uniform(0, 0.03), rng.random() < 0.5
        proc = run_writer(d, 10_000, save_tensors=save, wait=False)
        deadline = time.monotonic() + 120
        try:
            while len(records_on_disk(d)) < target:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the writer child ended early: {proc.stderr.read()[-2000:]}")
                time.sleep(0.002)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        out["kill_points"] += 1
        where = f"kill {k}: after {target} records + {delay * 1000:.1f} ms, save_tensors={save}"
        try:
            run = weightwatch.open_run(d)
            assert run.problems == [], [str(p) for p in run.problems]
            evaluate(run, rules)
            out["checkable"] += 1
            last = run.records[-1].epoch
            before = len(run.records)
            after = run_writer(d, 3, first_epoch=last + 1, save_tensors=save)
            assert after["error"] is None, after["error"]
            run = weightwatch.open_run(d)
            assert run.problems == [] and len(run.records) == before + 3, [str(p) for p in run.problems]
            out["continuable"] += 1
        except (AssertionError, RunFormatError) as exc:
            out["failures"].append(f"{where}: {exc}")
            continue
        try:
            read_weights(d)
            out["restore_ok"] += 1
        except RunFormatError as exc:
            out["no_healthy" if "no healthy weights" in str(exc) else "restore_refused"] += 1
    return out


# -- reads: no file outside the run directory --------------------------------------------------

AUDIT = r"""
import json, os, sys
run_dir = os.path.realpath(sys.argv[1])
import numpy, rich, zipfile, io
import weightwatch
from weightwatch.checking.config import load_rules
from weightwatch.checking.engine import evaluate
from weightwatch.cli import main
from weightwatch.run.reader import open_run, read_weights
import weightwatch.output.terminal, weightwatch.output.json_format, weightwatch.output.github
import weightwatch.output.junit, weightwatch.output, locale, encodings
weightwatch.output.formats()
rules = load_rules(use_project_config=False)   # the rule packs are read before the hook
opened = []
def hook(event, args):
    if event == "open" and not isinstance(args[0], int):
        opened.append((os.fsdecode(args[0]), args[2] if isinstance(args[2], int) else 0))
sys.addaudithook(hook)
run = open_run(run_dir)
for step in (lambda: evaluate(run, rules), lambda: run.verdict,
             *[lambda r=r: run.tensors_at(r.index) for r in run.records],
             lambda: read_weights(run_dir), *[lambda i=i: read_weights(run_dir, i) for i in range(6)]):
    try:
        step()
    except weightwatch.WeightwatchError:
        pass
sys.stdout, real = io.StringIO(), sys.stdout
main(["check", run_dir, "--no-config", "--format", "json"])
sys.stdout = real
print(json.dumps(opened))
"""


def hostile_run(tmp: Path) -> Path:
    """A recorded run whose files point out of it every way the issue tried: tensors_file
    ``../../x.npz``, an absolute path, ``/proc/self/environ``, ``/dev/zero``; record, npz, verdict
    and healthy files that are symbolic links out of the run, and a FIFO."""
    import numpy as np

    from weightwatch.run.digest import record_digest
    from weightwatch.run.schema import COLUMNS

    rng = np.random.default_rng(0)
    records = [{"m/d/kernel": rng.normal(size=(4, 3)).astype("float32") + k, "m/d/bias": np.full(3, k, "float32")}
               for k in range(6)]
    d = record_arrays_session(tmp / "hostile", records)
    secret = tmp / "secret.npz"
    np.savez(secret, **records[0])
    for k, target in enumerate(["../secret.npz", str(secret), "/proc/self/environ", "/dev/zero"], start=1):
        f = d / f"record-{k:06d}.json"
        snap = json.loads(f.read_text())
        snap["tensors_file"] = target
        meta = {x: v for x, v in snap.items() if x not in ("tensors", "digest")}
        values = np.array([[np.nan if v is None else float(v) for v in row] for row in snap["tensors"].values()])
        snap["digest"] = record_digest(COLUMNS, meta, list(snap["tensors"]), values)  # restamped: valid
        f.write_text(json.dumps(snap))
    for name in ("record-000005.npz", "healthy.npz"):
        (d / name).unlink(missing_ok=True)
        os.symlink(secret, d / name)
    (d / "record-000000.npz").unlink()
    os.symlink("/dev/zero", d / "record-000000.npz")
    (d / "verdict.json").symlink_to("/proc/self/environ")
    (d / "healthy.json").write_text(json.dumps({"record": 5, "file": "../../secret.npz"}))
    return d


def record_arrays_session(run_dir: Path, records: list) -> Path:
    from weightwatch.recording.session import RecordingSession, Variable

    s = RecordingSession(run_dir, check=False, save_tensors=True, verbose=0)
    s.start_fit()
    s.open(model_name="m", info={}, initial_epoch=0)
    for k, arrays in enumerate(records):
        s.record([Variable(a, p, True, False) for p, a in arrays.items()], lambda a: a, epoch=k, batch=None,
                 step=k, trigger="begin" if k == 0 else "epoch", logs={} if k == 0 else {"loss": 1.0 / k})
    s.end()
    return run_dir


def audit_reads(tmp: Path) -> dict:
    """Read, check, restore from and report on :func:`hostile_run` under an audit hook that logs
    every ``open``: how many files were opened, and how many of them outside the run directory
    (a symbolic link inside it opened with O_NOFOLLOW is refused unread, and not counted)."""
    d = hostile_run(tmp)
    out = subprocess.run([sys.executable, "-c", AUDIT, str(d)], capture_output=True, text=True, env=child_env(),
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    opened = json.loads(out.stdout.strip().splitlines()[-1])
    # Python's own imports (a lazily imported module) are opens too: not files of any run.
    # So is the CLI's reading of weightwatch's own rule packs.
    from weightwatch.checking.config import packs_dir

    packs = os.path.realpath(packs_dir())
    code = [p for p, _ in opened if p.endswith((".py", ".pyc", ".so")) or os.path.realpath(p).startswith(packs)]
    opened = [(p, f) for p, f in opened if p not in code]
    root = os.path.realpath(d)
    outside = [p for p, flags in opened
               if os.path.commonpath([root, os.path.abspath(p)]) != root
               or not (os.path.realpath(p).startswith(root + os.sep) or flags & os.O_NOFOLLOW)]
    return {"opened": len(opened), "outside_run_dir": len(outside), "outside": outside[:5],
            "modules_and_packs": len(code)}
