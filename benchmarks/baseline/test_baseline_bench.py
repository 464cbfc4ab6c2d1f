"""Tests of the baseline benchmark: the enumeration, and a tiny set recorded and scored end to end.

``python -m pytest benchmarks/baseline/test_baseline_bench.py`` (the end-to-end test trains 6
small runs: about 30 s on 2 CPU cores).  The enumeration tests import neither TensorFlow nor Keras.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# pytest's prepend import mode puts this directory in front of sys.path; its record.py and
# score.py would then shadow the zoo's for benchmarks/zoo/test_zoo.py's ``import record``.
# Keep it, but at the end; this directory's modules are loaded by path under unique names.
while str(HERE) in sys.path:
    sys.path.remove(str(HERE))
sys.path.append(str(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _load(name: str):
    key = f"baseline_bench_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod
    spec.loader.exec_module(mod)
    return mod


bs = _load("bench_specs")


def test_enumeration_is_deterministic_and_round_trips():
    a, b = bs.all_cases(), bs.all_cases()
    assert [c.to_dict() for c in a] == [c.to_dict() for c in b]
    for c in a[::7]:
        assert bs.Case.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_configuration_sets_are_disjoint_draws_of_the_same_make_up():
    """Calibrated on one set, proved on another: no configuration may be in two sets."""
    sets = {name: bs.all_cases(name) for name in bs.CONFIG_SETS}
    specs = {name: {json.dumps({**c.spec.to_dict(), "id": "", "seed": 0}, sort_keys=True)
                    for c in cases if c.healthy} for name, cases in sets.items()}
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not specs[a] & specs[b], (a, b)
            assert not {c.data_seed for c in sets[a]} & {c.data_seed for c in sets[b]}
    for name, cases in sets.items():
        letter = bs.CONFIG_SETS[name][0]
        assert all(c.config.rsplit("-", 1)[1].startswith(letter) for c in cases)
        assert len(cases) == len(sets["tune"]) and {c.regression for c in cases} == {
            c.regression for c in sets["tune"]}
    assert len(bs.all_cases("all")) == sum(map(len, sets.values()))


def test_a_configuration_whose_seeds_diverge_is_left_out():
    score = _load("score")
    cases = {c.id: c for c in bs.all_cases() if c.config in ("mlp-c0", "cnn-c0")}
    infos = {cid: {"loss": [1.0, 0.5]} for cid in cases}
    assert score.unhealthy_configs(cases, infos) == {}
    infos["cnn-c0-s2"] = {"loss": [1.0, None]}        # NaN is null in strict JSON
    assert score.unhealthy_configs(cases, infos) == {}  # one seed diverging: its pairs count
    for k in range(5):
        infos[f"cnn-c0-s{k}"] = {"loss": [1.0, None]}
    assert score.unhealthy_configs(cases, infos) == {"cnn-c0": "the loss went non-finite in all 5 of its seeds"}


def test_sizes_families_and_pairs():
    cases = bs.all_cases()
    healthy = [c for c in cases if c.healthy]
    regs = [c for c in cases if not c.healthy]
    pairs = bs.pairs(cases)
    hp = [p for p in pairs if p[0].healthy]
    assert len(hp) >= 200 and len(regs) >= 120
    assert {c.family for c in healthy} == set(bs.FAMILIES)
    assert len({c.spec.optimizer for c in healthy}) >= 6
    assert {c.regression for c in regs} == set(bs.REGRESSION_CLASSES)
    for c in cases:
        s = c.spec
        assert 5 <= s.epochs <= 8 and s.freq == "epoch" and not s.callbacks and s.validation_split == 0
        assert s.schedule != "plateau" and not s.fault
    for cand, refs in pairs:
        assert len(refs) == bs.REFS and all(r.healthy and r.config == cand.config for r in refs)
        assert cand.seed_index not in {r.seed_index for r in refs}
        if not cand.healthy:
            assert cand.seed_index == 0


def test_seeds_change_the_model_only():
    by_cfg = {}
    for c in bs.healthy_cases():
        by_cfg.setdefault(c.config, []).append(c)
    for cfg, cs in by_cfg.items():
        assert len(cs) == bs.SEEDS
        assert len({c.data_seed for c in cs}) == 1
        assert len({c.spec.seed for c in cs}) == bs.SEEDS
        # the zoo derives Nesterov from seed % 2 and the exponential-decay rate from seed % 5
        assert len({c.spec.seed % 10 for c in cs}) == 1
        d0 = cs[0].spec.to_dict()
        for c in cs[1:]:
            d = c.spec.to_dict()
            assert {k for k in d if d[k] != d0[k]} == {"seed"}, cfg


def test_regressions_change_what_they_say():
    seeds = {c.config: c for c in bs.healthy_cases() if c.seed_index == 0}
    for r in bs.regression_cases():
        h = seeds[r.config]
        assert r.spec.seed == h.spec.seed and r.data_seed == h.data_seed
        diff = {k for k, v in r.spec.to_dict().items() if h.spec.to_dict()[k] != v}
        expect = {"lr-3x-high": {"lr"}, "lr-3x-low": {"lr"}, "dropout-0.6": {"dropout"}}.get(r.regression, set())
        assert diff == expect, (r.id, diff)
        if r.regression == "dropout-0.6":
            assert h.spec.dropout == 0.1
        if r.regression == "relu-to-sigmoid" and r.family in bs.ACT_ARCH:
            assert h.spec.arch["act"] == "relu"
        if r.regression == "no-normalise":
            assert h.normalise
        if r.regression == "labels-shuffled":   # a classifier's labels alone: the data, not the spec
            assert r.family in bs.CLASSIFICATION_FAMILIES


def test_specs_and_scoring_import_no_framework():
    code = ("import sys; sys.path.insert(0, %r); import bench_specs, score, separation; "
            "bad = [m for m in ('tensorflow', 'keras', 'torch', 'jax') if m in sys.modules]; "
            "assert not bad, bad" % str(HERE))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=HERE.parent.parent)


def test_tiny_set_end_to_end(tmp_path):
    """Record 4 seeds and 3 regressions of one configuration, then score them."""
    pytest.importorskip("keras")
    record = _load("record")
    cache = tmp_path / "bb"
    assert record.main(["--subset", "fast", "--cache", str(cache)]) == 0
    fast = bs.fast_subset()
    for c in fast:
        info = json.loads((cache / c.id / "info.json").read_text())
        assert info["error"] is None and len(info["loss"]) == c.spec.epochs
    # resumable: nothing left to do
    assert record.main(["--subset", "fast", "--cache", str(cache)]) == 0
    from weightwatch.run.reader import open_run

    runs = {c.id: open_run(cache / c.id / "run") for c in fast}
    l2 = {k: r.metric("absmax")[0] for k, r in runs.items()}   # (orthogonal inits share their L2 norm)
    cfg = fast[0].config
    # seeds start from different weights; the lr regression from exactly seed 0's
    assert not (l2[f"{cfg}-s0"] == l2[f"{cfg}-s1"]).all()
    assert (l2[f"{cfg}-s0"] == l2[f"{cfg}-lr-3x-high"]).all()
    # the labels permuted apart from their inputs: the model learns nothing its seeds learn
    shuffled = json.loads((cache / f"{cfg}-labels-shuffled" / "info.json").read_text())
    chance = runs[f"{cfg}-labels-shuffled"].manifest["chance_loss"]
    assert shuffled["regression"]["shuffled"] > 0.5
    assert shuffled["loss"][-1] > 0.9 * chance
    assert all(json.loads((cache / f"{cfg}-s{k}" / "info.json").read_text())["loss"][-1] < 0.5 * chance
               for k in range(4))
    pytest.importorskip("weightwatch.checking.baseline")
    score = _load("score")
    out = tmp_path / "outcomes.json"
    assert score.main(["--cache", str(cache), "--json", str(out), "--no-lists"]) == 0
    data = json.loads(out.read_text())
    # 4 seeds: candidates s0 (refs s1-s3) and the three regressions (refs s1-s3); s1..s3 lack s4
    assert {o["candidate"] for o in data["three_refs"]} == {
        f"{cfg}-s0", f"{cfg}-lr-3x-high", f"{cfg}-dropout-0.6", f"{cfg}-labels-shuffled"}
    assert len(data["one_ref"]) == 6   # s0<-s1, s1<-s2, s2<-s3 and the three regressions <-s1
    # the real CLI agrees with the scorer, with reference runs and with a learnt baseline file
    root = HERE.parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    refs = [str(cache / f"{cfg}-s{k}" / "run") for k in (1, 2, 3)]
    bfile = tmp_path / "main.baseline.json"
    cli = [sys.executable, "-m", "weightwatch"]
    subprocess.run(cli + ["baseline", "learn", *refs, "-o", str(bfile)], check=True, env=env, cwd=tmp_path,
                   capture_output=True)
    outcome = {o["candidate"]: o for o in data["three_refs"]}
    for cid, o in outcome.items():
        run = str(cache / cid / "run")
        for base in (sum((["--baseline", r] for r in refs), []), ["--baseline", str(bfile)]):
            p = subprocess.run(cli + ["check", run, "--no-config", "-q", *base], env=env, cwd=tmp_path,
                               capture_output=True, text=True)
            assert p.returncode == (1 if o["either"] else 0), (cid, base[-1], p.stdout[-2000:], p.stderr[-2000:])


def test_seeds_share_the_data_and_the_pipeline_normalises():
    """Two seeds of one configuration: the same inputs and targets, other initial weights; the
    raw features are off-scale and the healthy pipeline standardises them."""
    pytest.importorskip("keras")
    import numpy as np

    record = _load("record")
    record.zoo_record._init_worker()
    import keras

    import models

    c0, c1 = [c for c in bs.healthy_cases() if c.config == "regression-c1"][:2]
    built = []
    for c in (c0, c1):
        keras.backend.clear_session()
        keras.utils.set_random_seed(c.spec.seed)
        built.append(models.build(c.spec, data_seed=c.data_seed))
    a, b = built
    assert np.array_equal(a.task.x, b.task.x) and np.array_equal(a.task.y, b.task.y)
    ka, kb = (m.model.get_layer("hidden1").kernel.numpy() for m in built)
    assert not np.allclose(ka, kb)
    raw = record.raw_features(np.asarray(a.task.x), c0.data_seed)
    assert np.abs(raw.mean(0)).max() > 0.5 or (raw.std(0) > 1.5).any()
    x = record.standardise(raw)
    assert np.allclose(x.mean(0), 0, atol=1e-4) and np.allclose(x.std(0), 1, atol=1e-3)
