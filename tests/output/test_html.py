"""The HTML report: what it holds, that it is self-contained, and that a real browser renders it.

The browser tests run headless Chromium (Debian's ``chromium``; CI installs
it) and skip, saying so, where none is found.  A page's console messages
(uncaught errors, ``console.*``, and every request the Content-Security-
Policy blocked) reach Chromium's stderr as ``:CONSOLE`` lines; the report
itself writes none, so any such line is a failure.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from runbuilder import MLP, write_healthy_run, write_nan_run, write_run
from weightwatch.checking.config import load_rules
from weightwatch.checking.engine import evaluate
from weightwatch.cli import main
from weightwatch.output import get_format
from weightwatch.output.github import job_summary
from weightwatch.output.html import CSP, html_report, write_html
from weightwatch.output.svg import downsample, png
from weightwatch.run.reader import open_run

URL = re.compile(r"""(?:src|href|url)\s*[=(]\s*["']?\s*(?:https?:)?//""", re.I)


def _report(run_dir):
    return evaluate(open_run(run_dir), load_rules(use_project_config=False))


@pytest.fixture(scope="module")
def nan_html(tmp_path_factory):
    d = tmp_path_factory.mktemp("html")
    report = _report(write_nan_run(d / "nanrun"))
    path = write_html([report], d / "report.html")
    return report, path, path.read_text(encoding="utf-8")


# -- content ----------------------------------------------------------------------------------

def test_report_is_self_contained(nan_html):
    _, _, html = nan_html
    assert f'content="{CSP}"' in html and "default-src 'none'" in CSP
    assert not URL.search(html), "the report references something outside itself"
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html and "@import" not in html and "@font-face" not in html


def test_failing_tensor_chart_marks_the_violating_records(nan_html):
    report, _, html = nan_html
    assert 'class="verdict v-failed">FAILED' in html
    assert "training diverged" in html                  # the diagnosis
    m = re.search(r'<svg class="chart" data-tensor="dense/kernel" data-first="2".*?</svg>', html)
    assert m, "no chart for the failing tensor"
    chart = m.group()
    assert 'class="violation first" data-record="2"' in chart
    assert 'class="violation" data-record="3"' in chart    # still NaN at record 3
    assert 'class="limit"' in chart                       # the limit (0 NaN) drawn
    assert "dense/kernel holds 3 NaN/Inf values" in html
    hint = report.results[0].rule.hint
    assert hint and hint.split(",")[0] in html
    assert 'data-rule="nonfinite-loss"' in html           # the log rule too
    assert 'id="filter"' in html and html.count('class="sm') >= len(MLP)
    assert "data:image/png;base64," in html               # the heatmap


def test_healthy_run_says_so(tmp_path):
    html = html_report([_report(write_healthy_run(tmp_path / "ok"))])
    assert "v-passed" in html and "No rule failed or warned" in html


def test_unopenable_run_still_gets_a_report(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    rc = main(["check", str(tmp_path / "bad"), "--no-config", "-q", "--html", str(tmp_path / "r.html")])
    assert rc == 4
    html = (tmp_path / "r.html").read_text()
    assert "v-error" in html and "invalid JSON" in html


def test_check_html_and_report_command(tmp_path, capsys):
    run = write_nan_run(tmp_path / "run")
    assert main(["check", str(run), "--no-config", "-q", "--html", str(tmp_path / "a" / "c.html")]) == 1
    assert "dense/kernel" in (tmp_path / "a" / "c.html").read_text()
    # report draws, it does not gate: exit 0 with the verdict printed
    assert main(["report", str(run), str(write_healthy_run(tmp_path / "ok")), "--no-config",
                 "-o", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "2 failed" in out
    html = (tmp_path / "r.html").read_text()
    assert html.count('<article class="report">') == 2
    assert get_format("html").flag == "--html"


def test_long_histories_are_downsampled_for_drawing_only():
    y = np.linspace(1, 2, 10_000)
    y[7_777] = 50.0       # a spike
    y[3_333] = np.nan     # a NaN
    idx, vals = downsample(y, 400)
    assert len(idx) <= 400
    assert 7_777 in idx and 3_333 in idx
    assert np.all(np.diff(idx) > 0)
    short = np.arange(10.0)
    assert list(downsample(short)[0]) == list(range(10))


def test_large_run_report_is_small(tmp_path):
    """1,000 records x 40 tensors in memory: the drawing stays bounded (the benchmark does 200)."""
    R, T = 1000, 40
    tensors = {f"b{i // 2}/d/{'kernel' if i % 2 == 0 else 'bias'}": {"shape": [8, 8] if i % 2 == 0 else [8]}
               for i in range(T)}
    rng = np.random.default_rng(0)
    records = [{"logs": {"loss": float(1 / (1 + r))},
                "rows": {p: {"l2": float(1 + 0.001 * r + rng.random() * 0.01)} for p in tensors}}
               for r in range(R)]
    report = _report(write_run(tmp_path / "big", tensors, records))
    html = html_report([report])
    assert len(html) < 5_000_000 * T / 200


def test_png_writer_round_trips():
    img = np.zeros((3, 5, 3), np.uint8)
    img[1, 2] = (255, 0, 170)
    data = png(img)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    idat = data[data.index(b"IDAT") + 4: data.index(b"IEND") - 8]
    raw = zlib.decompress(idat)
    assert len(raw) == 3 * (1 + 5 * 3) and raw[1 + 16 + 6: 1 + 16 + 9] == bytes((255, 0, 170))


# -- GitHub job summary -----------------------------------------------------------------------

def test_job_summary_written_under_github_actions(tmp_path, monkeypatch, capsys):
    run = write_nan_run(tmp_path / "run")
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert main(["check", str(run), "--no-config", "-q"]) == 1
    text = summary.read_text()
    assert text.startswith("earlier step\n")          # appended, never overwritten
    assert ":x: failed" in text
    assert "| `nonfinite-weights` | failed | `dense/kernel` | epoch 2 | dense/kernel holds 3 NaN/Inf values |" in text
    assert "training diverged" in text
    assert "::error " in capsys.readouterr().out       # the annotations still go to stdout


def test_no_job_summary_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.chdir(tmp_path)
    assert main(["check", str(write_nan_run(tmp_path / "run")), "--no-config", "-q"]) == 1
    assert not list(tmp_path.glob("*.md"))


def test_job_summary_escapes_table_cells(tmp_path):
    rs = load_rules({"rule": [{"id": "odd", "check": "nonfinite", "message": "a|b\nc <x>"}]},
                    use_project_config=False)
    report = evaluate(open_run(write_nan_run(tmp_path / "run")), rs)
    text = job_summary([report])
    assert "a\\|b c &lt;x&gt;" in text
    assert ":white_check_mark:" in job_summary([_report(write_healthy_run(tmp_path / "ok"))])


# -- in a real browser ------------------------------------------------------------------------

def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


BROWSER = _browser()
needs_browser = pytest.mark.skipif(
    BROWSER is None, reason="no headless browser found (apt-get install chromium): browser tests skipped")


def _chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BROWSER, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--no-first-run",
         f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0", *args, page.as_uri()],
        capture_output=True, text=True, timeout=120)


def render(page: Path, tmp: Path, size=(1280, 1600)):
    """(DOM after scripts ran, console lines, screenshot path) of ``page`` in headless Chromium."""
    dom = _chromium(page, tmp, f"--window-size={size[0]},{size[1]}", "--dump-dom")
    shot = tmp / f"{page.stem}.png"
    snap = _chromium(page, tmp, f"--window-size={size[0]},{size[1]}", f"--screenshot={shot}")
    console = [ln for ln in (dom.stderr + snap.stderr).splitlines() if ":CONSOLE" in ln]
    return dom.stdout, console, shot


def _png_pixels(path: Path) -> np.ndarray | None:
    """The screenshot's pixels, if Pillow is installed."""
    try:
        from PIL import Image
    except ImportError:
        return None
    return np.asarray(Image.open(path).convert("RGB"))


@needs_browser
def test_the_harness_catches_errors_and_requests(tmp_path):
    """The checks below would see a broken page: a script error and a blocked fetch."""
    page = tmp_path / "bad.html"
    page.write_text(f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="{CSP}">'
                    '</head><body><img src="http://127.0.0.1:9/x.png"><script>null.x;</script></body></html>')
    _, console, _ = render(page, tmp_path, size=(400, 300))
    text = "\n".join(console)
    assert "Uncaught TypeError" in text and "127.0.0.1:9" in text


@needs_browser
def test_report_renders_in_a_browser(nan_html, tmp_path):
    _, path, _ = nan_html
    dom, console, shot = render(path, tmp_path)
    assert console == [], "console errors or blocked requests:\n" + "\n".join(console)
    assert 'data-ready="1"' in dom, "the report's script did not run to the end"
    assert "<html data-errors" not in dom and " data-errors=" not in dom
    # the failing tensor's chart, with its first violating record, laid out with a size
    assert re.search(r'data-tensor="dense/kernel" data-first="2"', dom)
    shown = int(re.search(r'data-violations-shown="(\d+)"', dom).group(1))
    assert shown >= 3          # dense/kernel records 2 and 3 in its chart, and in its small multiple
    # a screenshot that is not blank
    assert shot.exists()
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    _, _, blank_shot = render(blank, tmp_path)
    assert shot.stat().st_size > 5 * blank_shot.stat().st_size, "the screenshot looks blank"
    pixels = _png_pixels(shot)
    if pixels is not None:
        colours = np.unique(pixels.reshape(-1, 3), axis=0)
        assert len(colours) > 50
        red = np.all(np.abs(pixels.astype(int) - (198, 40, 40)) < 30, axis=-1)
        assert red.sum() > 200     # the FAILED badge, violations and limit lines


@needs_browser
def test_large_report_opens_quickly(tmp_path):
    import time

    R, T = 400, 60
    tensors = {f"b{i // 2}/d/{'kernel' if i % 2 == 0 else 'bias'}": {"shape": [8, 8] if i % 2 == 0 else [8]}
               for i in range(T)}
    records = [{"logs": {"loss": float(1 / (1 + r))}} for r in range(R)]
    path = write_html([_report(write_run(tmp_path / "big", tensors, records))], tmp_path / "big.html")
    started = time.perf_counter()
    dom, console, _ = render(path, tmp_path)
    assert console == [] and 'data-ready="1"' in dom
    assert time.perf_counter() - started < 30     # two browser starts on a shared machine


def test_gradient_heatmap_where_the_run_records_gradients(tmp_path):
    """grad_rms is drawn next to the update ratio when recorded; an old run says it is not."""
    with_grads = evaluate(open_run(write_healthy_run(tmp_path / "grads")), load_rules(use_project_config=False))
    page = html_report([with_grads])
    assert 'alt="gradient heatmap"' in page and 'alt="update ratio heatmap"' in page
    rows = {"dense/kernel": {"grad_rms": None}, "dense/bias": {"grad_rms": None},
            "out/kernel": {"grad_rms": None}, "out/bias": {"grad_rms": None}}
    none = write_run(tmp_path / "none", MLP, [{"logs": {}, "rows": rows}, {"logs": {"loss": 1.0}, "rows": rows}])
    page = html_report([evaluate(open_run(none), load_rules(use_project_config=False))])
    assert 'alt="gradient heatmap"' not in page and "Gradient magnitude is not recorded" in page


@needs_browser
def test_the_reference_band_is_drawn_under_the_curves(tmp_path):
    from runbuilder import trajectory_run
    from weightwatch.checking.baseline import learn_baseline

    base = learn_baseline([trajectory_run(tmp_path / f"ref{s}", jitter=0.02 * (s + 1)) for s in range(3)])
    run = open_run(trajectory_run(tmp_path / "lr3", lr=3.0, jitter=0.05))
    report = evaluate(run, load_rules(use_project_config=False), baseline=base)
    assert report.failed
    path = write_html([report], tmp_path / "baseline.html")
    html = path.read_text(encoding="utf-8")
    finding = next(f for r in report.failed for f in r.findings)
    assert finding.band_history and len(finding.band_history) == len(run.records)
    # one band per failing chart, and one under every tensor's norm
    assert html.count('class="band"') >= len(run.tensors) + 1
    assert "the reference runs' band" in html
    dom, console, _ = render(path, tmp_path)
    assert console == [] and 'data-ready="1"' in dom
    plain = write_html([_report(run.path)], tmp_path / "plain.html").read_text(encoding="utf-8")
    assert 'class="band"' not in plain
