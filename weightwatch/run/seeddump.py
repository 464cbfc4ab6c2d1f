"""Reading folders of naive per-epoch weight dumps.

Many projects already save weights the way the well-known recipe does: a
Keras callback that writes ``<prefix><N>.json`` after epoch N holding
``{layer_name: [w.tolist() for w in layer.get_weights()]}``, with Python's
``json.dump`` (so bare ``NaN``/``Infinity`` tokens appear once training goes
bad).  ``weightwatch check`` accepts such a folder as it is.

That format has no variable names, so tensors are named ``<layer>/<i>`` by
their position in ``get_weights()``; it has no record before training and no
trainable/frozen flags, so checks that need those do not apply to it.
Statistics and deltas are computed by the same :class:`~.rows.RecordBuilder`
that recording uses.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from ..errors import RunFormatError
from .files import read_bytes
from .model import Record, Run
from .rows import RecordBuilder
from .schema import EPOCH

#: Largest dump read: the seed note's dump of a 10M-parameter model is 234 MB per epoch.
MAX_DUMP_BYTES = 4 * 2 ** 30
SEED_RE = re.compile(r"^(?P<prefix>.*?)(?P<n>\d+)\.json$")


def _seed_files(path: Path) -> dict[str, list[tuple[int, str]]]:
    groups: dict[str, list[tuple[int, str]]] = {}
    try:
        names = os.listdir(path)
    except OSError as exc:
        raise RunFormatError(f"cannot read the run directory ({exc.strerror or exc})", path=path) from None
    for name in names:
        if name.startswith("."):
            continue
        m = SEED_RE.match(name)
        if m:
            groups.setdefault(m.group("prefix"), []).append((int(m.group("n")), name))
    return groups


def looks_like_seed_run(path: Path) -> bool:
    return bool(_seed_files(path))


def open_seed_run(path: Path) -> Run:
    groups = _seed_files(path)
    if len(groups) > 1:
        names = ", ".join(repr(p + "N.json") for p in sorted(groups))
        raise RunFormatError(f"several weight-dump series in one folder ({names}); "
                             "give each run its own directory", path=path)
    (prefix, files), = groups.items()
    run = Run(path, source="seed", manifest={"format": "seed", "prefix": prefix})
    builder = RecordBuilder()
    for n, name in sorted(files):
        fp = path / name
        try:
            arrays = _parse_dump(fp)
        except RunFormatError as exc:
            run.problems.append(exc)
            continue
        builder.start(len(arrays))
        for tpath, a in arrays.items():
            builder.add(tpath, a, trainable=None, frozen=None)
        rows = builder.finish()
        record = Record(index=len(run.records), epoch=n, trigger=EPOCH, file=name)
        run.append(record, rows.paths, rows.values, rows.entries)
    if not run.records:
        raise run.problems[0]
    return run


def _parse_dump(fp: Path) -> dict[str, np.ndarray]:
    try:
        # The stdlib parser, not the strict one: json.dump wrote NaN/Infinity.
        data = json.loads(read_bytes(fp, limit=MAX_DUMP_BYTES))
    except RecursionError:
        raise RunFormatError("unreadable weight dump, skipped (lists nested too deeply)", path=fp) from None
    except RunFormatError as exc:
        raise RunFormatError(f"unreadable weight dump, skipped ({exc.message})", path=fp) from None
    except (OSError, ValueError) as exc:
        raise RunFormatError(f"unreadable weight dump, skipped ({_short(exc)})", path=fp) from None
    if not isinstance(data, dict):
        raise RunFormatError("expected an object {layer_name: [arrays]}", path=fp)
    arrays = {}
    for layer, weights in data.items():
        if not isinstance(weights, list):
            raise RunFormatError(f"layer {layer!r}: expected a list of arrays", path=fp)
        for i, w in enumerate(weights):
            tpath = f"{layer}/{i}"
            try:
                a = np.array(w)
            except (ValueError, RecursionError) as exc:
                why = ("nested deeper than the 64 dimensions an array may have" if "maximum" in str(exc)
                       else "ragged nested lists (rows of different lengths)")
                raise RunFormatError(f"tensor {tpath!r}: {why}", path=fp) from None
            if a.dtype.kind not in "biuf":
                raise RunFormatError(f"tensor {tpath!r}: holds non-numbers", path=fp)
            arrays[tpath] = a.astype(np.float64, copy=False)
    return arrays


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 120 else text[:117] + "..."
