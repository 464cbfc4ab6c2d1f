"""Detection quality of the default rule pack on the labelled scenario suite.

Builds every scenario of ``tests/scenarios.py`` (real Keras runs on generated
data), checks each with the default pack - plus the scenario's declared
intent, for the faults that cannot be seen without it - and prints:

* per scenario: expected and actual verdict, the first error rule and tensor
  that fired on the fault, and the latency (records between the fault
  becoming visible in the weights and the first finding on it);
* totals: recall per fault class, false failures on healthy runs, median
  latency.

A faulty scenario counts as caught when an error-severity finding lands on
the fault's tensors (or on the training logs) at most ``MAX_LATENCY`` records
after ``first_visible``.

Usage: ``python benchmarks/detection.py [--out DIR] [--no-build] [NAMES...]``
"""

from __future__ import annotations

import argparse
import fnmatch
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

MAX_LATENCY = 1


@dataclass
class Outcome:
    name: str
    healthy: bool
    fault_class: str
    intent: bool
    verdict: str            # "pass" / "fail": what weightwatch said
    rule: str = ""          # first error rule on the fault
    tensor: str = ""
    latency: int | None = None
    caught: bool = False
    false_failure: bool = False
    detail: str = ""        # for healthy runs that failed: what fired


def score(scenario, run) -> Outcome:
    """Check one built scenario and judge the result against its labels."""
    from weightwatch.checking.config import load_rules
    from weightwatch.checking.engine import evaluate

    rules = load_rules(list(scenario.intent and [{"rule": scenario.intent}] or []),
                       use_project_config=False)
    report = evaluate(run, rules)
    errors = [f for r in report.failed for f in r.findings]
    out = Outcome(scenario.name, scenario.healthy, scenario.fault_class or "healthy",
                  bool(scenario.intent), "fail" if errors else "pass")
    if scenario.healthy:
        out.false_failure = bool(errors)
        out.detail = "; ".join(f"{f.rule} {f.tensor or f.metric} @{f.record}" for f in errors[:3])
        return out
    on_fault = [f for f in errors if f.tensor is None
                or any(fnmatch.fnmatchcase(f.tensor, w) for w in scenario.where)]
    if on_fault:
        first = min(on_fault, key=lambda f: f.record)
        out.rule, out.tensor = first.rule, first.tensor or f"log:{first.metric}"
        out.latency = first.record - scenario.first_visible
        out.caught = out.latency <= MAX_LATENCY
    return out


def summarize(outcomes: list[Outcome]) -> dict:
    faulty = [o for o in outcomes if not o.healthy]
    classes = sorted({o.fault_class for o in faulty})
    recall = {c: (sum(o.caught for o in faulty if o.fault_class == c),
                  sum(1 for o in faulty if o.fault_class == c)) for c in classes}
    latencies = [o.latency for o in faulty if o.caught]
    free = [o for o in faulty if not o.intent]
    return {
        "recall": recall,
        "recall_intent_free": (sum(o.caught for o in free), len(free)),
        "recall_with_intent": (sum(o.caught for o in faulty if o.intent), sum(1 for o in faulty if o.intent)),
        "false_failures": sum(o.false_failure for o in outcomes if o.healthy),
        "healthy": sum(1 for o in outcomes if o.healthy),
        "median_latency": statistics.median(latencies) if latencies else None,
    }


def render(outcomes: list[Outcome], summary: dict, seconds: dict | None = None) -> str:
    lines = [f"{'scenario':38}{'expect':>7}{'got':>6}  {'rule':22}{'latency':>8}  tensor / what fired",
             "-" * 110]
    for o in outcomes:
        expect = "pass" if o.healthy else "fail"
        mark = "" if (o.healthy and not o.false_failure) or o.caught else "  <-- MISS"
        lat = "" if o.latency is None else f"{o.latency:+d}"
        what = o.detail if o.healthy else o.tensor
        intent = " (intent)" if o.intent else ""
        lines.append(f"{o.name + intent:38}{expect:>7}{o.verdict:>6}  {o.rule:22}{lat:>8}  {what}{mark}")
    lines.append("-" * 110)
    for c, (hit, n) in summary["recall"].items():
        lines.append(f"recall {c:22} {hit}/{n}")
    a, n = summary["recall_intent_free"]
    b, m = summary["recall_with_intent"]
    lines.append(f"recall, faults visible without intent: {a}/{n} ({100 * a / max(n, 1):.0f}%); "
                 f"with declared intent: {b}/{m}")
    lines.append(f"false failures on healthy runs: {summary['false_failures']}/{summary['healthy']}")
    lines.append(f"median latency (records after the fault is visible): {summary['median_latency']}")
    if seconds:
        lines.append(f"build time: {sum(seconds.values()):.0f} s for {len(seconds)} runs "
                     f"(max {max(seconds.values()):.1f} s: {max(seconds, key=seconds.get)})")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="build runs here (default: a temporary directory)")
    ap.add_argument("--no-build", action="store_true", help="reuse runs already in --out")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args(argv)
    import scenarios as sc
    from weightwatch.run.reader import open_run

    chosen = [sc.get(n) for n in args.names] if args.names else sc.SCENARIOS
    tmp = None
    out = Path(args.out) if args.out else Path(tmp := tempfile.mkdtemp(prefix="ww-detection-"))
    outcomes, seconds = [], {}
    for s in chosen:
        run_dir = out / s.name
        if not (args.no_build and run_dir.exists()):
            t = time.perf_counter()
            sc.build(s, out)
            seconds[s.name] = time.perf_counter() - t
        outcomes.append(score(s, open_run(run_dir)))
    summary = summarize(outcomes)
    print(render(outcomes, summary, seconds))
    if tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    ok = summary["false_failures"] == 0 and all(o.caught for o in outcomes if not o.healthy)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
