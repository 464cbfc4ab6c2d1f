"""Shared test set-up.

* The repository root goes on ``sys.path`` so ``import weightwatch`` works
  from a plain checkout.
* TensorFlow's C++ logging is silenced before anything imports it.
* ``reference_row`` / ``assert_row_matches`` recompute a snapshot row in
  float64 numpy, the slow obvious way, to compare the recorder against.
* ``recorded_run`` is one small real Keras run (``save_tensors=True``) for
  the tests that only need *a* run directory.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def subprocess_env() -> dict:
    """Environment for a child Python that must import weightwatch from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


# -- float64 reference statistics -------------------------------------------------------

def _is_float32_or_wider(a: np.ndarray) -> bool:
    return a.dtype.kind == "f" and a.dtype.itemsize >= 4


def reference_row(x, prev=None, prevprev=None, *, units=None) -> dict:
    """Every statistic of ``tensor_row`` recomputed in float64 from first principles.

    ``prevprev`` (the tensor two records back) gives the previous update for
    ``d_cos``.  ``None`` marks an undefined figure.
    """
    x = np.asarray(x)
    x64 = x.astype(np.float64).ravel()
    nan = int(np.isnan(x64).sum())
    inf = int(np.isinf(x64).sum())
    f = x64[np.isfinite(x64)]
    row = {"size": x64.size, "nan": nan, "inf": inf}
    if f.size:
        row.update(l2=float(np.sqrt(np.sum(f * f))), mean=float(f.mean()), std=float(f.std()),
                   min=float(f.min()), max=float(f.max()), absmax=float(np.abs(f).max()),
                   zero_frac=float(np.mean(f == 0)))
    else:
        row.update(l2=None, mean=None, std=None, min=None, max=None, absmax=None, zero_frac=None)
    none = dict(d_l2=None, d_absmax=None, changed=None, dead_units=None, d_cos=None)
    if prev is None:
        row.update(none)
        return row
    p64 = np.asarray(prev).astype(np.float64).ravel()
    d = x64 - p64
    if not np.all(np.isfinite(d)):
        row.update(none, changed=True)
        return row
    row["d_l2"] = float(np.sqrt(np.sum(d * d)))
    row["d_absmax"] = float(np.abs(d).max()) if d.size else 0.0
    row["changed"] = bool(np.any(x.ravel() != np.asarray(prev).ravel()))
    row["dead_units"] = None
    if units and d.size % units == 0:
        row["dead_units"] = int(np.sum(~(d.reshape(-1, units) != 0).any(axis=0)))
    row["d_cos"] = None
    if prevprev is not None and _is_float32_or_wider(x):
        pu = p64 - np.asarray(prevprev).astype(np.float64).ravel()
        na, nb = np.linalg.norm(d), np.linalg.norm(pu)
        if np.all(np.isfinite(pu)) and na > 0 and nb > 0:
            row["d_cos"] = float(np.dot(d, pu) / (na * nb))
    return row


#: Per-statistic tolerance: (relative, absolute as a fraction of the tensor's scale).
#: Float32 inputs are summed in float32 blocks by the recorder, hence not 1e-12.
TOLERANCE = {
    "l2": (1e-5, 0.0), "std": (1e-5, 1e-7), "mean": (1e-5, 1e-6),
    "min": (1e-7, 0.0), "max": (1e-7, 0.0), "absmax": (1e-7, 0.0), "zero_frac": (1e-12, 0.0),
    "d_l2": (1e-5, 0.0), "d_absmax": (1e-6, 0.0), "d_cos": (0.0, 3e-3),
}
EXACT = ("size", "nan", "inf", "changed", "dead_units")


def _as_float(v):
    if v is None:
        return math.nan
    return float(v)


def assert_row_matches(got: dict, expected: dict, *, where: str = "", columns=None) -> None:
    """Compare a row (dict of column -> value; NaN or None = undefined) with ``reference_row``."""
    scale = expected.get("absmax") or 0.0
    dscale = expected.get("d_absmax") or 0.0
    for col in columns or (EXACT + tuple(TOLERANCE)):
        g, e = _as_float(got[col]), _as_float(expected[col])
        if math.isnan(e) or math.isnan(g):
            assert math.isnan(e) and math.isnan(g), f"{where} {col}: got {got[col]!r}, expected {expected[col]!r}"
            continue
        if col in EXACT:
            assert g == e, f"{where} {col}: got {g!r}, expected {e!r}"
            continue
        rtol, atol = TOLERANCE[col]
        ref_scale = dscale if col.startswith("d_") else scale
        tol = rtol * abs(e) + atol * (ref_scale if col != "d_cos" else 1.0)
        assert abs(g - e) <= tol, f"{where} {col}: got {g!r}, expected {e!r} (tolerance {tol:.3g})"


@pytest.fixture(scope="session")
def ref_row():
    """:func:`reference_row`, as a fixture (importing from conftest is fragile with nested conftests)."""
    return reference_row


@pytest.fixture(scope="session")
def check_row():
    """:func:`assert_row_matches`, as a fixture."""
    return assert_row_matches


@pytest.fixture(scope="session")
def child_env():
    """:func:`subprocess_env`, as a fixture."""
    return subprocess_env()


@pytest.fixture(scope="session")
def recorded_run(tmp_path_factory):
    """A real three-epoch run of a tiny Dense model, tensors saved: ``(run_dir, model weight paths)``."""
    keras = pytest.importorskip("keras")

    import weightwatch

    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(96, 6)).astype("float32")
    y = (x[:, :1] * 2.0 - x[:, 1:2]).astype("float32")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="hidden"),
                              keras.layers.Dense(1, name="out")], name="tiny")
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    run_dir = tmp_path_factory.mktemp("recorded") / "run"
    cb = weightwatch.WatchCallback(run_dir, check=False, save_tensors=True, verbose=0)
    model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[cb])
    return run_dir, [v.path for v in model.weights]


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """Build each scenario once per session, on demand; returns its opened run."""
    pytest.importorskip("keras")
    from weightwatch.run.reader import open_run

    root = tmp_path_factory.mktemp("scenarios")
    cache = {}

    def get(s):
        if s.name not in cache:
            import scenarios as sc

            run_dir, _ = sc.build(s, root)
            cache[s.name] = open_run(run_dir)
        return cache[s.name]

    return get


# -- reports of hand-written runs (tests/runbuilder.py), shared by the reporter tests ---------
@pytest.fixture(scope="session")
def rules():
    """The default pack, without project configuration."""
    from weightwatch.checking.config import load_rules

    return load_rules(use_project_config=False)


@pytest.fixture(scope="session")
def healthy(rules, tmp_path_factory):
    from runbuilder import write_healthy_run

    from weightwatch.checking.engine import evaluate
    from weightwatch.run.reader import open_run

    return evaluate(open_run(write_healthy_run(tmp_path_factory.mktemp("reports") / "healthy")), rules)


@pytest.fixture(scope="session")
def nan_report(rules, tmp_path_factory):
    from runbuilder import write_nan_run

    from weightwatch.checking.engine import evaluate
    from weightwatch.run.reader import open_run

    return evaluate(open_run(write_nan_run(tmp_path_factory.mktemp("reports") / "nan")), rules)


@pytest.fixture(scope="session")
def plateau(rules, tmp_path_factory):
    """A run whose loss never improves: loss-plateau warns at record 6."""
    from runbuilder import MLP, write_run

    from weightwatch.checking.engine import evaluate
    from weightwatch.run.reader import open_run

    records = [{"logs": {"loss": 1.0} if i else {}} for i in range(8)]
    return evaluate(open_run(write_run(tmp_path_factory.mktemp("j") / "plateau", MLP, records)), rules)


@pytest.fixture(autouse=True)
def _no_job_summary(monkeypatch):
    """Tests run under GitHub Actions must not append to the real job summary."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
