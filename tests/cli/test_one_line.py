"""Where one line is promised, one line: each input that used to give a traceback.

Each case runs the CLI as a user would and checks the exit code is 4 (or the report's), that
stderr holds no traceback, and that the line names the file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from weightwatch.cli import main
from weightwatch.run.schema import COLUMNS

from conftest import subprocess_env
from runbuilder import write_healthy_run


@pytest.fixture
def run_dir(tmp_path):
    return write_healthy_run(tmp_path / "run", 4)


def cli(capsys, *args):
    code = main(["check", *map(str, args), "--no-config"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    return code, out, err


DEEP = "[" * 3000 + "]" * 3000  # written into the file as text: no Python parser could build it


def edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data).replace('"DEEP"', DEEP))


@pytest.mark.parametrize("name,file,change", [
    ("logs a list", "record-000002.json", lambda s: s.update(logs=[1, 2])),
    ("epoch 1e308", "record-000002.json", lambda s: s.update(epoch=1e308)),
    ("columns 5", "manifest.json", lambda m: m.update(columns=5)),
    ("a column bit-flipped", "manifest.json", lambda m: m["columns"].__setitem__(COLUMNS.index("mean"), "meal")),
    ("shape ab", "manifest.json", lambda m: m["tensors"][0].update(shape="ab")),
    ("logs nested deep", "record-000002.json", lambda s: s.update(logs="DEEP")),
    ("kind nested deep", "manifest.json", lambda m: m["tensors"][0].update(kind="DEEP")),
])
def test_damaged_run_files_are_one_line(capsys, run_dir, name, file, change):
    edit(run_dir / file, change)
    code, out, err = cli(capsys, run_dir)
    assert code == 4, (name, out, err)
    assert str(run_dir / file) in (out + err)


def test_seed_dumps_nested_5000_deep_are_one_line(capsys, tmp_path):
    d = tmp_path / "dumps"
    d.mkdir()
    (d / "w0.json").write_text('{"a": ' + "[" * 5000 + "1" + "]" * 5000 + "}")
    (d / "w1.json").write_text('{"a": ' + "[" * 100 + "1" + "]" * 100 + "}")
    (d / "w2.json").write_text('{"a": [[1.0]]}')
    code, out, err = cli(capsys, d)
    assert code == 4
    assert "w0.json: unreadable weight dump, skipped (lists nested too deeply)" in out
    assert "w1.json: tensor 'a/0': nested deeper than the 64 dimensions" in out


@pytest.mark.parametrize("doc", ['[[rule]]\nid = "x"\ncheck = []', '[[rule]]\nid = "x"\ncheck = "nonfinite-log"\nkeys = []',
                                 "disable = [1]", "disable = [[]]", "extends = [[]]", '[[rule]]\nid = "x"\ncheck = {a = 1}'])
def test_bad_rule_values_are_one_line(capsys, run_dir, tmp_path, doc):
    f = tmp_path / "r.toml"
    f.write_text(doc + "\n")
    code = main(["check", str(run_dir), "--no-config", "--rules", str(f)])
    _, err = capsys.readouterr()
    assert code == 4 and "Traceback" not in err and str(f) in err and len(err.strip().splitlines()) == 1


def test_a_run_directory_without_read_permission_is_one_line(capsys, run_dir, monkeypatch):
    """(Root ignores permissions, so the refusal is simulated where the reader lists the directory.)"""
    real = os.listdir

    def denied(path="."):
        if os.path.realpath(path) == os.path.realpath(run_dir):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "listdir", denied)
    code = main(["check", str(run_dir), "--no-config"])
    out, err = capsys.readouterr()
    assert code == 4 and "Traceback" not in err
    assert f"{run_dir}: cannot read the run directory (Permission denied)" in out


def test_stdout_on_a_full_device_is_one_line(run_dir):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    for fmt in ("terminal", "json"):
        with open("/dev/full", "w") as full:
            proc = subprocess.run([sys.executable, "-m", "weightwatch", "check", str(run_dir), "--no-config",
                                   "--format", fmt], stdout=full, stderr=subprocess.PIPE, text=True,
                                  env=subprocess_env())
        assert proc.returncode == 4, proc.stderr
        assert proc.stderr.strip() == "error: cannot write the report to standard output (No space left on device)"


def test_a_run_directory_whose_name_is_not_utf8(tmp_path, run_dir):
    if sys.platform == "darwin":
        pytest.skip("macOS file systems refuse names that are not UTF-8")
    odd = os.fsdecode(os.fsencode(str(tmp_path)) + b"/run\xff")
    shutil.copytree(run_dir, odd)
    for fmt in ("json", "terminal", "github"):
        proc = subprocess.run([sys.executable, "-m", "weightwatch", "check", odd, "--no-config", "--format", fmt],
                              capture_output=True, env=subprocess_env())
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        if fmt == "json":
            assert json.loads(proc.stdout)["run"].endswith("run\\xff")
    proc = subprocess.run([sys.executable, "-m", "weightwatch", "check", odd + "/nope", "--no-config", "--format", "json"],
                          capture_output=True, env=subprocess_env())
    assert proc.returncode == 4 and b"Traceback" not in proc.stderr
