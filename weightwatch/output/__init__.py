"""Output: every way a report leaves weightwatch.

Report formats are one module each, and each declares itself with
``FORMAT = OutputFormat(...)``: its name, its help, and - for a format
written to a file - its own command-line flag (``--junitxml PATH``).  The CLI
builds its options from this registry and never names a format itself, so a
new format is one module plus one entry in :data:`FORMAT_MODULES` (ruff's
one emitter per format; pytest's ``junitxml`` declaring its own option).

Beside the formats: :mod:`.show` (``weightwatch show``), :mod:`.ruledocs`
(``weightwatch rules``), :mod:`.live` (lines printed during training),
:mod:`.text` (numbers and sparklines, written one way everywhere) and
:mod:`.svg` (the HTML report's charts).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from typing import Callable, TextIO

#: The report formats, by module name in this package, in the order ``--help`` lists them.
FORMAT_MODULES = ("terminal", "json_format", "github", "junit", "html")


@dataclass(frozen=True)
class Emission:
    """What a format is given: the reports of one ``check`` and how to write them."""

    reports: list
    strict: bool = False
    verbosity: int = 0
    duration: float = 0.0
    stream: TextIO | None = None   # where a stream format writes (stdout)
    path: str | None = None        # where a file format writes (its flag's value)

    def to(self, *, stream: TextIO | None = None, path: str | None = None) -> "Emission":
        return replace(self, stream=stream, path=path)


@dataclass(frozen=True)
class OutputFormat:
    name: str
    help: str
    emit: Callable[[Emission], None]
    #: A file format's own option (``"--junitxml"``); None: a stream format, chosen with ``--format``.
    flag: str | None = None
    metavar: str = "PATH"
    #: For a stream format: given the environment, whether it is also written after the
    #: terminal report when no ``--format`` is given (annotations under GitHub Actions).
    alongside: Callable[[dict], bool] | None = None


def formats() -> list[OutputFormat]:
    """Every registered format (importing each module declares it)."""
    return [importlib.import_module(f"{__name__}.{m}").FORMAT for m in FORMAT_MODULES]


def stream_formats() -> list[OutputFormat]:
    return [f for f in formats() if f.flag is None]


def file_formats() -> list[OutputFormat]:
    return [f for f in formats() if f.flag is not None]


def get_format(name: str) -> OutputFormat:
    for f in formats():
        if f.name == name:
            return f
    raise KeyError(name)
