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

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import RuleError

CONFIG_NAME = "weightwatch.toml"
SECTION = "tool.weightwatch"


def find_project_config(start: Path | None = None) -> tuple[Path, str | None] | None:
    """The nearest weightwatch.toml or pyproject.toml with [tool.weightwatch], walking up.

    Stops after the directory that holds ``.git`` (the repository root).
    """
    d = Path(start or Path.cwd()).resolve()
    for folder in (d, *d.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate, None
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
                data = {}
            if isinstance(data.get("tool"), dict) and "weightwatch" in data["tool"]:
                return pyproject, SECTION
        if (folder / ".git").exists():
            break
    return None


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
