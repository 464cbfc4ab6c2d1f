"""Reading, inspecting and showing a run never imports TensorFlow or Keras.

Checked in a fresh interpreter, since this test process has long imported
both.  The run directory is a real Keras-recorded one; the seed folder is a
hand-written one in the naive format.
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import io, json, sys
import weightwatch
from rich.console import Console
from weightwatch.output.show import render_show

assert "WatchCallback" in dir(weightwatch)  # listed, yet not imported until used
found = {}
for name in sys.argv[1:]:
    run = weightwatch.open_run(name)
    run.metric("l2"); run.history(run.tensor_names[0], "d_l2"); run.log("loss"); run.verdict
    if run.source == "weightwatch":
        run.tensors_at()
    render_show(run, Console(file=io.StringIO(), width=120))
    found[name] = [run.source, len(run.records), len(run.problems)]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras", "jax", "torch"))
print(json.dumps({"runs": found, "heavy": heavy}))
"""


def test_reading_a_run_does_not_import_tensorflow(recorded_run, tmp_path, child_env):
    run_dir, _ = recorded_run
    seed = tmp_path / "seed"
    seed.mkdir()
    for n in (1, 2):
        (seed / f"weights_epoch_{n}.json").write_text(json.dumps({"dense": [[[0.5 * n, 1.0]], [0.0]]}))
    out = subprocess.run([sys.executable, "-c", CHILD, str(run_dir), str(seed)], env=child_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["runs"] == {str(run_dir): ["weightwatch", 4, 0], str(seed): ["seed", 2, 0]}
    assert result["heavy"] == [], f"reading a run imported {result['heavy'][:10]}"
