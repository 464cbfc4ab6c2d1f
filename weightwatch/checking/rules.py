"""Rules: one declarative check, as written in TOML, validated.

A rule is data: which check to run, on which tensors, with which
thresholds, how severe a violation is and what to tell the user.  Nothing in
a rule is executed; message templates are filled by a formatter that only
knows a fixed set of plain names.

Validation follows yamllint's example: an unknown key is an error that names
the rule and offers the closest valid key.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import RuleError, did_you_mean
from ..run.schema import ROLES
# Registers the baseline checks in CHECKS.  A ``from`` import of the module itself, not ``from .
# import baseline_checks``: that form returns the package's attribute when the package already has
# one, so after a tool dropped these modules from sys.modules (pytester's in-process runs, IPython's
# autoreload) a fresh ``checks`` would be paired with the old module and lack the baseline checks.
from .baseline_checks import BASELINE_CHECK_IDS  # noqa: F401
from .checks import CHECKS, LOG

#: Rule fields and their meaning; the README's rule reference mirrors this table.
FIELDS = {
    "id": "unique name of the rule, used by -k, disable and overrides",
    "check": "the check to run (weightwatch rules --checks lists them)",
    "select": "glob patterns over tensor or layer paths the rule applies to (default: all)",
    "exclude": "glob patterns over tensor or layer paths to leave out",
    "role": "tensor roles: kernel, bias, scale, embedding, moving_stat, other",
    "kind": "older name of role",
    "trainable": "only tensors whose variable is (true) or is not (false) trainable at the record",
    "frozen": "only tensors whose layer or an ancestor has (true) or has not (false) trainable=False",
    "dtype": "'float' to skip integer and boolean variables, or a list of dtype names "
             "(['float32', 'float64']) (default: any)",
    "severity": "'error' (fails the run) or 'warning' (fails only with --strict)",
    "patience": "consecutive violating records needed before the rule fails (default 1)",
    "after": "ignore the first N records (record 0 is before training)",
    "until": "ignore the records after record N (with after: judge records after..until)",
    "message": "what a violation means; {tensor} {layer} {epoch} {where} {value} {limit} {metric} {key}, "
               "the check's options and figures are filled in",
    "hint": "how to fix it",
    "rationale": "why the rule exists and why its thresholds are what they are",
}
SEVERITIES = ("error", "warning")
#: Largest ``patience``, ``after`` and ``until``: more records than any run holds.
MAX_RECORDS = 10 ** 9
#: Largest width and precision a message template may ask for (``{value:>12.3g}``).
MAX_FORMAT_WIDTH = 200
MAX_FORMAT_PRECISION = 50


@dataclass(frozen=True)
class Rule:
    id: str
    check: str
    options: dict = field(default_factory=dict)
    select: tuple = ("*",)
    exclude: tuple = ()
    role: tuple = ()
    trainable: bool | None = None
    frozen: bool | None = None
    dtype: str | tuple = "any"
    severity: str = "error"
    patience: int = 1
    after: int = 0
    until: int | None = None
    message: str = ""
    hint: str = ""
    rationale: str = ""
    source: str = ""         # file (and line) the rule came from

    @property
    def check_def(self):
        """The :class:`~.checks.Check` this rule runs."""
        return CHECKS[self.check]

    @property
    def is_log_check(self) -> bool:
        return self.check_def.scope == LOG

    @property
    def log_keys(self) -> list[str]:
        """The training logs this rule watches ([] for a rule over tensors)."""
        return self.check_def.log_keys(self.options)

    def matches(self, *names: str) -> bool:
        """Whether a tensor known by ``names`` (its path, its layer and their aliases, see
        :meth:`~weightwatch.run.model.TensorInfo.names`) is selected and not excluded."""
        def hit(globs):
            return any(fnmatch.fnmatchcase(n, g) for n in names for g in globs)
        return hit(self.select) and not (self.exclude and hit(self.exclude))

    def format_message(self, **fields) -> str:
        template = self.message or self.check_def.message
        return render_template(template, {**self.options, **fields})

    def with_overrides(self, overrides: dict, source: str) -> "Rule":
        data = rule_to_dict(self)
        if "kind" in overrides:  # the older name of role replaces it
            data.pop("role")
        data.update(overrides)
        return parse_rule(data, source=source, line=None)


def rule_to_dict(rule: Rule) -> dict:
    d = {"id": rule.id, "check": rule.check, "select": list(rule.select),
         "exclude": list(rule.exclude), "role": list(rule.role),
         "dtype": list(rule.dtype) if isinstance(rule.dtype, tuple) else rule.dtype,
         "severity": rule.severity, "patience": rule.patience, "after": rule.after,
         **({"until": rule.until} if rule.until is not None else {}),
         "message": rule.message, "hint": rule.hint, "rationale": rule.rationale}
    if rule.trainable is not None:
        d["trainable"] = rule.trainable
    if rule.frozen is not None:
        d["frozen"] = rule.frozen
    d.update(rule.options)
    return d


def _type_name(t) -> str:
    if isinstance(t, tuple):
        if set(t) == {int, float}:
            return "number"
        return " or ".join(_type_name(x) for x in t)
    return {int: "integer", float: "number", str: "string", list: "list", bool: "boolean"}.get(t, t.__name__)


def _check_type(value, expected) -> bool:
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def _option_problem(opt, value) -> str | None:
    """Why ``value`` is not allowed for ``opt`` ("must be ..., got ..."), or None."""
    numeric = opt.type is float or (isinstance(opt.type, tuple) and float in opt.type)
    if numeric and _check_type(value, (int, float)) and not math.isfinite(float(value)):
        return f"must be finite, got {value!r}"
    if not _check_type(value, opt.type):
        return f"must be a {_type_name(opt.type)}, got {value!r}"
    if opt.choices is not None and value not in opt.choices:
        return (f"must be one of {', '.join(map(str, opt.choices))}, got {value!r}"
                f"{did_you_mean(value, opt.choices)}")
    if opt.minimum is not None and value < opt.minimum:
        return f"must be >= {opt.minimum:g}, got {value!r}"
    if opt.above is not None and value <= opt.above:
        return f"must be > {opt.above:g}, got {value!r}"
    if opt.maximum is not None and value > opt.maximum:
        return f"must be <= {opt.maximum:g}, got {value!r}"
    return None


def parse_rule(data: dict, *, source: str, line: int | None) -> Rule:
    """Validate one rule table; raise :class:`RuleError` naming the rule and key."""
    where = {"path": source, "line": line}
    if not isinstance(data, dict):
        raise RuleError("each [[rule]] must be a table", **where)
    rid = data.get("id")
    if not isinstance(rid, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", rid or ""):
        raise RuleError(f"rule has no valid id (got {rid!r}); ids are letters, digits, '-', '_' and '.'",
                        **where)
    check = data.get("check")
    if not isinstance(check, str) or check not in CHECKS:
        if check is None:
            raise RuleError(f'rule "{rid}": missing "check" (one of: {", ".join(CHECKS)})', **where)
        raise RuleError(f'rule "{rid}": unknown check "{check}"{did_you_mean(str(check), CHECKS)}; '
                        f'known checks: {", ".join(CHECKS)}', **where)
    check_def = CHECKS[check]
    options = {}
    for key, value in data.items():
        if key in FIELDS:
            continue
        if key not in check_def.options:
            raise RuleError(f'rule "{rid}": unknown option "{key}" for check "{check}"'
                            f"{did_you_mean(key, [*check_def.options, *FIELDS])}", **where)
        problem = _option_problem(check_def.options[key], value)
        if problem:
            raise RuleError(f'rule "{rid}": option "{key}" {problem}', **where)
        options[key] = value
    for key, opt in check_def.options.items():
        options.setdefault(key, opt.default)
    if check_def.validate is not None:
        problem = check_def.validate(options)
        if problem:
            raise RuleError(f'rule "{rid}": {problem}', **where)

    def strings(key, default=()):
        v = data.get(key, default)
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
            raise RuleError(f'rule "{rid}": "{key}" must be a list of strings, got {v!r}', **where)
        return tuple(v)

    def flag(key):
        v = data.get(key)
        if v is not None and not isinstance(v, bool):
            raise RuleError(f'rule "{rid}": "{key}" must be true or false, got {v!r}', **where)
        return v

    def integer(key, default, minimum):
        v = data.get(key, default)
        if not _check_type(v, int) or not minimum <= v <= MAX_RECORDS:
            raise RuleError(f'rule "{rid}": "{key}" must be an integer >= {minimum} and <= {MAX_RECORDS:,}, '
                            f"got {v!r}", **where)
        return v

    def text(key):
        v = data.get(key, "")
        if not isinstance(v, str):
            raise RuleError(f'rule "{rid}": "{key}" must be a string, got {v!r}', **where)
        return v

    severity = data.get("severity", "error")
    if severity not in SEVERITIES:
        raise RuleError(f'rule "{rid}": severity must be "error" or "warning", got {severity!r}', **where)
    if "role" in data and "kind" in data:
        raise RuleError(f'rule "{rid}": "kind" is the older name of "role"; give only "role"', **where)
    roles = strings("role" if "role" in data else "kind")
    for k in roles:
        if k not in ROLES:
            raise RuleError(f'rule "{rid}": unknown tensor role "{k}"{did_you_mean(k, ROLES)}; '
                            f'known: {", ".join(ROLES)}', **where)
    dtype = data.get("dtype", "any")
    if isinstance(dtype, (list, tuple)) and dtype and all(isinstance(d, str) and d for d in dtype):
        dtype = tuple(dtype)
    elif dtype not in ("any", "float"):
        raise RuleError(f'rule "{rid}": dtype must be "any", "float" or a list of dtype names '
                        f'(["float32", "float64"]), got {dtype!r}', **where)
    select = strings("select", ("*",)) or ("*",)
    rule = Rule(
        id=rid, check=check, options=options, select=select, exclude=strings("exclude"),
        role=roles, trainable=flag("trainable"), frozen=flag("frozen"), dtype=dtype,
        severity=severity, patience=integer("patience", 1, 1), after=integer("after", 0, 0),
        until=None if data.get("until") is None else integer("until", None, 0),
        message=text("message"), hint=text("hint"), rationale=text("rationale"),
        source=f"{source}:{line}" if line else source,
    )
    if rule.until is not None and rule.until < rule.after:
        raise RuleError(f'rule "{rid}": "until" ({rule.until}) is before "after" ({rule.after}): '
                        "the rule would judge no record", **where)
    known = {*MESSAGE_FIELDS, *check_def.options, *check_def.fields}
    for key in ("message", "hint"):
        try:
            names = render_template(getattr(rule, key), {}, check_only=True)
        except ValueError as exc:
            raise RuleError(f'rule "{rid}": bad {key} template: {exc}', **where) from None
        for name in names:
            if name not in known:
                raise RuleError(f'rule "{rid}": unknown placeholder {{{name}}} in {key}'
                                f'{did_you_mean(name, known)}; known: {", ".join(sorted(known))}',
                                **where)
    return replace(rule)


#: The names every message can use (a check adds its options and its own figures).
MESSAGE_FIELDS = ("tensor", "layer", "epoch", "record", "where", "value", "limit", "metric", "key")


_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]*))?\}")
#: Python's format-spec mini-language, so that width and precision can be bounded.
_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d+)?[,_]?(?:\.(?P<precision>\d+))?"
                   r"[bcdeEfFgGnosxX%]?", re.DOTALL)


def spec_problem(spec: str) -> str | None:
    """Why a ``{name:spec}`` format spec is refused (malformed, or too wide or precise), or None."""
    m = _SPEC.fullmatch(spec)
    if m is None:
        return f"invalid format spec {spec!r}"
    width, precision = m.group("width"), m.group("precision")
    if width is not None and (len(width) > 4 or int(width) > MAX_FORMAT_WIDTH):
        return f"format width {width} in {spec!r} is too large (at most {MAX_FORMAT_WIDTH})"
    if precision is not None and (len(precision) > 4 or int(precision) > MAX_FORMAT_PRECISION):
        return f"format precision {precision} in {spec!r} is too large (at most {MAX_FORMAT_PRECISION})"
    return None


def render_template(template: str, fields: dict, *, check_only: bool = False):
    """Fill ``{name}`` / ``{name:spec}`` from ``fields``; nothing else is evaluated.

    ``str.format`` would let a rule file reach attributes (``{x.__class__}``);
    this formatter only substitutes plain names, and shows an unknown or
    undefined one as written.  With ``check_only``, returns the names the
    template uses instead (and raises ValueError if it is malformed).
    """
    def sub(m):
        name, spec = m.group(1), m.group(2)
        if name not in fields or fields[name] is None:
            return "?" if name in fields else m.group(0)
        value = fields[name]
        if isinstance(value, (float, np.floating)) and not math.isfinite(value):
            return str(float(value))
        if spec and spec_problem(spec):  # refused when the rule loaded; never formatted
            return str(value)
        try:
            return format(value, spec or "")
        except (ValueError, TypeError):
            return str(value)
    if template.count("{") != template.count("}"):
        raise ValueError("unbalanced braces")
    if check_only:
        for m in _FIELD.finditer(template):
            problem = m.group(2) and spec_problem(m.group(2))
            if problem:
                raise ValueError(problem)
        return [m.group(1) for m in _FIELD.finditer(template)]
    return _FIELD.sub(sub, template)
