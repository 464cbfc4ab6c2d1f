"""The checks over evidence that weight deltas cannot give: grad_rms and the chance-level loss.

Hand-made histories, as in test_checks.py; the same checks on real Keras runs
are in tests/recording/test_gradients.py.
"""

import math

import numpy as np
import pytest

from weightwatch.checking.config import load_rules
from weightwatch.checking.engine import evaluate
from weightwatch.errors import RuleError
from weightwatch.run.model import Record
from weightwatch.run.reader import open_run
from weightwatch.run.schema import FIRST_COLUMNS

from runbuilder import MLP, first, make_run, run_check, write_run

NAN = float("nan")
LN4 = math.log(4)


def deep(grads: dict, records: int, **kw):
    """A run of kernels whose grad_rms histories are given (record 0: none yet)."""
    return make_run({p: {"grad_rms": [NAN] + list(g)} for p, g in grads.items()}, records, **kw)


def test_grad_disparity_against_the_last_tensor_with_an_estimate():
    run = deep({"l1/kernel": [1e-7, 1e-7], "l2/kernel": [1e-3, 1e-3], "out/kernel": [1e-2, NAN]}, 3)
    res = run_check(run, "grad-disparity")
    assert [(f.tensor, f.record) for f in res.findings] == [("l1/kernel", 1)]
    assert res.findings[0].value == pytest.approx(1e5)
    # record 2: out/kernel has no estimate, so l2/kernel is the reference and l1 is 1e4 below it
    assert res.findings[0].history[2] == pytest.approx(1e4)
    assert res.findings[0].history[0] is None  # reports write undefined figures as null


def test_grad_disparity_zero_gradient_is_infinitely_below():
    run = deep({"l1/kernel": [0.0], "out/kernel": [1e-2]}, 2)
    f = first(run_check(run, "grad-disparity"))
    assert f.value == math.inf and "inf" in f.message


def test_grad_disparity_quiet_on_healthy_spread():
    run = deep({"l1/kernel": [2e-3, 3e-3], "l2/kernel": [5e-2, 1e-2], "out/kernel": [2e-2, 2e-2]}, 3)
    assert run_check(run, "grad-disparity").status == "passed"


def test_grad_growth_with_a_floor_relative_to_the_largest_gradient():
    # l1 recovers from a vanishingly small gradient (1e-9 -> 1e-5): measured from 1% of 1e-2
    run = deep({"l1/kernel": [1e-9, 1e-5, 1e-5], "out/kernel": [1e-2, 2e-2, 5.0]}, 4)
    res = run_check(run, "grad-growth", max_ratio=100.0)
    assert [(f.tensor, f.record) for f in res.findings] == [("out/kernel", 3)]
    assert res.findings[0].value == pytest.approx(250.0)
    assert res.findings[0].history[2] == pytest.approx(2.0)
    assert run_check(run, "grad-growth", max_ratio=100.0, min_fraction=1e-12).findings[0].tensor == "l1/kernel"


def _chance_run(losses, chance=LN4, triggers=None):
    logs = [{}] + [{"loss": v} for v in losses]
    run = make_run({"a/kernel": {}}, len(logs), logs=logs)
    if triggers:
        for rec, t in zip(run.records, triggers):
            rec.trigger = t
    run.manifest["chance_loss"] = chance
    return run


def test_loss_at_chance_needs_consecutive_epoch_records():
    # shuffled labels: the loss comes down to ln 4 and stays there
    run = _chance_run([1.55, 1.43, 1.396, 1.377, 1.361])
    f = first(run_check(run, "loss-at-chance"))
    assert f.record == 4 and f.value == pytest.approx(abs(1.377 - LN4) / LN4)
    assert "chance level for 2 records" in f.message
    assert first(run_check(run, "loss-at-chance", records=3)).record == 5
    # a healthy run passes through the band in one record
    assert run_check(_chance_run([1.5, 1.39, 1.1, 0.8]), "loss-at-chance").status == "passed"


def test_loss_at_chance_counts_epoch_records_only():
    # batch records in between neither count nor break the streak of epoch records
    run = _chance_run([1.386, 1.2, 1.385, 1.0], triggers=["begin", "epoch", "batch", "epoch", "epoch"])
    f = first(run_check(run, "loss-at-chance"))
    assert f.record == 3 and f.history[2] is None and f.history[1] == pytest.approx(0.0002, abs=1e-4)


@pytest.mark.parametrize("chance", [None, 0.0, True, "ln4", NAN])
def test_loss_at_chance_skipped_without_a_chance_loss(chance):
    run = _chance_run([LN4, LN4, LN4], chance=chance)
    if chance is None:
        del run.manifest["chance_loss"]
    res = run_check(run, "loss-at-chance")
    assert res.status == "skipped" and "chance_loss" in res.note


def test_gradient_checks_skipped_without_estimates():
    run = make_run({"l1/kernel": {}, "out/kernel": {}}, 3)  # grad_rms all null
    run.manifest.update(gradients=None, optimizer="Lion")
    for check in ("grad-disparity", "grad-growth"):
        res = run_check(run, check)
        assert res.status == "skipped" and "Lion" in res.note, res.note


def test_old_run_is_checked_with_the_new_rules_skipped(tmp_path):
    """A run recorded before grad_rms and chance_loss existed: opens, checks, no false pass."""
    records = [{"logs": {}}] + [{"logs": {"loss": LN4}} for _ in range(4)]
    run = open_run(write_run(tmp_path / "old", MLP, records, columns=FIRST_COLUMNS,
                             manifest_extra={}))
    assert not run.has_column("grad_rms")
    report = evaluate(run, load_rules(use_project_config=False))
    by_id = {r.id: r for r in report.results}
    for rid in ("vanishing-gradients", "exploding-gradients"):
        assert by_id[rid].status == "skipped" and "no grad_rms column" in by_id[rid].note
    assert by_id["loss-at-chance"].status == "skipped"  # its loss sits at ln 4, but nothing says so
    assert not report.failed and report.exit_code() == 0


@pytest.mark.parametrize("text, expected", [
    ("max_disparity = 1", r'option "max_disparity" must be > 1, got 1'),
    ("max_disparity = 'big'", r'option "max_disparity" must be a number'),
])
def test_grad_disparity_options_validated(tmp_path, text, expected):
    cfg = tmp_path / "weightwatch.toml"
    cfg.write_text(f"[[rule]]\nid = 'a'\ncheck = 'grad-disparity'\n{text}\n")
    with pytest.raises(RuleError, match=expected):
        load_rules(config=cfg)


@pytest.mark.parametrize("check, text, expected", [
    ("grad-growth", "max_ratio = 0.5", r'option "max_ratio" must be > 1, got 0.5'),
    ("grad-growth", "min_fraction = 0", r'option "min_fraction" must be > 0, got 0'),
    ("loss-at-chance", "tolerance = 0", r'option "tolerance" must be > 0, got 0'),
    ("loss-at-chance", "records = 0", r'option "records" must be >= 1, got 0'),
])
def test_other_new_options_validated(tmp_path, check, text, expected):
    cfg = tmp_path / "weightwatch.toml"
    cfg.write_text(f"[[rule]]\nid = 'a'\ncheck = '{check}'\n{text}\n")
    with pytest.raises(RuleError, match=expected):
        load_rules(config=cfg)


def test_loss_below_floor_fires_only_where_the_loss_cannot_be_negative():
    from runbuilder import first, make_run, run_check

    logs = [{}, {"loss": 0.5}, {"loss": 0.1}, {"loss": -0.2}]
    run = make_run({"a/kernel": {}}, 4, logs=logs)
    res = run_check(run, "loss-below-floor")
    assert res.status == "skipped" and "loss_floor" in res.note      # unknown floor: never a pass
    run.manifest = {"loss_floor": 0.0}
    f = first(run_check(run, "loss-below-floor"))
    assert f.record == 3 and f.message == "loss fell to -0.2, below 0, which its loss function cannot reach"
