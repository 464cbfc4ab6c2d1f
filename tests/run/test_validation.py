"""The strict schema: damage never turns a failing run into a pass.

Each case takes a run that fails (a NaN at record 2, the loss non-finite) or
passes, damages it the way the issue reproduced (a record copied over
another, a key deleted, a value of the wrong type) and checks that the run is
not accepted as it is: a problem naming the file and the key, tensor or log,
and an exit code that is never 0.
"""

from __future__ import annotations

import json
import shutil

import pytest

import weightwatch
from weightwatch.checking.config import load_rules
from weightwatch.checking.engine import evaluate
from weightwatch.errors import ExitCode, RunFormatError
from weightwatch.run.schema import COLUMNS

from runbuilder import MLP, write_healthy_run, write_nan_run, write_run

RULES = load_rules(use_project_config=False)


def verdict(run_dir):
    """(exit code, problems) of checking ``run_dir`` as the CLI does."""
    try:
        run = weightwatch.open_run(run_dir)
    except RunFormatError as exc:
        return ExitCode.USAGE_ERROR, [str(exc)]
    report = evaluate(run, RULES)
    return report.exit_code(), report.problems


def edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.fixture
def failing(tmp_path):
    d = write_nan_run(tmp_path / "failing")
    assert verdict(d)[0] == ExitCode.CHECKS_FAILED
    return d


@pytest.fixture
def healthy(tmp_path):
    d = write_healthy_run(tmp_path / "healthy", 5)
    assert verdict(d) == (ExitCode.OK, [])
    return d


# -- the reproductions -------------------------------------------------------------------

def test_a_record_copied_over_the_next_is_a_problem(failing):
    """Copying record-000001.json over record-000002.json used to give "12 passed", exit 0."""
    shutil.copy(failing / "record-000001.json", failing / "record-000002.json")
    shutil.copy(failing / "record-000001.json", failing / "record-000003.json")
    code, problems = verdict(failing)
    assert code != ExitCode.OK
    assert any("record-000002.json" in p and '"record" is 1' in p for p in problems)


def test_a_changed_tensor_name_is_a_problem(failing):
    edit(failing / "record-000002.json",
         lambda s: s["tensors"].update({"dense/kernem": s["tensors"].pop("dense/kernel")}))
    code, problems = verdict(failing)
    assert code != ExitCode.OK
    assert any("'dense/kernem' is not in the manifest" in p for p in problems)


def test_a_changed_log_key_is_a_problem(tmp_path):
    records = [{"logs": {}}, {"logs": {"loss": 1.0}}, {"logs": {"loss": 0.9}}, {"logs": {"loss": 50.0}}]
    d = write_run(tmp_path / "run", MLP, records)
    assert verdict(d)[0] == ExitCode.CHECKS_FAILED  # loss-diverging
    edit(d / "record-000003.json", lambda s: s.update(logs={"lors": 50.0}))
    code, problems = verdict(d)
    assert code != ExitCode.OK
    assert any("record-000003.json" in p and "log 'loss'" in p for p in problems)


def test_validation_logs_may_come_and_go(tmp_path):
    """validation_freq=2 logs val_loss every other epoch: not a problem."""
    records = [{"logs": {}}] + [{"logs": {"loss": 1.0 / i, **({"val_loss": 1.0 / i} if i % 2 == 0 else {})}}
                                for i in range(1, 6)]
    d = write_run(tmp_path / "run", MLP, records)
    assert verdict(d) == (ExitCode.OK, [])


def test_the_manifest_without_its_tensor_table_is_an_error(failing):
    edit(failing / "manifest.json", lambda m: m.pop("tensors"))
    code, problems = verdict(failing)
    assert code == ExitCode.USAGE_ERROR and '"tensors"' in problems[0]


def test_a_tensor_deleted_from_a_record_is_a_problem(failing):
    edit(failing / "record-000002.json", lambda s: s["tensors"].pop("dense/kernel"))
    code, problems = verdict(failing)
    assert code != ExitCode.OK
    assert any("'dense/kernel' of the manifest is missing" in p for p in problems)


@pytest.mark.parametrize("name,change,message", [
    ("logs a list", lambda s: s.update(logs=[1, 2]), '"logs" must be an object'),
    ("epoch 1e308", lambda s: s.update(epoch=1e308), '"epoch" must be a whole number'),
    ("epoch true", lambda s: s.update(epoch=True), '"epoch" must be a whole number'),
    ("epoch negative", lambda s: s.update(epoch=-1), '"epoch" must be a whole number'),
    ("no step key", lambda s: s.pop("step"), 'missing "step"'),
    ("a key renamed", lambda s: s.update(stop=s.pop("step")), 'missing "step"'),
    ("an unknown key", lambda s: s.update(extra=1), 'unknown key "extra"'),
    ("a log as a string", lambda s: s["logs"].update(loss="0.5"), "log 'loss' must be a number"),
    ("a log as a boolean", lambda s: s["logs"].update(loss=True), "log 'loss' must be a number"),
    ("an unknown trigger", lambda s: s.update(kind="epohc"), 'did you mean "epoch"'),
    ("a batch on an epoch record", lambda s: s.update(batch=3), '"batch" of an epoch record'),
    ("a time as a string", lambda s: s.update(time="now"), '"time" must be a number'),
    ("a count as a boolean", lambda s: s["tensors"]["dense/bias"].__setitem__(COLUMNS.index("nan"), True),
     "'nan' must be a whole number"),
    ("a count as a fraction", lambda s: s["tensors"]["dense/bias"].__setitem__(COLUMNS.index("nan"), 0.5),
     "'nan' must be a whole number"),
    ("a null count", lambda s: s["tensors"]["dense/bias"].__setitem__(COLUMNS.index("nan"), None),
     "'nan' must be given"),
    ("a negative count", lambda s: s["tensors"]["dense/bias"].__setitem__(COLUMNS.index("inf"), -2),
     "'inf' must be a whole number"),
    ("a flag as a number", lambda s: s["tensors"]["dense/bias"].__setitem__(COLUMNS.index("frozen"), 0),
     "'frozen' must be true, false or null"),
    ("a figure as a string", lambda s: s["tensors"]["dense/bias"].__setitem__(COLUMNS.index("l2"), "1.5"),
     "'l2' must be a number or null"),
    ("a negative norm", lambda s: s["tensors"]["dense/bias"].__setitem__(COLUMNS.index("l2"), -1.0),
     "'l2' must be >= 0"),
    ("a cosine above 1", lambda s: s["tensors"]["dense/bias"].__setitem__(COLUMNS.index("d_cos"), 1.5),
     "'d_cos' must be in [-1, 1]"),
    ("more NaN than elements", lambda s: s["tensors"]["dense/bias"].__setitem__(COLUMNS.index("nan"), 9),
     "'nan' must be at most"),
    ("a short row", lambda s: s["tensors"]["dense/bias"].pop(), f"expected {len(COLUMNS)} numbers"),  # one row shorter than the others
    ("tensors_file elsewhere", lambda s: s.update(tensors_file="../../x.npz"), '"tensors_file" must be null'),
    ("tensors_file absolute", lambda s: s.update(tensors_file="/proc/self/environ"), '"tensors_file" must be null'),
])
def test_a_schema_invalid_record_is_a_problem_and_the_others_are_read(healthy, name, change, message):
    edit(healthy / "record-000002.json", change)
    run = weightwatch.open_run(healthy)
    assert [r.index for r in run.records] == [0, 1, 3, 4], name
    assert len(run.problems) == 1, [str(p) for p in run.problems]
    problem = str(run.problems[0])
    assert problem.startswith(str(healthy / "record-000002.json") + ": ") and "\n" not in problem
    assert message in problem, problem
    assert evaluate(run, RULES).exit_code() != ExitCode.OK


@pytest.mark.parametrize("name,change,message", [
    ("columns a number", lambda m: m.update(columns=5), '"columns" must be a list'),
    ("a column renamed", lambda m: m["columns"].__setitem__(COLUMNS.index("absmax"), "absmix"),
     'unknown column "absmix" in "columns" (did you mean "absmax"?)'),
    ("a column twice", lambda m: m["columns"].__setitem__(COLUMNS.index("l2"), "mean"), 'column "mean" is named twice'),
    ("no columns", lambda m: m.pop("columns"), 'no "columns"'),
    ("shape a string", lambda m: m["tensors"][0].update(shape="ab"), '"shape" must be a list of whole numbers'),
    ("an unknown role", lambda m: m["tensors"][0].update(kind="kernle"), 'did you mean "kernel"'),
    ("a path twice", lambda m: m["tensors"][1].update(path=m["tensors"][0]["path"]), "listed twice"),
    ("first_record negative", lambda m: m["tensors"][0].update(first_record=-1), '"first_record"'),
    ("tensors an object", lambda m: m.update(tensors={}), '"tensors" must be a list'),
    ("version true", lambda m: m.update(version=True), "unsupported format version True"),
])
def test_a_schema_invalid_manifest_is_one_line(healthy, name, change, message):
    edit(healthy / "manifest.json", change)
    with pytest.raises(RunFormatError) as err:
        weightwatch.open_run(healthy)
    text = str(err.value)
    assert text.startswith(str(healthy / "manifest.json") + ": ") and "\n" not in text
    assert message in text, text


def test_the_columns_come_from_the_manifest_by_name(tmp_path):
    """A run whose manifest orders its columns otherwise reads the same, by name."""
    columns = list(reversed(COLUMNS))
    d = write_run(tmp_path / "run", MLP, [{"logs": {}}, {"logs": {"loss": 1.0}}], columns=columns)
    run = weightwatch.open_run(d)
    assert run.problems == [] and run.columns == tuple(columns)
    assert run.history("dense/kernel", "l2").tolist() == [1.0, 1.05]


def test_steps_never_go_back_but_restart_at_a_begin_record(tmp_path):
    records = [{"logs": {}, "step": 0}, {"logs": {"loss": 1.0}, "step": 10}, {"logs": {"loss": 0.9}, "step": 5}]
    d = write_run(tmp_path / "run", MLP, records)
    run = weightwatch.open_run(d)
    assert [r.index for r in run.records] == [0, 1]
    assert '"step" went back from 10 (record 1) to 5' in str(run.problems[0])
    # A new callback continuing the run: a begin record, its steps counted afresh.
    records[2] = {"logs": {}, "step": 0, "trigger": "begin", "epoch": 1}
    d = write_run(tmp_path / "run2", MLP, records + [{"logs": {"loss": 0.8}, "step": 10, "epoch": 2}])
    assert weightwatch.open_run(d).problems == []


def test_a_second_fit_may_number_its_epochs_afresh(tmp_path):
    records = [{"logs": {}}, {"logs": {"loss": 1.0}, "epoch": 1, "step": 10},
               {"logs": {"loss": 0.9}, "epoch": 1, "step": 20}, {"logs": {"loss": 0.8}, "epoch": 2, "step": 30}]
    assert weightwatch.open_run(write_run(tmp_path / "run", MLP, records)).problems == []
    records[2] = {"logs": {"loss": 0.9}, "epoch": 0, "step": 10}
    run = weightwatch.open_run(write_run(tmp_path / "run2", MLP, records))
    assert '"epoch" went back from 1 (record 1) to 0 without training' in str(run.problems[0])


def test_a_trainable_only_run_may_leave_tensors_out(tmp_path):
    records = [{"logs": {}}, {"logs": {"loss": 1.0}, "rows": {"dense/bias": "absent"}}]
    d = write_run(tmp_path / "run", MLP, records)
    assert "'dense/bias' of the manifest is missing" in str(weightwatch.open_run(d).problems[0])
    edit(d / "manifest.json", lambda m: m.update(trainable_only=True))
    assert weightwatch.open_run(d).problems == []


def test_a_recorded_run_is_valid(tmp_path):
    """What the recorder writes passes the schema, journal or not."""
    import numpy as np

    from runbuilder import record_arrays

    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 4)).astype("float32")
    records = [{"a/kernel": w + k, "a/bias": np.zeros(4, "float32") + k, "a/count": np.array(k)}
               for k in range(4)]
    d = record_arrays(tmp_path / "run", records, logs=[{}] + [{"loss": 1.0 / k} for k in range(1, 4)])
    assert weightwatch.open_run(d).problems == []
    (d / "history.bin").unlink()
    assert weightwatch.open_run(d).problems == []
