"""The engine: selection, per-record masks, patience, findings, skips and warnings, -x, the cache."""

import numpy as np
import pytest

from runbuilder import first, make_run, run_check
from weightwatch.checking import engine
from weightwatch.checking.config import RuleSet, load_rules
from weightwatch.checking.engine import _first_streak, evaluate, evaluate_rule
from weightwatch.checking.rules import parse_rule
from weightwatch.errors import RuleError


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


def test_a_dtype_list_keeps_only_those_dtypes():
    run = make_run({"a/bias": {"nan": [0, 1]}, "b/bias": {"nan": [0, 1]}}, 2, shapes={"a/bias": (4,), "b/bias": (4,)})
    run.tensors[1].dtype = "bfloat16"
    assert [f.tensor for f in run_check(run, "nonfinite", dtype=["float32", "float64"]).findings] == ["a/bias"]
    assert [f.tensor for f in run_check(run, "nonfinite", dtype="float").findings] == ["a/bias", "b/bias"]
    for bad in (["float32", 3], [], "float32"):
        with pytest.raises(RuleError, match="dtype must be"):
            run_check(run, "nonfinite", dtype=bad)


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
    report = evaluate(run, rs, keyword="not one")
    assert [r.id for r in report.results] == ["two", "three"] and report.deselected == 1
    assert [r.id for r in evaluate(run, rs, keyword="STALL").results] == ["three"]  # the check's name
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


def _batch_run(cols, triggers, steps, logs=None):
    run = make_run(cols, len(triggers), logs=logs)
    for rec, trigger, step in zip(run.records, triggers, steps):
        rec.trigger, rec.step = trigger, step
    return run


def test_a_record_with_no_step_since_the_previous_is_not_a_stalled_tensor():
    # freq=4 with 8 steps an epoch: the epoch-end record repeats the weights of the batch record
    triggers = ["begin", "batch", "epoch", "batch", "epoch"]
    steps = [0, 4, 8, 12, 16]
    run = _batch_run({"d/kernel": {"d_l2": [None, 0.1, 0.0, 0.1, 0.1], "changed": [None, 1, 0, 1, 1]}},
                     triggers, [0, 4, 4, 8, 8])
    assert run_check(run, "stalled").status == "passed"
    run = _batch_run({"d/kernel": {"d_l2": [None, 0.1, 0.0, 0.1, 0.1], "changed": [None, 1, 0, 1, 1]}},
                     triggers, steps)
    assert first(run_check(run, "stalled")).record == 2   # a real step that changed nothing still fails


def test_minibatch_updates_are_not_judged_for_oscillation_or_dead_units():
    cols = {"d/kernel": {"d_cos": [None, None, -0.95, -0.95, -0.95, -0.95], "dead_units": [None, 9, 9, 9, 9, 9]}}
    batches = ["begin", "batch", "batch", "batch", "epoch", "batch"]
    run = _batch_run(cols, batches, [0, 3, 6, 9, 10, 13])
    osc, dead = run_check(run, "oscillation", min_ratio=0), run_check(run, "dead-units")
    # Judged nothing, so they say so instead of passing.
    assert osc.status == dead.status == "skipped"
    assert "two consecutive whole-epoch updates" in osc.note and "updates over a whole epoch" in dead.note
    epochs = _batch_run(cols, ["begin"] + ["epoch"] * 5, [0, 10, 20, 30, 40, 50])
    assert first(run_check(epochs, "oscillation", min_ratio=0)).record == 2
    assert first(run_check(epochs, "dead-units")).record == 1


def test_until_ends_a_rule_and_combines_with_after():
    run = make_run({"d/kernel": {"nan": [0, 1, 0, 0, 1, 1]}}, 6)
    assert run_check(run, "nonfinite", until=3).findings[0].record == 1
    assert run_check(run, "nonfinite", after=2, until=3).status == "passed"
    assert first(run_check(run, "nonfinite", after=2, until=4)).record == 4


def test_loss_divergence_reports_the_loss_and_the_ratio_each_under_its_name():
    logs = [{}, {"loss": 4.0}, {"loss": 2.0}, {"loss": 23.65}]
    f = first(run_check(make_run({"a/kernel": {}}, 4, logs=logs), "loss-divergence"))
    assert f.message == "loss rose to 23.65, 11.8x its best so far (2; limit 3x)"
    assert f.metric == "loss/best" and f.value == pytest.approx(23.65 / 2)


def test_log_checks_judge_epochs_not_batch_records():
    """A batch record's loss is a running mean over part of an epoch: the window counts epochs."""
    triggers = ["begin"] + ["batch", "batch", "epoch"] * 3
    losses = [None, 1.0, 1.0, 0.9, 1.0, 1.0, 0.8, 1.0, 1.0, 0.7]
    logs = [{} if v is None else {"loss": v} for v in losses]
    run = _batch_run({"a/kernel": {}}, triggers, list(range(len(triggers))), logs=logs)
    assert run_check(run, "loss-plateau", window=2).status == "passed"     # 0.9 -> 0.8 -> 0.7 by epoch
    res = run_check(run, "loss-plateau", window=2, min_improvement=0.3)
    assert first(res).record == 9 and first(res).message.endswith("over the last 2 epochs (needs 30.00%)")


def test_after_and_until_count_record_numbers_not_positions(tmp_path):
    from runbuilder import MLP, write_run
    from weightwatch.run.reader import open_run

    bad = {"nan": 1, "d_l2": None, "d_absmax": None, "d_cos": None, "dead_units": None}
    records = [{"logs": {}}, {"logs": {}}, {"logs": {}}, {"logs": {}, "rows": {"dense/kernel": bad}}]
    run_dir = write_run(tmp_path / "run", MLP, records)
    (run_dir / "record-000001.json").write_text("{damaged", encoding="utf-8")
    run = open_run(run_dir)
    assert [r.index for r in run.records] == [0, 2, 3]
    assert run_check(run, "nonfinite", until=2).status == "passed"          # record 3 is after it
    assert first(run_check(run, "nonfinite", after=3)).record == 3
