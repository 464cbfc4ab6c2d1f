"""Charts for the HTML report, drawn by hand: inline SVG lines and a PNG heatmap.

No plotting library: the report must be one small file that renders offline
and fast.  A JavaScript library would ship megabytes before any data
(plotly's offline bundle is ~3.6 MB) and a static renderer (matplotlib)
takes seconds for 200 small multiples.  A polyline of a few hundred points
and a numpy-built PNG are what those libraries would emit anyway.

Long histories are downsampled *for drawing only* (:func:`downsample`): the
smallest and largest value of each bucket are kept, so a spike is never
smoothed away, and a bucket with a non-finite value keeps it, so a NaN is
never averaged away.  Judging always uses the full history.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from html import escape

import numpy as np

from .text import fmt_num

#: Points a line keeps at most (min and max of half as many buckets).
MAX_POINTS = 400

LINE = "#1565c0"
LIMIT = "#c62828"
BAD = "#c62828"


def downsample(y, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, values)`` of at most ``max_points`` points standing for ``y``.

    Short series come back whole.  Longer ones keep, per bucket, the first
    non-finite value if any, else the minimum and the maximum (in order).
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    n = y.size
    if n <= max_points:
        return np.arange(n), y
    buckets = max(1, max_points // 2)
    edges = np.linspace(0, n, buckets + 1).round().astype(int)
    keep = []
    for a, b in zip(edges[:-1], edges[1:]):
        if b <= a:
            continue
        seg = y[a:b]
        bad = ~np.isfinite(seg)
        if bad.any():
            keep.append(a + int(np.argmax(bad)))
            continue
        i, j = a + int(np.argmin(seg)), a + int(np.argmax(seg))
        keep.extend(sorted({i, j}))
    idx = np.asarray(keep, dtype=int)
    return idx, y[idx]


def _as_array(values) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _log_scale(finite: np.ndarray, extra=()) -> bool:
    vals = np.concatenate([finite, np.asarray([e for e in extra if e is not None], dtype=float)])
    vals = vals[np.isfinite(vals)]
    return vals.size > 1 and vals.min() > 0 and vals.max() / vals.min() > 1e3


def line_chart(y, *, labels=None, width: int = 470, height: int = 170, title: str = "",
               limit: float | None = None, marks=(), first: int | None = None,
               css_class: str = "chart", attrs: str = "", axes: bool = True, band=None) -> str:
    """An SVG line chart of ``y`` (one value per record; None/NaN = undefined).

    ``limit``: a horizontal line; ``marks``: record indices drawn as red dots
    (violations); ``first``: the record drawn largest, with a vertical line
    (the first violation).  NaN is a gap; an infinite value is a tick on the x axis;
    a violation at a non-finite value sits on the x axis.
    ``labels``: the record labels (``epoch 3``) for ticks and tooltips.
    ``band``: ``(lo, hi)``, one value each per record: the reference runs' band, shaded under
    the line (gaps where the baseline has none).
    """
    y = _as_array(y) if not isinstance(y, np.ndarray) else y.astype(np.float64)
    n = y.size
    if band is not None:
        band = tuple(_as_array(b) if not isinstance(b, np.ndarray) else b.astype(np.float64) for b in band)
        if len(band) != 2 or band[0].shape != y.shape or band[1].shape != y.shape or not (
                np.isfinite(band[0]) & np.isfinite(band[1])).any():
            band = None
    left, right, top, bottom = (54, 10, 18 if title else 8, 26) if axes else (3, 3, 3, 3)
    pw, ph = width - left - right, height - top - bottom
    finite = y[np.isfinite(y)]
    edges = np.concatenate(band)[np.isfinite(np.concatenate(band))] if band is not None else np.zeros(0)
    log = _log_scale(np.concatenate([finite, edges]), (limit,)) or (
        band is not None and edges.size and edges.min() > 0 and finite.size and finite.min() > 0
        and np.concatenate([finite, edges]).max() / np.concatenate([finite, edges]).min() > 30)
    tr = np.log10 if log else (lambda v: v)
    pool = list(finite) + ([limit] if limit is not None and math.isfinite(limit) else []) + list(edges)
    pool += [y[m] for m in marks if 0 <= m < n and math.isfinite(y[m])]
    if pool:
        lo, hi = float(np.min(tr(np.asarray(pool)))), float(np.max(tr(np.asarray(pool))))
    else:
        lo, hi = 0.0, 1.0
    if hi - lo < 1e-12:
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    else:
        pad = (hi - lo) * 0.06
        lo, hi = lo - pad, hi + pad

    def X(i):
        return left + (pw * i / (n - 1) if n > 1 else pw / 2)

    def Y(v):
        return top + ph * (1 - (float(tr(v)) - lo) / (hi - lo))

    out = [f'<svg class="{css_class}" {attrs} '
           f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">']
    if title:
        out.append(f'<text x="{left}" y="12" class="ttl">{escape(title)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="plot"/>')
    if axes:
        for k in range(3):
            v = lo + (hi - lo) * (0.06 / 1.12 + k * 0.5 / 1.12)
            yy = top + ph * (1 - (v - lo) / (hi - lo))
            val = 10 ** v if log else v
            out.append(f'<text x="{left - 4}" y="{yy + 3:.1f}" class="ax" text-anchor="end">'
                       f'{escape(fmt_num(val, 2))}</text>')
        ticks = sorted({0, n - 1} | {round(k * (n - 1) / 4) for k in range(1, 4)}) if n > 1 else [0]
        for t in ticks:
            lab = labels[t] if labels is not None and t < len(labels) else str(t)
            anchor = "start" if t == 0 and n > 1 else "end" if t == n - 1 and n > 1 else "middle"
            out.append(f'<text x="{X(t):.1f}" y="{height - 8}" class="ax" text-anchor="{anchor}">'
                       f'{escape(str(lab))}</text>')
        if log:
            out.append(f'<text x="{width - right}" y="{top + 10}" class="ax" text-anchor="end">log</text>')
    if band is not None:
        out.append(_band_paths(band, X, Y, log))
    if limit is not None and math.isfinite(limit) and (not log or limit > 0) and band is None:
        ly = Y(limit)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{ly:.1f}" y2="{ly:.1f}" class="limit">'
                   f'<title>limit {escape(fmt_num(limit, 6))}</title></line>')
    idx, vals = downsample(y)
    # One path, broken where a value is undefined.
    d, pen = [], False
    for i, v in zip(idx, vals):
        if math.isfinite(v) and (not log or v > 0):
            d.append(f"{'L' if pen else 'M'}{X(i):.1f} {Y(v):.1f}")
            pen = True
        else:
            pen = False
    if d:
        out.append(f'<path d="{" ".join(d)}" class="line"/>')
        if len(d) == 1:   # a single point: draw it
            i = next(i for i, v in zip(idx, vals) if math.isfinite(v) and (not log or v > 0))
            out.append(f'<circle cx="{X(i):.1f}" cy="{Y(y[i]):.1f}" r="2" class="pt"/>')
    for i in [i for i in idx if np.isinf(y[i])][:MAX_POINTS]:   # NaN is "undefined"; Inf is drawn
        out.append(f'<line x1="{X(i):.1f}" x2="{X(i):.1f}" y1="{top + ph}" y2="{top + ph - 6}" class="nf"/>')

    def at(i):
        return labels[i] if labels is not None and i < len(labels) else f"record {i}"

    if first is not None and 0 <= first < n:
        out.append(f'<line x1="{X(first):.1f}" x2="{X(first):.1f}" y1="{top}" y2="{top + ph}" class="onset"/>')
    shown = sorted(set(m for m in marks if 0 <= m < n) | ({first} if first is not None and 0 <= first < n else set()))
    if len(shown) > MAX_POINTS:   # drawing only: keep the first and an even spread of the rest
        keep = set(shown[:: max(1, len(shown) // MAX_POINTS)])
        shown = sorted(keep | ({first} if first is not None else set()))
    for m in shown:
        v = y[m]
        cy = Y(v) if math.isfinite(v) and (not log or v > 0) else top + ph - 3
        big = m == first
        value = "non-finite" if not math.isfinite(v) else fmt_num(v, 6)
        out.append(f'<circle cx="{X(m):.1f}" cy="{cy:.1f}" r="{4.5 if big else 2.5}" '
                   f'class="violation{" first" if big else ""}" data-record="{m}">'
                   f'<title>{escape(at(m))}: {escape(value)}</title></circle>')
    out.append("</svg>")
    return "".join(out)


def _band_paths(band, X, Y, log: bool) -> str:
    """The band as filled polygons, one per stretch of records where it is defined."""
    lo, hi = band
    n = lo.size
    ok = np.isfinite(lo) & np.isfinite(hi) & ((lo > 0) if log else True)
    idx = np.arange(n)
    if n > MAX_POINTS:   # drawing only
        idx = np.unique(np.linspace(0, n - 1, MAX_POINTS).round().astype(int))
    runs, cur = [], []
    for i in idx:
        if ok[i]:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    out = []
    for r in runs:
        if len(r) == 1:
            r = [r[0], r[0]]
        top = " ".join(f"{X(i):.1f},{Y(hi[i]):.1f}" for i in r)
        bottom = " ".join(f"{X(i):.1f},{Y(lo[i]):.1f}" for i in reversed(r))
        out.append(f'<polygon points="{top} {bottom}" class="band"><title>reference band</title></polygon>')
    return "".join(out)


# -- heatmap --------------------------------------------------------------------------------

#: viridis, at nine evenly spaced stops.
_VIRIDIS = np.array([
    [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
    [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]], dtype=np.float64)
UNDEFINED = (236, 236, 236)   # no figure (record 0, tensor absent)
ZERO = (0, 0, 0)              # exactly no update (frozen)
NONFINITE = (255, 0, 170)     # the weights hold NaN/Inf


def colormap(t: np.ndarray) -> np.ndarray:
    """viridis colours (uint8, ... x 3) for ``t`` in [0, 1]."""
    t = np.clip(np.nan_to_num(t, nan=0.0), 0, 1) * (len(_VIRIDIS) - 1)
    i = np.minimum(t.astype(int), len(_VIRIDIS) - 2)
    f = (t - i)[..., None]
    return (_VIRIDIS[i] * (1 - f) + _VIRIDIS[i + 1] * f).round().astype(np.uint8)


def png(rgb: np.ndarray) -> bytes:
    """A PNG file of an (height, width, 3) uint8 image, with zlib only."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[r].tobytes() for r in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def data_uri(png_bytes: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode("ascii")


def heatmap_image(values: np.ndarray, *, lo: float, hi: float, nonfinite: np.ndarray | None = None,
                  max_columns: int = 600) -> tuple[bytes, np.ndarray]:
    """A PNG of ``values`` (records x tensors, positive; drawn as tensors x records, log10).

    Colours run from ``lo`` to ``hi`` (log10 bounds); 0 is black, NaN light
    grey, and a cell whose ``nonfinite`` is true magenta.  More than
    ``max_columns`` records are merged per column (mean of the logs; a merged
    column is magenta if any of its records is, and black only if all are 0).
    Returns the PNG and, per column, its first record index.
    """
    v = np.asarray(values, dtype=np.float64)
    R, T = v.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.where(v > 0, np.log10(np.where(v > 0, v, 1.0)), np.nan)
    zero = v == 0
    nf = np.zeros_like(zero) if nonfinite is None else np.asarray(nonfinite, dtype=bool)
    if R > max_columns:
        edges = np.linspace(0, R, max_columns + 1).round().astype(int)
        starts = edges[:-1]
        counts = np.diff(edges)[:, None]
        with np.errstate(invalid="ignore"):
            sums = np.add.reduceat(np.nan_to_num(lg, nan=0.0), starts, axis=0)
            n_ok = np.add.reduceat(np.isfinite(lg).astype(int), starts, axis=0)
            lg = np.where(n_ok > 0, sums / np.maximum(n_ok, 1), np.nan)
        zero = np.add.reduceat(zero.astype(int), starts, axis=0) == counts
        nf = np.add.reduceat(nf.astype(int), starts, axis=0) > 0
    else:
        starts = np.arange(R)
    rgb = colormap((lg - lo) / (hi - lo))
    rgb[np.isnan(lg)] = UNDEFINED
    rgb[zero] = ZERO
    rgb[nf] = NONFINITE
    return png(np.ascontiguousarray(rgb.transpose(1, 0, 2))), starts


def colorbar(lo: float, hi: float, width: int = 260) -> str:
    """An SVG legend for :func:`heatmap_image`'s colours."""
    stops = "".join(f'<stop offset="{k / 8:.3f}" stop-color="rgb({r:.0f},{g:.0f},{b:.0f})"/>'
                    for k, (r, g, b) in enumerate(_VIRIDIS))
    ticks = "".join(
        f'<text x="{10 + (width - 20) * (e - lo) / (hi - lo):.1f}" y="30" class="ax" text-anchor="middle">'
        f'1e{e:d}</text>' for e in range(math.ceil(lo), math.floor(hi) + 1))
    swatch = "".join(
        f'<rect x="{width + 10 + k * 92}" y="4" width="12" height="12" fill="rgb{c}" stroke="#999"/>'
        f'<text x="{width + 26 + k * 92}" y="14" class="ax">{name}</text>'
        for k, (c, name) in enumerate([(ZERO, "0 (frozen)"), (NONFINITE, "NaN/Inf"), (UNDEFINED, "undefined")]))
    return (f'<svg class="colorbar" viewBox="0 0 {width + 290} 36" '
            f'width="{width + 290}" height="36"><defs><linearGradient id="vir">{stops}</linearGradient></defs>'
            f'<rect x="10" y="4" width="{width - 20}" height="14" fill="url(#vir)"/>{ticks}{swatch}</svg>')
