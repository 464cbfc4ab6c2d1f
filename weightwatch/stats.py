"""Per-tensor statistics, computed in one fused, cache-blocked pass.

A record must cost about what it costs to fetch the weights and touch them
once.  Calling ``x.min()``, ``x.max()``, ``x.std()``, ``np.abs(x - prev)``
... one after another streams a 40 MB kernel through memory a dozen times.
Instead the tensor is walked in blocks that fit in the L2 cache and every
statistic and every delta is accumulated from the block while it is hot:
main memory is read about once for the tensor and once for its previous
copy.  Blocks also bound the temporaries to a few hundred kilobytes, so the
extra memory of a record does not grow with the model.

All figures are over the finite elements; NaN and Inf are counted instead.
A statistic that is undefined (the mean of a tensor with no finite element,
any delta on the first record) is ``None`` so that the JSON stays strict.

The row layout is :data:`COLUMNS`; readers index it by name, never by
position, so columns can be added without breaking old runs.
"""

from __future__ import annotations

import math

import numpy as np

#: Elements per block.  256 KiB of float32: small enough to stay in L2 with the
#: two block temporaries, large enough that Python overhead per block is noise.
BLOCK = 1 << 16

#: Statistics of the tensor itself.
STAT_COLUMNS = ("size", "nan", "inf", "l2", "mean", "std", "min", "max", "absmax", "zero_frac")
#: Figures against the previous record of the same tensor (``None`` on the first).
#: ``d_cos`` is the cosine between this update and the previous one: near -1
#: means the weights flip back and forth (oscillation).
DELTA_COLUMNS = ("d_l2", "d_absmax", "changed", "dead_units", "d_cos")
#: The layout of one tensor's row in a snapshot, after the two state flags.
COLUMNS = ("trainable", "frozen") + STAT_COLUMNS + DELTA_COLUMNS


class UpdateDirection:
    """The previous update's direction, kept as float16 scaled per block.

    The cosine between consecutive updates needs the previous update, which
    would be a second full copy of the weights.  Its direction is enough, and
    scaled into [-1, 1] per block it fits float16 with three significant
    digits: half a float32 copy, and no overflow whatever the update's size.
    """

    __slots__ = ("values", "scales", "norm")

    def __init__(self, size: int, nblocks: int):
        self.values = np.empty(size, dtype=np.float16)
        self.scales = np.zeros(nblocks, dtype=np.float64)
        self.norm = 0.0


def _finite_or_none(x: float):
    x = float(x)
    return x if math.isfinite(x) else None


def tensor_row(
    x: np.ndarray,
    prev: np.ndarray | None = None,
    prev_dir: UpdateDirection | None = None,
    *,
    units: int | None = None,
    track_direction: bool = True,
) -> tuple[dict, UpdateDirection | None]:
    """Statistics of ``x`` and of its update since ``prev``.

    ``units`` is the size of the output axis (the last one) of a kernel with
    two or more dimensions; the number of units whose weights did not change
    at all is reported as ``dead_units``.  Returns the figures by column name
    and the direction of this update, to pass back as ``prev_dir`` next time.
    """
    if not np.issubdtype(x.dtype, np.floating) or x.dtype.itemsize < 4:
        # Integers, booleans, float16 and bfloat16: statistics in float64
        # (these tensors are small, or rare enough that a copy is fine), but
        # "changed" is decided on the exact original values.
        exact_changed = None if prev is None else not np.array_equal(x, prev)
        xf = np.asarray(x, dtype=np.float64).reshape(-1)
        pf = None if prev is None else np.asarray(prev, dtype=np.float64).reshape(-1)
        row, _ = _float_row(xf, pf, None, units, track_direction=False)
        if exact_changed is not None:
            row["changed"] = exact_changed
        return row, None
    xf = x.reshape(-1)
    pf = None if prev is None else prev.reshape(-1)
    return _float_row(xf, pf, prev_dir, units, track_direction)


def _float_row(x, prev, prev_dir, units, track_direction):
    n = x.size
    has_prev = prev is not None and prev.size == n
    block = BLOCK
    if units and units > 0 and has_prev:
        block = max(units, (BLOCK // units) * units)  # blocks hold whole rows of units
    nblocks = max(1, -(-n // block))
    buf = np.empty(min(n, block), dtype=x.dtype)
    dbuf = np.empty(min(n, block), dtype=x.dtype) if has_prev else None

    shift = None  # values are accumulated shifted by the first finite value: no cancellation in std
    count = nan = inf = zeros = 0
    s = ss = 0.0
    mn, mx = math.inf, -math.inf
    d_ss = d_dot = 0.0
    d_mx = 0.0
    d_nonzero = 0
    d_nonfinite = False
    unit_changed = None
    if has_prev and units and units > 0 and x.ndim == 1 and n % units == 0:
        unit_changed = np.zeros(units, dtype=bool)
    new_dir = None
    if has_prev and track_direction:
        new_dir = UpdateDirection(n, nblocks)
    use_prev_dir = (
        has_prev and prev_dir is not None and prev_dir.values.size == n
        and prev_dir.scales.size == nblocks and prev_dir.norm > 0
    )

    for k, i in enumerate(range(0, n, block)):
        c = x[i:i + block]
        m = c.size
        cmn = c.min()
        cmx = c.max()
        if not (math.isfinite(cmn) and math.isfinite(cmx)):
            finite = np.isfinite(c)
            nf = int(np.count_nonzero(finite))
            nan_here = int(np.count_nonzero(np.isnan(c)))
            nan += nan_here
            inf += m - nf - nan_here
            c = c[finite]
            m = nf
            if m:
                cmn, cmx = c.min(), c.max()
        if m:
            cmn, cmx = float(cmn), float(cmx)
            if shift is None:
                shift = cmn if cmn == cmx else 0.5 * (cmn + cmx)
            count += m
            mn = min(mn, cmn)
            mx = max(mx, cmx)
            zeros += m - int(np.count_nonzero(c))
            b = buf[:m]
            np.subtract(c, shift, out=b)
            bs = float(b.sum())
            bss = float(np.dot(b, b))
            if not math.isfinite(bss):  # float32 overflow of the square: redo in float64
                b64 = b.astype(np.float64)
                bs, bss = float(b64.sum()), float(np.dot(b64, b64))
            s += bs
            ss += bss
        if has_prev:
            p = prev[i:i + block]
            d = dbuf[:p.size]
            c_full = x[i:i + block]
            np.subtract(c_full, p, out=d)
            dmn, dmx = float(d.min()), float(d.max())
            if not (math.isfinite(dmn) and math.isfinite(dmx)):
                d_nonfinite = True
                d_nonzero += 1
                continue
            dabs = max(-dmn, dmx)
            if dabs > 0:
                d_nonzero += 1
                d_mx = max(d_mx, dabs)
                dd = float(np.dot(d, d))
                if not math.isfinite(dd):
                    d64 = d.astype(np.float64)
                    dd = float(np.dot(d64, d64))
                d_ss += dd
                if unit_changed is not None and not unit_changed.all():
                    unit_changed |= (d.reshape(-1, units) != 0).any(axis=0)
                if use_prev_dir and prev_dir.scales[k] > 0:
                    pd = prev_dir.values[i:i + block].astype(d.dtype)
                    d_dot += float(np.dot(d, pd)) * float(prev_dir.scales[k])
                if new_dir is not None:
                    np.multiply(d, 1.0 / dabs, out=d)
                    new_dir.values[i:i + block] = d
                    new_dir.scales[k] = dabs
            elif new_dir is not None:
                new_dir.values[i:i + block] = 0
                new_dir.scales[k] = 0.0

    row = {"size": int(n), "nan": nan, "inf": inf}
    if count:
        mean_shifted = s / count
        var = max(ss / count - mean_shifted * mean_shifted, 0.0)
        l2sq = ss + 2.0 * shift * s + count * shift * shift
        row.update(
            l2=_finite_or_none(math.sqrt(max(l2sq, 0.0))),
            mean=_finite_or_none(shift + mean_shifted),
            std=_finite_or_none(math.sqrt(var)),
            min=_finite_or_none(mn),
            max=_finite_or_none(mx),
            absmax=_finite_or_none(max(-mn, mx)),
            zero_frac=zeros / count,
        )
    else:
        row.update(l2=None, mean=None, std=None, min=None, max=None, absmax=None, zero_frac=None)

    if not has_prev:
        row.update(d_l2=None, d_absmax=None, changed=None, dead_units=None, d_cos=None)
        return row, None
    if d_nonfinite:
        # An update that involves NaN/Inf has no meaningful size or direction.
        row.update(d_l2=None, d_absmax=None, changed=True, dead_units=None, d_cos=None)
        return row, None
    d_l2 = math.sqrt(d_ss)
    row.update(d_l2=_finite_or_none(d_l2), d_absmax=_finite_or_none(d_mx), changed=d_nonzero > 0)
    if unit_changed is not None:
        row["dead_units"] = int(units - np.count_nonzero(unit_changed)) if d_nonzero else int(units)
    else:
        row["dead_units"] = None
    cos = None
    if use_prev_dir and d_l2 > 0:
        cos = _finite_or_none(max(-1.0, min(1.0, d_dot / (d_l2 * prev_dir.norm))))
    row["d_cos"] = cos
    if new_dir is not None:
        new_dir.norm = d_l2
    return row, new_dir
