"""A slice of the fuzz harness (tests/fuzz.py): mutated runs, seed dumps, rule files and -k
expressions, each in a worker process with memory and time limits, against the strict schema
as the oracle.  ``python benchmarks/reliability.py`` runs the full count."""

from __future__ import annotations

import pytest

import fuzz

pytestmark = pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="POSIX only")


def test_fuzzed_inputs_give_no_traceback_no_hang_and_no_invalid_run_taken_as_valid(tmp_path):
    counts = fuzz.fuzz(400, seed=20240601, tmp=tmp_path)
    examples = counts.pop("examples")
    assert counts["inputs"] == 400 and all(counts["by_kind"].values())
    bad = {k: counts[k] for k in ("tracebacks", "hangs", "accepted_invalid", "rejected_valid",
                                  "figures_differ", "passed_with_problem")}
    assert bad == dict.fromkeys(bad, 0), examples


def test_the_oracle_and_the_harness_see_damage():
    """The harness is not vacuous: the oracle rejects what the issue reproduced."""
    import json
    import shutil
    import tempfile
    from pathlib import Path

    tmp = Path(tempfile.mkdtemp())
    try:
        base = fuzz.build_bases(tmp)["run"]
        assert fuzz.oracle_run(base)["bad"] == set()
        shutil.copy(base / "record-000001.json", base / "record-000002.json")
        data = json.loads((base / "record-000003.json").read_text())
        data["logs"] = {"lors": 1.0}
        (base / "record-000003.json").write_text(json.dumps(data))
        assert fuzz.oracle_run(base)["bad"] == {"record-000002.json", "record-000003.json"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
