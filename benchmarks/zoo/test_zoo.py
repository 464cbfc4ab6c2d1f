"""Tests of the run zoo: the enumeration, the scorer's arithmetic, and the fast subset end to end.

``python -m pytest benchmarks/zoo/test_zoo.py`` (the fast subset trains ~20 small runs: about a
minute on 2 CPU cores).  The enumeration tests import neither TensorFlow nor Keras.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for p in (str(HERE), str(HERE.parent.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import specs  # noqa: E402


def test_zoo_size_and_axes():
    all_ = specs.all_specs()
    healthy = [s for s in all_ if s.healthy]
    faulty = [s for s in all_ if not s.healthy]
    assert len(healthy) >= 400 and len(faulty) >= 200
    assert len({s.family for s in healthy}) >= 8
    assert len({s.optimizer for s in healthy}) >= 6
    assert len({s.fault for s in faulty}) >= 12
    assert sum(s.onset_epoch > 1 for s in faulty) >= 50, "faults must start mid-run too"
    assert {s.schedule for s in healthy} >= {"warmup_cosine", "exp_decay", "plateau", "constant"}
    assert any("early_stopping" in s.callbacks for s in healthy)
    assert any(s.mixed_precision for s in healthy)
    freq = [s for s in healthy if s.freq != "epoch"]
    assert any(s.steps_per_epoch % s.freq == 0 for s in freq) and any(s.steps_per_epoch % s.freq for s in freq)
    assert all(4 <= s.epochs <= 12 for s in all_)
    assert len({s.id for s in all_}) == len(all_)


def test_enumeration_is_deterministic_and_json_round_trips():
    a, b = specs.all_specs(), specs.all_specs()
    assert [s.to_dict() for s in a] == [s.to_dict() for s in b]
    for s in a[:50] + a[-50:]:
        assert specs.Spec.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_fast_subset_covers_every_family_and_class():
    fast = specs.fast_subset()
    assert len(fast) <= 24
    assert {s.family for s in fast} == set(specs.FAMILIES)
    assert {s.fault for s in fast if s.fault} == set(specs.FAULT_CLASSES)


def test_wilson_upper_bound():
    import score

    # 0 failures in n runs: about 3.84 / (n + 3.84)
    assert abs(score.wilson_upper(0, 400) - 3.84 / 403.84) < 2e-4
    assert score.wilson_upper(0, 0) == 1.0
    assert 0.05 < score.wilson_upper(2, 100) < 0.08


def test_fast_subset_end_to_end(tmp_path):
    """Record the fast subset, derive truth, score it with the default pack."""
    pytest.importorskip("keras")
    import record
    import score

    cache = tmp_path / "zoo"
    assert record.main(["--subset", "fast", "--cache", str(cache)]) == 0
    fast = specs.fast_subset()
    truths = {s.id: json.loads((cache / s.id / "truth.json").read_text()) for s in fast}
    labels = Counter(t["label"] for t in truths.values())
    assert labels["dropped"] <= 3, truths
    # most injected faults manifest as their own class
    manifested = sum(t["label"] == t["injected"] for t in truths.values() if t["injected"] != "healthy")
    assert manifested >= len(specs.FAULT_CLASSES) - 4, {k: (t["injected"], t["label"], t["reason"])
                                                        for k, t in truths.items()}
    for t in truths.values():
        if t["label"] not in ("healthy", "dropped"):
            assert t["onset_record"] is not None and t["onset_record"] >= 1
    # resumable: nothing left to record
    assert record.main(["--subset", "fast", "--cache", str(cache)]) == 0
    out = tmp_path / "outcomes.json"
    assert score.main(["--cache", str(cache), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert len(data["outcomes"]) == sum(t["label"] != "dropped" for t in truths.values())
