"""The benchmark scripts that build their own runs still run: a column added to the run format
must reach them too (benchmarks/checking.py writes every column of a synthetic run)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_checking_benchmark_runs_on_a_tiny_synthetic_run():
    p = subprocess.run([sys.executable, "benchmarks/checking.py", "--records", "4", "--tensors", "6",
                        "--repeat", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "CLI exit code 0" in p.stdout and "'failed': 0" in p.stdout
    assert "TensorFlow imported by `weightwatch check`: False" in p.stdout
