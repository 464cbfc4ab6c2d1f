"""weightwatch: pytest for neural-network training runs.

``WatchCallback`` records a run, ``open_run`` reads one, ``check`` runs the
rules over it and ``restore`` loads the last healthy weights back into a
model.  Only ``WatchCallback`` and ``restore`` need Keras, and they import it
on first use, so reading and checking runs never imports TensorFlow.

The package has four wings with one-way imports (see the README's "Design
notes"): :mod:`.run` <- :mod:`.checking` <- :mod:`.output` <- :mod:`.recording`,
then the CLI.  This module's names are the public API; module paths below it
are internal.
"""

from ._version import __version__  # noqa: E402,F401

from .errors import (  # noqa: E402
    BaselineError,
    CheckHalted,
    ChecksFailed,
    ExitCode,
    RuleError,
    RestoreError,
    RunDirLockedError,
    RunDirNotEmptyError,
    RunFormatError,
    RunNotFoundError,
    WeightwatchError,
)

__all__ = [
    "WatchCallback", "open_run", "Run", "check", "restore", "load_rules", "ExitCode",
    "WeightwatchError", "RunFormatError", "RunNotFoundError", "RunDirNotEmptyError", "RunDirLockedError",
    "RuleError", "RestoreError", "BaselineError", "CheckHalted", "ChecksFailed", "Report",
    "learn_baseline", "load_baseline", "Baseline",
]

_LAZY = {
    # Loaded on first use: `weightwatch --version` and `--help` need neither numpy
    # nor Keras, and only the callback and restore need Keras.
    "open_run": ("run.reader", "open_run"),
    "Run": ("run.model", "Run"),
    "WatchCallback": ("recording.keras_callback", "WatchCallback"),
    "restore": ("recording.keras_restore", "restore"),
    "check": ("checking.engine", "check"),
    "Report": ("checking.report", "Report"),
    "load_rules": ("checking.config", "load_rules"),
    "learn_baseline": ("checking.baseline", "learn_baseline"),
    "load_baseline": ("checking.baseline_file", "load_baseline"),
    "Baseline": ("checking.baseline", "Baseline"),
}


def __getattr__(name):
    # PEP 562 lazy attributes.
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'weightwatch' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
