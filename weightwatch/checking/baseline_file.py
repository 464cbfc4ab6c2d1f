"""The baseline file: learnt bands without the reference runs (``weightwatch baseline learn``).

CI keeps one small file instead of whole reference runs.  Strict JSON,
versioned (``"format": "weightwatch-baseline", "version": 2``)::

    {"format": "weightwatch-baseline", "version": 2, "weightwatch": "0.3.0",
     "references": [{"run": "runs/main-s0", "records": 11, "tensors": 8, "model": "sequential"}],
     "records": [{"epoch": 0, "batch": null, "step": 0, "trigger": "begin",
                  "key": ["epoch", 0, 0], "prev": null}, ...],
     "tensors": [{"path": "dense/kernel", "shape": [8, 16], "role": "kernel"}, ...],
     "metrics": {"l2": {"center": {"float32": "<base64>"}, "sigma": {"float32": "<base64>"}}, ...},
     "logs": {"loss": {"center": [...], "sigma": [...]}},
     "notes": ["..."]}

``metrics`` holds (records x tensors) arrays, ``logs`` one value per record;
every number is log10 of the figure (``center``: the references' median;
``sigma``: their spread, range / d2(k) for k <= 9 references, 1.4826 x their
median absolute deviation from 10 on), NaN (JSON ``null``) where undefined.
A metrics array is ``{"float32": ...}``: the little-endian float32 values,
records major, base64-encoded; logs (a few numbers each) and every array of
a version-1 file are nested lists of numbers rounded to 5 significant
digits.  Why binary in JSON: a baseline of 1,000 records x 200 tensors holds
2.4 million numbers, and parsing them as text cost more than checking the
run; as base64 the file stays strict JSON, is read in a few milliseconds and
is 30% smaller.

The figures are ``l2``, ``update_ratio``, ``grad_rms`` and ``incoherence``
(1 - cos between consecutive updates), and ``rel_update_ratio`` /
``rel_grad_rms``: the first two relative to the run's median kernel at each
record (the tensors' ``role`` says which are kernels and embeddings; a file
without roles has no relative bands).  This weightwatch writes version 2 and
reads versions 1 and 2; a reader refuses any other format or version, and
any array of the wrong shape or encoding, with one line naming the file.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import numpy as np

from .._version import __version__
from ..errors import BaselineError, RunFormatError
from ..run.files import read_bytes
from ..run.jsonio import dumps, loads, write_json
from ..run.model import Run
from ..run.schema import TRIGGERS
from .baseline import ALL_METRICS, Band, Baseline, TensorRef, learn_baseline

FORMAT = "weightwatch-baseline"
VERSION = 2
#: The versions this weightwatch reads (1: every array a nested list of numbers).
READS = (1, 2)
#: A baseline file is read whole: 1,000 records x 200 tensors x 6 figures is about 13 MB.
MAX_BYTES = 512 * 2 ** 20
SIGNIFICANT = 5


def _packed(a: np.ndarray) -> dict:
    """A metrics array as ``{"float32": base64}`` (little-endian, C order)."""
    return {"float32": base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")}


def _rows(a: np.ndarray, significant: int = SIGNIFICANT) -> list:
    """Rounded, with null for NaN (strict JSON)."""
    r = np.asarray(a, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mag = np.where(np.isfinite(r) & (r != 0), np.floor(np.log10(np.abs(np.where(r == 0, 1, r)))), 0)
    scale = 10.0 ** (significant - 1 - mag)
    rounded = np.round(r * scale) / scale
    obj = rounded.astype(object)
    obj[~np.isfinite(r)] = None
    return obj.tolist()


def baseline_to_dict(b: Baseline) -> dict:
    return {
        "format": FORMAT, "version": VERSION, "weightwatch": __version__,
        "references": b.references, "records": b.records,
        "tensors": [{"path": t.path, "shape": None if t.shape is None else list(t.shape), "role": t.role}
                    for t in b.tensors],
        "metrics": {m: {"center": _packed(band.center), "sigma": _packed(band.sigma)}
                    for m, band in b.metrics.items()},
        "logs": {k: {"center": _rows(band.center[:, 0]), "sigma": _rows(band.sigma[:, 0])}
                 for k, band in b.logs.items()},
        "notes": list(b.notes),
    }


def write_baseline(b: Baseline, path) -> Path:
    path = Path(path)
    try:
        write_json(path, baseline_to_dict(b))
    except OSError as exc:
        raise BaselineError(f"cannot write the baseline file ({exc.strerror or exc})", path=path) from None
    return path


def baseline_json(b: Baseline) -> bytes:
    return dumps(baseline_to_dict(b))


def read_baseline(path) -> Baseline:
    path = Path(path)
    try:
        # The user named this file: follow a link to it (run files refuse links, this is none).
        doc = loads(read_bytes(path.resolve(), limit=MAX_BYTES))
    except RunFormatError as exc:
        raise BaselineError(exc.message, path=path) from None
    except OSError as exc:
        raise BaselineError(f"cannot read the baseline file ({exc.strerror or exc})", path=path) from None
    except ValueError as exc:
        raise BaselineError(f"not a baseline file: not strict JSON ({exc})", path=path) from None
    return baseline_from_dict(doc, path)


def baseline_from_dict(doc, path) -> Baseline:
    def bad(what: str):
        return BaselineError(f"not a valid baseline file: {what}", path=path)

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise bad(f'no "format": "{FORMAT}" (write one with `weightwatch baseline learn`)')
    if not _is_int(doc.get("version")) or doc.get("version") not in READS:
        raise BaselineError(f"baseline file version {doc.get('version')!r}; this weightwatch reads "
                            f"versions {' and '.join(map(str, READS))} (learn it again with this version)",
                            path=path)
    for key, kind in (("references", list), ("records", list), ("tensors", list), ("metrics", dict),
                      ("logs", dict)):
        if not isinstance(doc.get(key), kind):
            raise bad(f'"{key}" must be {"a list" if kind is list else "an object"}')
    refs = doc["references"]
    if not refs or not all(isinstance(r, dict) and isinstance(r.get("run"), str) for r in refs):
        raise bad('"references" must list at least one {"run": ...}')
    records = []
    for i, r in enumerate(doc["records"]):
        key = r.get("key") if isinstance(r, dict) else None
        if (not isinstance(r, dict) or not _is_int(r.get("epoch")) or not isinstance(key, list)
                or len(key) != 3 or key[0] not in ("epoch", "batch") or not all(_is_int(k) for k in key[1:])
                or not (r.get("prev") is None or (_is_int(r["prev"]) and 0 <= r["prev"] < i))):
            raise bad(f"record {i} is not an object with epoch, key and prev")
        if (not all(r.get(k) is None or _is_int(r.get(k)) for k in ("batch", "step"))
                or r.get("trigger") not in (None, *TRIGGERS)):
            raise bad(f"record {i}: batch and step must be whole numbers, trigger one of "
                      f"{', '.join(TRIGGERS)}")
        records.append({"epoch": r["epoch"], "batch": r.get("batch"), "step": r.get("step"),
                        "trigger": r.get("trigger"), "key": key, "prev": r.get("prev")})
    if not records:
        raise bad("no record")
    tensors = []
    for i, t in enumerate(doc["tensors"]):
        shape = t.get("shape") if isinstance(t, dict) else None
        if (not isinstance(t, dict) or not isinstance(t.get("path"), str)
                or not (shape is None or (isinstance(shape, list) and all(_is_int(s) for s in shape)))
                or not (t.get("role") is None or isinstance(t.get("role"), str))):
            raise bad(f"tensor {i} is not an object with a path, a shape and a role")
        tensors.append(TensorRef(t["path"], None if shape is None else tuple(shape), t.get("role")))
    R, T = len(records), len(tensors)
    metrics = {}
    for name, band in doc["metrics"].items():
        if name not in ALL_METRICS:
            raise bad(f'unknown figure "{name}" in "metrics" (known: {", ".join(ALL_METRICS)})')
        metrics[name] = _band(band, (R, T), f'metrics "{name}"', bad)
    logs = {}
    for key, band in doc["logs"].items():
        b = _band(band, (R,), f'logs "{key}"', bad)
        logs[key] = Band(b.center[:, None], b.sigma[:, None])
    notes = doc.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise bad('"notes" must be a list of strings')
    return Baseline(refs, records, tensors, metrics, logs, notes, source=str(path))


def _band(band, shape, what, bad) -> Band:
    if not isinstance(band, dict):
        raise bad(f"{what} must be an object with center and sigma")
    arrays = []
    for part in ("center", "sigma"):
        try:
            raw = band[part]
            if isinstance(raw, dict):
                if set(raw) != {"float32"} or not isinstance(raw["float32"], str):
                    raise TypeError
                data = base64.b64decode(raw["float32"], validate=True)
                if len(data) != 4 * int(np.prod(shape)):
                    raise bad(f"{what} {part}: {len(data) // 4} float32 values, expected "
                              f"{int(np.prod(shape))} {shape}")
                a = np.frombuffer(data, dtype="<f4").astype(float).reshape(shape)
            else:
                # numpy reads null (None) as NaN with dtype=float, in C: a string or a ragged row
                # is a ValueError (one Python test per number cost more than parsing the file)
                a = np.array(raw, dtype=float)
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise bad(f"{what} {part}: not an array of numbers (a list, or {{\"float32\": base64}})") from None
        if a.shape != shape and not (a.size == 0 and 0 in shape):
            raise bad(f"{what} {part}: shape {a.shape}, expected {shape}")
        arrays.append(a.reshape(shape))
    return Band(*arrays)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def load_baseline(refs) -> Baseline:
    """A :class:`Baseline` from what ``--baseline`` takes: run directories (learnt here), one
    baseline file (``weightwatch baseline learn``), or a :class:`Baseline` / :class:`Run`."""
    if isinstance(refs, (Baseline, Run, str, Path)):
        refs = [refs]
    refs = list(refs)
    if not refs:
        raise BaselineError("no reference given")
    if len(refs) == 1 and isinstance(refs[0], Baseline):
        return refs[0]
    if any(isinstance(r, Baseline) for r in refs):
        raise BaselineError("a Baseline stands alone: pass it by itself, or reference runs")
    files = [r for r in refs if isinstance(r, (str, Path)) and Path(r).is_file()]
    if files:
        if len(refs) > 1:
            raise BaselineError("a baseline file stands alone: give one file, or reference run "
                                "directories (learn a file from several with `weightwatch baseline learn`)",
                                path=files[0])
        return read_baseline(files[0])
    unique, seen = [], set()
    for r in refs:
        if isinstance(r, (str, Path)):
            if not str(r).strip() or not Path(r).exists():
                raise BaselineError("no such reference run directory or baseline file", path=r)
            key = Path(r).resolve()
            if key in seen:   # the same run twice would fake a spread of zero
                continue
            seen.add(key)
        unique.append(r)
    return learn_baseline(unique)
