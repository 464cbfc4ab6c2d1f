"""The engine: selection, per-record masks, patience, findings, skips and warnings, -x, the cache."""

import numpy as np
import pytest

from runbuilder import first, make_run, run_check
from weightwatch.checking import engine
from weightwatch.checking.config import RuleSet, load_rules
from weightwatch.checking.engine import _first_streak, evaluate, evaluate_rule
from weightwatch.checking.rules import parse_rule


def rules_of(*tables):
    return RuleSet([parse_rule(t, source="test", line=None) for t in tables])


def test_after_and_patience_mask_records():
    run = make_run({"d/kernel": {"nan": [0, 1, 1, 0, 1, 1, 1]}}, 7)
    assert first(run_check(run, "nonfinite", after=2)).record == 2
    assert first(run_check(run, "nonfinite", patience=3)).record == 6
    assert run_check(run, "nonfinite", patience=4).status == "passed"


def test_frozen_filter_is_per_record():
    # frozen only from record 2 on: a change at record 1 is legal, at record 3 it is not
    cols = {"frozen": [0, 0, 1, 1], "d_absmax": [None, 0.1, 0.0, 0.2], "changed": [None, 1, 0, 1]}
    res = run_check(make_run({"base/kernel": cols}, 4), "unchanged", frozen=True)
    assert first(res).record == 3


def test_default_pack_passes_a_healthy_history():
    tensors = {f"l{i}/kernel": {"l2": [1.0, 1.1, 1.15, 1.17, 1.18], "d_l2": [None, 0.1, 0.05, 0.02, 0.01],
                                "d_cos": [None, None, 0.3, 0.1, -0.2]} for i in range(3)}
    logs = [{}, {"loss": 1.0}, {"loss": 0.6}, {"loss": 0.5}, {"loss": 0.45}]
    report = evaluate(make_run(tensors, 5, logs=logs), load_rules(use_project_config=False))
    assert not report.failed, [f.message for r in report.failed for f in r.findings]


@pytest.mark.parametrize("patience", [1, 2, 3, 5])
def test_first_streak_agrees_with_counting_record_by_record(patience):
    rng = np.random.default_rng(patience)
    for records in range(0, 9):
        bad = rng.random((records, 40)) < 0.6
        want = []
        for j in range(bad.shape[1]):
            streak, fire = 0, -1
            for r in range(records):
                streak = streak + 1 if bad[r, j] else 0
                if streak >= patience:
                    fire = r
                    break
            want.append(fire)
        assert _first_streak(bad, patience).tolist() == want, (records, patience)


def test_a_finding_names_tensor_layer_record_value_and_history():
    run = make_run({"enc/d/kernel": {"nan": [0, 0, 2, 2]}, "enc/d/bias": {}}, 4)
    f = first(run_check(run, "nonfinite"))
    assert (f.tensor, f.layer, f.record, f.epoch, f.value, f.limit, f.count) == ("enc/d/kernel", "enc/d", 2, 2, 2.0, 0.0, 2)
    assert f.history == [0.0, 0.0, 2.0, 2.0] and f.where == "enc/d/kernel at epoch 2"
    assert f.message == "enc/d/kernel holds 2 NaN/Inf values"


def test_select_role_and_dtype_narrow_the_tensors():
    run = make_run({"a/kernel": {"nan": [0, 1]}, "a/bias": {"nan": [0, 1]}, "b/kernel": {"nan": [0, 1]}}, 2,
                   shapes={"a/bias": (10,)})
    assert [f.tensor for f in run_check(run, "nonfinite", select=["a/*"]).findings] == ["a/kernel", "a/bias"]
    assert [f.tensor for f in run_check(run, "nonfinite", role=["bias"]).findings] == ["a/bias"]
    assert [f.tensor for f in run_check(run, "nonfinite", select=["a"], exclude=["*/bias"]).findings] == ["a/kernel"]


def test_a_select_that_matches_nothing_warns_instead_of_passing():
    res = run_check(make_run({"a/kernel": {}}, 3), "nonfinite", select=["encoder/*"])
    assert res.status == "warning" and "matched no tensor" in res.note


def test_a_log_rule_without_its_log_is_skipped_and_says_why():
    run = make_run({"a/kernel": {}}, 3, logs=[{}, {"acc": 1.0}, {"acc": 1.0}])
    res = run_check(run, "loss-divergence")
    assert res.status == "skipped" and "'loss'" in res.note


def test_keyword_and_maxfail_limit_what_runs():
    run = make_run({"a/kernel": {"nan": [0, 1, 1]}}, 3)
    rs = rules_of({"id": "one", "check": "nonfinite"}, {"id": "two", "check": "nonfinite"},
                  {"id": "three", "check": "stalled"})
    assert [r.id for r in evaluate(run, rs, keyword="t").results] == ["two", "three"]
    report = evaluate(run, rs, maxfail=1)
    assert [r.id for r in report.results] == ["one"] and report.stopped_early


def test_rules_with_one_selection_share_histories_within_one_evaluation(monkeypatch):
    run = make_run({"a/kernel": {}, "a/bias": {}}, 3)
    reads = []
    real = type(run).metric
    monkeypatch.setattr(type(run), "metric", lambda self, name: reads.append(name) or real(self, name))
    rs = rules_of({"id": "g1", "check": "norm-growth", "role": ["kernel"]},
                  {"id": "g2", "check": "norm-growth", "role": ["kernel"], "max_ratio": 2.0})
    evaluate(run, rs)
    assert reads.count("l2") == 1          # gathered once, for both rules
    evaluate(run, rs)
    assert reads.count("l2") == 2          # a new evaluation reads the (possibly grown) run again
    assert not hasattr(run, "_histories_cache")
