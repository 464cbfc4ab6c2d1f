"""Each check on hand-made histories: fires where it must, stays quiet where it must not."""

import numpy as np
import pytest

from weightwatch.checking.checks import CHECKS

from runbuilder import first, make_run, run_check


def test_registry_documents_every_check():
    for check in CHECKS.values():
        assert check.doc.splitlines()[0].strip(), check.id
        assert "Why" in check.doc, f"{check.id} doc lacks its rationale"
        for name, opt in check.options.items():
            assert opt.doc, (check.id, name)


def test_nonfinite_fires_at_first_nan_record():
    run = make_run({"d/kernel": {"nan": [0, 0, 3, 5]}, "d/bias": {}}, 4)
    f = first(run_check(run, "nonfinite"))
    assert (f.tensor, f.record, f.value, f.count) == ("d/kernel", 2, 3.0, 2)
    assert len(run_check(run, "nonfinite").findings) == 1


def test_norm_growth_uses_floor_for_zero_start():
    # a bias starting at exactly 0 grows to 0.05: below the floor, no alarm
    run = make_run({"d/bias": {"l2": [0.0, 0.05, 0.06, 0.07], "size": 10}}, 4, shapes={"d/bias": (10,)})
    assert run_check(run, "norm-growth").status == "passed"
    run = make_run({"d/kernel": {"l2": [1.0, 1.5, 6.0, 30.0]}}, 4)
    f = first(run_check(run, "norm-growth", max_ratio=3.0))
    assert f.record == 2 and f.value == pytest.approx(4.0)


def test_norm_runaway_needs_fast_growth_that_does_not_slow():
    # healthy early growth decelerates: 1.12, 1.37, 1.23 ... never two fast non-slowing records
    healthy = make_run({"a/kernel": {"l2": [1.0, 1.12, 1.5344, 1.887, 2.19]}}, 5)
    assert run_check(healthy, "norm-runaway").status == "passed"
    # a wrong-sign regulariser: 1.18, 1.30, 1.31, 1.32: fires at the second fast, faster record
    runaway = make_run({"a/kernel": {"l2": [1.0, 1.18, 1.534, 2.01, 2.65]}}, 5)
    f = first(run_check(runaway, "norm-runaway"))
    assert f.record == 3 and f.value == pytest.approx(1.31, rel=1e-3)
    assert first(run_check(runaway, "norm-runaway", records=3)).record == 4


def test_unchanged_and_stalled_are_opposites():
    still = {"d_l2": [None, 0.0, 0.0], "d_absmax": [None, 0.0, 0.0], "changed": [None, 0, 0]}
    moving = {"d_l2": [None, 0.1, 0.1], "d_absmax": [None, 0.01, 0.01], "changed": [None, 1, 1]}
    run = make_run({"a/kernel": still, "b/kernel": moving}, 3)
    assert [f.tensor for f in run_check(run, "unchanged").findings] == ["b/kernel"]
    assert [f.tensor for f in run_check(run, "stalled").findings] == ["a/kernel"]


def test_unchanged_counts_nonfinite_update_as_change():
    run = make_run({"a/kernel": {"d_absmax": [None, None], "changed": [None, 1]}}, 2)
    assert first(run_check(run, "unchanged")).record == 1


def _conv_bn(bias: dict, *, bn=True, kernel_d=1e-3):
    """conv/kernel, conv/bias, then a BatchNorm over the bias's 10 channels (or a Dense)."""
    nxt = {"bn/gamma": {}, "bn/beta": {}, "bn/moving_mean": {}} if bn else {"out/kernel": {}}
    tensors = {"conv/kernel": {"d_l2": [None, kernel_d, kernel_d, kernel_d], "size": 90},
               "conv/bias": {"size": 10, **bias}, **nxt}
    shapes = {"conv/kernel": (3, 3, 1, 10), "conv/bias": (10,), "bn/gamma": (10,), "bn/beta": (10,),
              "bn/moving_mean": (10,), "out/kernel": (10, 2)}
    roles = {"bn/gamma": "scale", "bn/moving_mean": "moving_stat"}
    return make_run(tensors, 4, shapes=shapes, roles=roles)


def test_stalled_leaves_a_bias_batchnorm_cancels_to_its_kernel():
    rounding = {"d_l2": [None, 3e-8, 6e-9, 2e-9], "changed": [None, 1, 1, 1]}
    assert run_check(_conv_bn(rounding), "stalled").status == "passed"
    # judging every bias, it is a stall; and so is the same bias without a BatchNorm after it
    assert [f.tensor for f in run_check(_conv_bn(rounding), "stalled", cancelled=0).findings] == ["conv/bias"]
    assert [f.tensor for f in run_check(_conv_bn(rounding, bn=False), "stalled").findings] == ["conv/bias"]


def test_stalled_still_judges_a_bias_ahead_of_a_batchnorm_that_stops_or_stopped_learning():
    # bit-identical at a record while its kernel moves (a dead ReLU's bias under an L2 penalty)
    still = {"d_l2": [None, 3e-8, 0.0, 0.0], "changed": [None, 1, 0, 0]}
    assert first(run_check(_conv_bn(still), "stalled")).record == 2
    # ... also where the run has no "changed" column
    unknown = {"d_l2": [None, 3e-8, 0.0, 0.0], "changed": [None, None, None, None]}
    assert first(run_check(_conv_bn(unknown), "stalled")).record == 2
    # it had learnt at its kernel's pace, then crept: not a cancelled bias
    crept = {"d_l2": [None, 1e-3, 1e-4, 5e-9], "changed": [None, 1, 1, 1]}
    assert first(run_check(_conv_bn(crept), "stalled")).record == 3
    # the layer stops (a learning rate of 0): the kernel is judged, and the bias with it
    stop = _conv_bn({"d_l2": [None, 1e-6, 0.0, 0.0], "changed": [None, 1, 0, 0]}, kernel_d=0.0)
    assert {f.tensor for f in run_check(stop, "stalled").findings} == {"conv/kernel", "conv/bias"}


def _stalled_biases(tensors: dict, shapes: dict, **options) -> list[str]:
    roles = {p: "moving_stat" for p in tensors if "moving_mean" in p}
    run = make_run({p: {"size": float(np.prod(shapes[p])), **cols} for p, cols in tensors.items()}, 4,
                   shapes=shapes, roles=roles)
    return [f.tensor for f in run_check(run, "stalled", **options).findings if "bias" in f.tensor]


ROUNDING = {"d_l2": [None, 3e-8, 6e-9, 2e-9], "changed": [None, 1, 1, 1]}
FAST = {"d_l2": [None, 1e-3, 1e-3, 1e-3]}


def test_stalled_finds_the_batchnorm_of_a_branch_and_of_its_own_channels_only():
    # model.weights lists a residual block depth by depth: the shortcut convolution's BatchNorm
    # comes after the main path's convolution, not next to it
    block = {"b0/kernel": FAST, "b0/bias": ROUNDING, "b2/kernel": FAST, "b2/bias": ROUNDING,
             "b0bn/moving_mean": {}, "b2bn/moving_mean": {}}
    shapes = {p: ((3, 3, 4, 8) if "kernel" in p else (8,)) for p in block}
    assert _stalled_biases(block, shapes) == []
    # a BatchNorm over another number of channels is not the one the bias feeds
    shapes.update({"b0bn/moving_mean": (16,), "b2bn/moving_mean": (16,)})
    assert _stalled_biases(block, shapes) == ["b0/bias", "b2/bias"]


def test_stalled_measures_a_bias_against_the_slowest_of_its_own_layers_kernels():
    shapes = {"rnn/kernel": (4, 8), "rnn/recurrent_kernel": (8, 8), "rnn/bias": (8,), "bn/moving_mean": (8,)}
    slow = {"d_l2": [None, 5e-9, 5e-9, 5e-9]}
    # the recurrent kernel moves 5x the bias only: not a bias BatchNorm cancels (the kernel is a stall too)
    assert _stalled_biases({"rnn/kernel": FAST, "rnn/recurrent_kernel": slow, "rnn/bias": ROUNDING,
                            "bn/moving_mean": {}}, shapes) == ["rnn/bias"]
    # 20-50x slower than its kernel is cancelled at the default 1/10, judged at 1/100
    kernel = {"d_l2": [None, 3e-7, 3e-7, 1e-7]}
    bias = {"d_l2": [None, 9e-9, 9e-9, 4e-9], "changed": [None, 1, 1, 1]}
    two = {"c/kernel": kernel, "c/bias": bias, "bn/moving_mean": {}}
    two_shapes = {"c/kernel": (3, 3, 1, 8), "c/bias": (8,), "bn/moving_mean": (8,)}
    assert _stalled_biases(two, two_shapes) == []
    assert _stalled_biases(two, two_shapes, cancelled=100) == ["c/bias"]


def test_stalled_tells_two_layers_of_the_same_name_apart():
    # the second layer named "c" records c/kernel#1, c/bias#1: its bias is measured against its
    # own kernel (fast), not the first layer's (stalled)
    tensors = {"c/kernel": {"d_l2": [None, 5e-9, 5e-9, 5e-9]}, "c/bias": FAST, "bn/moving_mean": {},
               "c/kernel#1": FAST, "c/bias#1": ROUNDING, "bn/moving_mean#1": {}}
    shapes = {p: ((3, 3, 1, 8) if "kernel" in p else (8,)) for p in tensors}
    assert _stalled_biases(tensors, shapes) == []


def test_tensor_role_of_a_second_layer_of_the_same_name():
    from weightwatch.run.schema import tensor_role

    assert tensor_role("m/c/bias#1", 1) == "bias" and tensor_role("m/bn/moving_mean#2", 1) == "moving_stat"
    assert tensor_role("m/c/kernel#1", 2) == "kernel" and tensor_role("m/c/bias", 1) == "bias"


def test_stalled_ignores_shrinking_but_nonzero_updates():
    run = make_run({"a/kernel": {"d_l2": [None, 1e-2, 1e-4, 1e-6]}}, 4)
    assert run_check(run, "stalled").status == "passed"


def test_dead_units_fraction():
    run = make_run({"a/kernel": {"dead_units": [None, 2, 8]}}, 3, shapes={"a/kernel": (4, 10)})
    f = first(run_check(run, "dead-units", max_fraction=0.5))
    assert f.record == 2 and f.value == pytest.approx(0.8)


def test_oscillation_needs_patience():
    run = make_run({"a/kernel": {"d_cos": [None, None, -0.95, 0.2, -0.97, -0.99]}}, 6)
    f = first(run_check(run, "oscillation", patience=2, min_ratio=0))
    assert f.record == 5


def test_oscillation_leaves_a_bounce_at_the_minimum_alone():
    """A reversal counts when the update rewrites min_ratio of the weights or more (l2 1.0 here)."""
    cos = [None, None, -0.95, -0.97, -0.99]
    jump = make_run({"a/kernel": {"d_cos": cos, "l2": 1.0, "d_l2": 0.3}}, 5)
    bounce = make_run({"a/kernel": {"d_cos": cos, "l2": 1.0, "d_l2": 0.05}}, 5)
    assert first(run_check(jump, "oscillation")).record == 2        # the check's default: 0.13
    assert run_check(bounce, "oscillation").status == "passed"
    assert first(run_check(bounce, "oscillation", min_ratio=0.04)).record == 2


def test_update_disparity_against_last_tensor():
    tensors = {"l1/kernel": {"d_l2": [None, 1e-6, 1e-6]}, "l2/kernel": {"d_l2": [None, 1e-2, 1e-2]},
               "out/kernel": {"d_l2": [None, 1e-2, 1e-2]}}
    res = run_check(make_run(tensors, 3), "update-disparity", max_disparity=1000.0)
    assert [f.tensor for f in res.findings] == ["l1/kernel"]
    assert res.findings[0].value == pytest.approx(1e4)


def test_nonfinite_log_distinguishes_missing_from_nan():
    logs = [{}, {"loss": 1.0}, {}, {"loss": None}]
    f = first(run_check(make_run({"a/kernel": {}}, 4, logs=logs), "nonfinite-log"))
    assert f.record == 3 and f.metric == "loss" and f.tensor is None


def test_loss_divergence_against_best_so_far():
    logs = [{}, {"loss": 2.0}, {"loss": 1.0}, {"loss": 2.5}, {"loss": 3.5}]
    f = first(run_check(make_run({"a/kernel": {}}, 5, logs=logs), "loss-divergence", max_ratio=3.0))
    assert f.record == 4 and f.value == pytest.approx(3.5)


def test_loss_plateau():
    logs = [{}] + [{"loss": v} for v in (1.0, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4)]
    f = first(run_check(make_run({"a/kernel": {}}, 9, logs=logs), "loss-plateau", window=5))
    assert f.record == 8
