"""The built wheel carries the rule packs, and checking works where TensorFlow is absent.

Builds the wheel, installs it into a fresh virtual environment (numpy and rich
only: no TensorFlow), and runs the installed ``weightwatch`` from outside the
repository on a run recorded here.
"""

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w",
                            str(tmp / "dist")], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.fail(f"wheel build failed:\n{build.stderr[-2000:]}")
    wheel = next((tmp / "dist").glob("weightwatch-*.whl"))
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)],
                             capture_output=True, text=True)
    if install.returncode != 0:
        pytest.fail(f"wheel install failed:\n{install.stderr[-2000:]}")
    return python, env_dir, tmp


def test_wheel_contains_packs_and_checks_without_tensorflow(installed, recorded_run):
    python, env_dir, tmp = installed
    out = subprocess.run([str(python), "-c",
                          "import json, importlib.util; from weightwatch.checking.config import packs_dir, builtin_packs;"
                          "print(json.dumps({'dir': str(packs_dir()), 'packs': sorted(builtin_packs()),"
                          "'tf': importlib.util.find_spec('tensorflow') is not None}))"],
                         capture_output=True, text=True, cwd=tmp)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["dir"].startswith(str(env_dir)), "packs not loaded from the installed wheel"
    assert {"default", "strict"} <= set(info["packs"])
    assert info["tf"] is False
    check = subprocess.run([str(env_dir / "bin" / "weightwatch"), "check", str(recorded_run[0]),
                            "--no-config", "--format", "json"], capture_output=True, text=True, cwd=tmp)
    assert check.returncode in (0, 1), check.stderr
    report = json.loads(check.stdout)
    assert report["records"] >= 2 and report["results"]
    rules = subprocess.run([str(env_dir / "bin" / "weightwatch"), "rules", "--pack", "strict"],
                           capture_output=True, text=True, cwd=tmp)
    assert rules.returncode == 0 and "exploding-norm" in rules.stdout
