"""Baseline gating without a framework: matching, bands, the baseline file, the engine.

Real Keras reference runs and the CLI are in tests/cli/test_baseline_cli.py;
here the runs are written with exact figures, so every band and every
departure is known in advance.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from runbuilder import trajectory_run as _run, write_run
from weightwatch import BaselineError, check, open_run
from weightwatch.checking.baseline import (
    Band, TensorRef, canonical, departures, learn_baseline, match_tensors, record_keys,
)
from weightwatch.checking.baseline_file import baseline_to_dict, load_baseline, read_baseline, write_baseline
from weightwatch.checking.config import load_rules

@pytest.fixture
def refs(tmp_path):
    return [_run(tmp_path / f"ref{s}", jitter=0.02 * (s + 1)) for s in range(3)]


def _baseline_results(report):
    return {r.id: r for r in report.results if r.rule.check_def.baseline}


# -- matching ---------------------------------------------------------------------------------
def test_canonical_drops_keras_instance_counters():
    assert canonical("sequential_3/dense_7/kernel") == "sequential/dense/kernel"
    assert canonical("block_1/conv2d/kernel") == "block/conv2d/kernel"


def test_tensors_match_across_counters_in_model_order():
    # Another process numbered the same three Dense layers 3, 4, 5: dense_1 here is dense_4 there,
    # not the dense_1 an exact match would pick.
    ours = [TensorRef("dense_3/kernel"), TensorRef("dense_4/kernel"), TensorRef("dense_5/kernel")]
    theirs = [TensorRef("dense/kernel"), TensorRef("dense_1/kernel"), TensorRef("dense_2/kernel")]
    got, unmatched = match_tensors(ours, theirs)
    assert got.tolist() == [0, 1, 2] and unmatched == []


def test_unequal_groups_pair_only_identical_paths_and_list_the_rest():
    ours = [TensorRef("dense/kernel", (4, 3)), TensorRef("head/kernel", (3, 2))]
    theirs = [TensorRef("dense/kernel", (4, 3)), TensorRef("dense_1/kernel", (3, 3)),
              TensorRef("head/kernel", (3, 1))]
    got, unmatched = match_tensors(ours, theirs)
    assert got.tolist() == [0, -1]
    assert unmatched == [(1, "not in this run"), (2, "shape (3, 2) here, (3, 1) in the reference")]


def test_an_added_layer_with_shifted_counters_pairs_by_shape_in_model_order():
    # The references: Dense 16->8, 8->8, 8->4 (dense, dense_1, dense_2).  The candidate, from
    # another process, inserts a Dense 8->6 after the first: dense_4 .. dense_7.  Identical paths
    # pair nothing; in model order by shape, dense_4/5/7 are the references' three layers.
    theirs = [TensorRef("dense/kernel", (16, 8)), TensorRef("dense_1/kernel", (8, 8)),
              TensorRef("dense_2/kernel", (8, 4))]
    ours = [TensorRef("dense_4/kernel", (16, 8)), TensorRef("dense_5/kernel", (8, 8)),
            TensorRef("dense_6/kernel", (8, 6)), TensorRef("dense_7/kernel", (8, 4))]
    got, unmatched = match_tensors(ours, theirs)
    assert got.tolist() == [0, 1, -1, 2] and unmatched == []
    # the same process (counters not shifted): identical paths still pair where that pairs more
    same = [TensorRef("dense/kernel", (16, 8)), TensorRef("dense_1/kernel", (8, 8)),
            TensorRef("dense_3/kernel", (8, 8)), TensorRef("dense_2/kernel", (8, 4))]
    got, unmatched = match_tensors(same, theirs)
    assert got.tolist() == [0, 1, -1, 2] and unmatched == []


def test_an_added_layer_in_another_process_is_reported_as_such(tmp_path, refs):
    # The candidate inserts a Dense 3->3 before the last layer, and its counters come from another
    # process (dense_4, dense_5, dense_6): the references' tensors all find their counterpart, the
    # added layer alone is listed, and the run passes.
    layout = {"dense/kernel": {"shape": [4, 3]}, "dense/bias": {"shape": [3]},
              "added/kernel": {"shape": [3, 3]}, "dense_1/kernel": {"shape": [3, 2]}}
    names = {"dense/kernel": "dense_4/kernel", "dense/bias": "dense_4/bias", "added/kernel": "dense_5/kernel",
             "dense_1/kernel": "dense_6/kernel"}
    run = _run(tmp_path / "added", layout=layout, names=names, model="sequential_2", jitter=0.05)
    report = check(run, baseline=learn_baseline(refs))
    assert report.baseline["missing"] == []
    assert report.baseline["only_here"] == ["dense_5/kernel"]
    assert _baseline_results(report)["baseline-tensors"].status == "passed"
    assert not report.failed, report.failed


def test_records_match_by_epoch_and_by_step_for_batch_records(tmp_path):
    run = open_run(write_run(tmp_path / "r", tensors={"d/kernel": {}}, records=[
        {"epoch": 0, "trigger": "begin", "step": 0}, {"epoch": 0, "batch": 1, "trigger": "batch", "step": 2},
        {"epoch": 1, "step": 4}, {"epoch": 1, "batch": 3, "step": 7, "trigger": "guard"}]))
    assert record_keys(run) == [("epoch", 0, 0), ("batch", 2, 0), ("epoch", 1, 0), None]


# -- bands --------------------------------------------------------------------------------------
def test_band_is_median_plus_minus_spread_sigmas_and_never_narrower_than_tolerance():
    stack = np.log10(np.array([[[1.0], [1.0]], [[1.2], [1.0]], [[0.8], [1.0]]]))  # 3 refs, 2 records
    band = Band.learn(stack)
    assert band.center[:, 0] == pytest.approx([0.0, 0.0])
    sigma0 = (math.log10(1.2) - math.log10(0.8)) / 1.693        # range / d2(3)
    assert band.sigma[:, 0] == pytest.approx([sigma0, 0.0])
    inflate = math.sqrt(1 + math.pi / 6)                         # the median of 3 is itself uncertain
    lo, hi = band.limits(spread=4.0, tolerance=1.1, references=3)
    assert math.log10(hi[0, 0]) == pytest.approx(4 * sigma0 * inflate)
    # record 1: the references agree exactly, but the band keeps the tensor's typical spread
    assert math.log10(hi[1, 0]) == pytest.approx(4 * (sigma0 / 2) * inflate)
    wide_floor = band.limits(spread=4.0, tolerance=3.0, references=3)[1]
    assert wide_floor[1, 0] == pytest.approx(3.0)
    lo1, hi1 = band.limits(spread=4.0, tolerance=2.0, references=1)
    assert hi1[1, 0] == pytest.approx(2.0) and lo1[1, 0] == pytest.approx(0.5)


def test_band_widens_where_the_references_disagree(tmp_path, refs):
    base = learn_baseline(refs)
    sigma = base.metrics["l2"].sigma
    assert np.isfinite(sigma).all() and (sigma >= 0).all()
    wide = learn_baseline(refs[:2] + [_run(tmp_path / "wild", jitter=0.3)])
    assert np.nanmedian(wide.metrics["l2"].sigma) > np.nanmedian(sigma)


# -- the engine ---------------------------------------------------------------------------------
def test_a_reseeded_run_passes_and_a_threefold_learning_rate_fails(tmp_path, refs):
    base = learn_baseline(refs)
    ok = check(_run(tmp_path / "seed", jitter=0.05), baseline=base)
    assert not ok.failed, ok.failed
    assert set(_baseline_results(ok)) == {"baseline-norm", "baseline-update-ratio", "baseline-gradient",
                                          "baseline-loss", "baseline-metrics", "baseline-tensors",
                                          "baseline-relative-gradient", "baseline-relative-update",
                                          "baseline-update-noise"}
    bad = check(_run(tmp_path / "lr3", lr=3.0, jitter=0.05), baseline=base)
    failed = {r.id for r in bad.failed}
    assert failed == {"baseline-update-ratio"}, failed
    f = _baseline_results(bad)["baseline-update-ratio"].findings[0]
    assert "above the reference band" in f.message and f.band[0] < f.band[1] < f.value
    assert f.value / f.band[1] == pytest.approx(float(f.message.split("x above")[0].split()[-1]), rel=1e-2)
    assert bad.diagnosis[0].id == "baseline" and bad.diagnosis[0].first.tensor == f.tensor


def test_counters_from_another_process_still_match(tmp_path, refs):
    names = {"dense/kernel": "dense_7/kernel", "dense/bias": "dense_7/bias", "dense_1/kernel": "dense_8/kernel"}
    report = check(_run(tmp_path / "other", names=names, model="sequential_3", jitter=0.05),
                   baseline=learn_baseline(refs))
    assert not report.failed, report.failed
    assert report.baseline["only_here"] == [] and report.baseline["missing"] == []


def test_a_tensor_missing_from_the_run_is_a_finding(tmp_path, refs):
    report = check(_run(tmp_path / "smaller", drop=("dense_1/kernel",), jitter=0.05),
                   baseline=learn_baseline(refs))
    r = _baseline_results(report)["baseline-tensors"]
    assert r.status == "failed"
    assert [f.tensor for f in r.findings] == ["dense_1/kernel"]
    assert r.findings[0].message == "dense_1/kernel is in the reference but not in this run"


def test_runs_of_different_lengths_are_compared_over_their_common_part(tmp_path, refs):
    report = check(_run(tmp_path / "longer", records=9, jitter=0.05), baseline=learn_baseline(refs))
    assert "3 of this run's 9 records have no counterpart" in report.baseline["compared"]
    assert "the baseline ends at epoch 5" in report.baseline["compared"]
    short = check(_run(tmp_path / "short", records=3, jitter=0.05), baseline=learn_baseline(refs))
    assert "this run ends before the baseline" in short.baseline["compared"]


def test_baseline_rules_do_not_run_without_a_baseline(tmp_path, refs):
    report = check(refs[0])
    assert not _baseline_results(report)
    assert report.baseline is None


def test_baseline_rules_are_tuned_and_disabled_like_any_rule(tmp_path, refs):
    lr3 = _run(tmp_path / "lr3", lr=3.0, jitter=0.05)
    base = learn_baseline(refs)
    wide = load_rules({"override": {"baseline-update-ratio": {"tolerance": 5.0, "spread": 50}}},
                      use_project_config=False)
    assert not check(lr3, wide, baseline=base).failed
    off = load_rules({"disable": ["baseline-update-ratio"]}, use_project_config=False)
    assert not check(lr3, off, baseline=base).failed
    assert not check(lr3, baseline=base, keyword="not baseline").failed


def test_one_reference_uses_the_single_tolerance(tmp_path, refs):
    base = learn_baseline(refs[:1])
    assert base.n_references == 1
    assert not check(_run(tmp_path / "seed", jitter=0.05), baseline=base).failed
    assert check(_run(tmp_path / "lr6", lr=6.0, jitter=0.05), baseline=base).failed   # 4x band


# -- relative figures ---------------------------------------------------------------------------
def test_a_gradient_shifted_between_layers_fails_the_relative_check_a_global_one_does_not(tmp_path, refs):
    base = learn_baseline(refs)
    assert {"rel_grad_rms", "rel_update_ratio"} <= set(base.metrics)
    # the whole network's gradient 6x: every tensor's own band (at least 4x) sees it, the
    # relative one not
    everywhere = {p: 6.0 for p in ("dense/kernel", "dense/bias", "dense_1/kernel")}
    glob = _baseline_results(check(_run(tmp_path / "all", grad=everywhere, jitter=0.05), baseline=base))
    assert glob["baseline-gradient"].status == "failed"
    assert glob["baseline-relative-gradient"].status == "passed"
    # the bias's gradient alone 5x: the relative band (here its 3x floor) is left, by 5 / 3
    one = _baseline_results(check(_run(tmp_path / "bias", grad={"dense/bias": 5.0}, jitter=0.05), baseline=base))
    r = one["baseline-relative-gradient"]
    assert r.status == "failed" and {f.tensor for f in r.findings} == {"sequential/dense/bias"}
    f = r.findings[0]
    assert "sequential/dense/bias gradient RMS relative to the run's median kernel" in f.message
    assert "above the reference band" in f.message
    assert f.value / f.band[1] == pytest.approx(5 / 3, rel=0.15)


def test_a_layer_learning_out_of_step_fails_the_relative_update_check(tmp_path, refs):
    base = learn_baseline(refs)
    lr3 = _baseline_results(check(_run(tmp_path / "lr3", lr=3.0, jitter=0.05), baseline=base))
    assert lr3["baseline-relative-update"].status == "passed"          # a global change cancels
    # dense_1/kernel learns 16x faster; the median of two kernels is their geometric mean, so
    # relative to it dense_1/kernel is sqrt(16) = 4x up (past the 3x floor), dense/kernel 4x down
    fast = _baseline_results(check(_run(tmp_path / "fast", update={"dense_1/kernel": 16.0}, jitter=0.05),
                                   baseline=base))
    r = fast["baseline-relative-update"]
    assert r.status == "failed"
    sides = {f.tensor: f.message for f in r.findings}
    assert "above the reference band" in sides["sequential/dense_1/kernel"]
    assert all("below" in m for t, m in sides.items() if t != "sequential/dense_1/kernel")


def test_noisier_steps_fail_the_update_noise_check(tmp_path):
    refs = [_run(tmp_path / f"ref{s}", cos=0.9, jitter=0.02 * (s + 1)) for s in range(3)]
    base = learn_baseline(refs)
    assert "incoherence" in base.metrics
    ok = _baseline_results(check(_run(tmp_path / "seed", cos=0.9, jitter=0.05), baseline=base))
    assert ok["baseline-update-noise"].status == "passed"
    # consecutive updates agree less (cos 0.5: 1 - cos five times the references' 0.1)
    r = _baseline_results(check(_run(tmp_path / "dropout", cos=0.5, jitter=0.05), baseline=base))[
        "baseline-update-noise"]
    assert r.status == "failed"
    f = r.findings[0]
    assert "update incoherence (1 - cos with the previous update)" in f.message
    assert "above the reference band at epoch 3" in f.message    # the 2nd update (epoch 2) + patience
    assert f.value == pytest.approx(0.5, rel=0.2)


def test_relative_checks_need_two_references(tmp_path, refs):
    report = check(_run(tmp_path / "bias", grad={"dense/bias": 5.0}, jitter=0.05), baseline=learn_baseline(refs[:1]))
    for rid in ("baseline-relative-gradient", "baseline-relative-update", "baseline-update-noise"):
        r = _baseline_results(report)[rid]
        assert r.status == "skipped" and "two or more reference runs" in r.note, rid


def test_a_run_without_gradient_estimates_skips_the_relative_gradient(tmp_path, refs):
    base = learn_baseline(refs)
    none = {p: None for p in ("dense/kernel", "dense/bias", "dense_1/kernel")}
    r = _baseline_results(check(_run(tmp_path / "nograd", grad=none, jitter=0.05), baseline=base))[
        "baseline-relative-gradient"]
    assert r.status == "skipped" and "no gradient estimate" in r.note


# -- the baseline file --------------------------------------------------------------------------
def test_baseline_file_round_trips_and_is_strict_json(tmp_path, refs):
    base = learn_baseline(refs)
    path = write_baseline(base, tmp_path / "main.baseline.json")
    text = path.read_text()
    json.loads(text, parse_constant=lambda t: pytest.fail(f"non-strict token {t}"))
    again = read_baseline(path)
    assert [t.path for t in again.tensors] == [t.path for t in base.tensors]
    np.testing.assert_allclose(again.metrics["l2"].center, base.metrics["l2"].center, rtol=1e-4)
    assert [t.role for t in again.tensors] == ["kernel", "bias", "kernel"]
    np.testing.assert_allclose(again.metrics["rel_grad_rms"].sigma, base.metrics["rel_grad_rms"].sigma,
                               rtol=1e-4, atol=1e-9)
    lr3 = _run(tmp_path / "lr3", lr=3.0, jitter=0.05)
    assert {r.id for r in check(lr3, baseline=path).failed} == {"baseline-update-ratio"}
    assert check(lr3, baseline=path).baseline["baseline"] == f"{path} (3 reference runs)"


def test_a_version_1_file_with_numbers_in_lists_still_reads(tmp_path, refs):
    base = learn_baseline(refs)
    doc = baseline_to_dict(base)
    assert doc["version"] == 2 and set(doc["metrics"]["l2"]["center"]) == {"float32"}
    doc["version"] = 1
    for name, band in doc["metrics"].items():      # version 1: every array a nested list
        for part in ("center", "sigma"):
            band[part] = [[None if math.isnan(v) else v for v in row]
                          for row in getattr(base.metrics[name], part).tolist()]
    path = tmp_path / "v1.baseline.json"
    path.write_text(json.dumps(doc))
    again = read_baseline(path)
    np.testing.assert_allclose(again.metrics["update_ratio"].center, base.metrics["update_ratio"].center)
    lr3 = _run(tmp_path / "lr3", lr=3.0, jitter=0.05)
    assert {r.id for r in check(lr3, baseline=path).failed} == {"baseline-update-ratio"}


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(format="nope"), 'no "format": "weightwatch-baseline"'),
    (lambda d: d.update(version=99), "baseline file version 99"),
    (lambda d: d["metrics"]["l2"].update(center=[[1.0]]), 'metrics "l2" center: shape (1, 1), expected (6, 3)'),
    (lambda d: d["records"][0].update(key="epoch 0"), "record 0 is not an object"),
    (lambda d: d["metrics"].update(l3={}), 'unknown figure "l3"'),
    (lambda d: d.update(version=True), "baseline file version True"),
    (lambda d: d["records"][1].update(batch={"x": 1}), "record 1: batch and step must be whole numbers"),
    (lambda d: d["metrics"]["l2"].update(sigma={"float32": "not base64!"}), 'metrics "l2" sigma: not an array'),
    (lambda d: d["metrics"]["l2"].update(sigma={"float32": "AAAAAA=="}),
     'metrics "l2" sigma: 1 float32 values, expected 18 (6, 3)'),
    (lambda d: d["metrics"]["l2"].update(sigma={"float64": "AAAAAA=="}), 'metrics "l2" sigma: not an array'),
])
def test_a_bad_baseline_file_is_one_line_naming_it(tmp_path, refs, edit, message):
    doc = baseline_to_dict(learn_baseline(refs))
    edit(doc)
    path = tmp_path / "bad.baseline.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(BaselineError) as exc:
        load_baseline(path)
    assert str(exc.value).startswith(f"{path}: ") and message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_not_json_and_missing_references_are_baseline_errors(tmp_path, refs):
    (tmp_path / "x.json").write_text("{nope")
    with pytest.raises(BaselineError, match="not strict JSON"):
        load_baseline(tmp_path / "x.json")
    with pytest.raises(BaselineError, match="no such reference run directory"):
        load_baseline([refs[0], tmp_path / "absent"])
    with pytest.raises(BaselineError, match="a baseline file stands alone"):
        load_baseline([refs[0], tmp_path / "x.json"])


# -- diff -----------------------------------------------------------------------------------------
def test_departures_rank_the_changed_figure_first(tmp_path, refs):
    found, _ = departures(open_run(_run(tmp_path / "lr3", lr=3.0, jitter=0.02)), open_run(refs[0]))
    assert found[0].figure == "update_ratio" and found[0].ratio == pytest.approx(3.0, rel=0.1)
    same, _ = departures(open_run(refs[0]), open_run(refs[0]))
    assert same == []


def test_tensors_only_this_run_has_are_listed_never_dropped_silently(tmp_path, capsys):
    from weightwatch.cli import main

    refs = [_run(tmp_path / f"small{s}", drop=("dense_1/kernel",), jitter=0.02 * (s + 1)) for s in range(2)]
    run = _run(tmp_path / "bigger", jitter=0.05)
    report = check(run, baseline=learn_baseline(refs))
    assert report.baseline["only_here"] == ["dense_1/kernel"]     # local paths, as under "missing here"
    assert not report.failed
    capsys.readouterr()
    assert main(["check", str(run), "--no-config", *(a for r in refs for a in ("--baseline", str(r)))]) == 0
    out = capsys.readouterr().out
    assert "baseline: 2 reference runs" in out and "only in this run: dense_1/kernel" in out


def _logged(path, losses, val_losses=None, epochs=None):
    recs = [{"epoch": (epochs or range(len(losses)))[i],
             "logs": {"loss": v} | ({"val_loss": val_losses[i]} if val_losses else {})}
            for i, v in enumerate(losses)]
    return write_run(path, tensors={"sequential/dense/kernel": {"shape": [4, 3]}}, records=recs, model="sequential")


def test_a_log_finding_words_its_own_departure_when_the_rule_excludes_another_log(tmp_path):
    refs = [_logged(tmp_path / f"r{s}", [2 / (1 + r) * (1 + 0.01 * s) for r in range(5)],
                    [2.5 / (1 + r) * (1 + 0.01 * s) for r in range(5)]) for s in range(2)]
    run = _logged(tmp_path / "c", [20 / (1 + r) for r in range(5)], [7.5 / (1 + r) for r in range(5)])
    report = check(run, baseline=learn_baseline(refs))
    f = _baseline_results(report)["baseline-metrics"].findings[0]    # excludes "loss"
    assert f.key == "val_loss"
    assert f.message.startswith(f"val_loss {f.value / f.band[1]:.3g}x above the reference band"), f.message


def test_no_record_in_common_is_an_input_problem_not_a_pass(tmp_path):
    refs = [_logged(tmp_path / f"r{s}", [1.0, 0.9], epochs=[5, 6]) for s in range(2)]
    report = check(_logged(tmp_path / "c", [1.0, 0.9]), baseline=learn_baseline(refs))
    assert report.exit_code() == 4
    assert any("no record of this run has a counterpart in the baseline" in p for p in report.problems)


def test_a_negative_loss_is_worded_as_such(tmp_path):
    refs = [_logged(tmp_path / f"r{s}", [1.0 - 0.1 * r + 0.01 * s for r in range(5)]) for s in range(2)]
    report = check(_logged(tmp_path / "c", [1.0, 0.5, -0.2, -0.3, -0.4]), baseline=learn_baseline(refs))
    f = _baseline_results(report)["baseline-loss"].findings[0]
    assert f.message.startswith("loss at -0.3, below the reference band"), f.message   # patience 2


def test_references_named_twice_or_through_a_link_count_once(tmp_path, refs):
    (tmp_path / "again").symlink_to(refs[0])
    assert load_baseline([refs[0], refs[0], tmp_path / "again", refs[1]]).n_references == 2
    path = write_baseline(learn_baseline(refs), tmp_path / "main.baseline.json")
    (tmp_path / "link.json").symlink_to(path)
    assert load_baseline(tmp_path / "link.json").n_references == 3


def test_references_with_other_update_spans_say_so(tmp_path, refs):
    batchy = write_run(tmp_path / "batchy", tensors={"sequential/dense/kernel": {"shape": [4, 3]}}, records=[
        {"epoch": 0, "trigger": "begin", "step": 0},
        {"epoch": 0, "batch": 3, "trigger": "batch", "step": 3},
        {"epoch": 1, "step": 6}, {"epoch": 2, "step": 12}], model="sequential")
    plain = write_run(tmp_path / "plain", tensors={"sequential/dense/kernel": {"shape": [4, 3]}}, records=[
        {"epoch": 0, "trigger": "begin", "step": 0}, {"epoch": 1, "step": 6}, {"epoch": 2, "step": 12}],
        model="sequential")
    base = learn_baseline([plain, batchy])
    assert any("span different records" in n for n in base.notes)


def test_a_log_only_some_references_have_is_banded_from_those_and_says_so(tmp_path):
    losses = [2 / (1 + r) for r in range(5)]
    refs = [_logged(tmp_path / "r0", losses, val_losses=[v * 1.1 for v in losses]),
            _logged(tmp_path / "r1", [v * 1.01 for v in losses], val_losses=[v * 1.12 for v in losses]),
            _logged(tmp_path / "r2", [v * 0.99 for v in losses])]          # logs no val_loss
    base = learn_baseline(refs)
    assert "val_loss" in base.logs
    assert any("fewer references than the baseline has" in n and "val_loss (2 of 3)" in n for n in base.notes)
    assert not any("loss (" in n.replace("val_loss", "") for n in base.notes)   # loss: all three
    full = learn_baseline(refs[:2])
    assert not any("fewer references" in n for n in full.notes)


def test_every_baseline_check_has_a_diagnosis_cause(tmp_path):
    from weightwatch.checking.checks import CHECKS
    from weightwatch.checking.diagnosis import CAUSE_OF_CHECK

    missing = [c for c, d in CHECKS.items() if d.baseline and c not in CAUSE_OF_CHECK]
    assert not missing
    refs = [_run(tmp_path / f"ref{s}", cos=0.9, jitter=0.02 * (s + 1)) for s in range(3)]
    report = check(_run(tmp_path / "dropout", cos=0.5, jitter=0.05), baseline=learn_baseline(refs))
    assert report.diagnosis[0].id == "baseline"


def test_baseline_checks_are_registered_after_the_modules_are_dropped_and_imported_again():
    """pytester's in-process runs and IPython's autoreload drop modules from sys.modules while the
    package object stays: importing the rules again must register the baseline checks in the
    fresh registry, not find the old module through the package's attribute."""
    import subprocess
    import sys

    from conftest import subprocess_env

    code = (
        "import sys\n"
        "import weightwatch.checking.rules\n"
        "for name in [m for m in sys.modules if m.startswith('weightwatch.checking.')]:\n"
        "    del sys.modules[name]\n"
        "from weightwatch.checking.checks import CHECKS\n"
        "from weightwatch.checking.config import load_rules\n"
        "assert 'baseline-norm' in CHECKS, sorted(CHECKS)\n"
        "assert load_rules(use_project_config=False).get('baseline-norm') is not None\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
