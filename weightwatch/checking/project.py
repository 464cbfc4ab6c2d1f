"""The project configuration file: where it is, and which runs it declares.

Only the standard library is needed here (no rules, so no numpy): the pytest
plugin asks at every pytest start-up whether the project declares ``runs``,
and must cost nothing in projects that declare none.  :mod:`.config` reads
the same file for its rules.

``runs`` is a list of run directories or glob patterns (``"runs/*"``),
relative to the folder of the file that declares them::

    # pyproject.toml
    [tool.weightwatch]
    runs = ["runs/*", "baselines/resnet"]
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RuleError

CONFIG_NAME = "weightwatch.toml"
SECTION = "tool.weightwatch"
#: Largest configuration or rule file read.
MAX_RULE_FILE_BYTES = 4 * 2 ** 20


def parse_toml(text: str, path) -> dict:
    """``text`` parsed as TOML; RuleError naming the file and line when it is not."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise RuleError("invalid TOML: arrays or tables nested too deeply", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise RuleError(f"invalid TOML: {msg}", path=path, line=int(m.group(1)) if m else None) from None


@dataclass
class Discovery:
    """The project configuration found by walking up, and the candidates passed over (why)."""

    found: tuple[Path, str | None] | None = None
    ignored: list[str] = field(default_factory=list)


def _world_writable(path: Path) -> bool:
    try:
        return bool(os.stat(path).st_mode & stat.S_IWOTH)
    except OSError:
        return False


def _home() -> Path | None:
    try:
        return Path.home().resolve()
    except (RuntimeError, KeyError, OSError):
        return None


def discover(start: Path | None = None) -> Discovery:
    """Walk up from ``start`` (the current directory) to the nearest configuration.

    The nearest ``weightwatch.toml``, or ``pyproject.toml`` with
    ``[tool.weightwatch]``, wins.  The walk stops after the repository root
    (the folder holding ``.git``) and after the home directory, never above.
    As git's ``safe.directory`` does, a candidate in a world-writable folder
    (the system's temporary directory) or itself world-writable is passed
    over, and said so: anyone could have planted it (``--config`` names it
    to use it anyway).  A ``pyproject.toml`` that is not valid TOML is an
    error, never a silent fall-back to the defaults.
    """
    out = Discovery()
    d = Path(start or Path.cwd()).resolve()
    home = _home()
    for folder in (d, *d.parents):
        unsafe = _world_writable(folder)
        for name in (CONFIG_NAME, "pyproject.toml"):
            candidate = folder / name
            if not candidate.is_file():
                continue
            if unsafe or _world_writable(candidate):
                where = "in a world-writable directory" if unsafe else "world-writable"
                out.ignored.append(f"{candidate} ({where}; name it with --config to use it)")
                continue
            if name == CONFIG_NAME:
                out.found = (candidate, None)
                return out
            try:
                with open(candidate, "rb") as f:
                    text = f.read(MAX_RULE_FILE_BYTES + 1).decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise RuleError(f"cannot read ({exc})", path=candidate) from None
            data = parse_toml(text, candidate)
            if isinstance(data.get("tool"), dict) and "weightwatch" in data["tool"]:
                out.found = (candidate, "tool.weightwatch")
                return out
        if (folder / ".git").exists() or folder == home:
            break
    return out


def find_project_config(start: Path | None = None) -> tuple[Path, str | None] | None:
    """The nearest weightwatch.toml or pyproject.toml with [tool.weightwatch] (see :func:`discover`)."""
    return discover(start).found


def validate_runs(value, *, path, line: int | None = None) -> list[str]:
    """``runs`` as a list of non-empty strings (one string is a list of one), else RuleError."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise RuleError(f'"runs" must be a list of run directories or glob patterns, got {value!r}',
                        path=path, line=line)
    return list(value)


@dataclass(frozen=True)
class ProjectRuns:
    """The ``runs`` of a project configuration file."""

    patterns: list[str]
    base: Path     # the folder the patterns are relative to: the file's own
    source: Path   # the file that declares them


def project_runs(start: Path | None = None) -> ProjectRuns | None:
    """The runs the project configuration declares, or None (no configuration, or no ``runs``).

    Raises :class:`RuleError` when the file is not valid TOML or ``runs`` is malformed;
    the rest of the document is left to :func:`.config.load_rules`.
    """
    found = find_project_config(start)
    if found is None:
        return None
    path, section = found
    try:
        text = path.read_text(encoding="utf-8")
        doc = tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"cannot read configuration ({exc})", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"invalid TOML: {exc}", path=path) from None
    if section:
        doc = doc["tool"]["weightwatch"]
    if not isinstance(doc, dict) or "runs" not in doc:
        return None
    return ProjectRuns(validate_runs(doc["runs"], path=path, line=_runs_line(text, section)),
                       path.parent, path)


def _runs_line(text: str, section: str | None) -> int | None:
    """The line of ``runs =`` in the document (after its ``[tool.weightwatch]`` header)."""
    inside = section is None
    for i, ln in enumerate(text.splitlines(), 1):
        if re.match(r"\s*\[", ln):
            inside = section is not None and re.match(rf"\s*\[\s*{re.escape(section)}\s*\]", ln) is not None
        elif inside and re.match(r"\s*runs\s*=", ln):
            return i
    return None
