"""Numbers, durations and sparklines as every output format writes them.

One implementation of each, so the terminal report, ``show``, JUnit and the
live lines print the same figure the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import secrets

#: What a terminal (or a CI log) would act on rather than show: C0 and C1 control characters
#: (ESC starts colour, cursor and title sequences; a newline starts a line a CI runner may
#: read as a workflow command), DEL, and Unicode's invisible bidirectional and line controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def valid_unicode(s: str) -> str:
    """``s`` with every lone surrogate (a path's undecodable byte, ``\\xff`` as the OS gave it
    to Python) written as a backslash escape, so that UTF-8 output never fails on it."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        pass
    try:  # bytes the file system gave undecoded: show them as bytes
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def visible(s) -> str:
    """``s`` as it may be printed to a terminal or a CI log: every control character shown as an
    escape (``\\x1b``, ``\\n``), never acted on, and valid Unicode (:func:`valid_unicode`).
    Rich markup needs no escaping: reports print :class:`rich.text.Text`, never markup."""
    s = valid_unicode(str(s))
    if not _CONTROL.search(s):
        return s
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                                               else f"\\u{ord(m.group()):04x}"), s)


def visible_copy(obj, _depth: int = 0):
    """A copy of a report (dataclasses, lists, dicts, strings) with :func:`visible` applied to
    every string in it: what the terminal renders, whatever names a run holds."""
    if isinstance(obj, str):
        return visible(obj)
    if _depth > 8:
        return obj
    if isinstance(obj, list):
        return [visible_copy(x, _depth + 1) for x in obj]
    if isinstance(obj, tuple):
        return tuple(visible_copy(x, _depth + 1) for x in obj)
    if isinstance(obj, dict):
        return {k: visible_copy(v, _depth + 1) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {}
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            value = getattr(obj, f.name)
            copied = visible_copy(value, _depth + 1)
            if copied is not value and copied != value:
                changes[f.name] = copied
        return dataclasses.replace(obj, **changes) if changes else obj
    return obj


@contextlib.contextmanager
def no_workflow_commands(stream, environ=None):
    """Under GitHub Actions, fence what is written to ``stream`` with ``::stop-commands::``, so
    the runner reads no line of it as a workflow command (``::error ...``), whatever names it
    holds; elsewhere, nothing."""
    environ = os.environ if environ is None else environ
    token = secrets.token_hex(16) if environ.get("GITHUB_ACTIONS") == "true" else None
    if token:
        stream.write(f"::stop-commands::{token}\n")
    try:
        yield
    finally:
        if token:
            stream.write(f"::{token}::\n")


def valid_strings(obj):
    """``obj`` (a JSON value) with :func:`valid_unicode` applied to every string in it."""
    if isinstance(obj, str):
        return valid_unicode(obj)
    if isinstance(obj, dict):
        return {valid_strings(k): valid_strings(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [valid_strings(x) for x in obj]
    return obj


def fmt_num(x, digits: int = 3, none: str = "-") -> str:
    """A number in as few characters as it needs: ``3``, ``0.123``, ``1.5e-8``, ``nan``."""
    if x is None:
        return none
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    s = f"{x:.{digits}g}"
    if "e" in s:
        mant, exp = s.split("e")
        s = f"{mant}e{int(exp)}"
    return s


def format_duration(seconds: float) -> str:
    """pytest's session duration: ``0.12s``, or ``75.31s (0:01:15)`` past a minute."""
    text = f"{seconds:.2f}s"
    if seconds >= 60:
        s = int(seconds)
        text += f" ({s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d})"
    return text


#: Eight levels, lowest first.
BARS = "▁▂▃▄▅▆▇█"
def sparkline(values, width: int | None = None) -> str:
    """A one-line chart of ``values`` with the eight block characters ``▁▂▃▄▅▆▇█``.

    Values are scaled between their finite minimum and maximum; a NaN or
    infinite value is a space.  A series that does not vary is drawn at mid
    height (``▄``).  With ``width``, a longer series is averaged down to
    ``width`` characters; a bucket holding any non-finite value is a space,
    so a NaN is never averaged away.  A shorter series is not stretched.
    """
    import numpy as np  # here, not at import: the CLI's parser imports the output formats

    v = np.asarray(values, dtype=np.float64).ravel()
    if width is not None:
        if width < 1:
            raise ValueError(f"`width` must be a positive integer. Received: width={width!r}")
        if v.size > width:
            edges = np.linspace(0, v.size, width + 1).round().astype(int)
            v = np.array([v[a:b].mean() if np.isfinite(v[a:b]).all() else math.nan
                          for a, b in zip(edges[:-1], edges[1:])])
    finite = np.isfinite(v)
    if not finite.any():
        return " " * v.size
    lo, hi = float(v[finite].min()), float(v[finite].max())
    span = hi - lo
    flat = span <= 1e-12 * max(abs(lo), abs(hi))  # rounding noise is not a trend
    top = len(BARS) - 1
    out = []
    for x in v:
        if not math.isfinite(x):
            out.append(" ")
        elif flat:
            out.append(BARS[3])
        else:
            out.append(BARS[min(top, max(0, int((x - lo) / span * top + 0.5)))])
    return "".join(out)


def limit_text(f, digits: int = 4) -> str:
    """`` against limit 3`` or, for a baseline check, `` outside the band 0.012 to 0.034``."""
    band = getattr(f, "band", None)
    if band is not None and None not in band:
        return f" outside the band {fmt_num(band[0], digits)} to {fmt_num(band[1], digits)}"
    return "" if f.limit is None else f" against limit {fmt_num(f.limit, digits)}"
