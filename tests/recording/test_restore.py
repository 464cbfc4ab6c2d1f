"""restore() is all or nothing: every variable matched in name, shape and dtype, finite, or a
typed error and no variable changed.

It used to report success restoring nothing (an empty healthy.npz), leave a variable whose key
was missing untouched, restore NaN, int64 and complex arrays, and raise a raw ValueError for
``record="2"``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from weightwatch import RestoreError, RunFormatError
from weightwatch.run.reader import plan_restore, read_weights

from runbuilder import record_arrays

VARIABLES = {"m/d/kernel": ((4, 3), "float32"), "m/d/bias": ((3,), "float32")}


def arrays(**changes):
    out = {"m/d/kernel": np.ones((4, 3), "float32"), "m/d/bias": np.zeros(3, "float32")}
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


def test_a_complete_match_is_planned_in_model_order():
    plan = plan_restore(arrays(), VARIABLES)
    assert [p for p, _ in plan] == list(VARIABLES)


@pytest.mark.parametrize("given,message", [
    ({}, "hold no tensors"),
    (arrays(**{"m/d/bias": None}), "no recorded weights for the model's variable 'm/d/bias'"),
    (arrays(**{"m/x/kernel": np.ones(2, "float32")}), "the model has no variable 'm/x/kernel'"),
    (arrays(**{"m/d/kernel": np.ones((3, 4), "float32")}), "recorded shape (3, 4) != model shape (4, 3)"),
    (arrays(**{"m/d/bias": np.zeros(3, "int64")}), "recorded dtype int64 != model dtype float32"),
    (arrays(**{"m/d/bias": np.zeros(3, "complex64")}), "recorded dtype complex64"),
    (arrays(**{"m/d/bias": np.array([0, np.nan, np.inf], "float32")}), "holds 2 NaN/Inf values"),
])
def test_anything_short_of_a_complete_match_restores_nothing(given, message):
    with pytest.raises(RestoreError) as err:
        plan_restore(given, VARIABLES, where="runs/x")
    assert message in str(err.value) and "nothing restored" in str(err.value)
    assert str(err.value).startswith("runs/x: ") and "\n" not in str(err.value)


def test_nonfinite_weights_are_restored_only_when_asked():
    nan = arrays(**{"m/d/bias": np.array([0, np.nan, 1], "float32")})
    assert len(plan_restore(nan, VARIABLES, allow_nonfinite=True)) == 2


@pytest.fixture
def saved(tmp_path):
    records = [{"m/d/kernel": np.full((4, 3), k, "float32"), "m/d/bias": np.full(3, k, "float32")}
               for k in range(3)]
    return record_arrays(tmp_path / "run", records, save_tensors=True)


@pytest.mark.parametrize("record", ["2", 2.0, True, -1])
def test_a_record_that_is_no_record_index_is_a_typed_error(saved, record):
    with pytest.raises(RestoreError, match="record must be a record index"):
        read_weights(saved, record)


def test_a_pointer_that_does_not_name_what_healthy_npz_holds_is_refused(saved):
    from weightwatch.run.writer import RunWriter

    w = RunWriter(saved, model_name="m", resume=True)
    w.keep_healthy(1, {"m/d/kernel": np.full((4, 3), 1, "float32"), "m/d/bias": np.full(3, 1, "float32")})
    w.wait_healthy()
    assert read_weights(saved)[0] == 1
    pointer = json.loads((saved / "healthy.json").read_text())
    # healthy.npz replaced by the next record's weights, the pointer's write cut short:
    np.savez(saved / "healthy.npz", **{"m/d/kernel": np.full((4, 3), 2, "float32"), "m/d/bias": np.ones(3, "float32")})
    with pytest.raises(RunFormatError, match="does not hold the weights of record 1"):
        read_weights(saved)
    del pointer["contents"]  # a pointer written before contents were pinned: trusted as it is
    (saved / "healthy.json").write_text(json.dumps(pointer))
    assert read_weights(saved)[0] == 1
    w.close()


def test_restore_into_a_keras_model_is_all_or_nothing(saved, monkeypatch):
    keras = pytest.importorskip("keras")
    import weightwatch

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")], name="m")
    before = [w.copy() for w in model.get_weights()]
    assert weightwatch.restore(model, saved, 1) == 1
    np.testing.assert_array_equal(model.get_weights()[0], np.full((4, 3), 1, "float32"))
    # A model with one more variable than was recorded: nothing changes.
    bigger = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d"), keras.layers.Dense(1, name="e")],
                              name="m")
    kept = [w.copy() for w in bigger.get_weights()]
    with pytest.raises(RestoreError, match="no recorded weights for the model's variable 'm/e/kernel'"):
        weightwatch.restore(bigger, saved, 1)
    for a, b in zip(kept, bigger.get_weights()):
        np.testing.assert_array_equal(a, b)
    # An assign that fails half-way: every variable is put back.
    model.set_weights(before)
    variable = model.weights[1]
    real = type(variable).assign

    def assign(self, value, *a, **k):
        if self is variable:
            raise RuntimeError("device lost")
        return real(self, value, *a, **k)

    monkeypatch.setattr(type(variable), "assign", assign)
    with pytest.raises(RestoreError, match="every variable was put back"):
        weightwatch.restore(model, saved, 2)
    monkeypatch.undo()
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
