"""Checks calibrated on the run zoo's misses: learning-rate spikes seen in the updates.

Hand-made histories, as in test_checks.py.
"""

import math

import pytest

from runbuilder import first, make_run, run_check

NAN = float("nan")


def updates(ratios: dict, logs=None):
    """Kernels of norm 1 whose update ratio at each record (record 0: none) is given."""
    n = len(next(iter(ratios.values()))) + 1
    return make_run({p: {"l2": 1.0, "d_l2": [NAN] + list(r)} for p, r in ratios.items()}, n, logs=logs)


STEADY = [1e-3, 8e-4, 6e-4, 6e-4]


def test_update_jump_fails_when_every_layer_jumps():
    run = updates({"a/kernel": STEADY + [5e-2], "b/kernel": STEADY + [3e-2], "c/kernel": STEADY + [7e-4]})
    res = run_check(run, "update-jump")
    assert [(f.tensor, f.record) for f in res.findings] == [("a/kernel", 5), ("b/kernel", 5)]
    # a/kernel: 5e-2 against the median of 1e-3, 8e-4, 6e-4, 6e-4 (7e-4)
    assert res.findings[0].value == pytest.approx(5e-2 / 7e-4)
    assert "the network's median update ratio 42.9x" in res.findings[0].message


def test_update_jump_one_layer_waking_up_is_healthy():
    run = updates({"a/kernel": STEADY + [5e-2], "b/kernel": STEADY + [6e-4], "c/kernel": STEADY + [7e-4]})
    assert run_check(run, "update-jump").status == "passed"


def test_update_jump_quiet_on_a_warm_up():
    # a linear warm-up from 5% of the rate over two epochs, averaged over each epoch's steps
    warm = [2.9e-4, 7.6e-4, 1e-3, 9e-4]
    assert run_check(updates({"a/kernel": warm, "b/kernel": warm}), "update-jump").status == "passed"
    assert run_check(updates({"a/kernel": warm, "b/kernel": warm}), "update-jump",
                     max_jump=2.5).status == "failed"


def test_update_jump_restart_to_a_rate_seen_before_is_not_judged():
    ratios = [1e-2, 1e-3, 1e-4, 1e-2]
    lrs = [0.1, 0.1, 0.01, 0.001, 0.1]
    logs = [{}] + [{"loss": 1.0, "learning_rate": lr} for lr in lrs[1:]]
    logs[0] = {"learning_rate": lrs[0]}
    run = updates({"a/kernel": ratios, "b/kernel": ratios}, logs=logs)
    assert run_check(run, "update-jump").status == "passed"      # a warm restart
    logs[4]["learning_rate"] = 3.0                                # a spike above anything before
    run = updates({"a/kernel": ratios, "b/kernel": ratios}, logs=logs)
    assert first(run_check(run, "update-jump")).record == 4


def test_update_jump_per_step_so_batch_records_compare_with_epochs():
    # records every 12 steps and an epoch end 4 steps after each: updates per step are equal
    per_step = [12e-3, 4e-3] * 3
    run = updates({"a/kernel": per_step, "b/kernel": per_step})
    for r, step in zip(run.records, [0, 12, 16, 28, 32, 44, 48]):
        r.step = step
    assert run_check(run, "update-jump", max_jump=1.5).status == "passed"
    run.records[6].step = 45       # 4e-3 in 1 step: 4x the usual per-step update
    f = first(run_check(run, "update-jump", max_jump=3.0))
    assert (f.record, f.value) == (6, pytest.approx(4.0))


def test_update_jump_ignores_tensors_that_do_not_move():
    # a frozen half (update 0) must not pull the network's median to 0 and make every jump infinite
    run = updates({"a/kernel": STEADY + [7e-4], "b/kernel": STEADY + [8e-4],
                   "f1/kernel": [0.0] * 5, "f2/kernel": [0.0] * 5})
    res = run_check(run, "update-jump")
    assert res.status == "passed"
    assert not any(math.isinf(x) for f in res.findings for x in f.history if x is not None)


LN4 = math.log(4)


def test_loss_above_chance_fails_far_above_a_constant_predictor():
    logs = [{}, {"loss": 55.0}, {"loss": 60.0}, {"loss": 48.0}]
    run = make_run({"a/kernel": {}}, 4, logs=logs)
    res = run_check(run, "loss-above-chance")
    assert res.status == "skipped" and "chance_loss" in res.note     # unknown chance: never a pass
    run.manifest = {"chance_loss": LN4}
    f = first(run_check(run, "loss-above-chance"))
    assert f.record == 1 and f.value == pytest.approx(55.0 / LN4)
    assert f.message == f"loss is {55.0 / LN4:.3g}x the loss of a constant predictor (limit 8x)"


def test_loss_above_chance_quiet_on_a_slow_start():
    logs = [{}, {"loss": 3.1 * LN4}, {"loss": 1.2}, {"loss": 0.6}]
    run = make_run({"a/kernel": {}}, 4, logs=logs)
    run.manifest = {"chance_loss": LN4}
    assert run_check(run, "loss-above-chance").status == "passed"
    assert run_check(run, "loss-above-chance", max_ratio=3.0).status == "failed"
