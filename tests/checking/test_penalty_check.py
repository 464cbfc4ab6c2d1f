"""negative-penalty on hand-made histories.

Real Keras runs, whose ``penalty`` column the recorder reads from each
variable's regulariser, are in tests/recording/test_penalty.py.
"""

import numpy as np

from weightwatch.checking.config import load_rules
from weightwatch.checking.diagnosis import diagnose
from weightwatch.checking.engine import evaluate
from weightwatch.run.reader import open_run
from weightwatch.run.schema import COLUMNS

from runbuilder import MLP, make_run, run_check, write_run

NAN = float("nan")


def test_a_penalty_below_zero_fails_at_its_first_record_naming_the_tensor():
    run = make_run({"l1/kernel": {"penalty": [0.02, 0.02, 0.019, 0.019]},
                    "l2/kernel": {"penalty": [0.0, 0.0, -1e-7, -0.4]},
                    "l2/bias": {}}, 4)
    res = run_check(run, "negative-penalty")
    assert res.status == "failed"
    assert [(f.tensor, f.record) for f in res.findings] == [("l2/kernel", 2)]
    msg = res.findings[0].message
    assert "l2/kernel's regularisation penalty is -1e-07 at epoch 2, below 0" in msg, msg


def test_a_penalty_of_zero_passes_and_min_moves_the_floor():
    run = make_run({"l1/kernel": {"penalty": [0.0, 0.0, 0.01]}}, 3)
    assert run_check(run, "negative-penalty").status == "passed"
    assert run_check(run, "negative-penalty", min=0.005).status == "failed"
    neg = make_run({"l1/kernel": {"penalty": [-0.2, -0.3]}}, 2)
    assert run_check(neg, "negative-penalty", min=-1.0).status == "passed"


def test_a_run_without_regularisers_is_skipped_never_passed():
    res = run_check(make_run({"l1/kernel": {}, "l1/bias": {}}, 3), "negative-penalty")
    assert res.status == "skipped" and "no penalty recorded for the selected tensors" in res.note


def test_a_run_recorded_before_the_column_is_skipped(tmp_path):
    old = COLUMNS[:COLUMNS.index("penalty")]
    run = open_run(write_run(tmp_path / "old", MLP, [{"logs": {}}, {"logs": {"loss": 0.5}}], columns=old))
    assert not run.has_column("penalty") and np.isnan(run.metric("penalty")).all()
    report = evaluate(run, load_rules(use_project_config=False))
    res = {r.id: r for r in report.results}["negative-penalty"]
    assert res.status == "skipped" and "no penalty column" in res.note
    assert not report.failed


def test_the_default_pack_fails_it_from_record_0_as_a_wrong_sign_term():
    """Wrong from the start: flagged at the record before training, whatever the weights do."""
    run = make_run({"l1/kernel": {"penalty": [-0.05, -0.05, -0.06]}, "l1/bias": {}}, 3)
    report = evaluate(run, load_rules(use_project_config=False))
    res = {r.id: r for r in report.results}["negative-penalty"]
    assert res.status == "failed" and res.findings[0].record == 0
    causes = diagnose(report)
    assert causes[0].id == "wrong-sign" and causes[0].first.subject == "l1/kernel"


def test_a_frozen_tensor_is_not_judged_by_the_default_pack():
    """Keras adds the penalties of trainable weights only: a frozen layer's is not in the loss."""
    run = make_run({"l1/kernel": {"penalty": -0.05, "frozen": 1.0, "changed": 0.0, "d_l2": 0.0,
                                  "d_absmax": 0.0}}, 3)
    report = evaluate(run, load_rules(use_project_config=False))
    assert {r.id: r for r in report.results}["negative-penalty"].status == "skipped"
