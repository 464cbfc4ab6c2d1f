"""The labelled scenario suite agrees with what the recorder writes.

Each scenario's ground truth (``tests/scenarios.py``) is checked against the
figures of the run it builds: the NaN scenario has non-finite weights at its
``first_visible`` record and not before, the frozen-trap scenario has
``frozen == 1`` and ``changed == 1`` there, a healthy BatchNorm run has moving
statistics that change while not frozen, and so on.  The rule engine is
calibrated on these runs, so a label that the recording contradicts would
calibrate it wrongly.

Scenarios marked ``fast`` run in the default suite (about 20 s with the
TensorFlow import); the others are ``slow``.
"""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import scenarios as sc  # noqa: E402

ISSUE_FAULTS = {"exploding", "nan", "norm-growth", "frozen-trap", "frozen-by-mistake", "lr-zero",
                "dead-units", "vanishing", "oscillation", "unfrozen-base"}
ISSUE_HEALTHY = {"batchnorm-mlp", "frozen-base-with-bn", "dropout-mlp", "embedding-lstm",
                 "embedding-gru", "weight-decay-adamw", "converging-decay", "mixed-precision",
                 "nested-model", "subclassed-model", "sparse-relu"}


# --------------------------------------------------------------------------- catalogue (no TF)


def test_catalogue_covers_the_issue():
    faulty = [s for s in sc.SCENARIOS if not s.healthy]
    healthy = [s for s in sc.SCENARIOS if s.healthy]
    assert len(faulty) >= 12 and len(healthy) >= 12
    assert {s.fault_class for s in faulty} == ISSUE_FAULTS
    assert ISSUE_HEALTHY <= {s.name for s in healthy}
    assert len({s.name for s in sc.SCENARIOS}) == len(sc.SCENARIOS)
    fast = [s for s in sc.SCENARIOS if s.fast]
    assert any(s.healthy for s in fast) and any(not s.healthy for s in fast)


@pytest.mark.parametrize("s", sc.SCENARIOS, ids=lambda s: s.name)
def test_labels_are_well_formed(s):
    assert s.description and callable(s.build)
    if s.healthy:
        assert s.verdict == "pass" and not s.where and s.intent is None
        return
    assert s.verdict == "fail" and s.first_visible >= 1
    assert all(isinstance(p, str) and p for p in s.where)
    for rule in s.intent or []:
        assert {"id", "check", "select"} <= set(rule)
        # an intent must select (some of) the fault's tensors
        assert any(fnmatch.fnmatchcase(sel, w) or sel == w for sel in rule["select"] for w in s.where)


def test_cli_lists_the_catalogue(capsys):
    assert sc.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(s.name in out for s in sc.SCENARIOS)


# --------------------------------------------------------------------------- built runs


# `built` (each scenario built once per session) lives in conftest.py: test_detection.py shares it.


def _param(s):
    marks = () if s.fast else (pytest.mark.slow,)
    return pytest.param(s, id=s.name, marks=marks)


def _mask(run, patterns):
    return np.array([any(fnmatch.fnmatchcase(p, g) for g in patterns) for p in run.tensor_names])


def _ratio(run, metric):
    """``metric`` / l2 of the previous record, NaN where that l2 is 0 or missing."""
    l2 = run.metric("l2")
    prev = np.full_like(l2, np.nan)
    prev[1:] = l2[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(prev > 0, run.metric(metric) / prev, np.nan)


def _kernels(run, cols=None):
    k = np.array([t.role == "kernel" for t in run.tensors])
    return k if cols is None else k & cols


def _dead_fraction(run, r, cols):
    units = np.array([t.units or np.nan for t in run.tensors], dtype=float)
    v = (run.metric("dead_units")[r] / units)[_kernels(run, cols)]
    v = v[~np.isnan(v)]
    return float(v.max()) if v.size else 0.0


def _nonfinite(run, r, cols=None):
    cols = np.ones(len(run.tensors), bool) if cols is None else cols
    return float(np.nansum(run.metric("nan")[r, cols]) + np.nansum(run.metric("inf")[r, cols]))


@pytest.mark.parametrize("s", [_param(s) for s in sc.SCENARIOS])
def test_ground_truth_matches_recording(s, built):
    run = built(s)
    assert not run.problems
    n = len(run.records)
    assert [r.index for r in run.records] == list(range(n))
    changed, frozen = run.metric("changed"), run.metric("frozen")
    loss = run.log("loss")
    if s.healthy:
        _check_healthy(s, run)
        return
    fv = s.first_visible
    assert fv < n, f"first_visible={fv} but the run has {n} records"
    cols = _mask(run, s.where)
    for pattern in s.where:
        assert _mask(run, [pattern]).any(), f"{pattern!r} matches no tensor of {run.tensor_names}"
    upd = _ratio(run, "d_l2")
    grow = _ratio(run, "l2")

    if s.fault_class == "exploding":
        assert np.nanmax(grow[fv, cols]) > 100  # orders of magnitude in one record
        assert np.isfinite(loss[fv])
        assert any(_nonfinite(run, r) > 0 for r in range(fv + 1, n)), "explosion should end in NaN"
    elif s.fault_class == "nan":
        assert _nonfinite(run, fv, cols) > 0 or not np.isfinite(loss[fv])
        assert all(_nonfinite(run, r) == 0 for r in range(fv)), "NaN earlier than first_visible"
        assert all(np.isfinite(loss[r]) for r in range(1, fv))
    elif s.fault_class == "norm-growth":
        for r in range(fv, n):
            assert np.all(grow[r, cols] > 1.2), (r, grow[r, cols])
        assert all(_nonfinite(run, r) == 0 for r in range(n)) and np.all(np.isfinite(loss[1:]))
    elif s.fault_class == "frozen-trap":
        assert np.all(frozen[fv, cols] == 1) and np.all(changed[fv, cols] == 1)
        assert np.all(frozen[:fv, cols] == 0)
        assert np.all(changed[fv:, cols] == 1)
    elif s.fault_class == "frozen-by-mistake":
        # Exactly what an intentional freeze looks like: only intent can tell them apart.
        assert np.all(frozen[:, cols] == 1) and np.all(changed[1:, cols] == 0)
        assert s.intent
    elif s.fault_class == "lr-zero":
        assert np.all(changed[fv:] == 0), "every tensor must stop changing"
        assert np.all(run.log("learning_rate")[fv:] == 0)
        if fv > 1:
            assert np.any(changed[fv - 1] == 1)
    elif s.fault_class == "dead-units":
        if s.known_gap:  # dead_units cannot see these; the spike at first_visible can
            assert np.nanmax(upd[fv]) > 10
            assert all(_dead_fraction(run, r, cols) == 0 for r in range(1, n))
        elif np.nanmax(upd[fv]) > 10:  # a spike at first_visible kills units for the next records
            assert all(_dead_fraction(run, r, cols) >= 0.5 for r in range(fv + 1, n))
            assert all(_dead_fraction(run, r, cols) < 0.5 for r in range(1, fv))
        else:
            assert all(_dead_fraction(run, r, cols) >= 0.5 for r in range(fv, n))
    elif s.fault_class == "vanishing":
        kernels = _kernels(run)
        early = np.nanmax(upd[fv, kernels & cols])
        late = np.nanmax(upd[fv, kernels & ~cols])
        assert early < 1e-4 * late, (early, late)
        assert np.all(changed[fv, cols] == 1), "vanishing, not stalled"
    elif s.fault_class == "oscillation":
        dcos = run.metric("d_cos")
        assert np.all(dcos[fv:, _kernels(run, cols)] < -0.9)
        assert loss[-1] > loss[fv]
    elif s.fault_class == "unfrozen-base":
        assert np.all(frozen[:, cols] == 0) and np.all(changed[fv:, cols] == 1)
        assert any(rule["check"] == "unchanged" for rule in s.intent)
    else:  # pragma: no cover
        pytest.fail(f"no check for fault class {s.fault_class!r}")


def _check_healthy(s, run):
    n = len(run.records)
    changed, frozen, trainable = run.metric("changed"), run.metric("frozen"), run.metric("trainable")
    loss = run.log("loss")
    assert all(_nonfinite(run, r) == 0 for r in range(n))
    assert np.all(np.isfinite(loss[1:])) and loss[-1] < loss[1]
    # nothing frozen moves; every trainable, unfrozen tensor moves at every record
    assert not np.any((frozen[1:] == 1) & (changed[1:] == 1))
    active = (trainable[1:] == 1) & (frozen[1:] == 0) & ~np.isnan(changed[1:])
    assert np.all(changed[1:][active] == 1)
    names = run.tensor_names
    moving = np.array([t.role == "moving_stat" for t in run.tensors])
    l2 = run.metric("l2")

    if s.name in ("batchnorm-mlp", "conv-sgd-momentum"):
        assert moving.any()
        assert np.all(changed[1:, moving] == 1) and np.all(frozen[:, moving] == 0)
        assert np.all(trainable[:, moving] == 0)
    elif s.name == "frozen-base-with-bn":
        base = _mask(run, ["base/*"])
        assert (base & moving).any()
        assert np.all(frozen[:, base] == 1) and np.all(changed[1:, base] == 0)
    elif s.name == "fine-tune-two-phase":
        base = _mask(run, ["base/*"])
        assert np.all(frozen[:4, base] == 1) and np.all(changed[1:4, base] == 0)
        assert np.all(frozen[4:, base] == 0) and np.all(changed[4:, base] == 1)
    elif s.name == "dropout-mlp":
        assert not any("seed_generator" in p for p in names)
    elif s.name in ("embedding-lstm", "embedding-gru"):
        emb = [t.path for t in run.tensors if t.role == "embedding"]
        assert emb and np.all(run.history(emb[0], "changed")[1:] == 1)
    elif s.name == "mixed-precision":
        import keras

        assert keras.mixed_precision.global_policy().name == "float32", "policy not reset"
        scale = run.log("loss_scale")
        assert np.nanmax(scale) < 32768, "no overflow step: the loss scale never dropped"
        assert all(t.dtype == "float32" for t in run.tensors)
    elif s.name == "subclassed-model":
        assert all(t.first_record == 1 for t in run.tensors)  # variables created lazily
    elif s.name == "converging-decay":
        upd = _ratio(run, "d_l2")
        assert np.nanmax(upd[-1]) < 1e-3 * np.nanmax(upd[1])
    elif s.name in ("weight-decay-l2-sgd", "weight-decay-adamw"):
        k = _mask(run, ["model/hidden*/kernel"])
        assert np.all(np.diff(l2[:, k], axis=0) < 0), "kernel norms should shrink every record"
    elif s.name == "separable-logistic":
        k = _kernels(run)
        assert np.all(np.diff(l2[:, k], axis=0) > 0), "kernel norm should grow every record"
    elif s.name == "sparse-relu":
        assert np.all(run.metric("dead_units")[1:, _kernels(run)] == 0)
        assert np.all(np.isfinite(loss[1:])) and loss[-1] < 0.5 * loss[1]


def test_policy_reset_even_when_build_fails(monkeypatch, tmp_path):
    keras = pytest.importorskip("keras")
    from weightwatch.recording import keras_callback as callback

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(callback, "WatchCallback", boom)
    with pytest.raises(RuntimeError):
        sc.build_mixed_precision(tmp_path / "mp")
    assert keras.mixed_precision.global_policy().name == "float32"
