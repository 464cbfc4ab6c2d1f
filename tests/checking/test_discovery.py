"""Configuration discovery: an invalid pyproject is an error, the walk stops at the repository
root or the home directory, planted files in world-writable directories are passed over, and
every report says which configuration applied."""

from __future__ import annotations

import json
import os
import stat

import pytest

from weightwatch.checking.config import discover, load_rules
from weightwatch.cli import main
from weightwatch.errors import RuleError

from runbuilder import write_healthy_run

PLANTED = "disable = ['nonfinite-weights', 'nonfinite-loss', 'exploding-norm']\n"


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    return h


def ids(rs):
    return {r.id for r in rs}


def test_an_invalid_pyproject_is_an_error_naming_file_and_line(home):
    project = home / "proj"
    (project / ".git").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n[tool.weightwatch\ndisable = []\n")
    with pytest.raises(RuleError) as err:
        load_rules(start=project)
    assert str(err.value).startswith(f"{project / 'pyproject.toml'}:3: invalid TOML")


def test_an_invalid_pyproject_fails_the_cli(home, tmp_path, capsys, monkeypatch):
    run = write_healthy_run(tmp_path / "run")
    (home / ".git").mkdir()
    (home / "pyproject.toml").write_text("[tool.weightwatch]\ndisable = [\n")
    monkeypatch.chdir(home)
    assert main(["check", str(run)]) == 4
    err = capsys.readouterr().err
    assert "pyproject.toml:" in err and "invalid TOML" in err


def test_a_file_planted_in_a_world_writable_directory_is_passed_over(home, tmp_path):
    shared = tmp_path / "shared"          # like /tmp: anyone may write here
    shared.mkdir()
    os.chmod(shared, 0o1777)
    (shared / "weightwatch.toml").write_text(PLANTED)
    work = shared / "me" / "exp"          # a private folder below it, no .git anywhere
    work.mkdir(parents=True)
    os.chmod(shared / "me", 0o755)
    found = discover(work)
    assert found.found is None
    assert found.ignored == [f"{shared / 'weightwatch.toml'} (in a world-writable directory; name it with "
                             "--config to use it)"]
    rs = load_rules(start=work)
    assert "nonfinite-weights" in ids(rs)
    assert rs.config.startswith("none found, the built-in default pack; ignored ")
    # Named explicitly, it is used.
    assert "nonfinite-weights" not in ids(load_rules(config=shared / "weightwatch.toml"))


def test_a_world_writable_file_is_passed_over(home):
    project = home / "proj"
    project.mkdir()
    (project / "weightwatch.toml").write_text(PLANTED)
    os.chmod(project / "weightwatch.toml", 0o666 | stat.S_IWOTH)
    assert discover(project).found is None and "world-writable;" in discover(project).ignored[0]


def test_discovery_stops_at_the_home_directory(home, tmp_path):
    (tmp_path / "weightwatch.toml").write_text(PLANTED)  # above home
    work = home / "notebooks" / "exp"
    work.mkdir(parents=True)
    assert discover(work).found is None
    (home / "weightwatch.toml").write_text("disable = ['loss-plateau']\n")
    assert discover(work).found == (home / "weightwatch.toml", None)


def test_discovery_still_stops_at_the_repository_root(home):
    (home / "weightwatch.toml").write_text(PLANTED)
    repo = home / "repo"
    (repo / ".git").mkdir(parents=True)
    assert discover(repo / ".git").found is None or discover(repo).found is None
    assert discover(repo).found is None


def test_every_report_says_which_configuration_applied(home, tmp_path, capsys, monkeypatch):
    run = write_healthy_run(tmp_path / "run")
    project = home / "proj"
    (project / ".git").mkdir(parents=True)
    monkeypatch.chdir(project)
    monkeypatch.setenv("COLUMNS", "400")  # the header's paths on one line each
    main(["check", str(run)])
    assert "config: none found, the built-in default pack" in capsys.readouterr().out
    main(["check", str(run), "--no-config"])
    assert "config: none (--no-config), the built-in default pack" in capsys.readouterr().out
    (project / "weightwatch.toml").write_text("disable = ['loss-plateau']\n")
    main(["check", str(run), "--format", "json"])
    assert json.loads(capsys.readouterr().out)["config"] == str(project / "weightwatch.toml")
    main(["check", str(run), "--config", str(project / "weightwatch.toml")])
    assert f"config: {project / 'weightwatch.toml'} (--config)" in capsys.readouterr().out
