"""Rule files and project configuration: merging, discovery, and one-line errors."""

import textwrap

import pytest

from weightwatch.checking.config import find_project_config, load_rules
from weightwatch.errors import RuleError
from weightwatch.checking.keyword import KeywordError, compile_keyword


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def ids(ruleset):
    return [r.id for r in ruleset]


def test_default_pack_loads_and_every_rule_is_documented():
    rs = load_rules(use_project_config=False)
    assert "nonfinite-weights" in ids(rs) and "frozen-changed" in ids(rs)
    for r in rs:
        assert r.rationale and r.hint, r.id


def test_strict_pack_tightens_default():
    default = load_rules(use_project_config=False)
    strict = load_rules(use_project_config=False, config=None, rules=None)
    from weightwatch.checking.config import builtin_packs

    strict = load_rules([builtin_packs()["strict"]], use_project_config=False)
    assert ids(strict) == ids(default)
    assert strict.get("exploding-norm").options["max_ratio"] < default.get("exploding-norm").options["max_ratio"]
    assert strict.get("update-ratio").severity == "error"


def test_project_config_overrides_disables_and_adds(tmp_path):
    cfg = write(tmp_path / "weightwatch.toml", """
        disable = ["loss-plateau"]
        [override.exploding-norm]
        max_ratio = 8.0
        severity = "warning"
        [[rule]]
        id = "encoder-frozen"
        check = "unchanged"
        select = ["encoder/*"]
    """)
    rs = load_rules(config=cfg)
    assert "loss-plateau" not in ids(rs)
    assert rs.get("exploding-norm").options["max_ratio"] == 8.0
    assert rs.get("exploding-norm").severity == "warning"
    assert rs.get("encoder-frozen").select == ("encoder/*",)
    assert str(cfg) in rs.sources[-1]


def test_extends_empty_starts_from_nothing(tmp_path):
    cfg = write(tmp_path / "weightwatch.toml", """
        extends = []
        [[rule]]
        id = "only"
        check = "nonfinite"
    """)
    assert ids(load_rules(config=cfg)) == ["only"]


def test_rules_argument_layers_on_top(tmp_path):
    extra = write(tmp_path / "ci.toml", """
        [override.dead-units]
        max_fraction = 0.9
    """)
    rs = load_rules([extra, {"disable": ["update-ratio"]}], use_project_config=False)
    assert rs.get("dead-units").options["max_fraction"] == 0.9
    assert "update-ratio" not in ids(rs)


def test_discovery_nearest_wins_and_stops_at_repo_root(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    write(tmp_path / "weightwatch.toml", "disable = ['loss-plateau']\n")  # outside the repo
    write(repo / "pyproject.toml", """
        [project]
        name = "x"
        [tool.weightwatch]
        disable = ["update-ratio"]
    """)
    sub = repo / "train" / "exp"
    sub.mkdir(parents=True)
    assert find_project_config(sub) == (repo / "pyproject.toml", "tool.weightwatch")
    assert "update-ratio" not in ids(load_rules(start=sub))
    write(repo / "train" / "weightwatch.toml", "disable = ['dead-units']\n")
    assert find_project_config(sub)[0] == repo / "train" / "weightwatch.toml"
    # a pyproject without [tool.weightwatch] is not a config; the walk stops at .git
    other = tmp_path / "other"
    (other / ".git").mkdir(parents=True)
    write(other / "pyproject.toml", "[project]\nname='y'\n")
    assert find_project_config(other) is None


@pytest.mark.parametrize("text, expected", [
    ("[[rule]]\nid = 'a'\ncheck = 'nonfinite'\nseverity = 'fatal'\n", r'rule "a": severity'),
    ("[[rule]]\nid = 'a'\ncheck = 'norm-growht'\n", r'unknown check "norm-growht" \(did you mean "norm-growth"\?\)'),
    ("[[rule]]\nid = 'a'\ncheck = 'norm-growth'\nmax_ratoi = 2\n", r'unknown option "max_ratoi" .*did you mean "max_ratio"'),
    ("[[rule]]\nid = 'a'\ncheck = 'norm-growth'\nmax_ratio = 'big'\n", r'option "max_ratio" must be a number'),
    ("[[rule]]\nid = 'a'\ncheck = 'nonfinite'\npatience = 0\n", r'"patience" must be an integer >= 1'),
    ("[[rule]]\nid = 'a'\ncheck = 'nonfinite'\nrole = ['kernal']\n", r'unknown tensor role "kernal" \(did you mean "kernel"\?\)'),
    ("[[rule]]\nid = 'a'\ncheck = 'nonfinite'\nkind = ['kernal']\n", r'unknown tensor role "kernal" \(did you mean "kernel"\?\)'),
    ("[[rule]]\nid = 'a'\ncheck = 'norm-limit'\nmetric = 'rsm'\n",
     r'option "metric" must be one of absmax, l2, rms, got \'rsm\' \(did you mean "rms"\?\)'),
    ("[[rule]]\nid = 'a'\ncheck = 'loss-plateau'\nwindow = 0\n", r'option "window" must be >= 1, got 0'),
    ("[[rule]]\nid = 'a'\ncheck = 'norm-growth'\nmax_ratio = 0.5\n", r'option "max_ratio" must be > 1, got 0.5'),
    ("[[rule]]\nid = 'a'\ncheck = 'update-ratio'\nmin = 2.0\nmax = 1.0\n", r'"min" \(2\) must be below "max" \(1\)'),
    ("[[rule]]\nid = 'a'\ncheck = 'nonfinite-log'\nkeys = []\n", r'"keys" must be a non-empty list'),
    ("[[rule]]\nid = 'a'\ncheck = 'nonfinite'\nmessage = '{tensr} went bad'\n",
     r'unknown placeholder \{tensr\} in message \(did you mean "tensor"\?\)'),
    ("[[rule]]\nid = 'a'\ncheck = 'nonfinite'\nafter = 3\nuntil = 2\n", r'"until" \(2\) is before "after" \(3\)'),
    ("extends = ['defualt']\n", r'extends "defualt": no such pack \(did you mean "default"\?\)'),
    ("[override.no-such-rule]\nmax_ratio = 2\n", r'override for unknown rule "no-such-rule"'),
    # a built-in rule "redefined" to tune it: pointed at [override.ID]
    ("[[rule]]\nid = 'exploding-norm'\nmax_ratio = 8\n",
     r'rule "exploding-norm" is already defined \(by .*default.toml:\d+\) .*write \[override.exploding-norm\]'),
    ("[[rule]]\nid = 'a'\nmax_ratio = 8\n", r'rule "a": missing "check"'),
    ("disable = ['nonfinite-weight']\n", r'cannot disable unknown rule "nonfinite-weight" \(did you mean "nonfinite-weights"\?\)'),
    ("rules = []\n", r'unknown key "rules" \(did you mean "rule"\?\)'),
])
def test_bad_rule_files_give_one_clear_line(tmp_path, text, expected):
    cfg = write(tmp_path / "weightwatch.toml", text)
    with pytest.raises(RuleError, match=expected) as info:
        load_rules(config=cfg)
    message = str(info.value)
    assert message.startswith(str(cfg)) and "\n" not in message


def test_invalid_toml_names_file_and_line(tmp_path):
    cfg = write(tmp_path / "weightwatch.toml", "[override.dead-units]\nmax_fraction = = 2\n")
    with pytest.raises(RuleError) as info:
        load_rules(config=cfg)
    assert str(info.value).startswith(f"{cfg}:2: invalid TOML")


def test_rule_error_names_the_line_of_the_rule(tmp_path):
    cfg = write(tmp_path / "weightwatch.toml",
                "[[rule]]\nid = 'ok'\ncheck = 'nonfinite'\n\n[[rule]]\nid = 'bad'\ncheck = 'nope'\n")
    with pytest.raises(RuleError, match=rf"^{cfg}:6: rule \"bad\""):
        load_rules(config=cfg)


def test_message_templates_cannot_reach_attributes(tmp_path):
    cfg = write(tmp_path / "weightwatch.toml", """
        [[rule]]
        id = "a"
        check = "nonfinite"
        message = "{tensor.__class__} {value:g}"
    """)
    rule = load_rules(config=cfg).get("a")
    assert rule.format_message(tensor="x", value=2.0) == "{tensor.__class__} 2"


class R:
    def __init__(self, id, check="nonfinite", severity="error"):
        self.id, self.check, self.severity = id, check, severity


@pytest.mark.parametrize("expr, matches", [
    ("frozen", ["frozen-changed"]),
    ("not loss", ["frozen-changed", "nonfinite-weights"]),
    ("loss and not plateau", ["loss-diverging"]),
    ("(frozen or plateau) and not nothing", ["frozen-changed", "loss-plateau"]),
])
def test_keyword_expressions(expr, matches):
    rules = [R("frozen-changed"), R("nonfinite-weights"), R("loss-diverging"), R("loss-plateau")]
    match = compile_keyword(expr)
    assert [r.id for r in rules if match(r)] == matches


@pytest.mark.parametrize("expr", ["", "a and", "(a", "a b", "or a", "__import__('os')"])
def test_bad_keyword_expressions(expr):
    with pytest.raises(KeywordError):
        compile_keyword(expr)
