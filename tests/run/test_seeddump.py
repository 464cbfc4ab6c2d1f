"""Folders of naive per-epoch weight dumps (the seed note's recipe) open as runs.

The callback below is the first one in the seed note
(/work/shared/seeds/*.txt, ``WeightRecorderCallback``), copied as it is
except that it subclasses ``keras.callbacks.Callback`` instead of
``tf.keras.callbacks.Callback``.  A real model trained with it produces the
folder under test (where Keras is installed); damaged folders are written by hand.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import weightwatch
from weightwatch import RunFormatError


STATS = ("size", "nan", "inf", "l2", "mean", "std", "min", "max", "absmax", "zero_frac",
         "d_l2", "d_absmax", "changed", "dead_units", "d_cos")
EPOCHS = 4


@pytest.fixture(scope="module")
def seed_dir(tmp_path_factory):
    keras = pytest.importorskip("keras")
    from seed_note import WeightRecorderCallback

    keras.utils.set_random_seed(11)
    r = np.random.default_rng(11)
    x = r.normal(size=(96, 6)).astype("float32")
    y = (x[:, :1] - x[:, 2:3]).astype("float32")
    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(5, activation="relu", name="fc"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Dropout(0.2, name="drop"),
        keras.layers.Dense(1, name="head"),
    ], name="seeded")
    model.compile(optimizer="adam", loss="mse")
    d = tmp_path_factory.mktemp("seed") / "weights"
    model.fit(x, y, epochs=EPOCHS, batch_size=32, verbose=0, callbacks=[WeightRecorderCallback(str(d))])
    return d


def load_dump(path):
    return {f"{layer}/{i}": np.array(w, dtype=np.float64)
            for layer, ws in json.loads(path.read_text()).items() for i, w in enumerate(ws)}


def test_seed_folder_opens_as_a_run(seed_dir):
    assert sorted(os.listdir(seed_dir)) == [f"weights_epoch_{n}.json" for n in range(1, EPOCHS + 1)]
    run = weightwatch.open_run(seed_dir)
    assert run.source == "seed" and run.problems == []
    assert run.epochs.tolist() == list(range(1, EPOCHS + 1))
    assert run.tensor_names == ["fc/0", "fc/1", "bn/0", "bn/1", "bn/2", "bn/3", "head/0", "head/1"]
    info = {t.path: t for t in run.tensors}
    assert info["fc/0"].shape == (6, 5) and info["fc/0"].role == "kernel" and info["fc/0"].layer == "fc"
    assert info["bn/2"].shape == (5,) and info["head/1"].shape == (1,)
    assert [r.file for r in run.records] == [f"weights_epoch_{n}.json" for n in range(1, EPOCHS + 1)]
    # The format knows nothing of trainable/frozen, and there is no record before training.
    assert np.isnan(run.metric("trainable")).all() and np.isnan(run.metric("frozen")).all()
    assert run.manifest.get("model") is None and run.verdict is None


def test_seed_statistics_and_deltas_equal_recomputation(seed_dir, ref_row, check_row):
    run = weightwatch.open_run(seed_dir)
    dumps = [load_dump(seed_dir / r.file) for r in run.records]
    for i, rec in enumerate(run.records):
        for path, a in dumps[i].items():
            prev = dumps[i - 1][path] if i >= 1 else None
            prevprev = dumps[i - 2][path] if i >= 2 else None
            got = {c: run.history(path, c)[i] for c in STATS}
            check_row(got, ref_row(a, prev, prevprev, units=a.shape[-1] if a.ndim >= 2 else None),
                      where=f"{rec.file} {path}")
    # BatchNorm's moving statistics (bn/2, bn/3) change between epochs like any weight.
    assert run.history("bn/2", "changed")[1:].tolist() == [1.0] * (EPOCHS - 1)
    assert np.isnan(run.history("fc/0", "d_l2")[0])


def test_nan_and_infinity_tokens_are_counted(tmp_path):
    d = tmp_path / "dumps"
    d.mkdir()
    (d / "w1.json").write_text('{"fc": [[[1.0, 2.0], [3.0, 4.0]], [0.0, 0.5]]}')
    (d / "w2.json").write_text('{"fc": [[[1.0, NaN], [Infinity, -Infinity]], [0.0, 0.5]]}')
    (d / "w3.json").write_text('{"fc": [[[NaN, NaN], [NaN, NaN]], [0.0, 0.5]]}')
    run = weightwatch.open_run(d)
    assert run.problems == [] and run.epochs.tolist() == [1, 2, 3]
    assert run.history("fc/0", "nan").tolist() == [0, 1, 4]
    assert run.history("fc/0", "inf").tolist() == [0, 2, 0]
    assert run.history("fc/0", "l2")[1] == pytest.approx(1.0)  # over the finite elements
    assert np.isnan(run.history("fc/0", "l2")[2])
    assert run.history("fc/0", "changed").tolist()[1:] == [1.0, 1.0]
    assert np.isnan(run.history("fc/0", "d_l2")[1])  # an update through NaN has no size
    assert run.history("fc/1", "changed").tolist()[1:] == [0.0, 0.0]


@pytest.mark.parametrize("content,message", [
    ('{"fc": [[[1.0, 2.0], [3.0]], [0.0, 0.5]]}', "tensor 'fc/0': ragged"),
    ('{"fc": [[[1.0, 2.0], [3.0, 4.0]], ["a", "b"]]}', "tensor 'fc/1': holds non-numbers"),
    ('{"fc": [[[1.0, 2.0], [3.0, null]], [0.0, 0.5]]}', "tensor 'fc/0': holds non-numbers"),
    ('{"fc": [[[1.0, 2.0], [3.0, 4.0]], [0.0, 0.', "unreadable weight dump"),
    ('{"fc": {"0": [1.0]}}', "layer 'fc': expected a list"),
    ('[[1.0, 2.0]]', "expected an object"),
    ('', "unreadable weight dump"),
])
def test_damaged_dump_is_a_problem_and_others_still_read(tmp_path, content, message):
    d = tmp_path / "dumps"
    d.mkdir()
    good = {"fc": [[[1.0, 2.0], [3.0, 4.0]], [0.0, 0.5]]}
    for n in (1, 2, 3):
        good["fc"][1][1] = 0.5 * n
        (d / f"weights_epoch_{n}.json").write_text(json.dumps(good))
    (d / "weights_epoch_2.json").write_text(content)
    run = weightwatch.open_run(d)
    assert run.epochs.tolist() == [1, 3]
    assert run.history("fc/1", "max").tolist() == [0.5, 1.5]
    assert len(run.problems) == 1
    problem = str(run.problems[0])
    assert problem.startswith(str(d / "weights_epoch_2.json") + ": ")
    assert message in problem and "\n" not in problem


def test_all_dumps_damaged_raises(tmp_path):
    d = tmp_path / "dumps"
    d.mkdir()
    (d / "w1.json").write_text("{")
    (d / "w2.json").write_text('{"x": 1}')
    with pytest.raises(RunFormatError) as err:
        weightwatch.open_run(d)
    assert str(d / "w1.json") in str(err.value)


def test_files_sort_by_number_and_hidden_files_are_ignored(tmp_path):
    d = tmp_path / "dumps"
    d.mkdir()
    for n in (1, 2, 10):
        (d / f"e{n}.json").write_text(json.dumps({"l": [[float(n)]]}))
    (d / ".e3.json").write_text("{")
    run = weightwatch.open_run(d)
    assert run.epochs.tolist() == [1, 2, 10] and run.problems == []
    assert run.history("l/0", "max").tolist() == [1.0, 2.0, 10.0]


def test_several_series_in_one_folder_is_refused(tmp_path):
    d = tmp_path / "dumps"
    d.mkdir()
    (d / "weights_epoch_1.json").write_text('{"l": [[1.0]]}')
    (d / "trainable_weights_epoch_1.json").write_text('{"l": [[1.0]]}')
    with pytest.raises(RunFormatError, match="several weight-dump series") as err:
        weightwatch.open_run(d)
    assert str(d) in str(err.value)


def test_reshaped_tensor_has_no_delta(tmp_path):
    d = tmp_path / "dumps"
    d.mkdir()
    (d / "w1.json").write_text('{"l": [[1.0, 2.0]]}')
    (d / "w2.json").write_text('{"l": [[1.0, 2.0, 3.0]]}')
    (d / "w3.json").write_text('{"l": [[1.0, 2.0, 4.0]]}')
    run = weightwatch.open_run(d)
    assert run.history("l/0", "size").tolist() == [2, 3, 3]
    assert np.isnan(run.history("l/0", "d_l2")[1])
    assert run.history("l/0", "d_l2")[2] == 1.0
