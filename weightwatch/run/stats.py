"""Per-tensor statistics, computed in one fused, cache-blocked pass.

A record must cost about what it costs to fetch the weights and touch them
once.  Calling ``x.min()``, ``x.max()``, ``x.std()``, ``np.abs(x - prev)``
... one after another streams a 40 MB kernel through memory a dozen times.
Instead the tensor is walked in blocks that fit in the L2 cache and every
statistic and every delta is accumulated from the block while it is hot:
main memory is read about once for the tensor and once for its previous
copy.  Blocks also bound the temporaries to a few hundred kilobytes, so the
extra memory of a record does not grow with the model; the block buffers are
allocated once per thread and reused across tensors and records.

Per block the work is a handful of vectorised calls, each in cache: min and
max (which also detect NaN/Inf: only a block holding one pays for masking),
the zero count (skipped when the block cannot hold a zero), sum and sum of
squares as BLAS dot products; for the update ``x - prev`` its min, max and
sum of squares, the dot product with the previous update's direction and
the new direction itself.  Sums are taken around the first block's mean,
which keeps the standard deviation of a tensor like a BatchNorm variance
accurate, except when that mean is small against the block's spread (a
kernel around zero): then the shift is zero and its subtraction pass is
skipped.  The float32 dot products are what bounds the accuracy: about
1e-5 relative on a sum of squares over a block of this size, which is why
the blocks are not made larger (they would be slightly faster).

All figures are over the finite elements; NaN and Inf are counted instead.
A statistic that is undefined (the mean of a tensor with no finite element,
any delta on the first record) is ``None`` so that the JSON stays strict.

The row layout is :data:`.schema.COLUMNS` (``d_cos`` is the cosine between
this update and the previous one: near -1 the weights flip back and forth);
readers index it by name, never by
position, so columns can be added without breaking old runs.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from .schema import COLUMNS, DELTA_COLUMNS, STAT_COLUMNS  # noqa: F401  (the row layout)

#: Elements per block.  256 KiB of float32: small enough to stay in cache with the
#: block temporaries, large enough that Python overhead per block is noise.
BLOCK = 1 << 16

class UpdateDirection:
    """The previous update's direction, kept as int16 scaled per block.

    The cosine between consecutive updates needs the previous update, which
    would be a second full copy of the weights.  Its direction is enough:
    scaled per block so that the block's largest change is 32767, it fits
    int16 with four to five significant digits for the elements that carry
    the cosine (an error below 1e-4 on it), in half a float32 copy, with no
    overflow whatever the update's size.  (numpy converts float32 to int16
    and back about 20 times faster than to float16.)  ``scales[k]`` turns
    block *k* back into units of the update; ``norm`` is the update's exact
    L2 norm.  Recording writes each new direction over the buffers of the
    one before (see :func:`tensor_row_recycling`).
    """

    __slots__ = ("values", "scales", "norm")

    def __init__(self, size: int, nblocks: int):
        self.values = np.empty(size, dtype=np.int16)
        self.scales = np.zeros(nblocks, dtype=np.float64)
        self.norm = 0.0


#: Full scale of :class:`UpdateDirection` values.
_DIR_SCALE = 32767.0

_local = threading.local()


def _scratch(dtype: np.dtype, size: int):
    """Block buffers for ``dtype``: (buf, dbuf, pbuf, ones, mask), reused per thread."""
    cache = getattr(_local, "buffers", None)
    if cache is None:
        cache = _local.buffers = {}
    entry = cache.get(dtype)
    if entry is None or entry[0].size < size:
        entry = (np.empty(size, dtype), np.empty(size, dtype), np.empty(size, dtype),
                 np.ones(size, dtype), np.empty(size, np.bool_))
        if size <= 4 * BLOCK:  # a block widened for a huge unit count is not kept
            cache[dtype] = entry
    return entry


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
    two or more dimensions, or a bias's size (see :func:`~.schema.output_units`);
    the number of units whose weights did not change at all is reported as
    ``dead_units``.  Returns the figures by column name
    and the direction of this update, to pass back as ``prev_dir`` next time.
    """
    dt = x.dtype
    if dt.kind != "f" or dt.itemsize < 4:
        # Integers, booleans, float16 and bfloat16: statistics in float64
        # (these tensors are small, or rare enough that a copy is fine), but
        # "changed" is decided on the exact original values.
        exact_changed = None if prev is None else not np.array_equal(x, prev)
        xf = np.asarray(x, dtype=np.float64).reshape(-1)
        pf = None if prev is None else np.asarray(prev, dtype=np.float64).reshape(-1)
        row, _ = _float_row(xf, pf, None, units, False, False)
        if exact_changed is not None:
            row["changed"] = exact_changed
        return row, None
    xf = x.reshape(-1)
    pf = None if prev is None else prev.reshape(-1)
    return _float_row(xf, pf, prev_dir, units, track_direction, False)


def tensor_row_recycling(x, prev, prev_dir, units, track_direction):
    """:func:`tensor_row` for a caller that drops ``prev_dir`` afterwards (the record builder).

    The new direction is written over ``prev_dir``'s buffers, block by block
    after each block of the old one is read: no allocation, and no second
    direction in memory during a record.
    """
    dt = x.dtype
    if dt.kind != "f" or dt.itemsize < 4:
        return tensor_row(x, prev, prev_dir, units=units, track_direction=track_direction)
    return _float_row(x.reshape(-1), None if prev is None else prev.reshape(-1), prev_dir, units,
                      track_direction, True)


_min = np.minimum.reduce
_max = np.maximum.reduce
_dot = np.dot
_subtract = np.subtract
_multiply = np.multiply
_equal = np.equal
_not_equal = np.not_equal
_copyto = np.copyto
_any_rows = np.logical_or.reduce
_count_nonzero = np.count_nonzero
_isfinite = math.isfinite


class _Pass:
    """What a run of consecutive blocks adds up to."""

    __slots__ = ("shift", "count", "nan", "inf", "zeros", "s", "ss", "mn", "mx",
                 "d_ss", "d_dot", "d_mx", "d_nonzero", "d_nonfinite", "unit_changed")

    def __init__(self, shift):
        self.shift = shift
        self.count = self.nan = self.inf = self.zeros = 0
        self.s = self.ss = 0.0
        self.mn, self.mx = math.inf, -math.inf
        self.d_ss = self.d_dot = self.d_mx = 0.0
        self.d_nonzero = 0
        self.d_nonfinite = False
        self.unit_changed = None


def _blocks(x, prev, k0, k1, block, shift, units, pdir, ndir):
    """Blocks ``k0 <= k < k1`` of ``x`` (and of ``x - prev``), in one pass each.

    With ``shift`` None the shift is picked from the first block that has a
    finite value.  ``pdir`` is the
    previous direction's (values, scales) to read, ``ndir`` the new one's to
    write (they may be the same arrays: each block is read before it is
    written).  Returns a :class:`_Pass`.
    """
    n = x.size
    dtype = x.dtype
    buf, dbuf, pbuf, ones, mask = _scratch(dtype, min(n, block))
    scale_max = float(np.finfo(dtype).max)
    has_prev = prev is not None
    acc = _Pass(shift)
    count = nan = inf = zeros = 0
    s = ss = 0.0
    mn, mx = math.inf, -math.inf
    d_ss = d_dot = 0.0
    d_mx = 0.0
    d_nonzero = 0
    d_nonfinite = False
    unit_changed = None
    units_all_changed = False
    if has_prev and units:
        unit_changed = np.zeros(units, dtype=bool)
    if pdir is not None:
        pvalues, pscales = pdir
    if ndir is not None:
        nvalues, nscales = ndir

    for k in range(k0, k1):
        i = k * block
        cf = x[i:i + block]
        c = cf
        m = c.size
        cmn = float(_min(c))
        cmx = float(_max(c))
        if not (_isfinite(cmn) and _isfinite(cmx)):
            finite = np.isfinite(c)
            nf = int(_count_nonzero(finite))
            nan_here = int(_count_nonzero(np.isnan(c)))
            nan += nan_here
            inf += m - nf - nan_here
            c = c[finite]
            m = nf
            if m:
                cmn, cmx = float(_min(c)), float(_max(c))
        if m:
            straddles = cmn <= 0.0 <= cmx
            bs = None
            if shift is None:
                # The shift is the first block's mean, or none at all (and no
                # subtraction pass) when that mean is small against the spread.
                bs = float(_dot(c, ones[:m]))
                mean1 = bs / m
                if cmn == cmx:
                    shift = cmn
                elif not _isfinite(mean1):
                    shift = float(dtype.type(0.5 * (cmn + cmx)))
                elif abs(mean1) <= 0.1 * (cmx - cmn):
                    shift = 0.0
                else:
                    shift = float(dtype.type(mean1))
            count += m
            if cmn < mn:
                mn = cmn
            if cmx > mx:
                mx = cmx
            if straddles:  # a block entirely above or below zero holds no zero
                z = mask[:m]
                _equal(c, 0, out=z)
                zeros += int(_count_nonzero(z))
            if shift:
                b = buf[:m]
                _subtract(c, shift, out=b)
                bs = float(_dot(b, ones[:m]))
            else:
                b = c
                if bs is None:
                    bs = float(_dot(b, ones[:m]))
            bss = float(_dot(b, b))
            if not (_isfinite(bss) and _isfinite(bs)):  # float32 overflow: redo in float64
                b64 = c.astype(np.float64) - shift  # from c: b itself may hold the overflow
                bs, bss = float(b64.sum()), float(_dot(b64, b64))
            s += bs
            ss += bss
        if has_prev and not d_nonfinite:
            m = cf.size
            d = dbuf[:m]
            _subtract(cf, prev[i:i + block], out=d)
            dmn = float(_min(d))
            dmx = float(_max(d))
            if not (_isfinite(dmn) and _isfinite(dmx)):
                p = prev[i:i + block]
                if c is cf and bool(np.isfinite(p).all()):
                    # Finite weights whose difference overflows the dtype: float64.
                    d = cf.astype(np.float64) - p
                    dmn, dmx = float(_min(d)), float(_max(d))
                else:
                    # The figures of this update are all undefined: only the
                    # statistics of x need the remaining blocks.
                    d_nonfinite = True
                    continue
            dabs = -dmn if -dmn > dmx else dmx
            if dabs > 0:
                d_nonzero += 1
                if dabs > d_mx:
                    d_mx = dabs
                dd = float(_dot(d, d))
                if not _isfinite(dd):
                    d64 = d.astype(np.float64)
                    dd = float(_dot(d64, d64))
                d_ss += dd
                if unit_changed is not None and not units_all_changed:
                    # One row first: in a trained kernel it nearly always
                    # shows every unit changed, and the block is not needed.
                    z = mask[:units]
                    _not_equal(d[:units], 0, out=z)
                    unit_changed |= z
                    if m > units and not unit_changed.all():
                        z = mask[:m - units]
                        _not_equal(d[units:], 0, out=z)
                        unit_changed |= _any_rows(z.reshape(-1, units), axis=0)
                    units_all_changed = bool(unit_changed.all())
                if pdir is not None:
                    ps = pscales[k]
                    if ps > 0:
                        pd = pbuf[:m]
                        _copyto(pd, pvalues[i:i + m], casting="unsafe")
                        d_dot += float(_dot(d, pd)) * float(ps)
                if ndir is not None:
                    sc = _DIR_SCALE / dabs
                    if sc < scale_max:
                        _multiply(d, sc, out=nvalues[i:i + m], casting="unsafe")
                    else:  # a tiny update: the scale itself would overflow the dtype
                        _multiply(d.astype(np.float64), sc, out=nvalues[i:i + m], casting="unsafe")
                    nscales[k] = dabs / _DIR_SCALE
            elif ndir is not None:
                nvalues[i:i + m] = 0
                nscales[k] = 0.0

    acc.shift = shift
    acc.count, acc.nan, acc.inf, acc.zeros = count, nan, inf, zeros
    acc.s, acc.ss, acc.mn, acc.mx = s, ss, mn, mx
    acc.d_ss, acc.d_dot, acc.d_mx = d_ss, d_dot, d_mx
    acc.d_nonzero, acc.d_nonfinite, acc.unit_changed = d_nonzero, d_nonfinite, unit_changed
    return acc


def _float_row(x, prev, prev_dir, units, track_direction, recycle):
    n = x.size
    has_prev = prev is not None and prev.size == n
    if not has_prev:
        prev = None
    block = BLOCK
    if units and units > 0 and has_prev:
        block = max(units, (BLOCK // units) * units)  # blocks hold whole rows of units
    nblocks = max(1, -(-n // block))
    units_tracked = units if (has_prev and units and units > 0 and n % units == 0) else None
    fits = (has_prev and prev_dir is not None and prev_dir.values.size == n
            and prev_dir.scales.size == nblocks)
    use_prev_dir = fits and prev_dir.norm > 0
    prev_norm = prev_dir.norm if use_prev_dir else 0.0
    new_dir = None
    if has_prev and track_direction:
        if recycle and fits and prev_dir.values.dtype == np.int16:
            new_dir = prev_dir  # each block of it is read below before it is overwritten
        else:
            new_dir = UpdateDirection(n, nblocks)
    pdir = (prev_dir.values, prev_dir.scales) if use_prev_dir else None
    ndir = (new_dir.values, new_dir.scales) if new_dir is not None else None
    kblocks = -(-n // block)  # 0 for an empty tensor

    with np.errstate(over="ignore", invalid="ignore"):  # overflow is handled, not warned about
        acc = _blocks(x, prev, 0, kblocks, block, None, units_tracked, pdir, ndir)
    shift = acc.shift
    count, nan, inf, zeros = acc.count, acc.nan, acc.inf, acc.zeros
    s, ss, mn, mx = acc.s, acc.ss, acc.mn, acc.mx
    d_ss, d_dot, d_mx = acc.d_ss, acc.d_dot, acc.d_mx
    d_nonzero, d_nonfinite = acc.d_nonzero, acc.d_nonfinite
    unit_changed = acc.unit_changed if units_tracked else None

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
        row["dead_units"] = int(units - _count_nonzero(unit_changed)) if d_nonzero else int(units)
    else:
        row["dead_units"] = None
    cos = None
    if use_prev_dir and d_l2 > 0:
        cos = _finite_or_none(max(-1.0, min(1.0, d_dot / (d_l2 * prev_norm))))
    row["d_cos"] = cos
    if new_dir is not None:
        new_dir.norm = d_l2
    return row, new_dir
