"""replica-divergence on hand-made histories, and the checksum spread it judges.

Real data-parallel runs (MirroredStrategy, JAX DataParallel, 2 processes on
JAX and on torch) are in tests/recording/test_distributed.py.
"""

import math

import numpy as np
import pytest

from weightwatch.checking.config import load_rules
from weightwatch.checking.diagnosis import diagnose
from weightwatch.checking.engine import evaluate
from weightwatch.recording.replicas import checksum, spread
from weightwatch.run.reader import open_run
from weightwatch.run.schema import COLUMNS

from runbuilder import MLP, make_run, run_check, write_run

NAN = float("nan")


def test_diverged_replica_fails_naming_the_tensor_and_record():
    run = make_run({"l1/kernel": {"replica_spread": [0.0, 0.0, 3e-4, 1e-2]},
                    "l1/bias": {"replica_spread": [0.0, 0.0, 0.0, 0.0]}}, 4)
    res = run_check(run, "replica-divergence")
    assert res.status == "failed"
    assert [(f.tensor, f.record) for f in res.findings] == [("l1/kernel", 2)]
    assert "l1/kernel differs between data-parallel replicas at epoch 2" in res.findings[0].message
    assert res.findings[0].value == pytest.approx(3e-4)


def test_replicas_in_agreement_pass_and_rounding_is_not_divergence():
    run = make_run({"l1/kernel": {"replica_spread": [0.0, 1e-10, 0.0]}}, 3)
    assert run_check(run, "replica-divergence").status == "passed"
    assert run_check(run, "replica-divergence", max_spread=0.0).status == "failed"


def test_infinite_spread_fails():
    run = make_run({"l1/kernel": {"replica_spread": [0.0, math.inf]}}, 2)
    assert run_check(run, "replica-divergence").findings[0].value == math.inf


def test_one_replica_is_skipped_never_passed():
    run = make_run({"l1/kernel": {"replica_spread": NAN}}, 3)
    res = run_check(run, "replica-divergence")
    assert res.status == "skipped" and "one replica" in res.note


def test_run_recorded_before_the_column_is_skipped(tmp_path):
    old = COLUMNS[:COLUMNS.index("replica_spread")]
    run = open_run(write_run(tmp_path / "old", MLP, [{"logs": {}}, {"logs": {"loss": 0.5}}], columns=old))
    assert not run.has_column("replica_spread") and np.isnan(run.metric("replica_spread")).all()
    report = evaluate(run, load_rules(use_project_config=False))
    res = {r.id: r for r in report.results}["replicas-diverged"]
    assert res.status == "skipped" and "no replica_spread column" in res.note
    assert not report.failed


def test_the_default_pack_fails_a_diverged_run_with_its_own_diagnosis():
    run = make_run({"l1/kernel": {"replica_spread": [0.0, 0.0, 5e-3]}}, 3)
    report = evaluate(run, load_rules(use_project_config=False))
    res = {r.id: r for r in report.results}["replicas-diverged"]
    assert res.status == "failed"
    causes = diagnose(report)
    assert [c.id for c in causes] == ["replicas"] and causes[0].first.subject == "l1/kernel"


def test_spread_of_checksums():
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(1000) * 0.1).astype(np.float32)
    noisy = a + (rng.standard_normal(1000) * 1e-3).astype(np.float32)
    rounded = a.copy()
    rounded[7] = np.nextafter(rounded[7], np.float32(1))
    nan = a.copy()
    nan[0] = np.nan
    c = np.stack([[checksum(x) for x in (a, a, a, nan, nan)],
                  [checksum(x) for x in (a, noisy, rounded, nan, a)]])
    s = spread(c)
    assert s[0] == 0.0                       # bit-identical copies
    assert s[1] > 1e-4                       # noise of 1e-3 on one replica
    assert 0 < s[2] < 1e-8                   # one element one float32 step apart
    assert s[3] == 0.0                       # NaN on every replica: the nonfinite check's job
    assert s[4] == math.inf                  # NaN on one replica only
    assert np.isnan(spread(c[:1])).all()     # one replica: nothing to compare
    assert checksum(np.arange(4, dtype=np.int64)).tolist() == [6.0, 6.0, 14.0]
