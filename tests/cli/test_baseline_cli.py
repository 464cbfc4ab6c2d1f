"""Baseline gating end to end: real Keras runs of one configuration under different seeds,
injected regressions that break no absolute rule, and the real CLI in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import subprocess_env

keras = pytest.importorskip("keras")
import weightwatch  # noqa: E402


def _train(out, seed, *, lr=3e-3, freeze=False, width=16, bump=0, epochs=5, dropout=0.0, deeper=False):
    """An MLP on fixed generated data; ``seed`` changes only the initialisation and shuffling,
    ``bump`` creates layers first so Keras' instance counters differ, as in another process;
    ``dropout`` adds a Dropout after the first layer (no weights), ``deeper`` a Dense(12) there."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(384, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 3))).argmax(1)
    keras.utils.set_random_seed(seed)
    for _ in range(bump):
        keras.layers.Dense(1)
    layers = [keras.Input((8,)), keras.layers.Dense(width, activation="relu")]
    layers += [keras.layers.Dense(12, activation="relu")] if deeper else []
    layers += [keras.layers.Dropout(dropout, seed=seed)] if dropout else []
    model = keras.Sequential(layers + [keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    if freeze:
        model.layers[0].trainable = False   # frozen by mistake, and properly: before compile
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0,
              callbacks=[weightwatch.WatchCallback(out, check=False)])
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    made = {f"main-s{s}": _train(root / f"main-s{s}", s, bump=s) for s in range(3)}
    made["pr-seed"] = _train(root / "pr-seed", 11, bump=5)
    made["pr-lr3"] = _train(root / "pr-lr3", 11, lr=9e-3)
    made["pr-frozen"] = _train(root / "pr-frozen", 11, freeze=True)
    made["pr-wider"] = _train(root / "pr-wider", 11, width=24)
    made["pr-dropout"] = _train(root / "pr-dropout", 11, dropout=0.6)
    made["pr-deeper"] = _train(root / "pr-deeper", 11, deeper=True, bump=2)
    return made


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "weightwatch", *map(str, args)], capture_output=True,
                          text=True, env=subprocess_env(), cwd=cwd, timeout=120)


def _refs(runs):
    return [a for s in range(3) for a in ("--baseline", runs[f"main-s{s}"])]


def test_the_same_configuration_reseeded_passes_the_gate(runs):
    p = cli("check", runs["pr-seed"], *_refs(runs))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "baseline: 3 reference runs" in p.stdout and "compared epoch 0 to epoch 5" in p.stdout
    assert "baseline-update-ratio" in p.stdout   # the baseline rules ran


def test_the_absolute_pack_passes_the_regressions_that_the_baseline_catches(runs):
    for name in ("pr-lr3", "pr-frozen"):
        assert cli("check", runs[name]).returncode == 0, name      # no absolute rule fires
        p = cli("check", runs[name], *_refs(runs))
        assert p.returncode == 1, (name, p.stdout)
        assert "FAILED baseline-update-ratio" in p.stdout, p.stdout


def test_a_frozen_layer_is_named_with_its_band(runs):
    p = cli("check", runs["pr-frozen"], *_refs(runs), "--format", "json")
    report = json.loads(p.stdout)
    result = next(r for r in report["results"] if r["rule"] == "baseline-update-ratio")
    f = result["findings"][0]
    assert f["tensor"].endswith("/kernel") and "at 0, below the reference band" in f["message"]
    lo, hi = f["band"]
    assert 0 < lo < hi and f["value"] == 0
    assert report["baseline"]["references"] == 3
    assert report["diagnosis"][0]["cause"] == "baseline"


def test_a_resized_layer_is_a_missing_tensor(runs):
    p = cli("check", runs["pr-wider"], *_refs(runs), "-k", "baseline-tensors")
    assert p.returncode == 1
    assert "has shape (8, 24) here, (8, 16) in the reference" in p.stdout


def test_heavy_dropout_shows_in_the_update_noise(runs):
    # Dropout 0.6 adds no weight and moves no norm out of its band: consecutive updates agree less
    assert cli("check", runs["pr-dropout"]).returncode == 0
    p = cli("check", runs["pr-dropout"], *_refs(runs), "--format", "json")
    assert p.returncode == 1, p.stdout
    failed = {r["rule"] for r in json.loads(p.stdout)["results"] if r["status"] == "failed"}
    assert "baseline-update-noise" in failed, failed


def test_an_inserted_layer_in_another_process_leaves_the_other_layers_matched(runs):
    # A Dense(12) inserted after the first layer, counters shifted by two: the first and last
    # layers and every bias still find their counterpart; the reference's middle kernel, whose
    # input is now 12 wide, is the one missing tensor, and the inserted layer is listed
    p = cli("check", runs["pr-deeper"], *_refs(runs), "--format", "json")
    b = json.loads(p.stdout)["baseline"]
    assert b["missing"] == ["dense_1/kernel (not in this run)"], b
    assert len(b["only_here"]) == 3 and not any(x.startswith("sequential") for x in b["only_here"]), b


def test_baseline_learn_writes_a_file_that_check_accepts(runs, tmp_path):
    out = tmp_path / "main.baseline.json"
    p = cli("baseline", "learn", *(runs[f"main-s{s}"] for s in range(3)), "-o", out)
    assert p.returncode == 0, p.stderr
    assert f"wrote {out}" in p.stdout and "3 reference runs" in p.stdout
    doc = json.loads(out.read_text())
    assert doc["format"] == "weightwatch-baseline" and doc["version"] == 2
    assert out.stat().st_size < sum(f.stat().st_size for s in range(3) for f in runs[f"main-s{s}"].iterdir())
    assert cli("check", runs["pr-seed"], "--baseline", out).returncode == 0
    p = cli("check", runs["pr-lr3"], "--baseline", out, "--junitxml", tmp_path / "j.xml")
    assert p.returncode == 1
    assert "(the reference runs')" in (tmp_path / "j.xml").read_text()   # JUnit carries the band


def test_the_project_configuration_names_the_baseline(runs, tmp_path):
    (tmp_path / "weightwatch.toml").write_text(
        "baseline = [" + ", ".join(f'"{runs[f"main-s{s}"]}"' for s in range(3)) + "]\n")
    assert cli("check", runs["pr-lr3"], cwd=tmp_path).returncode == 1
    assert cli("check", runs["pr-lr3"], "--no-baseline", cwd=tmp_path).returncode == 0
    (tmp_path / "weightwatch.toml").write_text("baseline = 3\n")
    p = cli("check", runs["pr-lr3"], cwd=tmp_path)
    assert p.returncode == 4 and "weightwatch.toml:1" in p.stderr and '"baseline" must be' in p.stderr


@pytest.mark.parametrize("bad, message", [
    ("absent", "no such reference run directory or baseline file"),
    ("notjson", "not a baseline file: not strict JSON"),
])
def test_a_bad_baseline_is_exit_4_and_one_line(runs, tmp_path, bad, message):
    path = tmp_path / bad
    if bad == "notjson":
        path.write_text("[1, 2")
    p = cli("check", runs["pr-seed"], "--baseline", path)
    assert p.returncode == 4, p.stdout + p.stderr
    assert message in p.stderr and str(path) in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_diff_puts_the_changed_layer_first(runs):
    p = cli("diff", runs["pr-frozen"], runs["main-s0"], "--top", "5")
    assert p.returncode == 0, p.stderr
    rows = [ln for ln in p.stdout.splitlines() if ln.startswith(("update ratio", "L2 norm", "gradient", "log"))]
    assert len(rows) == 5
    run = weightwatch.open_run(runs["pr-frozen"])
    frozen_layer = run.tensors[0].layer.split("/")[-1]   # the first Dense, without the model's name
    assert f"  {frozen_layer}/" in rows[0] and " 0x " in rows[0], rows
    assert f"tensor paths below are in model {run.model_name!r}" in p.stdout
    assert any(ch in p.stdout for ch in "▁▂▃▄▅▆▇█")


def test_baseline_without_an_action_teaches_and_diff_of_a_missing_run_is_one_line(tmp_path):
    p = cli("baseline")
    assert p.returncode == 4 and "learn" in p.stdout and "weightwatch baseline learn" in p.stdout
    p = cli("diff", tmp_path / "a", tmp_path / "b")
    assert p.returncode == 4 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
