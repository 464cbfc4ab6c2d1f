"""How big is the HTML report of a large run, and how fast does a browser open it?

Builds the synthetic run of ``checking.py`` (default 1,000 records x 200
tensors, on disk with its journal), checks it with the default pack, and
measures:

* ``html_report``: re-opening the run and drawing every chart (seconds);
* the report's size (the issue's budget: about 5 MB);
* the time headless Chromium takes to load it and run its script to the end
  (``--dump-dom``), minus the same for an empty page (the browser's own
  start-up): the issue's budget is 2 s.

Usage: ``python benchmarks/report.py [--records N] [--tensors N] [--repeat N]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from checking import build_run  # noqa: E402
from weightwatch.checking.config import load_rules  # noqa: E402
from weightwatch.checking.engine import evaluate  # noqa: E402
from weightwatch.output.html import html_report  # noqa: E402
from weightwatch.run.reader import open_run  # noqa: E402


def browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def load_time(exe: str, page: Path, profile: Path) -> float:
    t = time.perf_counter()
    out = subprocess.run([exe, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={profile}",
                          "--window-size=1280,1600", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - t
    if page.suffix == ".html" and "report" in page.name and 'data-ready="1"' not in out.stdout:
        raise SystemExit(f"the report's script did not finish in the browser:\n{out.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--tensors", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = tmp / "run"
        build_run(run, args.records, args.tensors)
        report = evaluate(open_run(run), load_rules(use_project_config=False))
        gen = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            html = html_report([report])
            gen.append(time.perf_counter() - t)
        page = tmp / "report.html"
        page.write_text(html, encoding="utf-8")
        size = page.stat().st_size
        print(f"run: {args.records} records x {args.tensors} tensors ({report.summary()})")
        print(f"html_report (re-open run + draw): {statistics.median(gen):.2f} s (median of {args.repeat})")
        print(f"report size: {size / 1e6:.2f} MB ({size:,} bytes; budget ~5 MB)")
        exe = browser()
        if exe is None:
            print("render time: no chromium found (apt-get install chromium), not measured")
            return
        blank = tmp / "blank.htm"
        blank.write_text("<!DOCTYPE html><html><body></body></html>")
        load_time(exe, blank, tmp / "profile")   # warm-up
        base, full = [], []
        for _ in range(args.repeat):
            base.append(load_time(exe, blank, tmp / "profile"))
            full.append(load_time(exe, page, tmp / "profile"))
        b, f = statistics.median(base), statistics.median(full)
        print(f"headless Chromium, load + script done: {f:.2f} s; empty page {b:.2f} s; "
              f"render time of the report ~{max(f - b, 0):.2f} s (budget 2 s)")


if __name__ == "__main__":
    main()
