"""history.bin: the reader takes a record's figures from the journal only when they are that file's.

The JSON records are the truth.  Every test here changes the run on disk the
way an edit, a crash or a careless copy would, and checks that open_run
gives exactly what parsing every JSON record gives, reports what parsing
reports, and uses the journal wherever it still can (counted by wrapping
the JSON parser, which the journal path must not call).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import weightwatch
from weightwatch.run import journal, reader
from weightwatch.run.writer import RunWriter
from weightwatch.run.schema import COLUMNS

PATHS = ["m/d/kernel", "m/d/bias", "m/e/kernel"]


@pytest.fixture
def parsed(monkeypatch):
    """The indices of the records that open_run parsed from JSON."""
    seen = []
    real = reader._parse_snapshot

    def counting(snap, index, *args, **kwargs):
        seen.append(index)
        return real(snap, index, *args, **kwargs)

    monkeypatch.setattr(reader, "_parse_snapshot", counting)
    return seen


def row(record: int, j: int) -> list:
    """Every kind of value a row holds: booleans, counts, floats, nulls."""
    first = record == 0
    values = dict(trainable=j != 2, frozen=j == 2, size=4 * (j + 1), nan=0, inf=record % 2,
                  l2=1.0 + record + j / 3, mean=-0.1 * j, std=0.5, min=-1.0, max=1.0, absmax=1.0,
                  zero_frac=0.25, d_l2=None if first else 0.1 * record, d_absmax=None if first else 0.01,
                  changed=None if first else j != 2, dead_units=None if j == 1 or first else j,
                  d_cos=None if record < 2 else -0.5, grad_rms=None if first or j == 1 else 1e-3 * j,
                  replica_spread=None if j == 0 else 0.0 if record < 2 else 1e-4 * j,
                  penalty=None if j != 0 else -0.5 if record == 3 else 0.25 * record)
    return [values[c] for c in COLUMNS]


def write(run_dir, records: int = 4, *, start: int = 0, resume: bool = False) -> None:
    w = RunWriter(run_dir, model_name="m", resume=resume)
    w.add_tensors([{"path": p, "layer": p.rsplit("/", 1)[0], "shape": [2, 2] if p.endswith("kernel") else [4],
                    "dtype": "float32", "kind": p.rsplit("/", 1)[1]} for p in PATHS])
    for r in range(start, start + records):
        w.write_record(epoch=r, batch=None, step=r * 10, trigger="begin" if r == 0 else "epoch",
                       rows={p: row(r, j) for j, p in enumerate(PATHS)},
                       logs={} if r == 0 else {"loss": 1.0 / r, "acc": None}, wall=1000.0 + r)


def without_journal(run_dir, tmp_path):
    """The same run read by parsing every record: the reference."""
    copy = tmp_path / "reference"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run_dir, copy)
    (copy / journal.JOURNAL).unlink(missing_ok=True)
    return weightwatch.open_run(copy)


def assert_same(got, want) -> None:
    assert got.tensor_names == want.tensor_names
    assert [Path(p.path).name for p in got.problems] == [Path(p.path).name for p in want.problems]
    fields = ("index", "epoch", "batch", "step", "trigger", "time", "logs", "file", "tensors_file")
    assert [[getattr(r, f) for f in fields] for r in got.records] == \
           [[getattr(r, f) for f in fields] for r in want.records]
    for c in COLUMNS:
        np.testing.assert_array_equal(got.metric(c), want.metric(c), err_msg=c)


def test_a_real_run_reads_the_same_from_the_journal(recorded_run, tmp_path, parsed):
    run_dir, _ = recorded_run
    assert (run_dir / journal.JOURNAL).stat().st_size > 0
    run = weightwatch.open_run(run_dir)
    assert parsed == []  # every record came from the journal
    reference = without_journal(run_dir, tmp_path)
    assert parsed == [r.index for r in reference.records]
    assert_same(run, reference)


def test_every_kind_of_value_survives_the_journal(tmp_path, parsed):
    write(tmp_path / "run")
    run = weightwatch.open_run(tmp_path / "run")
    assert parsed == []
    assert_same(run, without_journal(tmp_path / "run", tmp_path))
    assert np.isnan(run.metric("dead_units")[:, 1]).all() and run.metric("frozen")[:, 2].tolist() == [1.0] * 4


def restamp(snap: dict) -> dict:
    """``snap`` with the digest of what it now says: an edit made on purpose, as a tool would."""
    from weightwatch.run.digest import record_digest

    meta = {k: v for k, v in snap.items() if k not in ("tensors", "digest")}
    values = np.array([[np.nan if x is None else float(x) for x in r] for r in snap["tensors"].values()])
    return {"digest": record_digest(COLUMNS, meta, list(snap["tensors"]), values), **meta,
            "tensors": snap["tensors"]}


def test_an_edited_record_is_read_from_its_json(tmp_path, parsed):
    write(tmp_path / "run")
    f = tmp_path / "run" / "record-000002.json"
    snap = json.loads(f.read_text())
    snap["tensors"]["m/d/bias"][COLUMNS.index("l2")] = 123.0
    f.write_text(json.dumps(restamp(snap)))
    run = weightwatch.open_run(tmp_path / "run")
    assert parsed == [2] and run.problems == []
    assert run.history("m/d/bias", "l2")[2] == 123.0
    assert_same(run, without_journal(tmp_path / "run", tmp_path))


def test_an_edit_that_keeps_the_old_digest_is_damage(tmp_path, parsed):
    """A changed digit, name or log key no longer hashes to the digest the record states."""
    write(tmp_path / "run")
    f = tmp_path / "run" / "record-000002.json"
    for change in (lambda s: s["tensors"]["m/d/bias"].__setitem__(COLUMNS.index("l2"), 123.0),
                   lambda s: s["tensors"].update({"m/d/kernel": s["tensors"]["m/d/kernel"]}) or
                   s["logs"].update(loss=0.25),
                   lambda s: s.update(epoch=7, step=70)):
        original = f.read_bytes()
        snap = json.loads(original)
        change(snap)
        f.write_text(json.dumps(snap))
        run = weightwatch.open_run(tmp_path / "run")
        assert [r.index for r in run.records] == [0, 1, 3]
        assert "do not match the digest" in str(run.problems[0])
        f.write_bytes(original)


def test_a_journal_entry_rewritten_with_other_figures_is_not_used(tmp_path, parsed):
    """The journal cannot say what the JSON does not: an entry rewritten with another record's
    figures, its frame CRC recomputed, the record files untouched, is ignored."""
    d = tmp_path / "run"
    write(d)
    j = d / journal.JOURNAL
    entries = sorted(journal.read(j).values(), key=lambda e: e.record)
    forged = d / "forged.bin"
    for e in entries:
        source = entries[0] if e.record == 2 else e  # record 2 now claims record 0's figures
        journal.append(forged, record=e.record, file_size=e.file_size, file_crc=e.file_crc, meta=e.meta,
                       ids=e.ids, paths=[PATHS[i] for i in e.ids], values=np.array(source.values))
    forged.replace(j)
    np.testing.assert_array_equal(journal.read(j)[2].values, entries[0].values)  # the frame is whole
    run = weightwatch.open_run(d)
    assert parsed == [2] and run.problems == []
    assert_same(run, without_journal(d, tmp_path))


def test_a_failing_run_stays_failing_whatever_its_journal_says(tmp_path):
    from weightwatch.checking.config import load_rules
    from weightwatch.checking.engine import evaluate

    d = tmp_path / "run"
    w = RunWriter(d, model_name="m")
    w.add_tensors([{"path": "m/d/kernel", "layer": "m/d", "shape": [2, 2], "dtype": "float32", "kind": "kernel"}])
    good = row(0, 0)
    bad = list(good)
    bad[COLUMNS.index("nan")] = 3
    for r, figures in enumerate([good, good, bad]):
        w.write_record(epoch=r, batch=None, step=r, trigger="begin" if r == 0 else "epoch",
                       rows={"m/d/kernel": figures}, logs={}, wall=0.0)
    rules = load_rules(use_project_config=False)
    assert evaluate(weightwatch.open_run(d), rules).failed
    entries = sorted(journal.read(d / journal.JOURNAL).values(), key=lambda e: e.record)
    (d / journal.JOURNAL).unlink()
    for e in entries:
        journal.append(d / journal.JOURNAL, record=e.record, file_size=e.file_size, file_crc=e.file_crc,
                       meta=e.meta, ids=e.ids, paths=["m/d/kernel"], values=np.array(entries[0].values))
    report = evaluate(weightwatch.open_run(d), rules)
    assert report.failed and [f.record for f in report.failed[0].findings] == [2]


def test_a_run_written_before_digests_reads_from_its_json_and_continues(tmp_path, parsed):
    """Older records state no digest: they are read (and checked) from their JSON, never the journal;
    a writer continuing such a run states digests from its first new record on."""
    d = tmp_path / "run"
    write(d)
    for f in d.glob("record-*.json"):
        snap = json.loads(f.read_text())
        del snap["digest"]
        f.write_text(json.dumps(snap, separators=(",", ":")))
    m = json.loads((d / "manifest.json").read_text())
    del m["digests_from"]
    (d / "manifest.json").write_text(json.dumps(m))
    run = weightwatch.open_run(d)
    assert run.problems == [] and parsed == [0, 1, 2, 3]
    write(d, 2, start=4, resume=True)
    assert json.loads((d / "manifest.json").read_text())["digests_from"] == 4
    parsed.clear()
    run = weightwatch.open_run(d)
    assert run.problems == [] and parsed == [0, 1, 2, 3] and len(run.records) == 6
    # ... and from there on, a record without its digest is damaged.
    snap = json.loads((d / "record-000005.json").read_text())
    del snap["digest"]
    (d / "record-000005.json").write_text(json.dumps(snap))
    assert 'missing "digest"' in str(weightwatch.open_run(d).problems[0])


def test_a_damaged_record_is_reported_although_the_journal_has_it(tmp_path, parsed):
    write(tmp_path / "run")
    f = tmp_path / "run" / "record-000001.json"
    f.write_bytes(f.read_bytes()[:-40])
    run = weightwatch.open_run(tmp_path / "run")
    assert [r.index for r in run.records] == [0, 2, 3]
    assert len(run.problems) == 1 and "record-000001.json" in str(run.problems[0])
    assert_same(run, without_journal(tmp_path / "run", tmp_path))


def test_a_deleted_record_stays_deleted(tmp_path):
    write(tmp_path / "run")
    (tmp_path / "run" / "record-000003.json").unlink()
    assert [r.index for r in weightwatch.open_run(tmp_path / "run").records] == [0, 1, 2]


def test_a_torn_tail_is_ignored_and_cut_off_by_the_next_writer(tmp_path, parsed):
    d = tmp_path / "run"
    write(d)
    j = d / journal.JOURNAL
    whole = j.stat().st_size
    with open(j, "r+b") as f:
        f.truncate(whole - 10)  # the last append was cut short by a crash
    assert_same(weightwatch.open_run(d), without_journal(d, tmp_path))
    assert parsed[0] == 3
    write(d, 2, start=4, resume=True)  # continuing the run repairs the journal first
    assert j.stat().st_size > whole - 10
    parsed.clear()
    run = weightwatch.open_run(d)
    assert parsed == [3]  # the record whose entry was torn; 4 and 5 come from the journal
    assert [r.index for r in run.records] == [0, 1, 2, 3, 4, 5]
    assert_same(run, without_journal(d, tmp_path))


def test_a_damaged_entry_hides_nothing(tmp_path, parsed):
    d = tmp_path / "run"
    write(d)
    j = d / journal.JOURNAL
    data = bytearray(j.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped bit in the middle: that entry and all after it are ignored
    j.write_bytes(bytes(data))
    run = weightwatch.open_run(d)
    assert run.problems == [] and parsed and parsed == sorted(parsed) and parsed[-1] == 3
    assert_same(run, without_journal(d, tmp_path))


def test_entries_do_not_follow_tensors_moved_in_the_manifest(tmp_path, parsed):
    d = tmp_path / "run"
    write(d)
    before = weightwatch.open_run(d)
    m = json.loads((d / "manifest.json").read_text())
    m["tensors"].reverse()
    (d / "manifest.json").write_text(json.dumps(m))
    parsed.clear()
    after = weightwatch.open_run(d)
    assert parsed == [0, 1, 2, 3]  # the ids no longer name the same tensors
    for p in PATHS:
        for c in COLUMNS:
            np.testing.assert_array_equal(after.history(p, c), before.history(p, c))


def test_overwriting_a_run_starts_a_new_journal(tmp_path, parsed):
    d = tmp_path / "run"
    write(d)
    RunWriter(d, model_name="m", overwrite=True)
    assert not (d / journal.JOURNAL).exists()
    write(d, 2, resume=True)
    assert [r.index for r in weightwatch.open_run(d).records] == [0, 1] and parsed == []


def test_a_garbage_journal_is_no_journal(tmp_path, parsed):
    d = tmp_path / "run"
    write(d)
    (d / journal.JOURNAL).write_bytes(b"not a journal at all")
    run = weightwatch.open_run(d)
    assert parsed == [0, 1, 2, 3] and run.problems == []
    (d / journal.JOURNAL).write_bytes(b"")
    assert len(weightwatch.open_run(d).records) == 4


@pytest.mark.parametrize("encoder", ["orjson", "stdlib"])
def test_a_snapshot_written_in_pieces_is_one_compact_document(tmp_path, parsed, monkeypatch, encoder):
    """The writer streams a snapshot a few rows at a time; the file must be what one dumps gives."""
    from weightwatch.run import jsonio
    from weightwatch.run.writer import _SnapshotWriter

    if encoder == "stdlib":
        monkeypatch.setattr(jsonio, "_orjson", None)
    elif jsonio._orjson is None:
        pytest.skip("orjson not installed")
    many = [f"m/layer{i}/{'kernel' if i % 2 else 'bias'}" for i in range(3 * _SnapshotWriter.ROWS_PER_WRITE + 5)]
    w = RunWriter(tmp_path / "run", model_name="m")
    w.add_tensors([{"path": p, "layer": p.rsplit("/", 1)[0], "shape": [4], "dtype": "float32",
                    "kind": "bias"} for p in many])
    rows = {p: row(1, j % 3) for j, p in enumerate(many)}
    w.write_record(epoch=0, batch=None, step=0, trigger="begin", rows=rows, logs={"loss": 0.5}, wall=1.0)
    data = (tmp_path / "run" / "record-000000.json").read_bytes()
    snap = json.loads(data)
    assert snap["tensors"] == rows  # booleans, counts and nulls come back as they went in
    assert data == jsonio.dumps(snap)
    weightwatch.open_run(tmp_path / "run")
    assert parsed == []  # the journal's size and CRC are the file's


def test_odd_hand_made_figures_read_the_same_both_ways(tmp_path, parsed):
    """What the JSON states is what the journal holds: flags 0/1, whole counts, null for non-finite."""
    inf = float("inf")
    odd = dict(trainable=0.5, frozen=0, size=2.5, nan=0, inf=1.9, l2=inf, mean=-inf, std=1e300,
               min=-1.0, max=1.0, absmax=1.0, zero_frac=0.0, d_l2=None, d_absmax=None, changed=0.7,
               dead_units=1.9, d_cos=None, grad_rms=-inf, replica_spread=inf, penalty=-1e-300)
    w = RunWriter(tmp_path / "run", model_name="m")
    w.add_tensors([{"path": "m/d/kernel", "layer": "m/d", "shape": [2, 2], "dtype": "float32", "kind": "kernel"}])
    w.write_record(epoch=0, batch=None, step=0, trigger="begin", rows={"m/d/kernel": [odd[c] for c in COLUMNS]},
                   logs={}, wall=0.0)
    snap = json.loads((tmp_path / "run" / "record-000000.json").read_text())
    stated = dict(zip(COLUMNS, snap["tensors"]["m/d/kernel"]))
    assert stated["trainable"] is True and stated["changed"] is True and stated["frozen"] is False
    assert stated["size"] == 2 and stated["dead_units"] == 1 and stated["inf"] == 1 and stated["l2"] is None
    run = weightwatch.open_run(tmp_path / "run")
    assert parsed == []
    assert_same(run, without_journal(tmp_path / "run", tmp_path))


def test_a_journal_that_cannot_be_written_costs_only_speed(tmp_path, parsed):
    d = tmp_path / "run"
    write(d, 2)
    (d / journal.JOURNAL).unlink()
    (d / journal.JOURNAL).mkdir()  # neither readable nor appendable as a file
    write(d, 2, start=2, resume=True)
    run = weightwatch.open_run(d)
    assert [r.index for r in run.records] == [0, 1, 2, 3] and run.problems == [] and parsed == [0, 1, 2, 3]


def test_an_append_cut_short_by_a_full_disk_is_cut_off(tmp_path, child_env):
    """A real failed write (the file-size limit stands in for a full disk), in a child process."""
    import subprocess
    import sys
    import textwrap

    d = tmp_path / "run"
    write(d, 2)
    whole = (d / journal.JOURNAL).stat().st_size
    script = textwrap.dedent(f"""
        import resource, signal, sys
        sys.path[:0] = {sys.path!r}
        from test_journal import write
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, ({whole} + 100, resource.RLIM_INFINITY))
        write({str(d)!r}, 2, start=2, resume=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=child_env)
    assert proc.returncode == 0, proc.stderr
    assert (d / journal.JOURNAL).stat().st_size == whole  # both failed appends were cut off
    run = weightwatch.open_run(d)
    assert [r.index for r in run.records] == [0, 1, 2, 3] and run.problems == []
    assert_same(run, without_journal(d, tmp_path))


def test_histories_of_no_tensor_and_of_every_tensor_are_not_confused(tmp_path):
    from weightwatch.checking.checks import Histories

    write(tmp_path / "run")
    run = weightwatch.open_run(tmp_path / "run")
    assert Histories(run, np.array([], dtype=np.intp))("l2").shape == (4, 0)
    assert Histories(run, np.arange(3))("l2").shape == (4, 3)


def test_journal_of_an_old_run_is_used_with_its_shorter_rows(tmp_path, parsed, monkeypatch):
    """A run written before grad_rms (17 columns, journal included) reads from its journal."""
    from weightwatch.run import writer as writer_module
    from weightwatch.run.schema import FIRST_COLUMNS

    d = tmp_path / "old"
    with monkeypatch.context() as m:  # the writer as it was: the first 17 columns only
        m.setattr(writer_module, "COLUMNS", FIRST_COLUMNS)
        w = RunWriter(d, model_name="m")
        w.add_tensors([{"path": p, "layer": p.rsplit("/", 1)[0], "shape": [4], "dtype": "float32",
                        "kind": p.rsplit("/", 1)[1]} for p in PATHS])
        for r in range(3):
            w.write_record(epoch=r, batch=None, step=r, trigger="begin" if r == 0 else "epoch",
                           rows={p: row(r, j)[:len(FIRST_COLUMNS)] for j, p in enumerate(PATHS)},
                           logs={}, wall=0.0)
    assert json.loads((d / "manifest.json").read_text())["columns"] == list(FIRST_COLUMNS)
    run = weightwatch.open_run(d)
    assert parsed == [] and run.problems == []
    assert np.isnan(run.metric("grad_rms")).all()
    assert run.history("m/d/kernel", "l2").tolist() == [1.0, 2.0, 3.0]
    # continued by this weightwatch: the old entries still serve, the new one has grad_rms
    write(d, records=1, start=3, resume=True)
    parsed.clear()
    run = weightwatch.open_run(d)
    assert parsed == [] and run.columns == COLUMNS
    assert np.isnan(run.history("m/d/bias", "grad_rms")[:3]).all()
    assert run.history("m/e/kernel", "grad_rms")[3] == pytest.approx(2e-3)
