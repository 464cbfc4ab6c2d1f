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


# -- the loss climbing back to chance (labels shuffled mid-run) ------------------------------


def _losses(losses, chance=None, lr=None):
    logs = [{}] + [{"loss": v, **({"learning_rate": lr[i]} if lr else {})} for i, v in enumerate(losses)]
    run = make_run({"a/kernel": {}}, len(logs), logs=logs)
    run.manifest.pop("loss_floor", None)        # a custom loss: its floor is unknown
    run.manifest.pop("chance_loss", None)
    if chance is not None:
        run.manifest["chance_loss"] = chance
    return run


def test_loss_back_to_chance_fails_when_a_learnt_loss_returns_to_chance():
    run = _losses([LN4, 0.9 * LN4, 0.85 * LN4, 1.02 * LN4], chance=LN4)
    f = first(run_check(run, "loss-back-to-chance"))
    assert f.record == 4 and f.value == pytest.approx(1.02)
    assert f.message == ("loss rose to 102.0% of the chance loss after it had been down to 85.0% of it "
                         "(back at chance from 100.0%)")


def test_loss_back_to_chance_passes_a_slow_start_and_a_rebound_short_of_chance():
    # a slow start wanders at chance without having left it; noise on a plateau just under chance
    assert run_check(_losses([1.01 * LN4, LN4, 0.99 * LN4, 1.0 * LN4], chance=LN4),
                     "loss-back-to-chance").status == "passed"
    assert run_check(_losses([LN4, 0.985 * LN4, 0.972 * LN4, 0.965 * LN4, 0.975 * LN4, 0.992 * LN4], chance=LN4),
                     "loss-back-to-chance").status == "passed"
    # ... unless the rule is told a shallower dip counts
    assert run_check(_losses([LN4, 0.99 * LN4, 1.0 * LN4], chance=LN4), "loss-back-to-chance",
                     below=0.005).status == "failed"


def test_loss_back_to_chance_refuses_a_tolerance_that_counts_a_falling_loss():
    from weightwatch.checking.rules import parse_rule
    from weightwatch.errors import RuleError
    with pytest.raises(RuleError, match='"tolerance" .* must be below "below"'):
        parse_rule({"id": "t", "check": "loss-back-to-chance", "tolerance": 0.05}, source="t.toml", line=3)


def test_loss_back_to_chance_skipped_without_a_chance_loss():
    res = run_check(_losses([LN4, 0.5, LN4]), "loss-back-to-chance")
    assert res.status == "skipped" and "chance_loss" in res.note


# -- a negative loss that falls faster and faster (a loss negated by mistake) ----------------


ASCENT = [-1.21, -1.8, -2.69, -3.98, -5.79]          # a negated squared error (run zoo)
NLL = [0.132, -0.201, -0.393, -0.612, -0.784, -0.952, -1.14, -1.28]   # a healthy Gaussian NLL


def test_loss_unbounded_fails_on_gradient_ascent():
    f = first(run_check(_losses(ASCENT), "loss-unbounded"))
    # falls 0.59, 0.89, 1.29, 1.81: the third speed-up in a row is at the 5th epoch
    assert f.record == 5 and f.value == pytest.approx(1.81 / 1.29)
    assert f.message == ("loss is below 0 and falls faster every epoch: -5.79, its fall grown 1.1x or more "
                         "each epoch for 3 epochs (the last 1.4x)")
    assert run_check(_losses(ASCENT), "loss-unbounded", records=4).status == "passed"


def test_loss_unbounded_passes_a_converging_negative_loss():
    assert run_check(_losses(NLL), "loss-unbounded").status == "passed"
    # a positive loss that speeds up its fall (a plateau escaped) is not judged
    assert run_check(_losses([2.0, 1.9, 1.7, 1.3, 0.5]), "loss-unbounded").status == "passed"


def test_loss_unbounded_ignores_noise_around_a_converged_loss_and_known_floors():
    noise = [-1.0, -1.0001, -1.0003, -1.0007, -1.0015]        # falls doubling, but 0.01% of the loss
    assert run_check(_losses(noise), "loss-unbounded").status == "passed"
    assert run_check(_losses(noise), "loss-unbounded", min_fall=0).status == "failed"
    run = _losses(ASCENT)
    run.manifest["loss_floor"] = -1.0               # cosine similarity: bounded, loss-below-floor's job
    assert run_check(run, "loss-unbounded").status == "passed"


def test_loss_unbounded_leaves_out_epochs_whose_learning_rate_rose():
    warmup = [1e-4, 2e-4, 4e-4, 8e-4, 8e-4]
    assert run_check(_losses(ASCENT, lr=warmup), "loss-unbounded").status == "passed"
    assert run_check(_losses(ASCENT, lr=[1e-3] * 5), "loss-unbounded").status == "failed"


def test_loss_back_to_chance_leaves_a_divergence_far_above_chance_to_the_divergence_checks():
    run = _losses([LN4, 0.6 * LN4, 21.5 * LN4], chance=LN4)
    assert run_check(run, "loss-back-to-chance").status == "passed"
    assert run_check(run, "loss-back-to-chance", max_ratio=100).status == "failed"


def test_loss_checks_count_epoch_records_only():
    """freq=N: a batch record's loss is a running mean over part of an epoch; it neither counts
    nor breaks a streak."""
    def with_batches(losses, triggers, chance=None):
        run = _losses(losses, chance=chance)
        for rec, t in zip(run.records, ["begin"] + triggers):
            rec.trigger = t
        return run
    # a batch record dipping under chance and back is no return to chance
    dip = with_batches([LN4, 0.9 * LN4, LN4, 0.99 * LN4], ["epoch", "batch", "epoch", "epoch"], chance=LN4)
    assert run_check(dip, "loss-back-to-chance").status == "passed"
    # batch records between accelerating epochs: the epochs' streak stands
    ascent = with_batches([-1.21, -1.5, -1.8, -2.2, -2.69, -3.98, -5.79],
                          ["epoch", "batch", "epoch", "batch", "epoch", "epoch", "epoch"])
    assert first(run_check(ascent, "loss-unbounded")).record == 7


# -- a positive loss that turns over below 0 in one epoch (a loss term's sign flipped) --------


FLIP = [1.05, 0.907, -0.762]                 # a crossentropy negated at the third epoch (run zoo)


def test_loss_sign_flip_fails_when_the_loss_turns_over_in_one_epoch():
    f = first(run_check(_losses(FLIP), "loss-sign-flip"))
    # a fall of 1.669 across 0 after one of 0.143
    assert f.record == 3 and f.value == pytest.approx(1.669 / 0.143)
    assert f.message == ("loss fell from 0.907 to -0.762 in one epoch, to below 0: a fall 11.7x the epoch "
                         "before's (limit 5x)")
    assert run_check(_losses(FLIP), "loss-sign-flip", ratio=12).status == "passed"


def test_loss_sign_flip_passes_a_loss_that_crosses_zero_smoothly():
    assert run_check(_losses([0.388, 0.184, -0.00584, -0.198]), "loss-sign-flip").status == "passed"
    # the run's first epoch has no fall before it: a healthy NLL crossing at its second is not judged
    assert run_check(_losses(NLL), "loss-sign-flip").status == "passed"
    assert run_check(_losses([2.0, 1.0, 0.2, 0.05, 0.01]), "loss-sign-flip").status == "passed"


def test_loss_sign_flip_from_a_plateau_or_a_rise():
    # no fall before it: the epoch before's fall counts as min_fall x the loss (0.0092)
    assert first(run_check(_losses([0.92, 0.92, -0.92]), "loss-sign-flip")).value == pytest.approx(1.84 / 0.0092)
    f = first(run_check(_losses([0.9, 0.92, -0.92]), "loss-sign-flip"))
    assert f.record == 3
    # the message says what the fall was measured against: not "the epoch before's" fall
    assert ("a fall 200x the floor of the epoch before's fall, 0.01 x the largest loss so far, as the "
            "epoch before rose (limit 5x)") in f.message
    f = first(run_check(_losses([0.92, 0.92, -0.92]), "loss-sign-flip"))
    assert "as the epoch before did not fall (limit 5x)" in f.message
    f = first(run_check(_losses([0.925, 0.92, -0.92]), "loss-sign-flip"))   # fell 0.005 < 0.00925
    assert "as the epoch before barely fell (limit 5x)" in f.message
    f = first(run_check(_losses([1.05, 0.91, -0.76]), "loss-sign-flip"))
    assert "a fall 11.9x the epoch before's (limit 5x)" in f.message


def test_loss_sign_flip_leaves_known_floors_and_learning_rate_rises_alone():
    run = _losses(FLIP)
    run.manifest["loss_floor"] = 0.0                # loss-below-floor judges it exactly
    assert run_check(run, "loss-sign-flip").status == "passed"
    assert run_check(_losses(FLIP, lr=[1e-4, 2e-4, 4e-4]), "loss-sign-flip").status == "passed"
    assert run_check(_losses(FLIP, lr=[1e-3] * 3), "loss-sign-flip").status == "failed"


def test_loss_sign_flip_counts_epoch_records_only():
    run = _losses([1.05, 0.95, 0.907, 0.1, -0.762])
    for rec, t in zip(run.records, ["begin", "epoch", "batch", "epoch", "batch", "epoch"]):
        rec.trigger = t
    f = first(run_check(run, "loss-sign-flip"))
    assert f.record == 5 and f.value == pytest.approx(1.669 / 0.143)


def test_loss_sign_flip_passes_noise_around_a_loss_converged_near_zero():
    # the epoch before's fall is floored at 1% of the loss's largest size (1.0), not of 0.0101
    assert run_check(_losses([1.0, 0.3, 0.0014, -0.0011]), "loss-sign-flip").status == "passed"
    assert run_check(_losses([0.3, 0.1, 0.0101, 0.0100, -0.002]), "loss-sign-flip").status == "passed"
    # a flip of the loss's own size still counts
    assert first(run_check(_losses([1.0, 0.3, 0.29, -0.28]), "loss-sign-flip")).record == 4


def test_loss_unbounded_after_a_large_positive_start_waits_for_falls_of_its_size():
    # a loss that falls from 2.3, crosses 0 and then grows 1.5x an epoch: its falls count once they
    # reach 35% of 2.3, and five accelerating ones later it fails
    ascent = [2.3, 1.2, 0.6, 0.3, 0.12, 0.05] + [-0.05 * 1.5 ** i for i in range(20)]
    f = first(run_check(_losses(ascent), "loss-unbounded", min_fall=0.35, records=5))   # the pack's
    assert -ascent[f.record - 1] > 10 and f.record < len(ascent)
    assert first(run_check(_losses(ascent), "loss-unbounded")).record < f.record        # the warning's


def test_loss_sign_flip_judges_a_jump_further_below_zero_by_the_loss_size():
    # a negated crossentropy crossing 0 smoothly (1.2x), then taking over (zoo: cnn, epoch 6)
    taking_over = [1.07, 0.284, 0.0406, 0.0117, -0.0231, -64.08]
    f = first(run_check(_losses(taking_over), "loss-sign-flip"))
    assert f.record == 6 and f.value == pytest.approx(64.06 / 0.0348, rel=1e-3)
    assert run_check(_losses(taking_over), "loss-sign-flip", min_drop=100).status == "passed"
    # negated from the start: -0.53, -5.17 (no fall before it), then -120
    assert first(run_check(_losses([-0.525, -5.17, -120.1]), "loss-sign-flip")).record == 3
    # a healthy NLL speeding its fall up 5.4x below 0, by 0.23x its largest size: converging
    assert run_check(_losses([0.884, 0.193, -0.0465, -0.244, -0.282, -0.487, -0.619]),
                     "loss-sign-flip").status == "passed"
    assert first(run_check(_losses([0.884, 0.193, -0.0465, -0.244, -0.282, -0.487]), "loss-sign-flip",
                           min_drop=0.2)).record == 6


def test_loss_sign_flip_leaves_a_return_across_zero_alone():
    # a Gaussian NLL at a large step size: below 0, a spike above it, back below (review run)
    assert run_check(_losses([-1.9, -2.16, 4.21, -0.81]), "loss-sign-flip").status == "passed"
    assert run_check(_losses([-0.1, -0.28, 0.049, -0.345]), "loss-sign-flip").status == "passed"
    # below 0, a rise, then a big fall: recovering, not a term taking over
    assert run_check(_losses([-0.3, -0.35, -0.2, -1.2]), "loss-sign-flip").status == "passed"
    # a loss landing on exactly 0 on its way down still crosses for the first time
    assert first(run_check(_losses([1.0, 0.5, 0.0, -50.0]), "loss-sign-flip")).record == 4


def test_loss_sign_flip_needs_the_loss_to_land_well_below_zero():
    # a healthy NLL on a plateau near 0 dipping under it (held-out benchmark run): 0.063 -> -0.006
    assert run_check(_losses([0.2, 0.063, 0.0626, -0.006]), "loss-sign-flip").status == "passed"
    # landing well below 0, by a fall of half the loss's largest size or more, is a flip
    assert first(run_check(_losses([0.2, 0.063, 0.0626, -0.05]), "loss-sign-flip")).record == 4
    # noise around 0 after a shallow dip crosses it by a fraction of the loss's size (held-out run)
    assert run_check(_losses([0.18, 0.1, 0.0626, -0.0061, 0.014, -0.0185]), "loss-sign-flip").status == "passed"
    # ... and a shallow dip does not stop a later flip from being judged
    dip_then_flip = [0.5, 0.2, 0.063, -0.006, 0.05, 0.04, 0.039, -0.9, -1.0]
    assert first(run_check(_losses(dip_then_flip), "loss-sign-flip")).record == 8


def test_loss_sign_flip_leaves_a_learning_rate_cut_alone_and_judges_a_smooth_decay():
    losses = [0.2, 0.05, 0.048, -0.1]
    cut = [1e-3, 1e-3, 1e-3, 1e-4]                   # ReduceLROnPlateau: a cut drops the loss at once
    assert run_check(_losses(losses, lr=cut), "loss-sign-flip").status == "passed"
    decay = [1e-3, 9e-4, 8.1e-4, 7.3e-4]               # an exponential decay
    assert first(run_check(_losses(losses, lr=decay), "loss-sign-flip")).record == 4
    assert run_check(_losses([1.05, 0.907, -math.inf]), "loss-sign-flip").status == "passed"
