"""The fuzz harness: mutated runs, seed dumps, rule files and -k expressions, against a strict
schema as the oracle, each input run in a child process with memory and time limits.

* **Inputs** are mutations of real inputs: a run recorded through the real
  :class:`~weightwatch.recording.session.RecordingSession` (a failing one: NaN weights and a
  non-finite loss at its last record; tensors and healthy weights saved), a folder of naive
  weight dumps, a realistic rule file, and -k expressions.  Mutations: bit flips, bytes set,
  truncation, insertion and deletion in any file; values of any JSON file replaced by values of
  the wrong type or range (huge numbers, deep nesting, paths out of the run); keys deleted,
  renamed, added; records copied over others, swapped or deleted; files replaced by FIFOs,
  symbolic links out of the run, devices, directories; journal entries rewritten with another
  record's figures and their checksums recomputed.
* **The oracle** is a second, plain implementation of the documented schema
  (:func:`oracle_run`, :func:`oracle_seed`): which files of the input are invalid, and the
  figures of every record that is valid.
* **Each input** goes to a worker process (``RLIMIT_AS``, and a per-input time limit: a worker
  that does not answer in time is killed and the input counted as a hang) that reads it with
  ``open_run``, checks it, asks for its saved tensors and healthy weights, runs the CLI on it
  in a rotating output format, and reports: a traceback (any exception but a
  WeightwatchError, or the CLI's exit 3), an invalid file taken as valid (**accepted-invalid**),
  a valid file reported as a problem (**rejected-valid**), figures that differ from the JSON's
  (**figures-differ**: the journal said what the JSON does not), a run with a problem that
  exits 0.

``fuzz(n, seed)`` returns the counts; ``tests/run/test_fuzz.py`` runs a slice,
``benchmarks/reliability.py`` the full run.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
for _p in (str(HERE), str(ROOT)):  # this checkout's weightwatch, whatever is installed
    if _p not in sys.path:
        sys.path.insert(0, _p)

# -- the oracle: the documented schema, implemented plainly -----------------------------------

ROLES = ("kernel", "bias", "scale", "embedding", "moving_stat", "other")
TRIGGERS = ("begin", "epoch", "batch", "guard")
BASE_COLUMNS = ("trainable", "frozen", "size", "nan", "inf", "l2", "mean", "std", "min", "max",
                "absmax", "zero_frac", "d_l2", "d_absmax", "changed", "dead_units", "d_cos")
FLAGS = ("trainable", "frozen", "changed")
COUNTS = ("size", "nan", "inf", "dead_units")
NEVER_NULL = ("trainable", "frozen", "size", "nan", "inf")
NON_NEGATIVE = ("l2", "std", "absmax", "d_l2", "d_absmax")
MAX_INT = 2 ** 53
MAX_JSON = 512 * 2 ** 20
RECORD = re.compile(r"^record-(\d{6,})\.json$")
SNAPSHOT_KEYS = {"format", "version", "record", "epoch", "batch", "step", "kind", "time", "logs",
                 "tensors_file", "tensors"}
ENTRY_KEYS = {"path", "layer", "shape", "dtype", "kind", "first_record", "layer_path"}


class Invalid(Exception):
    pass


def _strict_json(path: Path, *, allow_nan: bool = False):
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise Invalid("not a regular file")
    if st.st_size > MAX_JSON:
        raise Invalid("too large")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("not UTF-8") from None

    def constant(tok):
        if allow_nan:
            return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[tok]
        raise Invalid("NaN token")

    # The reader's policy (orjson >= 3.9, and the stdlib fallback): JSON nested more than 1024
    # levels deep is not accepted.  Parse deeper input as JSON, then judge its depth.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        value = json.loads(text, parse_constant=constant)
        if _depth(value) > MAX_JSON_DEPTH:
            raise Invalid("nested too deep")
        return value
    except (ValueError, RecursionError):
        raise Invalid("not JSON") from None
    finally:
        sys.setrecursionlimit(limit)


#: orjson's limit (3.9 and later), which weightwatch's [fast] extra requires.
MAX_JSON_DEPTH = 1024


def _depth(value) -> int:
    """How deep ``value`` nests (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, dict)):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _int(v, lo=0):
    return type(v) is int and lo <= v <= MAX_INT


def _num(v):
    return type(v) in (int, float) and math.isfinite(v)


def _name(v):
    if not isinstance(v, str) or not v:
        return False
    try:
        v.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def oracle_manifest(m, columns_known):
    if not isinstance(m, dict) or m.get("format") != "weightwatch-run":
        raise Invalid("format")
    if type(m.get("version")) is not int or m["version"] != 1:
        raise Invalid("version")
    table = m.get("tensors")
    if not isinstance(table, list):
        raise Invalid("tensors")
    seen = set()
    for e in table:
        if not isinstance(e, dict) or not {"path", "kind", "first_record"} <= e.keys() or not e.keys() <= ENTRY_KEYS:
            raise Invalid("entry keys")
        if not _name(e["path"]) or e["path"] in seen:
            raise Invalid("entry path")
        seen.add(e["path"])
        if e["kind"] not in ROLES or not _int(e["first_record"]):
            raise Invalid("entry kind/first")
        for k in ("layer", "dtype", "layer_path"):
            if e.get(k) is not None and not isinstance(e[k], str):
                raise Invalid("entry str")
        shape = e.get("shape")
        if shape is not None and not (isinstance(shape, list) and len(shape) <= 64 and all(_int(d) for d in shape)):
            raise Invalid("shape")
    cols = m.get("columns")
    if not isinstance(cols, list) or not all(isinstance(c, str) and c in columns_known for c in cols):
        raise Invalid("columns")
    if len(set(cols)) != len(cols) or not set(BASE_COLUMNS) <= set(cols):
        raise Invalid("columns set")
    if m.get("model") is not None and not isinstance(m["model"], str):
        raise Invalid("model")
    if "trainable_only" in m and not isinstance(m["trainable_only"], bool):
        raise Invalid("trainable_only")
    if m.get("digests_from") is not None and not _int(m["digests_from"]):
        raise Invalid("digests_from")
    return table, cols


def oracle_record(s, index, cols, manifest_paths, firsts, digests_from):
    from weightwatch.run.digest import record_digest

    if not isinstance(s, dict) or s.get("format") != "weightwatch-snapshot":
        raise Invalid("format")
    if type(s.get("version")) is not int or s["version"] != 1:
        raise Invalid("version")
    keys = set(s)
    if not SNAPSHOT_KEYS <= keys or not keys <= SNAPSHOT_KEYS | {"digest"}:
        raise Invalid("keys")
    if not _int(s["record"]) or s["record"] != index or not _int(s["epoch"]):
        raise Invalid("record/epoch")
    if s["step"] is not None and not _int(s["step"]):
        raise Invalid("step")
    if s["kind"] not in TRIGGERS:
        raise Invalid("kind")
    if s["kind"] in ("batch", "guard"):
        if not _int(s["batch"], 1):
            raise Invalid("batch")
    elif s["batch"] is not None:
        raise Invalid("batch null")
    if s["time"] is not None and not _num(s["time"]):
        raise Invalid("time")
    if not isinstance(s["logs"], dict) or not all(_name(k) and (v is None or _num(v)) for k, v in s["logs"].items()):
        raise Invalid("logs")
    if s["tensors_file"] is not None and s["tensors_file"] != f"record-{index:06d}.npz":
        raise Invalid("tensors_file")
    if "digest" in s and not (isinstance(s["digest"], str) and re.fullmatch(r"[0-9a-f]{32}", s["digest"])):
        raise Invalid("digest form")
    rows = s["tensors"]
    if not isinstance(rows, dict):
        raise Invalid("tensors")
    col = {c: i for i, c in enumerate(cols)}
    values = []
    for path, row in rows.items():
        if not _name(path) or path not in manifest_paths or firsts[path] > index:
            raise Invalid("path")
        if type(row) is not list or len(row) != len(cols):
            raise Invalid("row")
        out = []
        for c, v in zip(cols, row):
            if v is None:
                if c in NEVER_NULL:
                    raise Invalid("null")
                out.append(math.nan)
                continue
            if c in FLAGS:
                if type(v) is not bool:
                    raise Invalid("flag")
                out.append(float(v))
                continue
            if type(v) not in (int, float):
                raise Invalid("type")
            try:
                f = float(v)
            except OverflowError:
                raise Invalid("huge") from None
            if not math.isfinite(f):
                raise Invalid("inf")
            if c in COUNTS and not (f >= 0 and f == int(f) and f <= MAX_INT):
                raise Invalid("count")
            if c in NON_NEGATIVE and f < 0:
                raise Invalid("negative")
            if c == "zero_frac" and not 0 <= f <= 1 or c == "d_cos" and not -1 <= f <= 1:
                raise Invalid("interval")
            out.append(f)
        g = dict(zip(cols, out))
        if g["nan"] + g["inf"] > g["size"] or (g["dead_units"] == g["dead_units"] and g["dead_units"] > g["size"]):
            raise Invalid("counts")
        if g["min"] == g["min"] and g["max"] == g["max"] and g["min"] > g["max"]:
            raise Invalid("min/max")
        values.append(out)
    if "digest" in s:
        import numpy as np

        meta = {k: v for k, v in s.items() if k not in ("tensors", "digest")}
        arr = np.array(values, dtype=np.float64).reshape(len(values), len(cols))
        if record_digest(cols, meta, list(rows), arr) != s["digest"]:
            raise Invalid("digest")
    elif digests_from is not None and index >= digests_from:
        raise Invalid("digest missing")
    del col
    return {"epoch": s["epoch"], "step": s["step"], "kind": s["kind"], "logs": s["logs"],
            "rows": dict(zip(rows, values))}


def oracle_run(d: Path) -> dict:
    """``{"manifest_invalid": bool, "bad": {file names}, "records": {index: parsed}}`` of a run."""
    from weightwatch.run.schema import COLUMNS

    out = {"manifest_invalid": False, "bad": set(), "records": {}, "absent_ok": False}
    try:
        st = os.lstat(d / "manifest.json")
    except FileNotFoundError:
        out["manifest_invalid"] = True
        return out
    try:
        m = _strict_json(d / "manifest.json")
        table, cols = oracle_manifest(m, COLUMNS)
    except (Invalid, OSError):
        out["manifest_invalid"] = True
        return out
    del st
    paths = [e["path"] for e in table]
    firsts = {e["path"]: e["first_record"] for e in table}
    sparse = m.get("trainable_only", False)
    files = sorted((int(mm.group(1)), n) for n in os.listdir(d) if (mm := RECORD.match(n)))
    ok = {}
    for index, name in files:
        try:
            ok[index] = oracle_record(_strict_json(d / name), index, cols, set(paths), firsts, m.get("digests_from"))
        except (Invalid, OSError):
            out["bad"].add(name)
    prev, seen, reported = None, {}, set()
    for index, name in files:
        if index not in ok:
            continue
        r = ok[index]
        if prev is not None:
            pe, ps = prev
            if r["kind"] != "begin" and r["step"] is not None and ps is not None and r["step"] < ps:
                out["bad"].add(name)
                continue
            if r["epoch"] < pe and not (r["kind"] == "begin" or (r["step"] is not None and ps is not None
                                                                 and r["step"] > ps)):
                out["bad"].add(name)
                continue
        expected = [p for p in paths if firsts[p] <= index]
        if not sparse and not set(expected) <= set(r["rows"]):
            out["bad"].add(name)
        group = "batch" if r["kind"] in ("batch", "guard") else r["kind"]
        s = seen.setdefault(group, set())
        gone = {k for k in s if k not in r["logs"] and not k.startswith("val_") and (group, k) not in reported}
        if gone:
            reported |= {(group, k) for k in gone}
            out["bad"].add(name)
        s |= set(r["logs"])
        out["records"][index] = r
        prev = (r["epoch"], r["step"])
    if not out["records"]:
        out["manifest_invalid"] = True  # no record to check: the reader raises
    if os.path.lexists(d / "verdict.json"):
        try:
            if not isinstance(_strict_json(d / "verdict.json"), dict):
                out["bad"].add("verdict.json")
        except (Invalid, OSError):
            out["bad"].add("verdict.json")
    return out


def _seed_shape(w, depth=0):
    if type(w) in (int, float, bool):
        if type(w) is int and not -2 ** 63 <= w < 2 ** 63:
            raise Invalid("int")
        return ()
    if not isinstance(w, list) or depth > 63:
        raise Invalid("not numeric")
    shapes = {_seed_shape(x, depth + 1) for x in w}
    if len(shapes) > 1:
        raise Invalid("ragged")
    return (len(w),) + (shapes.pop() if shapes else ())


def oracle_seed(d: Path) -> dict:
    groups = {}
    for n in os.listdir(d):
        mm = re.match(r"^(?P<prefix>.*?)(?P<n>\d+)\.json$", n)
        if mm and not n.startswith("."):
            groups.setdefault(mm.group("prefix"), []).append(n)
    out = {"manifest_invalid": False, "bad": set()}
    if len(groups) != 1:
        out["manifest_invalid"] = True
        return out
    (files,) = groups.values()
    for n in files:
        try:
            data = _strict_json(d / n, allow_nan=True)
            if not isinstance(data, dict):
                raise Invalid("dict")
            for weights in data.values():
                if not isinstance(weights, list):
                    raise Invalid("list")
                for w in weights:
                    if len(_seed_shape(w)) > 64:
                        raise Invalid("ndim")
        except (Invalid, OSError, RecursionError):
            out["bad"].add(n)
    if len(out["bad"]) == len(files):
        out["manifest_invalid"] = True
    return out


# -- the worker: one input at a time, under limits ------------------------------------------------

def _problem_files(problems) -> set:
    names = set()
    for p in problems:
        path = getattr(p, "path", None) or str(p).split(": ")[0]
        names.add(os.path.basename(str(path)))
    return names


def work(task: dict) -> dict:
    """Run one input; the result says what went wrong, if anything."""
    import io
    import traceback

    import numpy as np

    import weightwatch
    from weightwatch.errors import WeightwatchError

    result = {"traceback": None}

    def guard(what, fn):
        try:
            return fn()
        except WeightwatchError:
            return None
        except Exception:  # noqa: BLE001 - what the harness counts
            if result["traceback"] is None:
                result["traceback"] = f"{what}: {traceback.format_exc(limit=6)[-1500:]}"
            return None

    kind = task["kind"]
    if kind in ("run", "seed"):
        d = Path(task["dir"])
        expect = oracle_run(d) if kind == "run" else oracle_seed(d)
        run = None
        try:
            run = weightwatch.open_run(d)
        except WeightwatchError:
            pass
        except Exception:  # noqa: BLE001
            result["traceback"] = f"open_run: {traceback.format_exc(limit=6)[-1500:]}"
        result["oracle_invalid"] = int(bool(expect["bad"]) or expect["manifest_invalid"])
        if run is None:
            result["accepted_invalid"] = 0
            result["rejected_valid"] = int(not expect["manifest_invalid"] and result["traceback"] is None
                                           and kind == "run")
        else:
            from weightwatch.checking.config import load_rules
            from weightwatch.checking.engine import evaluate

            rules = load_rules(use_project_config=False)
            report = guard("evaluate", lambda: evaluate(run, rules))
            # (after evaluate, which reads verdict.json: its problems are the run's too)
            got = _problem_files(run.problems)
            bad = set(expect["bad"]) | ({"manifest.json"} if expect["manifest_invalid"] else set())
            result["accepted_invalid"] = int(bool(bad - got))
            result["rejected_valid"] = int(bool(got - bad))
            result["detail"] = {"oracle": sorted(bad), "reader": sorted(got)}
            if kind == "run" and not (bad - got):
                result["figures_differ"] = int(not _same_figures(run, expect, np))
            if report is not None and bad and report.exit_code() == 0:
                result["passed_with_problem"] = 1
            for r in list(run.records)[:4]:
                guard("tensors_at", lambda r=r: run.tensors_at(r.index))
        if kind == "run":
            from weightwatch.run.reader import read_weights

            guard("read_weights", lambda: read_weights(d))
            guard("read_weights(1)", lambda: read_weights(d, 1))
        fmt = task.get("format", "terminal")
        from weightwatch.cli import main

        out = io.StringIO()
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, io.StringIO()
        try:
            argv = ["check", str(d), "--no-config", "--format", fmt]
            if task.get("junit"):
                argv += ["--junitxml", task["junit"]]
            code = main(argv)
        finally:
            sys.stdout, sys.stderr = saved
        if code == 3:
            result["traceback"] = result["traceback"] or "cli: exit 3"
        if code == 0 and (expect["bad"] or expect["manifest_invalid"]):
            result["passed_with_problem"] = 1
    elif kind == "rules":
        from weightwatch.checking.config import load_rules
        from weightwatch.checking.engine import evaluate

        rs = guard("load_rules", lambda: load_rules(task["file"], use_project_config=False))
        if rs is not None:
            run = _small_run()
            guard("evaluate", lambda: evaluate(run, rs))
            for rule in rs:
                guard("format_message", lambda rule=rule: rule.format_message(
                    tensor="a/kernel", layer="a", epoch=1, record=1, value=1.5, limit=2.0, metric="m",
                    key="loss", where="epoch 1", loss=1.0, best=0.5, records=2, window=3))
    elif kind == "keyword":
        from weightwatch.checking.config import load_rules
        from weightwatch.checking.keyword import compile_keyword

        match = guard("compile_keyword", lambda: compile_keyword(task["expr"]))
        if match is not None:
            rules = load_rules(use_project_config=False)
            guard("match", lambda: [match(r) for r in rules])
    return result


_SMALL = None


def _small_run():
    global _SMALL
    if _SMALL is None:
        sys.path.insert(0, str(HERE))
        from runbuilder import make_run

        _SMALL = make_run({"a/kernel": {"l2": [1.0, 1.1, 50.0]}, "a/bias": {}}, 3)
    return _SMALL


def _same_figures(run, expect, np) -> bool:
    records = expect["records"]
    if [r.index for r in run.records] != sorted(records):
        return False
    for k, r in enumerate(run.records):
        want = records[r.index]
        if r.logs != want["logs"] or r.epoch != want["epoch"]:
            return False
        for path, row in want["rows"].items():
            t = run.tensor_index(path)
            for c, v in zip(run.columns, row):
                got = run.metric(c)[k, t]
                if not (got == v or (got != got and v != v)):
                    return False
    return True


def worker_main() -> None:
    import resource

    limit = int(os.environ.get("WW_FUZZ_MEMORY", str(4 * 2 ** 30)))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import weightwatch.cli  # noqa: F401 - imported before the first input, not timed with it
    for line in sys.stdin:
        task = json.loads(line)
        try:
            result = work(task)
        except MemoryError:
            result = {"traceback": "MemoryError"}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


class Pool:
    """One worker process, restarted when an input kills it or overruns its time."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.proc = None

    def _start(self):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__)), "--worker"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, bufsize=1)

    def run(self, task: dict) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(json.dumps(task) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            hung = self.proc.poll() is None
            self.close()
            return {"hang": int(hung), "traceback": None if hung else "worker died"}
        return json.loads(line)

    def close(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None


# -- the inputs -------------------------------------------------------------------------------------

def build_bases(tmp: Path) -> dict:
    """The real inputs that are mutated: a recorded failing run, naive dumps, a rule file."""
    import numpy as np

    sys.path.insert(0, str(HERE))
    from runbuilder import record_arrays

    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 5)).astype("float32") * 0.3
    records = []
    for k in range(5):
        w = w + rng.normal(size=w.shape).astype("float32") * 0.01
        kernel = w.copy()
        if k == 4:
            kernel[0, 0] = np.nan
        records.append({"m/dense/kernel": kernel, "m/dense/bias": np.full(5, 0.01 * k, "float32"),
                        "m/out/kernel": np.full((5, 1), 0.5 + 0.01 * k, "float32")})
    run = record_arrays(tmp / "base-run", records, logs=[{}] + [{"loss": 1.0 / k, "val_loss": 1.1 / k}
                                                                 for k in range(1, 4)] + [{"loss": None}],
                        save_tensors=True)
    import weightwatch.run.writer as writer

    with writer.RunWriter(run, model_name="m", resume=True) as wr:
        wr.keep_healthy(3, {p: records[3][p] for p in records[3]})
        wr.wait_healthy()
        wr.write_verdict({"halted": True, "record": 4, "healthy_record": 3})
    seed = tmp / "base-seed"
    seed.mkdir()
    for n in range(3):
        seed.joinpath(f"weights_epoch_{n}.json").write_text(json.dumps(
            {"dense": [[[0.1 * n + i + j for j in range(3)] for i in range(4)], [0.0, 0.1, 0.2]],
             "out": [[[1.0 + n], [2.0], [3.0]], [0.5]]}).replace("0.0,", "NaN," if n == 2 else "0.0,"))
    rules = tmp / "base-rules.toml"
    rules.write_text('''extends = ["default"]
disable = ["loss-plateau"]

[override.exploding-norm]
max_ratio = 5.0
severity = "warning"

[[rule]]
id = "encoder-frozen"
check = "unchanged"
select = ["encoder/*"]
message = "{tensor} changed by {value:.3g} although frozen (limit {limit:g})"
hint = "Set encoder.trainable = False and compile() again."

[[rule]]
id = "runaway"
check = "norm-runaway"
records = 3
min_growth = 1.3
patience = 2
after = 1
until = 50

[[rule]]
id = "logs-finite"
check = "nonfinite-log"
keys = ["loss", "val_loss"]
role = ["kernel", "bias"]
''')
    return {"run": run, "seed": seed, "rules": rules}


POOL = [None, True, False, 0, -1, 1, 2, 1.5, -0.5, 1e308, -1e308, 2 ** 53 + 1, 10 ** 30, "", "x", "1.5",
        "../../x.npz", "/proc/self/environ", "/dev/zero", "record-000002.npz", [], [1, 2], {}, {"a": 1},
        "epoch", "begin", "kernel", "\x1b[31m", "x\n::error::forged", "\ud800", "DEEP"]


def _json_paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _json_paths(v, prefix + (i,))


def _mutate_json(data, rng):
    paths = [p for p in _json_paths(data) if p]
    if not paths:
        return rng.choice(POOL)
    path = rng.choice(paths)
    parent = data
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    op = rng.random()
    if isinstance(parent, dict):
        if op < 0.15:
            del parent[key]
        elif op < 0.3:
            flipped = list(str(key))
            if flipped:
                i = rng.randrange(len(flipped))
                flipped[i] = chr(ord(flipped[i]) ^ (1 << rng.randrange(7)))
            parent["".join(flipped)] = parent.pop(key)
        elif op < 0.4:
            parent[rng.choice(["extra", "stop", "digest", "tensors_file", "trainable_only", "digests_from"])] = \
                rng.choice(POOL)
        else:
            parent[key] = _value_like(parent[key], rng)
    else:
        if op < 0.15 and parent:
            del parent[key]
        elif op < 0.25:
            parent.append(rng.choice(POOL))
        else:
            parent[key] = _value_like(parent[key], rng)
    return data


def _value_like(old, rng):
    if isinstance(old, (int, float)) and not isinstance(old, bool) and rng.random() < 0.5:
        return rng.choice([old + 1, old - 1, -old, old * 10 ** rng.randrange(1, 300) if old else 1e300,
                           float(old), int(old) if math.isfinite(old) else 0, old / 3])
    if isinstance(old, bool) and rng.random() < 0.5:
        return rng.choice([int(old), not old, None])
    return rng.choice(POOL)


def _dump(data) -> bytes:
    text = json.dumps(data, separators=(",", ":"), allow_nan=True, ensure_ascii=False)
    return text.replace('"DEEP"', "[" * 3000 + "]" * 3000).encode("utf-8", "surrogatepass")


def mutate_dir(d: Path, rng: random.Random, kind: str) -> str:
    """Mutate the copy ``d`` of a base input in place; returns what was done."""
    files = sorted(p for p in d.iterdir() if p.is_file())
    target = rng.choice(files)
    op = rng.random()
    raw = target.read_bytes()
    if op < 0.30 and raw:                                  # bytes
        b = bytearray(raw)
        sub = rng.random()
        if sub < 0.4:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
            what = "bit flip"
        elif sub < 0.6:
            b[rng.randrange(len(b))] = rng.randrange(256)
            what = "byte"
        elif sub < 0.75:
            b = b[:rng.randrange(len(b))]
            what = "truncate"
        elif sub < 0.9:
            i = rng.randrange(len(b) + 1)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
            what = "insert"
        else:
            i = rng.randrange(len(b))
            del b[i:i + rng.randrange(1, 16)]
            what = "delete"
        target.write_bytes(bytes(b))
        return f"{what} {target.name}"
    if op < 0.75 and target.suffix == ".json":             # values
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return "nothing"
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            data = _mutate_json(data, rng)
        target.write_bytes(_dump(data))
        return f"json {target.name}"
    if op < 0.85 and kind == "run" and (d / "history.bin").exists():   # the journal forged
        forge_journal(d, rng)
        return "journal forged"
    what = rng.choice(["delete", "fifo", "symlink-out", "symlink-dev", "dir", "empty", "copy-over", "swap"])
    others = [f for f in files if f != target and f.suffix == target.suffix]
    if what in ("copy-over", "swap") and not others:
        what = "empty"
    if what == "delete":
        target.unlink()
    elif what == "fifo":
        target.unlink()
        os.mkfifo(target)
    elif what == "symlink-out":
        outside = d.parent / "outside.bin"
        outside.write_bytes(raw)
        target.unlink()
        target.symlink_to(outside)
    elif what == "symlink-dev":
        target.unlink()
        target.symlink_to("/dev/zero")
    elif what == "dir":
        target.unlink()
        target.mkdir()
    elif what == "empty":
        target.write_bytes(b"")
    elif what == "copy-over":
        shutil.copy(rng.choice(others), target)
    else:
        other = rng.choice(others)
        tmp = d / ".swap"
        target.rename(tmp)
        other.rename(target)
        tmp.rename(other)
    return f"{what} {target.name}"


def forge_journal(d: Path, rng: random.Random) -> None:
    """Rewrite one entry of history.bin with another entry's figures, checksums recomputed."""
    import numpy as np

    from weightwatch.run import journal

    j = d / "history.bin"
    entries = sorted(journal.read(j).values(), key=lambda e: e.record)
    if len(entries) < 2:
        return
    try:
        if not stat.S_ISREG(os.lstat(d / "manifest.json").st_mode):  # /dev/zero, a FIFO...
            return
        m = json.loads((d / "manifest.json").read_text())
        paths = [t["path"] for t in m["tensors"]]
        [paths[i] for e in entries for i in e.ids]
        if not all(isinstance(p, str) for p in paths):
            return
    except (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError):
        return  # an earlier mutation broke the manifest: nothing to forge against
    victim, source = rng.sample(entries, 2)
    forged = d / "history.forged"
    for e in entries:
        values = np.array((source if e is victim else e).values)
        if values.shape != e.values.shape:
            values = np.array(e.values) * 2
        journal.append(forged, record=e.record, file_size=e.file_size, file_crc=e.file_crc, meta=e.meta,
                       ids=e.ids, paths=[paths[i] for i in e.ids], values=values)
    forged.replace(j)


TOKENS = ["(", ")", "and", "or", "not", "nan", "frozen", "norm", "error", "warning", "x", "-", "((", "))"]


def keyword_input(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.2:
        n = rng.choice([10, 63, 64, 65, 100, 1000, 5000])
        return "(" * n + "nan" + ")" * rng.choice([n, n - 1, n + 1])
    if r < 0.3:
        return "not " * rng.choice([10, 64, 65, 1000]) + "nan"
    if r < 0.4:
        return " or ".join(rng.choice(["nan", "frozen", "norm"]) for _ in range(rng.choice([2, 100, 2000])))
    if r < 0.5:
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(0, 40)))
    return " ".join(rng.choice(TOKENS) for _ in range(rng.randrange(0, 30)))


def mutate_rules(text: str, rng: random.Random) -> str:
    import tomllib

    r = rng.random()
    if r < 0.35:                                           # bytes of the TOML text
        b = bytearray(text.encode())
        for _ in range(rng.choice([1, 1, 2, 5])):
            i = rng.randrange(len(b))
            b[i] = rng.choice([rng.randrange(32, 127), ord("["), ord("{"), ord('"'), ord("="), 10])
        return b.decode(errors="replace")
    if r < 0.45:
        return text + rng.choice(['\nx = ' + "[" * 5000 + "]" * 5000 + "\n",
                                  '\n[[rule]]\nid = "z"\ncheck = "nonfinite"\nmessage = "{value:>999999999}"\n',
                                  '\n[[rule]]\nid = "z"\ncheck = "nonfinite"\nmessage = "{value:,.200000000f}"\n',
                                  '\n[[rule]]\nid = "z"\ncheck = "norm-runaway"\nrecords = 1000000000\n',
                                  '\n[[rule]]\nid = "z"\ncheck = "nonfinite"\nmessage = "{tensor.__class__}"\n',
                                  '\n[[rule]]\nid = "z"\ncheck = "nonfinite"\nhint = "\x1b[2J{value!r}"\n'])
    data = tomllib.loads(text)
    for _ in range(rng.choice([1, 1, 2])):
        data = _mutate_json(data, rng)
    return _toml(data)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v) if math.isfinite(v) else ("nan" if v != v else "inf" if v > 0 else "-inf")
    if isinstance(v, str):
        return json.dumps(v).replace("\\ud800", "?")
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    return '""'


def _toml(data: dict) -> str:
    lines = []
    for k, v in data.items():
        if k == "rule" and isinstance(v, list) and all(isinstance(x, dict) for x in v):
            continue
        if k == "override" and isinstance(v, dict) and all(isinstance(x, dict) for x in v.values()):
            continue
        if v is not None:
            lines.append(f"{json.dumps(str(k))} = {_toml_value(v)}")
    for rid, opts in (data.get("override") or {}).items() if isinstance(data.get("override"), dict) else ():
        if isinstance(opts, dict):
            lines.append(f"[override.{json.dumps(str(rid))}]")
            lines += [f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in opts.items() if x is not None]
    for rule in data.get("rule") or [] if isinstance(data.get("rule"), list) else []:
        if isinstance(rule, dict):
            lines.append("[[rule]]")
            lines += [f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in rule.items() if x is not None]
    return "\n".join(lines) + "\n"


# -- the harness -----------------------------------------------------------------------------------

MIX = (("run", 0.45), ("seed", 0.15), ("rules", 0.25), ("keyword", 0.15))


def fuzz(n: int, seed: int = 0, *, timeout: float = 30.0, tmp: Path | None = None, progress=None) -> dict:
    """Fuzz ``n`` inputs (the mix of :data:`MIX`); return the counts and the first few failures."""
    rng = random.Random(seed)
    own = tmp is None
    tmp = Path(tempfile.mkdtemp(prefix="weightwatch-fuzz-")) if own else tmp
    counts = {"inputs": 0, "tracebacks": 0, "hangs": 0, "accepted_invalid": 0, "rejected_valid": 0,
              "figures_differ": 0, "passed_with_problem": 0, "schema_invalid": 0}
    by_kind = {k: 0 for k, _ in MIX}
    examples: list = []
    pool = Pool(timeout)
    started = time.monotonic()
    try:
        bases = build_bases(tmp)
        base_rules = bases["rules"].read_text()
        formats = ["terminal", "json", "github"]
        for i in range(n):
            kind = rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
            work_dir = tmp / f"case{i % 4}"
            shutil.rmtree(work_dir, ignore_errors=True)
            work_dir.mkdir()
            what = ""
            if kind in ("run", "seed"):
                d = work_dir / "run"
                shutil.copytree(bases[kind], d, symlinks=True)
                done = []
                for _ in range(rng.choice([1, 1, 1, 2, 3])):
                    try:
                        done.append(mutate_dir(d, rng, kind))
                    except (OSError, ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
                        done.append(f"(a mutation of an already broken file gave up: {type(exc).__name__})")
                what = "; ".join(done)
                task = {"kind": kind, "dir": str(d), "format": formats[i % 3],
                        "junit": str(work_dir / "junit.xml") if i % 5 == 0 else None}
            elif kind == "rules":
                f = work_dir / "rules.toml"
                text = mutate_rules(base_rules, rng)
                f.write_text(text, errors="surrogatepass")
                what = text[-200:]
                task = {"kind": kind, "file": str(f)}
            else:
                expr = keyword_input(rng)
                what = expr[:200]
                task = {"kind": kind, "expr": expr}
            result = pool.run(task)
            counts["inputs"] += 1
            by_kind[kind] += 1
            failed = False
            for key in ("hangs", "accepted_invalid", "rejected_valid", "figures_differ", "passed_with_problem"):
                flag = result.get("hang" if key == "hangs" else key, 0)
                counts[key] += int(bool(flag))
                failed |= bool(flag)
            counts["schema_invalid"] += result.get("oracle_invalid", 0)
            if result.get("traceback"):
                counts["tracebacks"] += 1
                failed = True
            if failed and len(examples) < 10:
                examples.append({"kind": kind, "mutation": what, **result})
            if progress and (i + 1) % progress == 0:
                print(f"  {i + 1:6d} inputs, {time.monotonic() - started:6.0f} s: {counts}", flush=True)
    finally:
        pool.close()
        if own:
            shutil.rmtree(tmp, ignore_errors=True)
    counts["by_kind"] = by_kind
    counts["seconds"] = round(time.monotonic() - started, 1)
    counts["examples"] = examples
    return counts


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        worker_main()
    else:
        print(json.dumps(fuzz(int(sys.argv[1]) if len(sys.argv) > 1 else 200), indent=1, default=str))
