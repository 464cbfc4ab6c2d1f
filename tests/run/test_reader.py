"""open_run on bad input: missing, empty, foreign and damaged run directories.

No Keras here: every file is written by hand, byte for byte, the way a crash,
a careless copy or a future version might leave it.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import weightwatch
from weightwatch import RunFormatError, RunNotFoundError
from weightwatch.run.writer import RunWriter
from weightwatch.run.schema import COLUMNS

NCOL = len(COLUMNS)


def row(l2, *, trainable=True, frozen=False, d_l2=None, changed=None):
    values = dict.fromkeys(COLUMNS)
    values.update(trainable=trainable, frozen=frozen, size=4, nan=0, inf=0, l2=l2, mean=0.0, std=1.0,
                  min=-1.0, max=1.0, absmax=1.0, zero_frac=0.0, d_l2=d_l2, changed=changed)
    return [values[c] for c in COLUMNS]


def manifest(version=1, tensors=("m/d/kernel", "m/d/bias")):
    return {"format": "weightwatch-run", "version": version, "model": "m", "columns": list(COLUMNS),
            "tensors": [{"path": p, "layer": "m/d", "shape": [2, 2] if p.endswith("kernel") else [4],
                         "dtype": "float32", "kind": p.rsplit("/", 1)[1], "first_record": 0}
                        for p in tensors]}


def snapshot(index, epoch=None, rows=None, logs=None):
    return {"format": "weightwatch-snapshot", "version": 1, "record": index,
            "epoch": index if epoch is None else epoch, "batch": None, "step": index * 10,
            "kind": "begin" if index == 0 else "epoch", "time": 0.0,
            "logs": {"loss": 1.0 / (index + 1)} if logs is None else logs, "tensors_file": None,
            "tensors": rows if rows is not None else {
                "m/d/kernel": row(1.0 + index, d_l2=None if index == 0 else 0.5, changed=None if index == 0 else True),
                "m/d/bias": row(0.1 * index, d_l2=None if index == 0 else 0.1, changed=None if index == 0 else True)}}


def write_run(path, records=3):
    path.mkdir(parents=True, exist_ok=True)
    (path / "manifest.json").write_text(json.dumps(manifest()))
    for i in range(records):
        (path / f"record-{i:06d}.json").write_text(json.dumps(snapshot(i)))
    return path


# -- the good case, as the reader's baseline --------------------------------------------------

def test_hand_written_run_reads(tmp_path):
    run = weightwatch.open_run(write_run(tmp_path / "run"))
    assert run.problems == [] and run.source == "weightwatch"
    assert run.tensor_names == ["m/d/kernel", "m/d/bias"]
    assert run.epochs.tolist() == [0, 1, 2]
    assert run.history("m/d/kernel", "l2").tolist() == [1.0, 2.0, 3.0]
    assert np.isnan(run.history("m/d/kernel", "d_l2")[0])
    assert run.history("m/d/bias", "changed")[1:].tolist() == [1.0, 1.0]
    assert run.metric("l2").shape == (3, 2)
    assert run.log("loss").tolist() == [1.0, 0.5, pytest.approx(1 / 3)]
    assert run.tensors[0].shape == (2, 2) and run.tensors[0].units == 2 and run.tensors[1].units == 4
    assert run.records[2].label == "epoch 2" and run.records[2].step == 20


def test_tensor_missing_from_manifest_is_a_problem_and_a_late_tensor_reads(tmp_path):
    d = write_run(tmp_path / "run", records=2)
    rows = dict(snapshot(2)["tensors"], **{"m/late/kernel": row(7.0)})
    (d / "record-000002.json").write_text(json.dumps(snapshot(2, rows=rows)))
    run = weightwatch.open_run(d)
    assert [r.index for r in run.records] == [0, 1]
    assert len(run.problems) == 1 and "'m/late/kernel' is not in the manifest" in str(run.problems[0])
    # In the manifest from record 2 on, as the writer puts it: read.
    m = manifest(tensors=("m/d/kernel", "m/d/bias", "m/late/kernel"))
    m["tensors"][2]["first_record"] = 2
    (d / "manifest.json").write_text(json.dumps(m))
    run = weightwatch.open_run(d)
    assert run.problems == []
    assert run.tensor_names[-1] == "m/late/kernel"
    assert run.tensors[-1].first_record == 2
    assert np.isnan(run.history("m/late/kernel", "l2")[:2]).all()
    assert run.history("m/late/kernel", "l2")[2] == 7.0


def test_null_logs_and_unknown_metric(tmp_path):
    d = write_run(tmp_path / "run", records=2)
    (d / "record-000001.json").write_text(json.dumps(snapshot(1, logs={"loss": None, "acc": 0.5})))
    run = weightwatch.open_run(d)
    assert math.isnan(run.log("loss")[1]) and run.log("loss")[0] == 1.0
    assert np.isnan(run.log("acc")[0]) and run.log("acc")[1] == 0.5
    assert np.isnan(run.log("never_logged")).all()
    with pytest.raises(KeyError, match="l2"):
        run.metric("l3")
    with pytest.raises(KeyError, match="nope"):
        run.history("nope", "l2")


# -- not a run at all --------------------------------------------------------------------------

def test_missing_directory(tmp_path):
    with pytest.raises(RunNotFoundError) as err:
        weightwatch.open_run(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    assert err.value.path == str(tmp_path / "nowhere")


def test_a_file_instead_of_a_directory(tmp_path):
    f = write_run(tmp_path / "run") / "manifest.json"
    with pytest.raises(RunNotFoundError, match="not a directory") as err:
        weightwatch.open_run(f)
    assert str(f) in str(err.value)


def test_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunNotFoundError) as err:
        weightwatch.open_run(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)


def test_directory_of_unrelated_files(tmp_path):
    d = tmp_path / "stuff"
    d.mkdir()
    for name in ("notes.txt", "config.json", "model.keras", "data.csv", "metrics.jsonl"):
        (d / name).write_text("x")
    (d / ".hidden3.json").write_text("{}")
    with pytest.raises(RunNotFoundError) as err:
        weightwatch.open_run(d)
    assert str(d) in str(err.value) and "no weightwatch run" in str(err.value)


def test_manifest_without_records(tmp_path):
    d = write_run(tmp_path / "run", records=0)
    (d / ".record-000000.json.x1y2.tmp").write_text('{"format": "weightwatch-snap')  # a write cut short
    with pytest.raises(RunNotFoundError, match="no records") as err:
        weightwatch.open_run(d)
    assert str(d) in str(err.value)


# -- damaged manifest: the run cannot be read ---------------------------------------------------

@pytest.mark.parametrize("content,message", [
    (json.dumps(manifest(version=99)), "unsupported format version 99"),
    (json.dumps(manifest(version=None)), "unsupported format version None"),
    ('{"format": "weightwatch-run", "version": 1, "tensors": [', "invalid JSON"),
    ('{"format": "weightwatch-run", "version": 1, "x": NaN}', "invalid JSON"),
    ('{"format": "something-else", "version": 1}', "not a weightwatch manifest"),
    ('[1, 2]', "not a weightwatch manifest"),
    ('{"format": "weightwatch-run", "version": 1, "tensors": [{"layer": "x"}]}', "malformed tensor entry"),
])
def test_bad_manifest_raises_naming_the_file(tmp_path, content, message):
    d = write_run(tmp_path / "run")
    (d / "manifest.json").write_text(content)
    with pytest.raises(RunFormatError, match=message) as err:
        weightwatch.open_run(d)
    assert not isinstance(err.value, RunNotFoundError)
    assert str(err.value).startswith(str(d / "manifest.json") + ": ")
    assert "\n" not in str(err.value)


# -- damaged records: listed as problems, the others still read ---------------------------------

GOOD = json.dumps(snapshot(1))
# What the stdlib's json.dump writes for a non-finite float: a bare token strict parsers reject.
WITH_NAN = json.dumps(snapshot(1, rows={"m/d/kernel": row(float("nan")), "m/d/bias": row(1.0)}))
WITH_INF = json.dumps(snapshot(1, logs={"loss": float("inf")}))
assert "NaN" in WITH_NAN and "Infinity" in WITH_INF


@pytest.mark.parametrize("content,message", [
    (GOOD[: len(GOOD) // 2], "unreadable record"),                                  # truncated
    (WITH_NAN, "unreadable record"),
    (WITH_INF, "unreadable record"),
    ("", "unreadable record"),
    (json.dumps(dict(snapshot(1), version=2)), "unsupported snapshot version 2"),
    (json.dumps(dict(snapshot(1), format="nope")), "not a weightwatch snapshot"),
    (json.dumps(snapshot(1, rows={"m/d/kernel": row(2.0), "m/d/bias": [1, 2, 3]})), "tensor 'm/d/bias'"),
    (json.dumps(snapshot(1, rows={"m/d/kernel": row(2.0), "m/d/bias": row("big")})), "tensor 'm/d/bias'"),
    (json.dumps(snapshot(1, rows={"m/d/bias": row(1.0), "m/d/kernel": [[1]] * NCOL})), "tensor 'm/d/kernel'"),
    (json.dumps(snapshot(1, rows={"m/d/kernel": 3})), "tensor 'm/d/kernel'"),
    (json.dumps({k: v for k, v in snapshot(1).items() if k != "epoch"}), "epoch"),
    (json.dumps(dict(snapshot(1), tensors=[1, 2])), '"tensors" must be an object'),
])
def test_bad_record_is_a_problem_and_others_still_read(tmp_path, content, message):
    d = write_run(tmp_path / "run", records=3)
    (d / "record-000001.json").write_text(content)
    run = weightwatch.open_run(d)
    assert [r.index for r in run.records] == [0, 2]
    assert run.history("m/d/kernel", "l2").tolist() == [1.0, 3.0]
    assert len(run.problems) == 1
    problem = run.problems[0]
    assert isinstance(problem, RunFormatError)
    assert str(problem).startswith(str(d / "record-000001.json") + ": ")
    assert message in str(problem)
    assert "\n" not in str(problem)


def test_every_record_damaged_raises_the_first_problem(tmp_path):
    d = write_run(tmp_path / "run", records=2)
    for i in range(2):
        (d / f"record-{i:06d}.json").write_text("{")
    with pytest.raises(RunFormatError, match="unreadable record") as err:
        weightwatch.open_run(d)
    assert str(d / "record-000000.json") in str(err.value)


def test_hidden_temporary_files_are_ignored(tmp_path):
    d = write_run(tmp_path / "run", records=2)
    (d / ".record-000002.json.abc123.tmp").write_text("{trunc")
    (d / ".record-000002.npz.abc123.tmp").write_bytes(b"PK\x03")
    (d / ".manifest.json.zz.tmp").write_text("")
    run = weightwatch.open_run(d)
    assert run.problems == [] and len(run.records) == 2


def test_saved_tensors_missing_or_corrupt(tmp_path):
    d = write_run(tmp_path / "run", records=2)
    snap = snapshot(1)
    snap["tensors_file"] = "record-000001.npz"
    (d / "record-000001.json").write_text(json.dumps(snap))
    run = weightwatch.open_run(d)
    with pytest.raises(RunFormatError, match="no saved tensors") as err:
        run.tensors_at(0)
    assert str(d) in str(err.value)
    with pytest.raises(RunFormatError, match="cannot read tensors") as err:
        run.tensors_at(1)  # the file is absent
    assert str(d / "record-000001.npz") in str(err.value)
    (d / "record-000001.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(RunFormatError, match="cannot read tensors") as err:
        run.tensors_at(1)
    assert str(d / "record-000001.npz") in str(err.value)
    # A pickled object array is refused, never unpickled.
    np.savez(d / "record-000001.npz", **{"m/d/kernel": np.array([object()], dtype=object)})
    with pytest.raises(RunFormatError, match="cannot read tensors"):
        run.tensors_at(1)
    np.savez(d / "record-000001.npz", **{"m/d/kernel": np.ones((2, 2), np.float32)})
    assert run.tensors_at(1)["m/d/kernel"].tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_unreadable_verdict_is_a_problem(tmp_path):
    d = write_run(tmp_path / "run", records=1)
    assert weightwatch.open_run(d).verdict is None
    (d / "verdict.json").write_text('{"halted": NaN}')
    run = weightwatch.open_run(d)
    assert run.verdict is None and run.verdict is None        # read once, reported once
    assert len(run.problems) == 1 and str(d / "verdict.json") in str(run.problems[0])
    from weightwatch.checking.config import load_rules
    from weightwatch.checking.engine import evaluate

    rules = load_rules(use_project_config=False)
    first, again = evaluate(weightwatch.open_run(d), rules), None
    assert len(first.problems) == 1 and first.exit_code() == 4   # the first evaluation sees it
    again = evaluate(run, rules)
    assert len(again.problems) == 1
    (d / "verdict.json").write_text('{"halted": true}')
    assert weightwatch.open_run(d).verdict == {"halted": True}


# -- the writer side of the same format ---------------------------------------------------------

def test_writer_refuses_a_nonempty_directory_and_resumes(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "keep.txt").write_text("x")
    with pytest.raises(weightwatch.RunDirNotEmptyError) as err:
        RunWriter(d, model_name="m")
    assert str(d) in str(err.value)
    w = RunWriter(d, model_name="m", overwrite=True)
    w.add_tensors([{"path": "m/d/kernel", "layer": "m/d", "shape": [2, 2], "dtype": "float32", "kind": "kernel"}])
    w.write_record(epoch=0, batch=None, step=0, trigger="begin", rows={"m/d/kernel": row(1.0)},
                   logs={}, wall=0.0,
                   arrays={"m/d/kernel": np.ones((2, 2), np.float32)})
    assert (d / "keep.txt").exists()
    resumed = RunWriter(d, model_name="m", resume=True)
    assert resumed.next_record == 1 and [t["path"] for t in resumed.tensors] == ["m/d/kernel"]
    with pytest.raises(weightwatch.RunDirNotEmptyError, match="'m'"):
        RunWriter(d, model_name="other", resume=True)
    (tmp_path / "afile").write_text("")
    with pytest.raises(RunFormatError, match="is a file"):
        RunWriter(tmp_path / "afile")
    run = weightwatch.open_run(d)
    assert run.tensors_at(0)["m/d/kernel"].shape == (2, 2)


def test_records_without_manifest_are_not_taken_for_a_seed_dump(tmp_path):
    from weightwatch.errors import RunFormatError
    from weightwatch.run.reader import open_run

    (tmp_path / "record-000000.json").write_text("{}")
    with pytest.raises(RunFormatError, match="without manifest.json"):
        open_run(tmp_path)


@pytest.mark.parametrize("field, value", [("step", "abc"), ("epoch", 1.5), ("batch", [1]), ("record", None),
                                          ("logs", [1, 2])])
def test_a_record_with_a_malformed_counter_is_unreadable_not_a_crash(tmp_path, field, value):
    import json

    d = write_run(tmp_path / "run", records=3)
    snap = json.loads((d / "record-000001.json").read_text())
    snap[field] = value
    (d / "record-000001.json").write_text(json.dumps(snap))
    (d / "history.bin").unlink(missing_ok=True)
    run = weightwatch.open_run(d)
    assert [r.index for r in run.records] == [0, 2]
    assert len(run.problems) == 1 and "record-000001.json" in str(run.problems[0])


# -- runs recorded before a column existed -----------------------------------------------------

def _old_run(path, records=3):
    """A run as weightwatch wrote it before ``grad_rms``: 17 columns in the manifest and every row."""
    from weightwatch.run.schema import FIRST_COLUMNS

    path.mkdir(parents=True, exist_ok=True)
    (path / "manifest.json").write_text(json.dumps(dict(manifest(), columns=list(FIRST_COLUMNS))))
    for i in range(records):
        snap = snapshot(i)
        snap["tensors"] = {p: r[:len(FIRST_COLUMNS)] for p, r in snap["tensors"].items()}
        (path / f"record-{i:06d}.json").write_text(json.dumps(snap))
    return path


def test_old_run_without_grad_rms_opens_and_reads_nan(tmp_path):
    run = weightwatch.open_run(_old_run(tmp_path / "old"))
    assert run.problems == [] and not run.has_column("grad_rms")
    assert run.history("m/d/kernel", "l2").tolist() == [1.0, 2.0, 3.0]
    g = run.metric("grad_rms")
    assert g.shape == (3, 2) and np.isnan(g).all() and not g.flags.writeable
    assert np.isnan(run.history("m/d/bias", "grad_rms")).all()
    with pytest.raises(KeyError, match="unknown metric 'grad_rsm'"):
        run.metric("grad_rsm")  # a typo still raises: only columns this weightwatch knows read NaN


def test_continuing_an_old_run_adds_the_new_columns(tmp_path):
    d = _old_run(tmp_path / "old", records=2)
    w = RunWriter(d, model_name="m", resume=True)
    assert json.loads((d / "manifest.json").read_text())["columns"] == list(COLUMNS)
    full = dict.fromkeys(COLUMNS)
    full.update(zip(COLUMNS, row(5.0, d_l2=0.5, changed=True)), grad_rms=0.25)
    w.write_record(epoch=2, batch=None, step=20, trigger="epoch", logs={"loss": 0.2}, wall=0.0,
                   rows={"m/d/kernel": [full[c] for c in COLUMNS], "m/d/bias": [full[c] for c in COLUMNS]})
    run = weightwatch.open_run(d)
    assert run.problems == [] and run.columns == COLUMNS
    assert run.history("m/d/kernel", "l2").tolist() == [1.0, 2.0, 5.0]
    g = run.history("m/d/kernel", "grad_rms")
    assert np.isnan(g[:2]).all() and g[2] == 0.25


def test_rows_shorter_than_the_first_columns_are_damage(tmp_path):
    d = _old_run(tmp_path / "old", records=2)
    snap = json.loads((d / "record-000001.json").read_text())
    snap["tensors"] = {p: r[:10] for p, r in snap["tensors"].items()}
    (d / "record-000001.json").write_text(json.dumps(snap))
    run = weightwatch.open_run(d)
    assert [r.index for r in run.records] == [0] and "expected 17 numbers" in str(run.problems[0])


def test_cannot_continue_a_run_of_other_columns(tmp_path):
    d = write_run(tmp_path / "run", records=1)
    m = json.loads((d / "manifest.json").read_text())
    m["columns"] = ["trainable", "frozen", "something_else"]
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(RunFormatError, match="columns"):
        RunWriter(d, model_name="m", resume=True)


def test_an_unreadable_verdict_fails_the_check(tmp_path):
    """The verdict is read before the report's problems are listed: it is one of them."""
    from weightwatch.checking.config import load_rules
    from weightwatch.checking.engine import evaluate

    d = write_run(tmp_path / "run", records=2)
    (d / "verdict.json").write_text("[1, 2]")
    report = evaluate(weightwatch.open_run(d), load_rules(use_project_config=False))
    assert any("verdict.json" in p for p in report.problems) and report.exit_code() != 0
