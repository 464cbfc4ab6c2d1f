"""The README's screenshot: the HTML report of the demo's broken run.

Runs ``weightwatch demo`` (trains the healthy and the broken model; needs
TensorFlow), writes ``weightwatch report DIR/broken -o DIR/report.html``
and has headless Chromium screenshot it into ``docs/report-broken.png``::

    python benchmarks/report_screenshot.py [--out docs/report-broken.png] [--size 1100x1500]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "docs" / "report-broken.png"))
    ap.add_argument("--size", default="1100x1500", help="window WIDTHxHEIGHT")
    args = ap.parse_args()
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        raise SystemExit("no chromium found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(tmp) / "weightwatch-demo"
        ww = [sys.executable, "-m", "weightwatch"]
        subprocess.run(ww + ["demo", str(demo)], cwd=ROOT, check=False, capture_output=True)
        page = Path(tmp) / "report.html"
        subprocess.run(ww + ["report", str(demo / "broken"), "-o", str(page)], cwd=ROOT, check=True)
        # The run's path in the header as a user would type it, not the temporary folder's.
        page.write_text(page.read_text(encoding="utf-8").replace(str(demo), "weightwatch-demo").replace(str(ROOT) + "/", ""), encoding="utf-8")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        w, h = args.size.split("x")
        subprocess.run([exe, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                        f"--user-data-dir={Path(tmp) / 'profile'}", f"--window-size={w},{h}",
                        f"--screenshot={out}", page.as_uri()], check=True, capture_output=True)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
