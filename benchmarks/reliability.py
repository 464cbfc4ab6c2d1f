"""Reliability: the counts the reliability targets ask for, from the harnesses in tests/.

* fuzzing (tests/fuzz.py): >= 10,000 mutated runs, seed dumps, rule files and -k expressions,
  each in a worker process with memory and time limits, against the strict schema as the
  oracle: tracebacks, hangs, inputs the schema rejects that were taken as valid;
* kill -9 (tests/reliability.py): random points, runs checkable and continuable;
* I/O faults: RLIMIT_FSIZE, a read-only directory, a small tmpfs (where one can be mounted):
  every record that could be written is kept;
* writers: a second process writing a run being written: silent second writers;
* reads: files opened outside the run directory, by an audit hook (sys.addaudithook).

Usage: ``python benchmarks/reliability.py [--inputs N] [--kills N] [--seed N] [--quick]``
(``--quick``: 1,000 inputs and 5 kills, a minute or so).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(TESTS.parent), str(TESTS)]

import fuzz  # noqa: E402
import reliability  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=int, default=12_000)
    p.add_argument("--kills", type=int, default=40)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.inputs, args.kills = 1000, 5
    tmp = Path(tempfile.mkdtemp(prefix="weightwatch-reliability-"))
    ok = True
    try:
        started = time.monotonic()
        print(f"fuzzing {args.inputs:,} inputs (seed {args.seed}) ...", flush=True)
        f = fuzz.fuzz(args.inputs, seed=args.seed, tmp=tmp / "fuzz", progress=max(args.inputs // 10, 1))
        examples = f.pop("examples")
        print(f"fuzz: {f['inputs']:,} inputs ({', '.join(f'{v:,} {k}' for k, v in f['by_kind'].items())}; "
              f"{f['schema_invalid']:,} runs and dumps the schema rejects) in {f['seconds']:.0f} s")
        print(f"  tracebacks {f['tracebacks']}, hangs {f['hangs']}, accepted-invalid {f['accepted_invalid']}, "
              f"rejected-valid {f['rejected_valid']}, figures-differ {f['figures_differ']}, "
              f"passed-with-a-problem {f['passed_with_problem']}")
        bad = sum(f[k] for k in ("tracebacks", "hangs", "accepted_invalid", "rejected_valid", "figures_differ",
                                 "passed_with_problem"))
        ok &= bad == 0 and f["inputs"] >= 10_000 or args.quick and bad == 0
        for e in examples:
            print("  example:", json.dumps(e, default=str)[:600])

        (tmp / "kill").mkdir()
        k = reliability.kill_nine(tmp / "kill", points=args.kills, seed=args.seed)
        print(f"kill -9: {k['kill_points']} random points, {k['checkable']} checkable, {k['continuable']} "
              f"continuable; healthy weights restored {k['restore_ok']}, refused as torn {k['restore_refused']}, "
              f"none kept yet {k['no_healthy']}")
        for failure in k["failures"]:
            print("  failure:", failure)
        ok &= k["checkable"] == k["continuable"] == k["kill_points"]

        (tmp / "faults").mkdir()
        cases = [reliability.fault_file_size_limit(tmp / "faults", 20_000, 7),
                 reliability.fault_file_size_limit(tmp / "faults", 3_000, 7),
                 reliability.fault_read_only_for_a_while(tmp / "faults", 8, (3, 5)),
                 reliability.fault_small_tmpfs(tmp / "faults", 96, 40)]
        for c in cases:
            if c is None:
                print("I/O fault: skipped (cannot make a read-only directory or mount a tmpfs here)")
                continue
            # Every record attempted is kept, or failed itself and is named in the warning; where
            # the records that could be written are known beforehand (the read-only spell), kept
            # is that number.
            expected = c.get("expected", c["attempted"] - c["reported_missing"])
            print(f"I/O fault, {c['case']}: {c['attempted']} records attempted, {c['kept']} kept, "
                  f"{c['reported_missing']} reported not written (could be written: {expected}), "
                  f"{c['problems']} problems, error {c['error']}")
            for w in c["warnings"]:
                print(f"  warning: {w}")
            ok &= (c["kept"] == expected == c["attempted"] - c["reported_missing"] and c["problems"] == 0
                   and c["error"] is None)

        (tmp / "writers").mkdir()
        w = reliability.two_writers(tmp / "writers", trials=5)
        print(f"writers: {w['trials']} second writers into a run being written: {w['silent_second_writers']} "
              f"silent, {w['refused']} refused with RunDirLockedError, {w['continued_after_kill']} continued "
              "the run once the first was killed")
        ok &= w["silent_second_writers"] == 0

        (tmp / "audit").mkdir()
        a = reliability.audit_reads(tmp / "audit")
        print(f"reads: {a['opened']} files opened reading, checking and restoring from a hostile run; "
              f"{a['outside_run_dir']} outside the run directory")
        ok &= a["outside_run_dir"] == 0
        print(f"{'all targets met' if ok else 'TARGETS MISSED'} in {time.monotonic() - started:.0f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
