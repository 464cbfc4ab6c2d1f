"""``weightwatch show``: the per-tensor table, rendered into a recording rich Console."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from rich.console import Console

import weightwatch
from runbuilder import record_arrays
from weightwatch.run.writer import RunWriter
from weightwatch.output.show import elide_middle, fmt, render_show
from weightwatch.output.text import BARS, sparkline


def render(run, **kw):
    console = Console(record=True, width=160, color_system="truecolor", force_terminal=True)
    render_show(run, console, **kw)
    return console.export_text(clear=False), console.export_text(styles=True)


def line_of(text, path):
    lines = [ln for ln in text.splitlines() if ln.split() and ln.split()[0] == path]
    assert len(lines) == 1, f"{path!r} should be on exactly one line of:\n{text}"
    return lines[0]


def styled(ansi, style_code, content):
    """True when ``content`` is printed with the SGR ``style_code`` (e.g. '31' red, '33' yellow)."""
    return re.search(r"\x1b\[(?:[0-9]+;)*" + style_code + r"(?:;[0-9]+)*m *" + re.escape(content) + r"\b",
                     ansi) is not None


# -- sparkline ----------------------------------------------------------------------------------

def test_sparkline_scales_min_to_lowest_and_max_to_highest():
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == BARS
    assert sparkline([7, 0]) == "█▁"
    assert sparkline(np.array([10.0, 10.5, 11.0])) == "▁▅█"
    assert sparkline([-3, -1]) == "▁█"


def test_sparkline_non_finite_is_a_space_and_flat_is_mid_height():
    assert sparkline([1, math.nan, 3]) == "▁ █"
    assert sparkline([math.inf, 1, 2, -math.inf]) == " ▁█ "
    assert sparkline([math.nan, math.nan]) == "  "
    assert sparkline([2.0, 2.0, 2.0]) == "▄▄▄"
    assert sparkline([5.0, math.nan]) == "▄ "
    assert sparkline([1.0, 1.0 + 1e-15]) == "▄▄"  # rounding noise is not a trend
    assert sparkline([]) == ""


def test_sparkline_width_averages_down_but_never_stretches():
    long = np.arange(100, dtype=float)
    s = sparkline(long, width=10)
    assert len(s) == 10 and s[0] == "▁" and s[-1] == "█"
    assert [BARS.index(c) for c in s] == sorted(BARS.index(c) for c in s)
    assert sparkline([1, 2, 3], width=10) == sparkline([1, 2, 3]) and len(sparkline([1, 2, 3], width=10)) == 3
    # A NaN inside a bucket is not averaged away.
    long[55] = math.nan
    s = sparkline(long, width=10)
    assert s[5] == " " and s.count(" ") == 1
    with pytest.raises(ValueError, match="Received: width=0"):
        sparkline([1, 2], width=0)


def test_fmt_three_significant_digits():
    assert [fmt(x) for x in (0.0, 1234.5, 0.012345, 3.0, 1e-7, math.nan, None, math.inf)] == [
        "0", "1.23e3", "0.0123", "3", "1e-7", "–", "–", "inf"]


# -- the table on a real recorded run ---------------------------------------------------------------

def test_show_real_run(recorded_run):
    run_dir, paths = recorded_run
    run = weightwatch.open_run(run_dir)
    text, _ = render(run)
    header = text.splitlines()[0]
    assert str(run_dir) in header
    for part in ("source weightwatch", "records 4", "epochs 0–3", "tensors 4", "model tiny"):
        assert part in header, part
    # every path is in model "tiny": said once, the table lists the paths without it
    assert text.splitlines()[1] == "tensor paths below are in model 'tiny' (tiny/...)"
    l2, d_l2 = run.metric("l2"), run.metric("d_l2")
    for i, path in enumerate(paths):
        assert path.startswith("tiny/") and path not in text
        line = line_of(text, path[len("tiny/"):])
        t = run.tensors[run.tensor_index(path)]
        cells = line.split()
        assert cells[1] == "×".join(map(str, t.shape)) and cells[2] == "float32" and cells[3] == "trainable"
        assert cells[4] == fmt(l2[-1, i])
        assert cells[5] == fmt(d_l2[-1, i] / l2[-2, i])
        assert cells[6:8] == ["0", "0"]
        assert line.rstrip().endswith(sparkline(l2[:, i]).rstrip())
        assert len(line) <= 160
    assert "unreadable" not in text


# -- hand-built runs for the corner cases -------------------------------------------------------------

@pytest.fixture
def corner_run(tmp_path):
    """Three records, built with the real writer: frozen, non-trainable, late, zero-start, going NaN."""
    records = []
    base = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    for k in range(3):
        arrays = {
            "m/fc/kernel": (base * (1 + k)).astype(np.float32),
            "m/fc/bias": np.full(4, 0.1 * k, np.float32),                       # starts at exactly 0
            "m/frozen/kernel": base.copy(),
            "m/bn/moving_mean": np.full(4, 0.5 + k, np.float32),
            "m/bad/kernel": base if k < 2 else np.where(base > 0, np.inf, np.nan).astype(np.float32),
        }
        if k >= 1:
            arrays["m/late/kernel"] = base * k
        records.append(arrays)
    return record_arrays(tmp_path / "run", records, model="corners",
                         flags={"m/frozen/kernel": (False, True), "m/bn/moving_mean": (False, False)})


def test_show_flags_ratios_and_nan(corner_run):
    run = weightwatch.open_run(corner_run)
    text, ansi = render(run)
    assert "model corners" in text.splitlines()[0]
    assert line_of(text, "m/frozen/kernel").split()[3] == "frozen"
    assert line_of(text, "m/bn/moving_mean").split()[3] == "non-trainable"
    assert line_of(text, "m/fc/kernel").split()[3] == "trainable"
    # 2x -> 3x the base: ||dW|| / ||W_prev|| = 1/2.
    assert line_of(text, "m/fc/kernel").split()[5] == "0.5"
    assert line_of(text, "m/frozen/kernel").split()[4:6] == [fmt(float(np.linalg.norm(np.linspace(-1, 1, 12)))), "0"]
    # The late tensor: no figure at record 0, so its sparkline starts with a space.
    late = line_of(text, "m/late/kernel")
    assert late.rstrip().endswith(" ▁█")
    # Weights gone non-finite: L2 shown as nan, counts highlighted, last sparkline point blank.
    bad = line_of(text, "m/bad/kernel").split()
    assert bad[4] == "nan" and bad[5] == "–" and bad[6:8] == ["6", "6"]
    assert styled(ansi, "31", "6")
    assert line_of(text, "m/bad/kernel").rstrip().endswith("▄▄")
    assert not styled(ansi, "31", "0")


def test_show_zero_start_bias_ratio_is_inf(tmp_path):
    d = record_arrays(tmp_path / "run", [{"m/b/bias": np.full(3, 0.5 * k, np.float32)} for k in range(2)])
    text, _ = render(weightwatch.open_run(d))
    assert line_of(text, "b/bias").split()[4:6] == [fmt(math.sqrt(3 * 0.25)), "inf"]


def test_show_seed_run_has_unknown_flags_and_lists_problems(tmp_path):
    d = tmp_path / "dumps"
    d.mkdir()
    (d / "weights_epoch_1.json").write_text(json.dumps({"fc": [[[1.0, 2.0]], [0.0]]}))
    (d / "weights_epoch_2.json").write_text('{"fc": [[[1.0, NaN]], [0.5]]}')
    (d / "weights_epoch_3.json").write_text('{"fc": [[[1.0, 2.0], [3.0]], [0.5]]}')  # ragged
    run = weightwatch.open_run(d)
    text, ansi = render(run)
    header = text.splitlines()[0]
    assert "source seed" in header and "records 2" in header and "epochs 1–2" in header
    assert "model" not in header
    kernel = line_of(text, "fc/0").split()
    assert kernel[1:5] == ["1×2", "float64", "?", "1"] and kernel[6:8] == ["1", "0"]
    assert styled(ansi, "31", "1")
    assert line_of(text, "fc/1").split()[3] == "?"
    # The unreadable file, in yellow, after the table.
    lines = text.splitlines()
    at = next(i for i, ln in enumerate(lines) if "unreadable file" in ln)
    assert at > max(i for i, ln in enumerate(lines) if ln.startswith("fc/"))
    assert any(str(d / "weights_epoch_3.json") in ln and "'fc/0'" in ln for ln in lines[at:])
    assert styled(ansi, "33", "  " + str(d / "weights_epoch_3.json"))


def test_show_run_without_tensors(tmp_path):
    d = tmp_path / "run"
    w = RunWriter(d, model_name="lazy")
    w.write_record(epoch=0, batch=None, step=0, trigger="begin", rows={}, logs={}, wall=0.0)
    text, _ = render(weightwatch.open_run(d))
    assert "records 1" in text and "epochs 0" in text and "tensors 0" in text
    assert "no tensors recorded" in text


def test_show_long_run_sparkline_is_bounded(tmp_path):
    d = record_arrays(tmp_path / "run", [{"m/w/kernel": np.full((2, 2), 1.0 + k, np.float32)} for k in range(200)])
    text, _ = render(weightwatch.open_run(d), spark_width=20)
    line = line_of(text, "w/kernel")
    spark = line.rstrip()[-20:]
    assert set(spark) <= set(BARS) and spark[0] == "▁" and spark[-1] == "█"
    assert "epochs 0–199" in text and "records 200" in text


def test_show_states_the_model_prefix_once_and_keeps_the_paths_whole_at_80_columns(tmp_path):
    """The demo's paths (spirals/hidden1/kernel ...) were elided by one character at 80 columns
    to keep the trend: without the shared prefix they fit whole."""
    names = {"spirals/hidden1/kernel": (5, 64), "spirals/bn/moving_variance": (64,),
             "spirals/logits/kernel": (64, 3)}
    d = record_arrays(tmp_path / "run", [{p: np.full(s, 1.0 + k, np.float32) for p, s in names.items()}
                                         for k in range(13)], model="spirals")
    console = Console(record=True, width=80)
    render_show(weightwatch.open_run(d), console)
    lines = console.export_text().splitlines()
    assert lines[1] == "tensor paths below are in model 'spirals' (spirals/...)"
    assert [ln.split()[0] for ln in lines[3:] if ln.strip()] == [
        "hidden1/kernel", "bn/moving_variance", "logits/kernel"]
    assert all(len(ln) <= 80 for ln in lines[1:]) and "…" not in console.export_text()
    # a run whose tensors do not all carry the prefix keeps every path as it is
    d2 = record_arrays(tmp_path / "mixed", [{"spirals/a/kernel": np.ones((2, 2), np.float32) * (k + 1),
                                             "other/kernel": np.ones((2, 2), np.float32)}
                                            for k in range(3)], model="spirals")
    text, _ = render(weightwatch.open_run(d2))
    assert "tensor paths below" not in text and line_of(text, "spirals/a/kernel")


def test_show_fits_80_columns_eliding_long_names_in_the_middle(tmp_path):
    long = "functional_model/encoder_block_with_a_long_name/dense_projection_layer/kernel"
    d = record_arrays(tmp_path / "run", [{long: np.full((4, 4), 1.0 + k, np.float32),
                                          "short/kernel": np.full((3, 3), 1.0 + k / 10, np.float32)}
                                         for k in range(12)])
    console = Console(record=True, width=80)
    render_show(weightwatch.open_run(d), console)
    lines = console.export_text().splitlines()
    assert all(len(ln) <= 80 for ln in lines[1:]), lines       # the header may soft-wrap its path
    rows = [ln for ln in lines[2:] if ln.strip()]
    assert len(rows) == 2, "a long name must not wrap onto more lines"
    name = rows[0].split()[0]
    assert name.startswith("functio") and name.endswith("kernel") and "…" in name
    trend = rows[0].split()[-1]
    assert len(trend) >= 8 and trend[0] == "▁" and trend[-1] == "█", rows[0]   # not cut to 3 characters
    assert rows[1].split()[0] == "short/kernel"


def test_elide_middle():
    assert elide_middle("abcdefghij", 20) == "abcdefghij"
    assert elide_middle("abcdefghij", 5) == "ab…ij"
