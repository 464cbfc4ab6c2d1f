"""WatchCallback and the run format, on real Keras models (GitHub issue 2).

Every run here is a real ``fit()`` of a tiny model on generated data, written
to a real directory and read back with ``open_run``.  Statistics are checked
against a float64 numpy recomputation from the tensors the run saved
(``save_tensors=True``), so the recorder cannot agree with itself by accident.
Nothing is mocked; the crash-safety tests SIGKILL real writing processes.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from keras import layers

import weightwatch
from weightwatch import RunDirNotEmptyError

STATS = ("size", "nan", "inf", "l2", "mean", "std", "min", "max", "absmax", "zero_frac",
         "d_l2", "d_absmax", "changed", "dead_units", "d_cos")


def _units(role, shape):
    """Whose dead units the recorder counts, restated: a kernel's last axis, a bias's elements."""
    if role == "kernel" and len(shape) >= 2:
        return shape[-1]
    return shape[0] if role == "bias" and len(shape) == 1 else None


RUN_FILE_RE = re.compile(r"^(manifest\.json|history\.bin|record-\d{6}\.(json|npz))$")
HIDDEN_TMP_RE = re.compile(r"^\.(manifest\.json|record-\d{6}\.(json|npz))\..+\.tmp$")


def data(n=128, d=8, seed=0):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, d)).astype("float32")
    y = (x[:, :1] - 0.5 * x[:, 1:2] + 0.1 * r.normal(size=(n, 1))).astype("float32")
    return x, y


def watch(run_dir, **kw):
    kw.setdefault("save_tensors", True)
    return weightwatch.WatchCallback(run_dir, check=False, verbose=0, **kw)


def strict_json(path):
    def reject(token):
        raise ValueError(f"{path.name}: non-standard JSON token {token}")
    return json.loads(path.read_text(), parse_constant=reject)


def assert_matches_saved_tensors(run, ref_row, check_row):
    """Every statistic of every record equals the float64 recomputation from the .npz files."""
    info = {t.path: t for t in run.tensors}
    arrays = [run.tensors_at(r.index) for r in run.records]
    checked = 0
    for i, rec in enumerate(run.records):
        present = arrays[i]
        snapshot = strict_json(run.path / rec.file)
        assert set(present) == set(snapshot["tensors"]), f"record {rec.index}: npz and JSON disagree"
        for path in run.tensor_names:
            got = {c: run.history(path, c)[i] for c in STATS}
            if path not in present:
                assert all(math.isnan(v) for v in got.values()), f"{path} absent at {rec.index} yet has figures"
                continue
            a = present[path]
            t = info[path]
            assert tuple(a.shape) == t.shape and str(a.dtype) == t.dtype, path
            prev = prevprev = None
            if i > 0 and rec.trigger != "begin":
                prev = arrays[i - 1].get(path)
                if prev is not None and i > 1 and run.records[i - 1].trigger != "begin":
                    prevprev = arrays[i - 2].get(path)
            units = _units(t.role, t.shape)
            check_row(got, ref_row(a, prev, prevprev, units=units),
                      where=f"{run.path.name} record {rec.index} {path}")
            checked += 1
    assert checked > 0


# -- the four model families ----------------------------------------------------------------

@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    """Dense + BatchNorm + Dropout, one Dense frozen before compile; then the trap.

    Three epochs, then ``fc.trainable = False`` *without* recompiling and one
    more epoch with the same callback.
    """
    keras.utils.set_random_seed(1)
    x, y = data()
    model = keras.Sequential([
        keras.Input((8,)),
        layers.Dense(16, activation="relu", name="fc"),
        layers.BatchNormalization(name="bn"),
        layers.Dropout(0.3, name="drop"),
        layers.Dense(8, activation="relu", name="fixed"),
        layers.Dense(1, name="head"),
    ], name="dense_model")
    model.get_layer("fixed").trainable = False
    model.compile(optimizer="adam", loss="mse")
    run_dir = tmp_path_factory.mktemp("dense") / "run"
    cb = watch(run_dir)
    model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[cb])
    if keras.backend.backend() != "jax":  # JAX raises inside Keras when trainable changes after fit
        model.get_layer("fc").trainable = False      # the trap: no compile() after this
    model.fit(x, y, initial_epoch=3, epochs=4, batch_size=32, verbose=0, callbacks=[cb])
    return run_dir, model, 4


@pytest.fixture(scope="module")
def nested_run(tmp_path_factory):
    """A Functional model holding a trainable and a frozen nested Sequential, both with BatchNorm."""
    keras.utils.set_random_seed(2)
    x, y = data()
    inp = keras.Input((8,), name="x")
    base = keras.Sequential([layers.Dense(8, name="base_fc"), layers.BatchNormalization(name="base_bn")],
                            name="base")
    frozen = keras.Sequential([layers.Dense(8, name="frozen_fc"), layers.BatchNormalization(name="frozen_bn")],
                              name="frozenblock")
    out = layers.Dense(1, name="head")(frozen(base(inp)))
    model = keras.Model(inp, out, name="nested_model")
    frozen.trainable = False
    model.compile(optimizer="adam", loss="mse")
    run_dir = tmp_path_factory.mktemp("nested") / "run"
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[watch(run_dir)])
    return run_dir, model, 2


class Block(layers.Layer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.fc1 = layers.Dense(8, activation="relu", name="fc1")

    def call(self, x):
        return self.fc1(x)


class Subclassed(keras.Model):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.block1 = Block(name="block1")
        self.out = layers.Dense(1, name="out")

    def call(self, x):
        return self.out(self.block1(x))


@pytest.fixture(scope="module")
def subclassed_run(tmp_path_factory):
    keras.utils.set_random_seed(3)
    x, y = data()
    model = Subclassed(name="submodel")
    model.compile(optimizer="adam", loss="mse")
    run_dir = tmp_path_factory.mktemp("sub") / "run"
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[watch(run_dir)])
    return run_dir, model, 2


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
    """Embedding + LSTM; ids 40..49 never occur, so those embedding rows never change."""
    keras.utils.set_random_seed(4)
    r = np.random.default_rng(4)
    ids = r.integers(1, 40, size=(96, 5)).astype("int32")
    y = (ids.mean(axis=1, keepdims=True) / 40.0).astype("float32")
    model = keras.Sequential([
        keras.Input((5,), dtype="int32"),
        layers.Embedding(50, 6, name="emb"),
        layers.LSTM(6, name="lstm"),
        layers.Dense(1, name="head"),
    ], name="lstm_model")
    model.compile(optimizer="adam", loss="mse")
    run_dir = tmp_path_factory.mktemp("lstm") / "run"
    model.fit(ids, y, epochs=2, batch_size=32, verbose=0, callbacks=[watch(run_dir)])
    return run_dir, model, 2


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory):
    """SGD with lr=1e6: the weights go non-finite within the first epoch."""
    keras.utils.set_random_seed(5)
    x, y = data()
    model = keras.Sequential([keras.Input((8,)), layers.Dense(8, name="fc"), layers.Dense(1, name="head")],
                             name="diverging")
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e6), loss="mse")
    run_dir = tmp_path_factory.mktemp("nan") / "run"
    model.fit(x, 100 * y, epochs=2, batch_size=32, verbose=0, callbacks=[watch(run_dir)])
    return run_dir, model, 2


MODEL_RUNS = ["dense_run", "nested_run", "subclassed_run", "lstm_run"]


@pytest.mark.parametrize("fixture", MODEL_RUNS)
def test_one_record_before_training_and_one_per_epoch(request, fixture):
    run_dir, model, epochs = request.getfixturevalue(fixture)
    run = weightwatch.open_run(run_dir)
    assert run.problems == []
    assert run.source == "weightwatch"
    assert run.epochs.tolist() == list(range(epochs + 1))
    assert [r.index for r in run.records] == list(range(epochs + 1))
    assert [r.trigger for r in run.records] == ["begin"] + ["epoch"] * epochs
    assert all(r.batch is None for r in run.records)
    assert run.manifest["model"] == model.name
    assert sorted(os.listdir(run_dir)) == ["history.bin", "manifest.json"] + sorted(
        f"record-{i:06d}{ext}" for i in range(epochs + 1) for ext in (".json", ".npz"))


@pytest.mark.parametrize("fixture", MODEL_RUNS)
def test_every_weight_recorded_under_its_variable_path(request, fixture):
    run_dir, model, _ = request.getfixturevalue(fixture)
    run = weightwatch.open_run(run_dir)
    assert run.tensor_names == [v.path for v in model.weights]
    for t in run.tensors:
        v = next(w for w in model.weights if w.path == t.path)
        assert t.shape == tuple(v.shape) and t.dtype == str(v.dtype)


@pytest.mark.parametrize("fixture", MODEL_RUNS + ["nan_run"])
def test_statistics_equal_float64_recomputation_from_saved_tensors(request, fixture, ref_row, check_row):
    run_dir, _, _ = request.getfixturevalue(fixture)
    assert_matches_saved_tensors(weightwatch.open_run(run_dir), ref_row, check_row)


def test_run_files_get_the_mode_plain_files_get(dense_run):
    # Written via mkstemp (mode 0o600) yet readable like any file the user writes: 0o666 less the umask.
    umask = os.umask(0o022)
    os.umask(umask)
    run_dir = dense_run[0]
    modes = {f: (run_dir / f).stat().st_mode & 0o777 for f in os.listdir(run_dir)}
    assert modes and set(modes.values()) == {0o666 & ~umask}, {f: oct(m) for f, m in modes.items()}


@pytest.mark.parametrize("fixture", MODEL_RUNS + ["nan_run"])
def test_every_file_is_strict_json(request, fixture):
    run_dir, _, _ = request.getfixturevalue(fixture)
    files = sorted(run_dir.glob("*.json"))
    assert len(files) >= 3
    for f in files:
        strict_json(f)


def test_dropout_seed_state_is_not_a_recorded_weight(dense_run):
    run_dir, model, _ = dense_run
    seed_paths = [v.path for v in model.variables if "seed_generator_state" in v.path]
    assert seed_paths, "the model should own a Dropout seed generator variable"
    run = weightwatch.open_run(run_dir)
    assert not any("seed_generator" in p for p in run.tensor_names)
    assert not any("seed_generator" in p for p in np.load(run_dir / "record-000001.npz").files)


def test_batchnorm_moving_statistics_change_but_are_not_trainable(dense_run):
    run = weightwatch.open_run(dense_run[0])
    for name in ("moving_mean", "moving_variance"):
        path = f"dense_model/bn/{name}"
        assert run.tensors[run.tensor_index(path)].role == "moving_stat"
        assert run.history(path, "changed")[1:].tolist() == [1.0] * 4
        assert run.history(path, "trainable").tolist() == [0.0] * 5
        assert run.history(path, "frozen").tolist() == [0.0] * 5
        assert np.all(run.history(path, "d_l2")[1:] > 0)
    assert run.history("dense_model/bn/gamma", "trainable").tolist() == [1.0] * 5


def test_layer_frozen_before_compile_is_frozen_and_unchanged(dense_run):
    run = weightwatch.open_run(dense_run[0])
    for path in ("dense_model/fixed/kernel", "dense_model/fixed/bias"):
        assert run.history(path, "frozen").tolist() == [1.0] * 5
        assert run.history(path, "trainable").tolist() == [0.0] * 5
        assert run.history(path, "changed")[1:].tolist() == [0.0] * 4
        assert run.history(path, "d_l2")[1:].tolist() == [0.0] * 4
    kernel = "dense_model/fixed/kernel"
    assert run.history(kernel, "dead_units")[1:].tolist() == [8.0] * 4  # every unit unchanged
    saved = [run.tensors_at(i)[kernel] for i in range(5)]
    assert all(np.array_equal(saved[0], s) for s in saved[1:])


def test_trainable_false_after_fit_without_recompile(dense_run):
    """The trap on TensorFlow: the flag says frozen, the weights keep moving; the record shows both.

    The torch backend honours ``trainable=False`` without a recompile (the trap cannot happen,
    and the record shows the layer frozen and unchanged); JAX refuses the change after fit.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        pytest.skip("JAX: Keras raises when trainable changes after fit, so the trap cannot happen")
    run = weightwatch.open_run(dense_run[0])
    path = "dense_model/fc/kernel"
    assert run.history(path, "frozen").tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert run.history(path, "trainable").tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]
    a3, a4 = run.tensors_at(3)[path], run.tensors_at(4)[path]
    if backend == "torch":
        assert run.history(path, "changed")[1:].tolist() == [1.0, 1.0, 1.0, 0.0]
        assert np.array_equal(a3, a4)
        return
    assert run.history(path, "changed")[1:].tolist() == [1.0] * 4
    assert run.history(path, "d_l2")[4] > 0
    assert not np.array_equal(a3, a4)


def test_frozen_nested_model_and_its_batchnorm_are_frozen_and_unchanged(nested_run):
    run = weightwatch.open_run(nested_run[0])
    frozen = [p for p in run.tensor_names if p.startswith("frozenblock/")]
    live = [p for p in run.tensor_names if p.startswith("base/")]
    assert len(frozen) == 6 and len(live) == 6
    assert "base/base_bn/moving_mean" in live  # the nested layer's own path, not the outer layer's
    for p in frozen:
        assert run.history(p, "frozen").tolist() == [1.0] * 3, p
        assert run.history(p, "changed")[1:].tolist() == [0.0] * 2, p
    for p in live:
        assert run.history(p, "frozen").tolist() == [0.0] * 3, p
        assert run.history(p, "changed")[1:].tolist() == [1.0] * 2, p
    assert run.history("base/base_bn/moving_variance", "trainable").tolist() == [0.0] * 3


def test_subclassed_model_variables_appear_at_record_1(subclassed_run):
    run_dir, model, _ = subclassed_run
    run = weightwatch.open_run(run_dir)
    assert run.tensor_names == ["submodel/block1/fc1/kernel", "submodel/block1/fc1/bias",
                                "submodel/out/kernel", "submodel/out/bias"]
    if keras.backend.backend() in ("jax", "torch"):
        # On JAX and torch, fit builds the model before the first epoch begins, so the
        # variables exist at record 0 there: the tensor table starts complete.
        assert [t.first_record for t in run.tensors] == [0, 0, 0, 0]
        assert np.isfinite(run.metric("l2")).all()
        return
    assert [t.first_record for t in run.tensors] == [1, 1, 1, 1]
    assert strict_json(run_dir / "record-000000.json")["tensors"] == {}
    assert run.tensors_at(0) == {}
    assert np.isnan(run.metric("l2")[0]).all()
    assert np.isfinite(run.metric("l2")[1:]).all()
    # Deltas start where the tensors do: none at record 1, defined at record 2.
    assert np.isnan(run.metric("d_l2")[1]).all() and np.isfinite(run.metric("d_l2")[2]).all()
    manifest = strict_json(run_dir / "manifest.json")
    assert [t["first_record"] for t in manifest["tensors"]] == [1, 1, 1, 1]


def test_embedding_and_lstm(lstm_run):
    run_dir, _, _ = lstm_run
    run = weightwatch.open_run(run_dir)
    kinds = {t.path: t.role for t in run.tensors}
    assert kinds["lstm_model/emb/embeddings"] == "embedding"
    assert kinds["lstm_model/lstm/lstm_cell/kernel"] == "kernel"
    assert kinds["lstm_model/lstm/lstm_cell/recurrent_kernel"] == "kernel"
    assert kinds["lstm_model/lstm/lstm_cell/bias"] == "bias"
    # 4 gates x 6 units: dead units are counted over the kernel's last axis.
    assert run.tensors[run.tensor_index("lstm_model/lstm/lstm_cell/recurrent_kernel")].units == 24
    assert run.history("lstm_model/lstm/lstm_cell/recurrent_kernel", "dead_units")[1:].tolist() == [0, 0]
    assert np.isnan(run.history("lstm_model/emb/embeddings", "dead_units")).all()
    # Rows that never receive a gradient stay bit-identical; the table as a whole changes.
    e0, e2 = run.tensors_at(0)["lstm_model/emb/embeddings"], run.tensors_at(2)["lstm_model/emb/embeddings"]
    assert np.array_equal(e0[40:], e2[40:]) and not np.array_equal(e0[1:40], e2[1:40])
    assert run.history("lstm_model/emb/embeddings", "changed")[1:].tolist() == [1.0, 1.0]


def test_diverging_run_counts_nan_and_inf_and_writes_no_nan_token(nan_run):
    run_dir, _, _ = nan_run
    run = weightwatch.open_run(run_dir)
    bad = run.metric("nan") + run.metric("inf")
    assert bad[0].sum() == 0 and bad[-1].sum() > 0
    broken = run.metric("nan")[-1] == run.metric("size")[-1]
    assert broken.any() and np.isnan(run.metric("l2")[-1][broken]).all()
    assert np.isnan(run.log("loss")[-1])  # a NaN loss is stored as null
    for f in run_dir.glob("*.json"):
        text = f.read_text()
        assert "NaN" not in text and "Infinity" not in text, f.name
    snap = strict_json(run_dir / "record-000002.json")
    assert snap["logs"]["loss"] is None


def test_logs_hold_loss_and_learning_rate(dense_run):
    run = weightwatch.open_run(dense_run[0])
    assert "learning_rate" in run.log_keys and "loss" in run.log_keys
    lr = run.log("learning_rate")
    assert lr == pytest.approx([1e-3] * 5, rel=1e-6)  # Adam's default, recorded at every record
    loss = run.log("loss")
    assert np.isnan(loss[0]) and np.isfinite(loss[1:]).all() and (loss[1:] > 0).all()
    assert "loss" not in run.records[0].logs


# -- SIGKILL in the middle of writing ----------------------------------------------------------

KERAS_CHILD = r"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, keras, weightwatch
keras.utils.set_random_seed(0)
x = np.random.default_rng(0).normal(size=(2048, 32)).astype("float32")
y = x[:, :1] - x[:, 1:2]
model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(96, activation="relu"),
                          keras.layers.Dense(96, activation="relu"), keras.layers.Dense(1)], name="killme")
model.compile(optimizer="adam", loss="mse")
cb = weightwatch.WatchCallback(sys.argv[1], freq=1, save_tensors=True, check=False, verbose=0)
sys.stdin.readline()  # "go": the parent starts this process early so TF imports in the background
model.fit(x, y, epochs=1000, batch_size=8, verbose=0, callbacks=[cb])
"""


@pytest.fixture(scope="module", autouse=True)
def keras_child(request, tmp_path_factory, child_env):
    """The Keras trainer to SIGKILL, started as the module begins (only if its test is selected)."""
    if not any(item.name == "test_sigkill_keras_training_leaves_a_readable_run" for item in request.session.items):
        yield None
        return
    run_dir = tmp_path_factory.mktemp("killed") / "run"
    proc = subprocess.Popen([sys.executable, "-c", KERAS_CHILD, str(run_dir)], env=child_env,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    yield run_dir, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for f in (proc.stdin, proc.stderr):
        try:
            f.close()
        except OSError:
            pass


# The same writer and recorder the callback uses, without Keras (it starts in a fraction of a
# second, so several kill timings are cheap): 2 MB of tensors a record, and a new tensor every
# third record so that the manifest is rewritten while records are being written.
WRITER_CHILD = r"""
import sys, time
import numpy as np
from weightwatch.recording.session import RecordingSession, Variable
session = RecordingSession(sys.argv[1], check=False, save_tensors=True, io_errors="raise")
session.start_fit()
session.open(model_name="writer", info={}, initial_epoch=0)
arrays = {"w/big/kernel": np.random.default_rng(0).normal(size=(512, 1024)).astype("float32")}
step = 0
while True:
    if step % 3 == 0:
        arrays[f"w/extra{step}/bias"] = np.zeros(64, "float32")
    arrays = {p: a + np.float32(0.01) for p, a in arrays.items()}
    step += 1
    session.record([Variable(a, p, True, False) for p, a in arrays.items()], lambda a: a, epoch=step,
                   batch=None, step=step, trigger="epoch", logs={"loss": 1.0 / step})
"""


def _records_in(run_dir):
    try:
        return sum(1 for f in os.listdir(run_dir) if f.startswith("record-") and f.endswith(".json"))
    except FileNotFoundError:
        return 0


def _kill_when(dirs, procs, kill_at, *, reads=10, timeout=90):
    """SIGKILL ``procs[i]`` once ``kill_at[i](records_so_far)`` is true; read the runs meanwhile."""
    try:
        pending = dict(enumerate(procs))
        deadline = time.monotonic() + timeout
        while pending:
            assert time.monotonic() < deadline, "the children never reached the records to kill at"
            for i, p in list(pending.items()):
                assert p.poll() is None, f"child exited early: {p.stderr.read().decode()[-2000:]}"
                n = _records_in(dirs[i])
                if kill_at[i](n):
                    p.send_signal(signal.SIGKILL)
                    del pending[i]
                elif n >= 1 and reads > 0:
                    # A reader racing the writer never sees a half-written file.
                    assert weightwatch.open_run(dirs[i]).problems == []
                    reads -= 1
            time.sleep(0.002)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stderr.close()
    assert [p.returncode for p in procs] == [-signal.SIGKILL] * len(procs)


def _check_killed_run(run_dir, ref_row, check_row):
    names = os.listdir(run_dir)
    odd = [n for n in names if not (RUN_FILE_RE.match(n) or HIDDEN_TMP_RE.match(n))]
    assert odd == [], f"unexpected files after SIGKILL: {odd}"
    run = weightwatch.open_run(run_dir)
    assert run.problems == []
    jsons = sorted(n for n in names if n.startswith("record-") and n.endswith(".json"))
    assert [r.file for r in run.records] == jsons
    assert [r.index for r in run.records] == list(range(len(jsons)))
    steps = [r.step for r in run.records]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    manifest = strict_json(run_dir / "manifest.json")
    for rec in run.records:
        snap = strict_json(run_dir / rec.file)
        assert set(snap["tensors"]) <= {t["path"] for t in manifest["tensors"]}
        with np.load(run_dir / rec.tensors_file, allow_pickle=False) as z:
            assert set(z.files) == set(snap["tensors"])
    for n in names:  # a tensors file written just before the kill, its snapshot not yet
        if n.endswith(".npz") and not n.startswith("."):
            with np.load(run_dir / n, allow_pickle=False) as z:
                assert all(z[k].size for k in z.files)
    # The last complete records are right, not just parseable.
    last = len(run.records) - 1
    current = run.tensors_at(run.records[last].index)
    previous = run.tensors_at(run.records[last - 1].index) if last > 0 else {}
    info = {t.path: t for t in run.tensors}
    # d_l2's float32 accumulation over a 512k-element update is test_stats' business; here 1e-4.
    columns = [c for c in STATS if c not in ("d_cos", "d_l2")]
    for path, a in current.items():
        units = _units(info[path].role, a.shape)
        got = {c: run.history(path, c)[last] for c in STATS}
        expected = ref_row(a, previous.get(path), units=units)
        check_row(got, expected, where=f"{path} after kill", columns=columns)
        if expected["d_l2"] is None:
            assert math.isnan(got["d_l2"])
        else:
            assert got["d_l2"] == pytest.approx(expected["d_l2"], rel=1e-4), path
    return run


def test_sigkill_keras_training_leaves_a_readable_run(keras_child, ref_row, check_row):
    """A record every batch, tensors saved; SIGKILL lands at a random record."""
    rng = random.Random()
    target, jitter = rng.randrange(3, 40), rng.uniform(0, 0.02)
    print(f"SIGKILL after {target} records + {jitter:.4f} s")  # shown if the test fails
    run_dir, proc = keras_child
    proc.stdin.write(b"go\n")
    proc.stdin.flush()
    _kill_when([run_dir], [proc], [lambda n: n >= target and (time.sleep(jitter) or True)])
    run = _check_killed_run(run_dir, ref_row, check_row)
    assert len(run.records) >= target
    assert run.records[0].trigger == "begin" and {r.trigger for r in run.records[1:]} == {"batch"}

    # The killed run can be continued; the new records follow the surviving ones.  The child
    # built its model in a fresh process: reset Keras' name counters, so that this process's
    # unnamed layers get the same names (and so the same tensor paths) as the child's.
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 32)).astype("float32")
    model = keras.Sequential([keras.Input((32,)), layers.Dense(96, activation="relu"),
                              layers.Dense(96, activation="relu"), layers.Dense(1)], name="killme")
    model.compile(optimizer="adam", loss="mse")
    before = len(run.records)
    model.fit(x, x[:, :1], initial_epoch=1, epochs=2, batch_size=32, verbose=0, callbacks=[watch(run_dir)])
    run = weightwatch.open_run(run_dir)
    assert run.problems == []
    assert [r.trigger for r in run.records[before:]] == ["begin", "epoch"]
    assert [r.index for r in run.records] == list(range(before + 2))


def test_sigkill_writer_at_several_moments(tmp_path, child_env, ref_row, check_row):
    rng = random.Random()
    dirs = [tmp_path / f"killed{i}" for i in range(4)]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER_CHILD, str(d)], env=child_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for d in dirs]
    # Kill points: a record count, then a random delay into the next write.
    targets = [1, rng.randrange(2, 6), rng.randrange(6, 12), rng.randrange(12, 25)]
    delays = [rng.uniform(0, 0.02) for _ in dirs]
    print(f"SIGKILL after {targets} records + {[round(d, 4) for d in delays]} s")  # shown if the test fails
    _kill_when(dirs, procs, [lambda n, t=t, d=d: n >= t and (time.sleep(d) or True)
                             for t, d in zip(targets, delays)], reads=20)
    for d, t in zip(dirs, targets):
        run = _check_killed_run(d, ref_row, check_row)
        assert len(run.records) >= t
        assert run.log("loss").tolist() == [1.0 / r.step for r in run.records]


# -- continuing a run -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_model():
    """One compiled model for the continuation tests (traced once; each test uses its own dir)."""
    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((8,)), layers.Dense(4, name="fc"), layers.Dense(1, name="head")],
                             name="cont")
    model.compile(optimizer="adam", loss="mse")
    return model, data()


def test_continuing_with_the_same_callback_then_a_new_one(tmp_path, small_model, ref_row, check_row):
    model, (x, y) = small_model
    run_dir = tmp_path / "run"
    cb = watch(run_dir)
    model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[cb])
    model.fit(x, y, initial_epoch=3, epochs=5, batch_size=32, verbose=0, callbacks=[cb])
    run = weightwatch.open_run(run_dir)
    assert [r.index for r in run.records] == [0, 1, 2, 3, 4, 5]
    assert run.epochs.tolist() == [0, 1, 2, 3, 4, 5]
    assert [r.trigger for r in run.records] == ["begin"] + ["epoch"] * 5
    assert np.isfinite(run.metric("d_l2")[1:]).all()  # the update across the two fits is measured

    # A new callback (a new process, say) continues with initial_epoch=k > 0.
    model.fit(x, y, initial_epoch=5, epochs=7, batch_size=32, verbose=0, callbacks=[watch(run_dir)])
    run = weightwatch.open_run(run_dir)
    assert run.problems == []
    assert [r.index for r in run.records] == list(range(9))
    assert run.epochs.tolist() == [0, 1, 2, 3, 4, 5, 5, 6, 7]
    assert [r.trigger for r in run.records] == ["begin"] + ["epoch"] * 5 + ["begin", "epoch", "epoch"]
    # The new begin record: same weights as record 5, no deltas (no previous copy in memory).
    for c in ("d_l2", "d_absmax", "changed", "d_cos"):
        assert np.isnan(run.metric(c)[6]).all(), c
    assert np.array_equal(run.metric("l2")[6], run.metric("l2")[5])
    assert np.isfinite(run.metric("d_l2")[7]).all()
    assert [t.first_record for t in run.tensors] == [0, 0, 0, 0]
    assert_matches_saved_tensors(run, ref_row, check_row)


def test_new_callback_on_a_nonempty_dir_is_refused_then_overwrites(tmp_path, small_model):
    model, (x, y) = small_model
    run_dir = tmp_path / "run"
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[watch(run_dir)])
    (run_dir / "notes.txt").write_text("mine")
    before = {f: (run_dir / f).read_bytes() for f in os.listdir(run_dir)}
    with pytest.raises(RunDirNotEmptyError) as err:
        model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[watch(run_dir)])
    assert str(run_dir) in str(err.value) and "overwrite=True" in str(err.value)
    assert {f: (run_dir / f).read_bytes() for f in os.listdir(run_dir)} == before

    # Resuming into a run of another model is refused too, naming the model.
    other = keras.Sequential([keras.Input((8,)), layers.Dense(1)], name="other")
    other.compile(optimizer="adam", loss="mse")
    with pytest.raises(RunDirNotEmptyError, match="'cont'"):
        other.fit(x, y, initial_epoch=2, epochs=3, batch_size=32, verbose=0, callbacks=[watch(run_dir)])
    assert {f: (run_dir / f).read_bytes() for f in os.listdir(run_dir)} == before

    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[watch(run_dir, overwrite=True)])
    run = weightwatch.open_run(run_dir)
    assert run.epochs.tolist() == [0, 1] and run.problems == []
    assert sorted(os.listdir(run_dir)) == ["history.bin", "manifest.json", "notes.txt", "record-000000.json",
                                           "record-000000.npz", "record-000001.json", "record-000001.npz"]
    assert (run_dir / "notes.txt").read_text() == "mine"


# -- options ----------------------------------------------------------------------------------

class Counter(layers.Layer):
    """Passes its input through; counts its calls in an int32 variable and sets a bool flag."""

    def build(self, input_shape):
        self.count = self.add_weight(shape=(), dtype="int32", trainable=False, initializer="zeros",
                                     name="count")
        self.flag = self.add_weight(shape=(2,), dtype="bool", trainable=False, initializer="zeros",
                                    name="flag")

    def call(self, x):
        self.count.assign_add(1)
        self.flag.assign(keras.ops.ones((2,), dtype="bool"))
        return x


@pytest.fixture(scope="module")
def options_runs(tmp_path_factory):
    """One fit, several callbacks with different options, each writing its own run."""
    keras.utils.set_random_seed(9)
    x, y = data(n=128)
    model = keras.Sequential([
        keras.Input((8,)), Counter(name="counter"), layers.Dense(8, name="fc"),
        layers.BatchNormalization(name="bn"), layers.Dense(4, name="fixed"), layers.Dense(1, name="head"),
    ], name="opts")
    model.get_layer("fixed").trainable = False
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="mse")
    root = tmp_path_factory.mktemp("options")
    cbs = {
        "all": watch(root / "all"),
        "trainable_only": watch(root / "trainable_only", trainable_only=True, save_tensors=False),
        "include": watch(root / "include", include=["*/fc/*", "*/bn/moving_*"], save_tensors=False),
        "exclude": watch(root / "exclude", exclude=["*/bias", "*/bn/*"], save_tensors=False),
        "freq3": watch(root / "freq3", freq=3),
    }
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=list(cbs.values()))
    return {k: root / k for k in cbs}, model


def test_trainable_only(options_runs):
    dirs, model = options_runs
    run = weightwatch.open_run(dirs["trainable_only"])
    assert run.tensor_names == [v.path for v in model.trainable_weights]
    assert run.tensor_names == ["opts/fc/kernel", "opts/fc/bias", "opts/bn/gamma", "opts/bn/beta",
                                "opts/head/kernel", "opts/head/bias"]
    assert (run.metric("trainable") == 1).all()


def test_include_and_exclude_globs(options_runs):
    dirs, model = options_runs
    assert weightwatch.open_run(dirs["include"]).tensor_names == [
        "opts/fc/kernel", "opts/fc/bias", "opts/bn/moving_mean", "opts/bn/moving_variance"]
    assert weightwatch.open_run(dirs["exclude"]).tensor_names == [
        "opts/counter/count", "opts/counter/flag", "opts/fc/kernel", "opts/fixed/kernel", "opts/head/kernel"]
    assert weightwatch.open_run(dirs["all"]).tensor_names == [v.path for v in model.weights]


def test_freq_records_every_n_batches(options_runs, ref_row, check_row):
    dirs, _ = options_runs
    run = weightwatch.open_run(dirs["freq3"])
    # 128 samples / 16 = 8 batches an epoch; a record after batches 3 and 6, then the epoch's.
    assert [(r.trigger, r.epoch, r.batch, r.step) for r in run.records] == [
        ("begin", 0, None, 0),
        ("batch", 1, 3, 3), ("batch", 1, 6, 6), ("epoch", 1, None, 8),
        ("batch", 2, 3, 11), ("batch", 2, 6, 14), ("epoch", 2, None, 16),
    ]
    assert run.records[1].label == "epoch 1 batch 3"
    assert np.isfinite(run.log("loss")[1:]).all()
    assert_matches_saved_tensors(run, ref_row, check_row)


def test_int_and_bool_variables(options_runs, ref_row, check_row):
    dirs, _ = options_runs
    run = weightwatch.open_run(dirs["freq3"])
    count, flag = "opts/counter/count", "opts/counter/flag"
    info = {t.path: t for t in run.tensors}
    assert info[count].dtype == "int32" and info[flag].dtype == "bool"
    assert info[count].shape == () and info[flag].shape == (2,)
    # The counter moves every training step, so its value is the step number.
    assert [int(run.tensors_at(r.index)[count]) for r in run.records] == [r.step for r in run.records]
    assert run.history(count, "l2").tolist() == [float(r.step) for r in run.records]
    assert run.history(count, "changed")[1:].tolist() == [1.0] * 6
    # The flag flips once, at the first step, then stays.
    assert run.history(flag, "changed")[1:].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert run.history(flag, "mean").tolist() == [0.0] + [1.0] * 6
    assert np.isnan(run.history(count, "d_cos")).all()
    assert_matches_saved_tensors(run, ref_row, check_row)


def test_learning_rate_logged_with_batch_records(options_runs):
    dirs, _ = options_runs
    run = weightwatch.open_run(dirs["freq3"])
    assert run.log("learning_rate") == pytest.approx([0.01] * 7, rel=1e-6)
    assert "loss" in run.records[1].logs


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="Received: freq=0"):
        weightwatch.WatchCallback("x", freq=0, check=False)
    with pytest.raises(ValueError, match="Received: freq='batch'"):
        weightwatch.WatchCallback("x", freq="batch", check=False)
    with pytest.raises(ValueError, match="list of glob patterns"):
        weightwatch.WatchCallback("x", include="*/kernel", check=False)


class Twins(keras.Model):
    """Two layers given the same name: Keras gives their variables the same path."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.first = layers.Dense(4, name="d")
        self.second = layers.Dense(1, name="d")

    def call(self, x):
        return self.second(self.first(x))


def test_variables_sharing_a_path_are_recorded_apart_and_restored(tmp_path):
    keras.utils.set_random_seed(5)
    x, y = data()
    model = Twins(name="twins")
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    run_dir = tmp_path / "run"
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[watch(run_dir)])
    assert [v.path for v in model.weights][:2] == [v.path for v in model.weights][2:]
    run = weightwatch.open_run(run_dir)
    assert run.tensor_names == ["twins/d/kernel", "twins/d/bias", "twins/d/kernel#1", "twins/d/bias#1"]
    assert [t.role for t in run.tensors] == ["kernel", "bias", "kernel", "bias"]   # "#1" is no role
    saved = {r: run.tensors_at(r) for r in (1, 2)}
    assert saved[2]["twins/d/kernel"].shape == (8, 4) and saved[2]["twins/d/kernel#1"].shape == (4, 1)
    for name in ("twins/d/kernel", "twins/d/kernel#1"):  # each compared with its own previous values
        d = np.linalg.norm(saved[2][name].astype(np.float64) - saved[1][name])
        assert run.history(name, "d_l2")[2] == pytest.approx(d, rel=1e-5)
    weightwatch.restore(model, run_dir, record=1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.second.kernel), saved[1]["twins/d/kernel#1"])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.first.kernel), saved[1]["twins/d/kernel"])
