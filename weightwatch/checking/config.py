"""Finding and merging rule configuration: built-in packs, project files, --rules.

Every source is the same kind of TOML document::

    extends = ["default"]            # built-in pack names or paths, applied first
    disable = ["loss-plateau"]       # rule ids to drop
    [override.norm-growth]           # per-rule changes: thresholds, severity, filters
    max_ratio = 5.0
    [[rule]]                         # new rules (or replacements, by id)
    id = "encoder-frozen"
    check = "unchanged"
    select = ["encoder/*"]

The project's document is ``weightwatch.toml`` or ``[tool.weightwatch]`` in
``pyproject.toml``, found by walking up from the current directory: the
nearest wins, the walk stops at the repository root or the home directory,
and a candidate in a world-writable directory is passed over (see
:func:`discover`).  Without one, the
``default`` pack applies.  ``--rules FILE`` (or ``WatchCallback(rules=...)``)
is layered on top.  The project's document may also declare ``runs`` (the run
directories the pytest plugin collects; see :mod:`.project`), which no other
document may.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RuleError, did_you_mean
from .project import (  # noqa: F401 (re-exported)
    CONFIG_NAME, MAX_RULE_FILE_BYTES, Discovery, discover, find_project_config, parse_toml, validate_runs,
)
from .rules import Rule, parse_rule

DOC_KEYS = ("extends", "disable", "override", "rule", "pack", "runs", "baseline")
#: How deep ``extends`` may nest, and how many files one configuration may load in all (a
#: chain or a diamond of extends stays far below either).
MAX_EXTENDS_DEPTH = 32
MAX_FILES = 256


def packs_dir() -> Path:
    """The built-in packs: inside the wheel, or the repository's top-level ``rules/``."""
    package = Path(__file__).resolve().parent.parent   # weightwatch/
    for candidate in (package / "rules", package.parent / "rules"):
        if candidate.is_dir():
            return candidate
    raise RuleError("built-in rule packs are missing from this installation (reinstall weightwatch)",
                    path=package / "rules")


def builtin_packs() -> dict[str, Path]:
    return {p.stem: p for p in sorted(packs_dir().glob("*.toml"))}


@dataclass
class RuleSet:
    """The rules in force, in order, and where they came from."""

    rules: list[Rule] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    #: Which project configuration applied, in words (what every report prints).
    config: str = ""
    #: The project's reference runs or baseline file (``baseline = [...]``), resolved from its folder.
    baseline: list[str] = field(default_factory=list)

    def __iter__(self):
        return iter(self.rules)

    def __len__(self):
        return len(self.rules)

    def get(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise RuleError(f'unknown rule "{rule_id}"{did_you_mean(rule_id, [r.id for r in self.rules])}')


class _Builder:
    def __init__(self):
        self.rules: dict[str, Rule] = {}
        self.sources: list[str] = []
        self.baseline: list[str] = []
        self._stack: list[Path] = []
        self._loaded = 0

    def apply_file(self, path: Path, *, section: str | None = None, default_extends=(),
                   project: bool = False):
        path = Path(path)
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_RULE_FILE_BYTES + 1)
            if len(raw) > MAX_RULE_FILE_BYTES:
                raise RuleError(f"rule file larger than {MAX_RULE_FILE_BYTES // 2 ** 20} MiB", path=path)
            text = raw.decode("utf-8")
        except FileNotFoundError:
            raise RuleError("rule file not found", path=path) from None
        except IsADirectoryError:
            raise RuleError("a directory, not a rule file", path=path) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RuleError(f"cannot read rule file ({exc})", path=path) from None
        doc = parse_toml(text, path)
        if section:
            for key in section.split("."):
                if not isinstance(doc, dict) or key not in doc:
                    raise RuleError(f"no [{section}] section: weightwatch reads its configuration "
                                    f"from [{section}] in pyproject.toml", path=path)
                doc = doc[key]
        label = f"{path}" + (f" [{section}]" if section else "")
        self.apply_doc(doc, source=str(path), label=label, text=text, base=path.parent,
                       default_extends=default_extends, project=project)

    def apply_doc(self, doc: dict, *, source: str, label: str | None = None, text: str = "",
                  base: Path | None = None, default_extends=(), project: bool = False):
        if not isinstance(doc, dict):
            raise RuleError("a rule document must be a table", path=source)
        for key in doc:
            if key not in DOC_KEYS:
                raise RuleError(f'unknown key "{key}"{did_you_mean(key, DOC_KEYS)}; '
                                f'a rule document has: {", ".join(DOC_KEYS)}',
                                path=source, line=_line_of(text, rf"^\s*\[?{re.escape(key)}\b"))
        for key in ("runs", "baseline"):
            if key in doc and not project:
                raise RuleError(f'"{key}" belongs in the project configuration (weightwatch.toml or '
                                '[tool.weightwatch] in pyproject.toml), not in a rule file',
                                path=source, line=_line_of(text, rf"^\s*{key}\s*="))
        if "runs" in doc:
            validate_runs(doc["runs"], path=source, line=_line_of(text, r"^\s*runs\s*="))
        if "baseline" in doc:
            line = _line_of(text, r"^\s*baseline\s*=")
            value = doc["baseline"]
            value = [value] if isinstance(value, str) else value
            if (not isinstance(value, list) or not value
                    or not all(isinstance(v, str) and v.strip() for v in value)):
                raise RuleError('"baseline" must be a list of reference run directories, or one baseline '
                                f"file, got {doc['baseline']!r}", path=source, line=line)
            self.baseline = [str(base / v) if base is not None else v for v in value]
        extends = doc.get("extends", list(default_extends))
        if isinstance(extends, str):
            extends = [extends]
        if not isinstance(extends, list):
            raise RuleError(f'"extends" must be a list of pack names or paths, got {extends!r}', path=source)
        for ext in extends:
            self.apply_file_guarded(self._resolve_pack(ext, base, source))
        rules = doc.get("rule", [])
        if not isinstance(rules, list):
            raise RuleError('"rule" must be an array of tables: write [[rule]]', path=source)
        for data in rules:
            rid = data.get("id") if isinstance(data, dict) else None
            line = _line_of(text, rf'^\s*id\s*=\s*["\']{re.escape(str(rid))}["\']') if rid else None
            if rid in self.rules and isinstance(data, dict) and "check" not in data:
                # Meant to tune the rule it names, most likely: say how, not only what is missing.
                raise RuleError(f'rule "{rid}" is already defined (by {self.rules[rid].source or "a pack"}) '
                                f'and this [[rule]] has no "check": to change its options, write '
                                f'[override.{rid}]; to replace it, give the new rule a "check"',
                                path=source, line=line)
            rule = parse_rule(data, source=source, line=line)
            self.rules[rule.id] = rule
        overrides = doc.get("override", {})
        if not isinstance(overrides, dict):
            raise RuleError('"override" must be a table of tables: [override.RULE_ID]', path=source)
        for rid, changes in overrides.items():
            line = _line_of(text, rf"^\s*\[override\.{re.escape(rid)}\]")
            if rid not in self.rules:
                raise RuleError(f'override for unknown rule "{rid}"{did_you_mean(rid, self.rules)}',
                                path=source, line=line)
            if not isinstance(changes, dict) or "id" in changes or "check" in changes:
                raise RuleError(f'override of "{rid}" must be a table of options (not id or check)',
                                path=source, line=line)
            self.rules[rid] = self.rules[rid].with_overrides(
                changes, source=f"{source}:{line}" if line else source)
        disable = doc.get("disable", [])
        if isinstance(disable, str):
            disable = [disable]
        if not isinstance(disable, list):
            raise RuleError(f'"disable" must be a list of rule ids, got {disable!r}', path=source,
                            line=_line_of(text, r"^\s*disable\b"))
        for rid in disable:
            if not isinstance(rid, str):
                raise RuleError(f'"disable" entries are rule ids (strings), got {rid!r}', path=source,
                                line=_line_of(text, r"^\s*disable\b"))
            if rid not in self.rules:
                raise RuleError(f'cannot disable unknown rule "{rid}"{did_you_mean(rid, self.rules)}',
                                path=source, line=_line_of(text, r"^\s*disable\b"))
            del self.rules[rid]
        if (label or source) not in self.sources:  # a pack extended twice is listed once
            self.sources.append(label or source)

    def _resolve_pack(self, name: str, base: Path | None, source: str) -> Path:
        if not isinstance(name, str):
            raise RuleError(f'"extends" entries are strings, got {name!r}', path=source)
        packs = builtin_packs()
        if name in packs:
            path = packs[name]
        else:
            path = Path(name) if base is None else base / name
            if not path.exists():
                raise RuleError(f'extends "{name}": no such pack{did_you_mean(name, packs)} '
                                f'(built-in packs: {", ".join(packs)}) and no such file', path=source)
        path = path.resolve()
        if path in self._stack:
            raise RuleError(f'extends "{name}" makes a cycle', path=source)
        if len(self._stack) >= MAX_EXTENDS_DEPTH:
            raise RuleError(f'extends "{name}": extends nested more than {MAX_EXTENDS_DEPTH} deep', path=source)
        return path

    def apply_file_guarded(self, path, **kw):
        path = Path(path).resolve()
        self._loaded += 1
        if self._loaded > MAX_FILES:
            raise RuleError(f"more than {MAX_FILES} rule files loaded in all (extends repeated in a "
                            "chain or a diamond?)", path=self._stack[-1] if self._stack else path)
        self._stack.append(path)
        try:
            self.apply_file(path, **kw)
        finally:
            self._stack.pop()


def _line_of(text: str, pattern: str) -> int | None:
    if not text:
        return None
    rx = re.compile(pattern)
    for i, line in enumerate(text.splitlines(), 1):
        if rx.search(line):
            return i
    return None


def load_rules(rules=None, *, config: str | Path | None = None, use_project_config: bool = True,
               start: Path | None = None) -> RuleSet:
    """The rules in force: project configuration (or ``default``) plus ``rules``.

    ``rules`` is a path, a rule document as a dict, a :class:`RuleSet`, or a
    list of paths and dicts, each layered on top in order.  ``config`` names
    the project document explicitly instead of discovering it.
    """
    if isinstance(rules, RuleSet):
        return rules
    b = _Builder()
    found, ignored = None, []
    if config is not None:
        config = Path(config)
        found = (config, "tool.weightwatch" if config.name == "pyproject.toml" else None)
        said = f"{config}" + (" [tool.weightwatch]" if found[1] else "") + " (--config)"
    elif use_project_config:
        discovery = discover(start)
        found, ignored = discovery.found, discovery.ignored
        said = (f"{found[0]}" + (" [tool.weightwatch]" if found[1] else "") if found
                else "none found, the built-in default pack")
    else:
        said = "none (--no-config), the built-in default pack"
    if ignored:
        said += "; ignored " + ", ".join(ignored)
    if found:
        b.apply_file_guarded(found[0], section=found[1], default_extends=("default",), project=True)
    else:
        b.apply_file_guarded(builtin_packs()["default"])
    extra = rules if isinstance(rules, (list, tuple)) else ([] if rules is None else [rules])
    for i, item in enumerate(extra):
        if isinstance(item, dict):
            b.apply_doc(item, source=f"<rules argument {i}>")
        else:
            b.apply_file_guarded(Path(item))
    return RuleSet(list(b.rules.values()), b.sources, config=said, baseline=b.baseline)
