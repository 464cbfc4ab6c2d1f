"""``weightwatch diff``'s table on a terminal of ordinary width: whole paths, spikes kept."""

from __future__ import annotations

import numpy as np
from rich.console import Console
from runbuilder import make_run

from weightwatch.output.diff import _shared_sparklines, render_diff

PATHS = ["transformer_3/encoder_11/attention_out/kernel",
         "transformer_3/encoder_11/feed_forward/kernel"]


def _pair(records=60):
    grow = list(np.linspace(1.0, 2.0, records))
    a = make_run({p: {"l2": grow} for p in PATHS}, records)
    b = make_run({PATHS[0]: {"l2": [3.0 * v for v in grow]}, PATHS[1]: {"l2": grow}}, records)
    for run in (a, b):
        run.manifest["model"] = "transformer_3"
    return a, b


def test_sparklines_and_the_model_name_give_way_so_tensor_paths_stay_whole_at_80_columns():
    console = Console(width=80, record=True, color_system=None)
    a, b = _pair()
    assert render_diff(a, b, console) > 0
    lines = console.export_text().splitlines()
    table = lines[next(i for i, ln in enumerate(lines) if ln.startswith("figure")) + 1:]
    rows = [ln for ln in table if ln.strip() and not ln.startswith("...")]
    assert rows and not any(ln.startswith(" ") for ln in rows), "\n".join(lines)   # nothing folded
    # the model's name is said once, above the table, as matching ignores it
    assert "tensor paths below are in model 'transformer_3'" in "\n".join(lines)
    local = PATHS[0].split("/", 1)[1]
    assert f" {local} " in rows[0] and "transformer_3/" not in rows[0]
    assert all(len(ln.rstrip()) <= 80 for ln in rows)
    assert any(ch in rows[0] for ch in "▁▂▃▄▅▆▇█")


def test_sparklines_keep_a_spike_when_they_shorten_a_long_history():
    a = np.full(100, 1.0)
    b = np.full(100, 1.0)
    b[37] = 50.0                       # one record of 100 departs
    spark_a, spark_b = _shared_sparklines(a, b, 24)
    assert len(spark_a) == len(spark_b) == 24
    assert "█" in spark_b and "█" not in spark_a
