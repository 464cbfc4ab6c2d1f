"""How much does a baseline cost?  Checking a run against 3 references vs checking it alone.

Builds 4 synthetic runs of RECORDS x TENSORS (default 1,000 x 200) in the real on-disk
format with ``benchmarks/checking.py``'s ``build_run`` (seeds 0-3: the candidate and three
references, each drifting on its own), then measures, interleaved and repeated (median):

* **alone**: ``weightwatch.check(RUN, pack)`` -- open the run, every rule of the default pack;
* **paths**: ``weightwatch.check(RUN, pack, baseline=[REF1, REF2, REF3])`` -- open the four
  runs, learn the bands, the pack plus its baseline rules;
* **file**: the same with a baseline file (``weightwatch baseline learn REF... -o F``, made
  once), the way CI is meant to use it;
* in memory (runs already open): ``evaluate`` alone vs with a learnt ``Baseline``, and
  ``learn_baseline`` itself.

The issue's target: checking against 3 references costs at most 2x checking alone.

Usage: ``python benchmarks/baseline/speed.py [--records N] [--tensors N] [--repeat N]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import bench_specs  # noqa: E402  (pure Python: the module loader)


def _time(fn, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def measure(records: int = 1000, tensors: int = 200, repeat: int = 3, tmp: Path | None = None,
            quiet: bool = False) -> dict:
    import weightwatch
    from weightwatch.checking.baseline import learn_baseline
    from weightwatch.checking.config import load_rules
    from weightwatch.run.reader import open_run

    build_run = bench_specs.load_module("bench_checking", HERE.parent / "checking.py").build_run
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    own = tmp is None
    tmpdir = tempfile.TemporaryDirectory() if own else None
    base = Path(tmpdir.name) if own else Path(tmp)
    try:
        t = time.perf_counter()
        paths = []
        for seed in range(4):
            p = base / f"run{seed}"
            build_run(p, records, tensors, seed=seed)
            paths.append(p)
        say(f"built 4 runs of {records} records x {tensors} tensors in {time.perf_counter() - t:.1f} s")
        cand, refs = paths[0], paths[1:]
        pack = load_rules(use_project_config=False)
        bfile = base / "main.baseline.json"
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        made = subprocess.run([sys.executable, "-m", "weightwatch", "baseline", "learn", *map(str, refs),
                               "-o", str(bfile)], capture_output=True, text=True, env=env)
        has_file = made.returncode == 0 and bfile.exists()
        if not has_file:
            say(f"no baseline file ({made.returncode}): {(made.stderr or made.stdout)[-300:]}")
        out = {"records": records, "tensors": tensors, "repeat": repeat}
        # warm-up (imports, caches), then interleaved repeats
        weightwatch.check(cand, pack)
        weightwatch.check(cand, pack, baseline=[str(p) for p in refs])
        alone, with_paths, with_file = [], [], []
        for _ in range(repeat):
            t = time.perf_counter()
            weightwatch.check(cand, pack)
            alone.append(time.perf_counter() - t)
            t = time.perf_counter()
            weightwatch.check(cand, pack, baseline=[str(p) for p in refs])
            with_paths.append(time.perf_counter() - t)
            if has_file:
                t = time.perf_counter()
                weightwatch.check(cand, pack, baseline=[str(bfile)])
                with_file.append(time.perf_counter() - t)
        out["alone_s"] = statistics.median(alone)
        out["paths_s"] = statistics.median(with_paths)
        out["file_s"] = statistics.median(with_file) if with_file else None
        out["file_bytes"] = bfile.stat().st_size if has_file else None
        # in memory
        run = open_run(cand)
        ref_runs = [open_run(p) for p in refs]
        out["open_s"] = _time(lambda: open_run(cand), repeat)
        out["learn_s"] = _time(lambda: learn_baseline(ref_runs), repeat)
        b = learn_baseline(ref_runs)
        out["mem_alone_s"] = _time(lambda: weightwatch.check(run, pack), repeat)
        out["mem_baseline_s"] = _time(lambda: weightwatch.check(run, pack, baseline=b), repeat)
        return out
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()


def render(m: dict) -> str:
    def ratio(x, y):
        return f"{x / y:.2f}x" if x is not None and y else "-"

    lines = [f"Baseline cost: a run of {m['records']} records x {m['tensors']} tensors, 3 references "
             f"of the same size (median of {m['repeat']})",
             f"  check alone (open + default pack)               {m['alone_s']:7.3f} s",
             f"  check --baseline REF1 REF2 REF3 (open 4, learn) {m['paths_s']:7.3f} s   {ratio(m['paths_s'], m['alone_s'])}"]
    if m.get("file_s") is not None:
        lines.append(f"  check --baseline main.baseline.json             {m['file_s']:7.3f} s   "
                     f"{ratio(m['file_s'], m['alone_s'])}   (file {m['file_bytes'] / 1e6:.2f} MB)")
    lines += [f"  in memory: pack alone {m['mem_alone_s']:.3f} s, pack + baseline {m['mem_baseline_s']:.3f} s "
              f"({ratio(m['mem_baseline_s'], m['mem_alone_s'])}); learn_baseline of 3 runs {m['learn_s']:.3f} s; "
              f"open_run {m['open_s']:.3f} s",
              "  target (issue 13): at most 2x checking alone"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--tensors", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    print(render(measure(args.records, args.tensors, args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
