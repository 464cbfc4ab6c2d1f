"""The strict schema of a run's files, and what must hold between them.

Every value the reader takes from a run directory is checked here before it
is used: its type (a value of the wrong type is never coerced: ``true`` is
not a count, ``"1.5"`` is not a number), its range, and that every required
key is there.  Across files:

* a record's ``record`` field agrees with its file name, and its
  ``tensors_file`` is its own ``record-NNNNNN.npz`` (or null);
* records follow each other: the step never goes back (except at a
  ``begin`` record, where a new callback continuing the run counts its
  steps afresh), and the epoch goes back only where training went on (a
  second ``fit()`` with the same callback numbers its epochs from 1 again);
* every tensor of a record is in the manifest, from its ``first_record`` on,
  and every tensor of the manifest is in each record from its
  ``first_record`` on (unless the run was recorded with ``trainable_only``,
  where a tensor leaves the records when it stops being trainable);
* a log key does not disappear: once logged in a record of one kind
  (epoch, batch), it is logged in every later record of that kind -
  except validation logs (``val_*``), which ``validation_freq=N`` logs
  every N epochs.

A violation is a :class:`SchemaError` (a ValueError) whose message names the
key, tensor, column or log; the reader turns it into a problem of the file,
and a run with a problem never passes.  The columns of a run are its
manifest's ``columns``, by name: nothing here assumes how many there are.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

from ..errors import did_you_mean
from .digest import HEX_DIGITS, is_digest
from .schema import (  # noqa: F401
    FIRST_COLUMNS,
    COLUMNS, COUNT_COLUMNS, FLAG_COLUMNS, FORMAT, ROLES, SNAPSHOT_FORMAT, TRIGGERS, VERSION,
    record_name,
)

#: The columns every version-1 run has held since the format began; columns added later
#: (appended to :data:`~.schema.COLUMNS`) may be missing from older runs.
BASE_COLUMNS = ("trainable", "frozen", "size", "nan", "inf", "l2", "mean", "std", "min", "max",
                "absmax", "zero_frac", "d_l2", "d_absmax", "changed", "dead_units", "d_cos")
#: Columns that are never null: every recorder knows them.
REQUIRED_FIGURES = ("trainable", "frozen", "size", "nan", "inf")
#: Columns that are never negative, and the ones that lie in a closed interval.
NON_NEGATIVE = ("l2", "std", "absmax", "d_l2", "d_absmax")
INTERVALS = {"zero_frac": (0.0, 1.0), "d_cos": (-1.0, 1.0)}
#: Largest whole number a field may hold (integers stay exact as float64 below it).
MAX_INT = 2 ** 53
#: Most dimensions a tensor shape may have (numpy's own limit).
MAX_NDIM = 64

SNAPSHOT_KEYS = ("format", "version", "record", "epoch", "batch", "step", "kind", "time", "logs",
                 "tensors_file", "tensors")
OPTIONAL_SNAPSHOT_KEYS = ("digest",)
TENSOR_ENTRY_KEYS = ("path", "layer", "shape", "dtype", "kind", "first_record", "layer_path")
REQUIRED_TENSOR_ENTRY_KEYS = ("path", "kind", "first_record")


class SchemaError(ValueError):
    """A value of a run file breaks the schema; the message names it."""


def _short(value, limit: int = 60) -> str:
    try:
        text = repr(value)
    except RecursionError:
        return "(a value nested too deeply to show)"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def is_int(value) -> bool:
    return type(value) is int


def is_number(value) -> bool:
    """A JSON number: int or float, never a boolean."""
    return type(value) is int or type(value) is float


def check_name(name, what: str) -> str:
    """A tensor path or log key: a non-empty string of valid Unicode (no lone surrogates)."""
    if not isinstance(name, str) or not name:
        raise SchemaError(f"{what} must be a non-empty string, got {_short(name)}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise SchemaError(f"{what} {_short(name)} is not valid Unicode (a lone surrogate)") from None
    return name


def _whole(value, what: str, *, minimum: int = 0, nullable: bool = False):
    if value is None and nullable:
        return None
    if not is_int(value) or not minimum <= value <= MAX_INT:
        null = " or null" if nullable else ""
        raise SchemaError(f"{what} must be a whole number >= {minimum}{null}, got {_short(value)}")
    return value


# -- the manifest -----------------------------------------------------------------------------

@dataclass
class ManifestInfo:
    """What a validated manifest says: the run's columns and its tensor table."""

    columns: tuple
    tensors: list            # the tensor entries, validated
    #: Tensors may leave the records (``trainable_only``).
    sparse: bool = False
    #: The first record that must state its digest (None: no record must; an older run).
    digests_from: int | None = None


def check_manifest_head(manifest) -> None:
    """Format and version: whether this is a manifest this weightwatch reads at all."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SchemaError(f"not a weightwatch manifest (format should be {FORMAT!r})")
    version = manifest.get("version")
    if not is_int(version) or version != VERSION:
        raise SchemaError(
            f"unsupported format version {version!r} (this weightwatch reads version {VERSION}; "
            "upgrade weightwatch to read newer runs)")


def check_manifest(manifest) -> ManifestInfo:
    """Validate a parsed ``manifest.json``; raise :class:`SchemaError` naming the key or entry."""
    check_manifest_head(manifest)
    if "tensors" not in manifest:
        raise SchemaError('no "tensors" table: the manifest is damaged')
    table = manifest["tensors"]
    if not isinstance(table, list):
        raise SchemaError(f'"tensors" must be a list of tensor entries, got {_short(table)}')
    seen: set = set()
    for i, entry in enumerate(table):
        _check_tensor_entry(i, entry, seen)
    if "columns" not in manifest:
        raise SchemaError('no "columns": the manifest is damaged')
    columns = manifest["columns"]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise SchemaError(f'"columns" must be a list of column names, got {_short(columns)}')
    for c in columns:
        if c not in COLUMNS:
            raise SchemaError(f'unknown column "{c}" in "columns"{did_you_mean(c, COLUMNS)}')
    if len(set(columns)) != len(columns):
        dup = next(c for c in columns if columns.count(c) > 1)
        raise SchemaError(f'column "{dup}" is named twice in "columns"')
    missing = [c for c in BASE_COLUMNS if c not in columns]
    if missing:
        raise SchemaError(f'"columns" lacks {", ".join(map(repr, missing))}: the manifest is damaged')
    model = manifest.get("model")
    if model is not None and not isinstance(model, str):
        raise SchemaError(f'"model" must be a string or null, got {_short(model)}')
    sparse = manifest.get("trainable_only", False)
    if not isinstance(sparse, bool):
        raise SchemaError(f'"trainable_only" must be true or false, got {_short(sparse)}')
    digests_from = _whole(manifest.get("digests_from"), '"digests_from"', nullable=True)
    return ManifestInfo(tuple(columns), table, sparse, digests_from)


def _check_tensor_entry(i: int, entry, seen: set) -> None:
    where = f"malformed tensor entry {i} in the tensor table"
    if not isinstance(entry, dict):
        raise SchemaError(f"{where}: expected an object, got {_short(entry)}")
    for key in REQUIRED_TENSOR_ENTRY_KEYS:
        if key not in entry:
            raise SchemaError(f'{where}: missing "{key}"')
    path = entry["path"]
    try:
        check_name(path, "its path")
    except SchemaError as exc:
        raise SchemaError(f"{where}: {exc}") from None
    where = f"tensor entry {i} ({path!r})"
    for key in entry:
        if key not in TENSOR_ENTRY_KEYS:
            raise SchemaError(f'{where}: unknown key "{key}"{did_you_mean(key, TENSOR_ENTRY_KEYS)}')
    if path in seen:
        raise SchemaError(f"{where}: the path is listed twice")
    seen.add(path)
    for key in ("layer", "dtype", "layer_path"):
        value = entry.get(key)
        if value is not None and not isinstance(value, str):
            raise SchemaError(f'{where}: "{key}" must be a string or null, got {_short(value)}')
    shape = entry.get("shape")
    if shape is not None and (not isinstance(shape, list) or len(shape) > MAX_NDIM
                              or not all(is_int(d) and 0 <= d <= MAX_INT for d in shape)):
        raise SchemaError(f'{where}: "shape" must be a list of whole numbers >= 0 or null, '
                          f"got {_short(shape)}")
    if entry["kind"] not in ROLES:
        raise SchemaError(f'{where}: "kind" must be a tensor role ({", ".join(ROLES)}), '
                          f'got {_short(entry["kind"])}'
                          f'{did_you_mean(entry["kind"], ROLES) if isinstance(entry["kind"], str) else ""}')
    _whole(entry["first_record"], f'{where}: "first_record"')


# -- a snapshot -------------------------------------------------------------------------------

def check_meta(snap, index: int, *, with_tensors: bool = True) -> dict:
    """Validate a snapshot's fields but its figures (``tensors``); ``index`` is its file's.

    ``with_tensors``: ``snap`` is the whole snapshot (else a journal entry's copy of it,
    without ``tensors``).
    """
    if not isinstance(snap, dict) or snap.get("format") != SNAPSHOT_FORMAT:
        raise SchemaError("not a weightwatch snapshot")
    if not is_int(snap.get("version")) or snap["version"] != VERSION:
        raise SchemaError(f"unsupported snapshot version {_short(snap.get('version'))}")
    required = SNAPSHOT_KEYS if with_tensors else SNAPSHOT_KEYS[:-1]
    for key in required:
        if key not in snap:
            raise SchemaError(f'missing "{key}"')
    for key in snap:
        if key not in required and key not in OPTIONAL_SNAPSHOT_KEYS:
            raise SchemaError(f'unknown key "{key}"'
                              f"{did_you_mean(key, (*required, *OPTIONAL_SNAPSHOT_KEYS))}")
    record = _whole(snap["record"], '"record"')
    if record != index:
        raise SchemaError(f'"record" is {record}, but the file is {record_name(index)} '
                          "(a record copied or renamed over another?)")
    _whole(snap["epoch"], '"epoch"')
    _whole(snap["step"], '"step"', nullable=True)
    trigger = snap["kind"]
    if trigger not in TRIGGERS:
        raise SchemaError(f'"kind" must be one of {", ".join(TRIGGERS)}, got {_short(trigger)}'
                          f"{did_you_mean(trigger, TRIGGERS) if isinstance(trigger, str) else ''}")
    batch = snap["batch"]
    if trigger in ("batch", "guard"):
        _whole(batch, f'"batch" of a {trigger} record', minimum=1)
    elif batch is not None:
        raise SchemaError(f'"batch" of a{"n" if trigger == "epoch" else ""} {trigger} record '
                          f"must be null, got {_short(batch)}")
    wall = snap["time"]
    if wall is not None and not (is_number(wall) and math.isfinite(wall)):
        raise SchemaError(f'"time" must be a number or null, got {_short(wall)}')
    logs = snap["logs"]
    if not isinstance(logs, dict):
        raise SchemaError(f'"logs" must be an object {{name: number or null}}, got {_short(logs)}')
    for key, value in logs.items():
        check_name(key, "a log name")
        if value is not None and not (is_number(value) and math.isfinite(value)):
            raise SchemaError(f"log {key!r} must be a number or null, got {_short(value)}")
    if "digest" in snap and not is_digest(snap["digest"]):
        raise SchemaError(f'"digest" must be {HEX_DIGITS} hexadecimal digits, got {_short(snap["digest"])}')
    tensors_file = snap["tensors_file"]
    if tensors_file is not None and tensors_file != record_name(index, ".npz"):
        raise SchemaError(f'"tensors_file" must be null or {record_name(index, ".npz")!r} (a file of '
                          f"this record in the run directory), got {_short(tensors_file)}")
    return snap


def _column_kinds(columns) -> tuple:
    return tuple("flag" if c in FLAG_COLUMNS else "count" if c in COUNT_COLUMNS else "float"
                 for c in columns)


_ALLOWED = {"flag": (bool, type(None)), "count": (int, float, type(None)),
            "float": (int, float, type(None))}
_TYPE_WORD = {"flag": "true, false or null", "count": "a whole number or null",
              "float": "a number or null"}


def row_width_ok(width: int, ncols: int) -> bool:
    """Whether a row of ``width`` figures fits a run of ``ncols`` columns.

    Columns are only ever appended, so a record written by a weightwatch that
    knew fewer of them (an old run continued by a newer version) has shorter
    rows: they hold the first columns, and the rest are read as null.
    """
    return min(ncols, len(FIRST_COLUMNS)) <= width <= ncols


def check_rows(rows, columns, *, names_ok: set | None = None, ranges: bool = True) -> tuple[list, np.ndarray]:
    """A snapshot's ``tensors``: ``(paths, values)``, values float64 with NaN for null.

    Every figure's JSON type is checked against its column (a flag is true,
    false or null; every other figure a number or null, never a boolean),
    then (``ranges``) every range (:func:`check_values`).  ``names_ok`` caches the
    tensor paths already found valid, between the records of a run.
    """
    if not isinstance(rows, dict):
        raise SchemaError(f'"tensors" must be an object {{path: row}}, got {_short(rows)}')
    ncols = len(columns)
    kinds = _column_kinds(columns)
    names_ok = set() if names_ok is None else names_ok
    if not names_ok.issuperset(rows):
        for path in rows:
            if path not in names_ok:
                names_ok.add(check_name(path, "a tensor path"))
    # A row's types as one tuple: a run's rows have a handful of distinct ones, each judged once.
    # (A row that is no list gives the types of its characters or keys, or a TypeError.)
    try:
        signatures = [tuple(map(type, row)) for row in rows.values()]
    except TypeError:
        signatures = None
    verdicts: dict = {}
    for signature in (set(signatures) if signatures is not None else (None,)):
        verdicts[signature] = (
            None if signature is not None and row_width_ok(len(signature), ncols) and all(
                t in _ALLOWED[k] for t, k in zip(signature, kinds)) else signature)
    if any(v is not None for v in verdicts.values()) or signatures is None:
        for path, row in rows.items():
            if type(row) is not list or not row_width_ok(len(row), ncols):
                raise SchemaError(f"tensor {path!r}: expected {ncols} numbers (a list of {ncols} figures), "
                                  f"got {_short(row)}")
            bad = next((i for i, (v, k) in enumerate(zip(row, kinds)) if type(v) not in _ALLOWED[k]), -1)
            if bad >= 0:
                raise SchemaError(f"tensor {path!r}: {columns[bad]!r} must be {_TYPE_WORD[kinds[bad]]}, "
                                  f"got {_short(row[bad])}")
    paths = list(rows)
    widths = {len(row) for row in rows.values()}
    if len(widths) > 1:  # an older writer's record is short in every row, never in one
        short = min(widths)
        path = next(p for p, row in rows.items() if len(row) == short)
        raise SchemaError(f"tensor {path!r}: expected {ncols} numbers (a list of {ncols} figures), "
                          f"got {short}")
    try:
        listed = [row if len(row) == ncols else row + [None] * (ncols - len(row)) for row in rows.values()]
        values = np.array(listed, dtype=np.float64) if rows else np.empty((0, ncols))
    except OverflowError:
        path = next(p for p, row in rows.items() if any(is_int(v) and abs(v) > MAX_INT for v in row))
        raise SchemaError(f"tensor {path!r}: a figure too large for a number") from None
    if ranges:
        check_values(values, columns, paths)
    return paths, values


def _rows_ok(values: np.ndarray, columns) -> np.ndarray:
    """Per row of ``values`` (tensors x columns, NaN for null): whether every figure is in range."""
    col = {c: i for i, c in enumerate(tuple(columns)[:values.shape[1]])}

    def at(names):
        return [col[c] for c in names if c in col]

    with np.errstate(invalid="ignore"):
        nan = np.isnan(values)
        ok = ~np.isinf(values).any(axis=1)
        ok &= ~nan[:, at(REQUIRED_FIGURES)].any(axis=1)
        f = values[:, at(FLAG_COLUMNS)]
        ok &= (np.isnan(f) | (f == 0) | (f == 1)).all(axis=1)
        c = values[:, at(COUNT_COLUMNS)]
        ok &= (np.isnan(c) | ((c >= 0) & (c == np.trunc(c)) & (c <= MAX_INT))).all(axis=1)
        ok &= ~(values[:, at(NON_NEGATIVE)] < 0).any(axis=1)
        for name, (lo, hi) in INTERVALS.items():
            if name in col:
                v = values[:, col[name]]
                ok &= ~((v < lo) | (v > hi))
        if {"size", "nan", "inf"} <= col.keys():
            ok &= ~(values[:, col["nan"]] + values[:, col["inf"]] > values[:, col["size"]])
        if {"size", "dead_units"} <= col.keys():
            ok &= ~(values[:, col["dead_units"]] > values[:, col["size"]])
        if {"min", "max"} <= col.keys():
            ok &= ~(values[:, col["min"]] > values[:, col["max"]])
    return ok


def bad_blocks(blocks: list, columns) -> set:
    """Which of ``blocks`` (each a record's tensors x columns figures) hold a figure out of range:
    one vectorised pass over them all, as a run's records are many and small."""
    bad: set = set()
    by_width: dict[int, list[int]] = {}
    for k, b in enumerate(blocks):
        if b.size:
            by_width.setdefault(b.shape[1], []).append(k)
    for width, ks in by_width.items():
        ok = _rows_ok(np.concatenate([blocks[k] for k in ks]), columns)
        if not ok.all():
            ends = np.cumsum([len(blocks[k]) for k in ks])
            for row in np.flatnonzero(~ok):
                bad.add(ks[int(np.searchsorted(ends, row, side="right"))])
    return bad


def check_values(values: np.ndarray, columns, paths) -> None:
    """Ranges of a record's figures (tensors x columns, NaN for null), whatever file they came from."""
    if values.size == 0 or _rows_ok(values, columns).all():
        return
    columns = tuple(columns)[:values.shape[1]]
    col = {c: i for i, c in enumerate(columns)}
    nan = np.isnan(values)

    def fail(bad: np.ndarray, column: str, rule: str):
        t = int(np.flatnonzero(bad)[0])
        raise SchemaError(f"tensor {paths[t]!r}: {column!r} must be {rule}, got {_figure(values[t, col[column]])}")

    with np.errstate(invalid="ignore"):
        inf = np.isinf(values)
        if inf.any():
            t, c = (int(x[0]) for x in np.nonzero(inf))
            raise SchemaError(f"tensor {paths[t]!r}: {columns[c]!r} is not finite")
        for c in REQUIRED_FIGURES:
            if c in col and nan[:, col[c]].any():
                fail(nan[:, col[c]], c, "given (it is never null)")
        for c in FLAG_COLUMNS:
            if c in col:
                v = values[:, col[c]]
                fail_if = ~(np.isnan(v) | (v == 0) | (v == 1))
                if fail_if.any():
                    fail(fail_if, c, "true, false or null")
        for c in COUNT_COLUMNS:
            if c in col:
                v = values[:, col[c]]
                fail_if = ~(np.isnan(v) | ((v >= 0) & (v == np.trunc(v)) & (v <= MAX_INT)))
                if fail_if.any():
                    fail(fail_if, c, "a whole number >= 0 or null")
        for c in NON_NEGATIVE:
            if c in col:
                fail_if = values[:, col[c]] < 0
                if fail_if.any():
                    fail(fail_if, c, ">= 0 or null")
        for c, (lo, hi) in INTERVALS.items():
            if c in col:
                v = values[:, col[c]]
                fail_if = (v < lo) | (v > hi)
                if fail_if.any():
                    fail(fail_if, c, f"in [{lo:g}, {hi:g}] or null")
        if {"size", "nan", "inf"} <= col.keys():
            fail_if = values[:, col["nan"]] + values[:, col["inf"]] > values[:, col["size"]]
            if fail_if.any():
                fail(fail_if, "nan", "at most 'size' less 'inf'")
        if {"size", "dead_units"} <= col.keys():
            fail_if = values[:, col["dead_units"]] > values[:, col["size"]]
            if fail_if.any():
                fail(fail_if, "dead_units", "at most 'size'")
        if {"min", "max"} <= col.keys():
            fail_if = values[:, col["min"]] > values[:, col["max"]]
            if fail_if.any():
                fail(fail_if, "min", "at most 'max'")
    raise SchemaError(f"tensor {paths[int(np.flatnonzero(~_rows_ok(values, columns))[0])]!r}: "
                      "a figure out of its range")


def _figure(x: float):
    if math.isnan(x):
        return "null"
    return int(x) if x == int(x) and abs(x) < MAX_INT else x


# -- across records ---------------------------------------------------------------------------

def _log_group(trigger: str) -> str:
    return "batch" if trigger in ("batch", "guard") else trigger


class Sequence:
    """The checks between records, fed each readable record in order (see the module doc).

    :meth:`admit` raises :class:`SchemaError` when the record cannot be taken
    (it contradicts the records before it, or names a tensor the manifest
    lacks) and returns the problems that leave it usable (a manifest tensor or
    a log key it lacks).
    """

    def __init__(self, paths: list, first_records: list, *, sparse: bool = False):
        self._paths = paths
        self._first = list(first_records)
        self._first_arr = np.array(self._first, dtype=np.int64)
        order = sorted(range(len(paths)), key=lambda i: self._first[i])
        self._by_first = order
        self._first_sorted = [self._first[i] for i in order]
        self._sparse = sparse
        self._prev = None            # (index, epoch, step, trigger) of the last record taken
        self._logs: dict = {}        # log group -> keys logged so far
        self._reported: set = set()  # (group, key) already reported missing

    def admit(self, index: int, epoch: int, step, trigger: str, logs: dict, ids) -> list[str]:
        """Check one record: ``ids`` are its tensors' rows in the manifest's table (each once)."""
        prev = self._prev
        if prev is not None:
            p_index, p_epoch, p_step, _ = prev
            if trigger != "begin" and step is not None and p_step is not None and step < p_step:
                raise SchemaError(f'"step" went back from {p_step} (record {p_index}) to {step}')
            if epoch < p_epoch and not (trigger == "begin" or (step is not None and p_step is not None
                                                               and step > p_step)):
                raise SchemaError(f'"epoch" went back from {p_epoch} (record {p_index}) to {epoch} '
                                  "without training in between")
        firsts = self._first_arr[np.asarray(ids, dtype=np.intp)]
        if firsts.size and firsts.max() > index:
            i = int(np.asarray(ids)[np.argmax(firsts > index)])
            raise SchemaError(f"tensor {self._paths[i]!r} appears before its first_record "
                              f"({self._first[i]}) in the manifest")
        problems = []
        expected = bisect_right(self._first_sorted, index)
        if len(ids) < expected and not self._sparse:
            have = set(ids)
            missing = [self._paths[i] for i in self._by_first[:expected] if i not in have]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            problems.append(f"tensor {missing[0]!r} of the manifest is missing{more}: "
                            "a record holds every tensor from its first_record on")
        group = _log_group(trigger)
        seen = self._logs.setdefault(group, set())
        gone = [k for k in seen if k not in logs and not k.startswith("val_")
                and (group, k) not in self._reported]
        if gone:
            self._reported.update((group, k) for k in gone)
            problems.append(f"log {sorted(gone)[0]!r} of the earlier {group} records is missing"
                            + (f" (and {len(gone) - 1} more)" if len(gone) > 1 else ""))
        seen.update(logs)
        self._prev = (index, epoch, step, trigger)
        return problems
