"""Numbers, durations and sparklines as every output format writes them.

One implementation of each, so the terminal report, ``show``, JUnit and the
live lines print the same figure the same way.
"""

from __future__ import annotations

import math

import numpy as np


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
