"""The manifest's loss_floor: 0 for Keras' non-negative built-in losses, -1 for cosine similarity,
unknown otherwise."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import weightwatch  # noqa: E402


@pytest.mark.parametrize("loss, floor", [("mse", 0.0), (keras.losses.Huber(), 0.0),
                                         ("cosine_similarity", -1.0), (keras.losses.Poisson(), None),
                                         (lambda y, p: -keras.ops.mean((y - p) ** 2), None)])
def test_loss_floor_in_the_manifest(tmp_path, loss, floor):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")], name="m")
    model.compile(keras.optimizers.SGD(0.01), loss)
    model.fit(x, x[:, :2], epochs=1, verbose=0, callbacks=[weightwatch.WatchCallback(tmp_path / "r", verbose=0)])
    assert weightwatch.open_run(tmp_path / "r").manifest["loss_floor"] == floor


def test_a_regulariser_with_the_wrong_sign_is_caught_by_the_loss_going_below_zero(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 8)).astype("float32")
    y = x @ rng.normal(size=(8, 1)).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(
        16, name="d", kernel_regularizer=lambda w: -0.1 * keras.ops.sum(w ** 2)), keras.layers.Dense(1, name="o")],
        name="m")
    model.compile(keras.optimizers.SGD(0.01), "mse")
    cb = weightwatch.WatchCallback(tmp_path / "r", verbose=0, check=False)   # negative-penalty would halt it
    model.fit(x, y, epochs=6, batch_size=32, verbose=0, callbacks=[cb])
    report = weightwatch.check(tmp_path / "r")
    below = next(r for r in report.results if r.id == "loss-below-zero")
    assert below.status == "failed" and "wrong sign" in report.diagnosis[0].title


@pytest.mark.parametrize("lr, fails, warns", [(1e-2, "loss-unbounded", None),
                                              (3e-3, None, "loss-unbounded-slow")], ids=["fast", "slow"])
def test_a_custom_loss_negated_by_mistake_is_caught_by_its_unbounded_fall(tmp_path, lr, fails, warns):
    """A custom loss has no known floor, so loss-below-zero cannot judge it: its fall speeding up
    can.  Growing by half an epoch (Adam at 1e-2) it fails; by a fifth (3e-3) it only warns, as a
    healthy negative log-likelihood escaping a plateau can grow that fast."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = x @ rng.normal(size=(8, 1)).astype("float32")

    def negated_mse(y_true, y_pred):          # BUG: the sign
        return -keras.ops.mean(keras.ops.square(y_true - y_pred))

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh", name="d"),
                              keras.layers.Dense(1, name="o")], name="m")
    model.compile(keras.optimizers.Adam(lr), negated_mse)
    model.fit(x, y, epochs=8, batch_size=32, verbose=0,
              callbacks=[weightwatch.WatchCallback(tmp_path / "r", verbose=0)])
    run = weightwatch.open_run(tmp_path / "r")
    assert run.manifest["loss_floor"] is None
    report = weightwatch.check(tmp_path / "r")
    status = {r.id: r.status for r in report.results}
    assert status["loss-unbounded"] == ("failed" if fails else "passed"), status
    assert status["loss-unbounded-slow"] == ("warning" if warns else "passed") or fails, status
    flagged = next(r for r in report.results if r.id == (fails or warns))
    assert "falls faster every epoch" in flagged.findings[0].message
    assert "wrong sign" in report.diagnosis[0].title
    if not fails:
        return
    # the same model minimising its loss passes
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh", name="d"),
                              keras.layers.Dense(1, name="o")], name="m")
    model.compile(keras.optimizers.Adam(3e-3), lambda t, p: keras.ops.mean(keras.ops.square(t - p)))
    model.fit(x, y, epochs=8, batch_size=32, verbose=0,
              callbacks=[weightwatch.WatchCallback(tmp_path / "ok", verbose=0)])
    assert weightwatch.check(tmp_path / "ok").exit_code() == 0


def test_a_loss_term_whose_sign_flips_mid_run_is_caught_at_the_flip(tmp_path):
    """A loss weight scheduled through 0 (here: set to -1 from the fourth epoch) turns the loss over
    in one epoch; loss-sign-flip flags that epoch, before the fall could speed up three times."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = x @ rng.normal(size=(8, 1)).astype("float32")
    weight = keras.Variable(1.0, trainable=False, name="loss_weight")

    def weighted_mse(y_true, y_pred):
        return weight * keras.ops.mean(keras.ops.square(y_true - y_pred))

    def schedule(epoch, logs=None):
        if epoch == 3:
            weight.assign(-1.0)                 # BUG: the schedule overshoots through 0

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh", name="d"),
                              keras.layers.Dense(1, name="o")], name="m")
    model.compile(keras.optimizers.Adam(1e-3), weighted_mse)
    model.fit(x, y, epochs=6, batch_size=32, verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(on_epoch_begin=schedule),
                         weightwatch.WatchCallback(tmp_path / "r", verbose=0)])
    report = weightwatch.check(tmp_path / "r")
    flip = next(r for r in report.results if r.id == "loss-sign-flip")
    assert flip.status == "failed", [(r.id, r.status) for r in report.results if r.status != "passed"]
    assert flip.findings[0].epoch == 4 and "to below 0" in flip.findings[0].message
    assert "wrong sign" in next(c for c in report.diagnosis if c.severity == "error").title


def _gaussian_nll(y, out):
    mu, var = out[:, :1], keras.ops.softplus(out[:, 1:]) + 1e-6
    return keras.ops.mean(0.5 * keras.ops.log(var) + 0.5 * keras.ops.square(y - mu) / var)


@pytest.mark.parametrize("seed, amp, freq, noise, lr, batch, epochs, quieted", [
    (0, 0.7, 3, 0.003, 0.003, 64, 30, "loss-unbounded"),      # a plateau escape: -0.83, -0.85, -0.87 ...
    (0, 0.5, 3, 0.01, 0.05, 32, 25, "loss-sign-flip"),        # a spike above 0 and back: -0.28, 0.05, -0.35
    (1, 0.3, 6, 0.003, 0.02, 32, 30, "oscillating-updates"),  # Adam bouncing around its minimum
], ids=["plateau-escape", "spike-and-back", "bounce-at-minimum"])
def test_healthy_gaussian_nll_runs_pass(tmp_path, seed, amp, freq, noise, lr, batch, epochs, quieted):
    """A Gaussian negative log-likelihood of a nearly noiseless target has no floor weightwatch
    knows and falls below 0 as the model fits: healthy runs that tripped `quieted` before its
    thresholds were checked against such runs (made for review, not in the zoo)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (256, 1)).astype("float32")
    y = (amp * np.sin(freq * x) + noise * rng.standard_normal((256, 1))).astype("float32")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(32, activation="tanh"),
                              keras.layers.Dense(32, activation="tanh"), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(lr), _gaussian_nll)
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0,
              callbacks=[weightwatch.WatchCallback(tmp_path / "r", check=False, verbose=0)])
    run = weightwatch.open_run(tmp_path / "r")
    assert run.manifest["loss_floor"] is None and np.nanmin(run.log("loss")) < 0
    report = weightwatch.check(run)
    failed = [(r.id, r.findings[0].message) for r in report.results if r.status == "failed"]
    assert not failed, failed
    assert next(r for r in report.results if r.id == quieted).status == "passed"   # judged, not skipped


def test_the_negative_losses_benchmark_runs_end_to_end(tmp_path):
    """benchmarks/negative_losses.py, two healthy draws and one negated: its table and its truth."""
    import subprocess
    import sys
    from pathlib import Path

    from conftest import subprocess_env

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "negative_losses.py"
    p = subprocess.run([sys.executable, str(script), "--healthy", "2", "--negated", "1", "--seed", "5",
                        "--keep", str(tmp_path)], capture_output=True, text=True, env=subprocess_env(),
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Healthy runs failing (any error finding)" in p.stdout and "Negated losses (1)" in p.stdout
    assert sorted(d.name for d in tmp_path.iterdir()) == ["healthy-000", "healthy-001", "negated-002"]
    negated = weightwatch.open_run(tmp_path / "negated-002")
    assert np.nanmax(negated.log("loss")) < 0        # a squared error with its sign flipped


def _negated_fit(tmp_path, loss_floor, sign=-1.0, epochs=4):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = x @ rng.normal(size=(8, 1)).astype("float32")

    def my_squared_error(y_true, y_pred):          # sign=-1: the BUG
        return sign * keras.ops.mean(keras.ops.square(y_true - y_pred))

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh", name="d"),
                              keras.layers.Dense(1, name="o")], name="m")
    model.compile(keras.optimizers.Adam(1e-3), my_squared_error)
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0,
              callbacks=[weightwatch.WatchCallback(tmp_path / "r", verbose=0, check=False, loss_floor=loss_floor)])
    return weightwatch.check(tmp_path / "r")


def test_a_declared_floor_judges_a_custom_loss_from_its_first_epoch(tmp_path):
    """Adam at 1e-3 climbs the negated loss slowly: undeclared, only the unbounded-fall warning
    can see it; with the floor declared it fails at epoch 1."""
    undeclared = _negated_fit(tmp_path / "a", None)
    assert weightwatch.open_run(undeclared.run).manifest["loss_floor"] is None
    assert next(r for r in undeclared.results if r.id == "loss-below-zero").status == "skipped"
    assert not any(r.status == "failed" and r.id.startswith("loss-below") for r in undeclared.results)
    declared = _negated_fit(tmp_path / "b", 0.0)
    assert weightwatch.open_run(declared.run).manifest["loss_floor"] == 0.0
    res = next(r for r in declared.results if r.id == "loss-below-zero")
    assert res.status == "failed" and res.findings[0].record == 1
    assert "wrong sign" in declared.diagnosis[0].title


def test_a_declared_floor_passes_the_loss_it_describes(tmp_path):
    report = _negated_fit(tmp_path, 0.0, sign=1.0)
    assert next(r for r in report.results if r.id == "loss-below-zero").status == "passed"
    assert not report.failed


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), True, "0", 10 ** 400])
def test_a_loss_floor_that_is_not_a_finite_number_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="`loss_floor` must be None or a finite number"):
        weightwatch.WatchCallback(tmp_path / "r", loss_floor=bad)


@pytest.mark.parametrize("good", [0, -1, np.float32(0.0), np.int64(2)])
def test_any_real_number_is_a_floor(tmp_path, good):
    cb = weightwatch.WatchCallback(tmp_path / "r", loss_floor=good)
    assert cb.loss_floor == float(good) and type(cb.loss_floor) is float


def test_a_continued_run_learns_a_floor_declared_for_it(tmp_path):
    """Recorded without a floor, continued with one (fit(initial_epoch=k) on the same run
    directory): the manifest takes it, and the whole run is judged against it."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 4)).astype("float32")
    y = x[:, :1]

    def squared(y_true, y_pred):
        return -keras.ops.mean(keras.ops.square(y_true - y_pred))     # the BUG, from the start

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, name="o")], name="m")
    model.compile(keras.optimizers.SGD(0.01), squared)
    model.fit(x, y, epochs=2, verbose=0,
              callbacks=[weightwatch.WatchCallback(tmp_path / "r", verbose=0, check=False)])
    assert weightwatch.open_run(tmp_path / "r").manifest["loss_floor"] is None
    model.fit(x, y, initial_epoch=2, epochs=3, verbose=0,
              callbacks=[weightwatch.WatchCallback(tmp_path / "r", verbose=0, check=False, loss_floor=0.0)])
    assert weightwatch.open_run(tmp_path / "r").manifest["loss_floor"] == 0.0
    res = next(r for r in weightwatch.check(tmp_path / "r").results if r.id == "loss-below-zero")
    assert res.status == "failed" and res.findings[0].record == 1
