"""``--format json``: the report as one strict JSON document on stdout.

One object per run, or a list of them for several runs; the shape is
documented in the README ("Output formats") and kept stable for scripts.
"""

from __future__ import annotations

from ..run.jsonio import dumps
from . import Emission, OutputFormat
from .text import valid_strings


def emit(out: Emission) -> None:
    # A run directory's name need not be UTF-8 (its undecodable bytes are escaped).
    data = valid_strings([r.to_dict() for r in out.reports])
    out.stream.write(dumps(data[0] if len(data) == 1 else data).decode() + "\n")


FORMAT = OutputFormat(name="json", help="one JSON object per run (a list for several runs)", emit=emit)
