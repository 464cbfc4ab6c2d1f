"""How fast is ``weightwatch check`` against the floor of just parsing the run?

Builds a synthetic run of RECORDS x TENSORS snapshots (default 1,000 x 200)
in the real on-disk format, then measures, interleaved and repeated:

* parse floor: read and JSON-parse every record file, nothing else
  (``jsonio.loads``: orjson when installed, as the reader uses);
* ``open_run``: the (records, tensors) metric arrays, built from the
  journal (``history.bin``) after checking every record file's CRC against
  it; and ``open_run`` of a copy without the journal, which parses every
  record (runs of older versions, or a folder of edited records);
* ``check()``: open_run + every rule of the default pack (both ways);
* the same parse floor in a fresh Python process (interpreter start-up
  included), against which the CLI is compared;
* CLI end to end: ``weightwatch check RUN --no-config -q`` in a fresh
  process (includes interpreter start-up and imports);
* CLI start-up alone: ``weightwatch --version``, and whether TensorFlow
  was imported (it must not be).

``--stdlib-json`` runs everything, the floors included, with the standard
library's json instead of orjson (as without ``weightwatch[fast]``).

Usage: ``python benchmarks/checking.py [--records N] [--tensors N] [--repeat N] [--stdlib-json]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
NO_ORJSON = "import sys; sys.modules['orjson'] = None; "  # makes `import orjson` fail
if "--stdlib-json" in sys.argv:
    exec(NO_ORJSON)

from weightwatch.run import jsonio  # noqa: E402
from weightwatch.checking.config import load_rules  # noqa: E402
from weightwatch.checking.engine import evaluate  # noqa: E402
from weightwatch.run.journal import JOURNAL  # noqa: E402
from weightwatch.run.reader import open_run  # noqa: E402
from weightwatch.run.writer import RunWriter  # noqa: E402
from weightwatch.run.schema import COLUMNS  # noqa: E402


def build_run(path: Path, records: int, tensors: int, seed: int = 0) -> None:
    """A healthy-looking run: norms drift slowly, updates shrink, loss falls."""
    rng = np.random.default_rng(seed)
    w = RunWriter(path, overwrite=True, model_name="synthetic")
    names = [f"block{i // 4}/dense{i % 4}/{'kernel' if i % 2 == 0 else 'bias'}" for i in range(tensors)]
    w.add_tensors([{"path": p, "layer": p.rsplit("/", 1)[0], "shape": [64, 64] if p.endswith("kernel") else [64],
                    "dtype": "float32", "kind": "kernel" if p.endswith("kernel") else "bias"} for p in names])
    l2 = rng.uniform(1, 5, tensors)
    for r in range(records):
        rows = {}
        upd = 0.05 / np.sqrt(r + 1) * l2
        for j, p in enumerate(names):
            size = 4096 if p.endswith("kernel") else 64
            first = r == 0
            vals = dict(trainable=True, frozen=False, size=size, nan=0, inf=0, l2=float(l2[j]),
                        mean=float(rng.normal(0, 0.01)), std=float(l2[j] / np.sqrt(size)),
                        min=-0.3, max=0.3, absmax=0.3, zero_frac=0.0,
                        d_l2=None if first else float(upd[j]), d_absmax=None if first else float(upd[j] / 10),
                        changed=None if first else True, dead_units=None if first or not p.endswith("kernel") else 0,
                        d_cos=None if r < 2 else float(rng.uniform(-0.3, 0.6)),
                        grad_rms=None if first else float(1e-2 / np.sqrt(r)), replica_spread=None,
                        penalty=float(1e-4 * l2[j] ** 2) if p.endswith("kernel") else None)
            rows[p] = [vals[c] for c in COLUMNS]
        l2 = l2 * (1 + rng.normal(0, 0.002, tensors))
        w.write_record(epoch=r, batch=None, step=r * 100, trigger="begin" if r == 0 else "epoch", rows=rows,
                       logs={} if r == 0 else {"loss": float(1.0 / np.sqrt(r)), "learning_rate": 1e-3},
                       wall=time.time())


def parse_floor(path: Path) -> None:
    for f in sorted(path.glob("record-*.json")):
        jsonio.loads(f.read_bytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--tensors", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--stdlib-json", action="store_true", help="the standard library's json, not orjson")
    args = ap.parse_args()

    rules = load_rules(use_project_config=False)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    # An installed weightwatch has its bytecode compiled (pip does it); let the
    # first process write it here too, or every run would time the compiler.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        t = time.perf_counter()
        build_run(run, args.records, args.tensors)
        build_s = time.perf_counter() - t
        size = sum(f.stat().st_size for f in run.iterdir())
        journal_size = (run / JOURNAL).stat().st_size
        bare = Path(tmp) / "without-journal"
        shutil.copytree(run, bare, ignore=shutil.ignore_patterns(JOURNAL))
        prefix = NO_ORJSON if args.stdlib_json else ""
        cli = [sys.executable, "-c", prefix + "import sys; from weightwatch.cli import main; "
               "sys.exit(main(sys.argv[1:]))"]
        floor_process = [sys.executable, "-c", prefix + "import sys; sys.path.insert(0, sys.argv[2]); "
                         "from pathlib import Path; from weightwatch.run.jsonio import loads\n"
                         "for f in sorted(Path(sys.argv[1]).glob('record-*.json')): loads(f.read_bytes())",
                         str(run), env["PYTHONPATH"]]
        in_process = ("parse floor", "open_run", "open_run, no journal", "check()", "check(), no journal")
        processes = ("parse floor (process)", "CLI check (process)", "CLI --version")
        times = {k: [] for k in in_process + processes}
        subprocess.run(cli + ["check", str(run), "--no-config", "-q"],
                       capture_output=True, env=env)  # warm-up: bytecode, page cache
        for _ in range(args.repeat):
            t = time.perf_counter(); parse_floor(run); times["parse floor"].append(time.perf_counter() - t)
            t = time.perf_counter(); open_run(run); times["open_run"].append(time.perf_counter() - t)
            t = time.perf_counter(); open_run(bare); times["open_run, no journal"].append(time.perf_counter() - t)
            t = time.perf_counter(); report = evaluate(open_run(run), rules)
            times["check()"].append(time.perf_counter() - t)
            t = time.perf_counter(); evaluate(open_run(bare), rules)
            times["check(), no journal"].append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run(floor_process, check=True, env=env)
            times["parse floor (process)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            proc = subprocess.run(cli + ["check", str(run), "--no-config", "-q"],
                                  capture_output=True, env=env)
            times["CLI check (process)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run(cli + ["--version"], capture_output=True, env=env)
            times["CLI --version"].append(time.perf_counter() - t)
        tf = subprocess.run([sys.executable, "-c", "import sys; from weightwatch.cli import main; "
                             f"main(['check', {str(run)!r}, '--no-config', '-q']); "
                             "print('tensorflow' in sys.modules)"], capture_output=True, text=True, env=env)
        floors = {k: statistics.median(times["parse floor"]) for k in in_process}
        floors.update({k: statistics.median(times["parse floor (process)"]) for k in processes})
        print(f"synthetic run: {args.records} records x {args.tensors} tensors, {size / 1e6:.1f} MB on disk, "
              f"of which journal {journal_size / 1e6:.1f} MB (built in {build_s:.1f}s); "
              f"json: {'orjson' if jsonio._orjson else 'stdlib'}; "
              f"CLI exit code {proc.returncode}; report: {report.counts()}")
        print(f"{'measure':<26}{'median s':>10}{'x floor':>9}   (processes against the floor in a process)")
        for k, v in times.items():
            m = statistics.median(v)
            print(f"{k:<26}{m:>10.3f}{m / floors[k]:>9.2f}")
        print(f"TensorFlow imported by `weightwatch check`: {tf.stdout.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()
