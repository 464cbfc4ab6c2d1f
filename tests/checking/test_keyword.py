"""``-k`` expressions: pytest's grammar, parsed without eval."""

from types import SimpleNamespace

import re

import pytest

from weightwatch.checking.keyword import KeywordError, compile_keyword

RULES = [SimpleNamespace(id=i, check=c, severity=s, check_def=SimpleNamespace(keywords=k))
         for i, c, s, k in (
             ("nonfinite-weights", "nonfinite", "error", ("nan", "inf")),
             ("frozen-changed", "unchanged", "error", ()),
             ("loss-plateau", "loss-plateau", "warning", ()),
             ("update-ratio", "update-ratio", "warning", ()),
         )]


def selected(expr):
    match = compile_keyword(expr)
    return [r.id for r in RULES if match(r)]


@pytest.mark.parametrize("expr, want", [
    ("frozen", ["frozen-changed"]),
    ("FROZEN", ["frozen-changed"]),
    ("not plateau", ["nonfinite-weights", "frozen-changed", "update-ratio"]),
    ("warning", ["loss-plateau", "update-ratio"]),
    ("unchanged", ["frozen-changed"]),
    ("ratio and warning", ["update-ratio"]),
    ("frozen or plateau", ["frozen-changed", "loss-plateau"]),
    ("not (frozen or warning)", ["nonfinite-weights"]),
    ("not frozen and not warning", ["nonfinite-weights"]),
    ("nonfinite or loss and not plateau", ["nonfinite-weights"]),   # and binds tighter than or
    # pytest matches substrings of names and keywords, case-insensitively:
    ("unch", ["frozen-changed"]),                   # a substring of the check
    ("WARN", ["loss-plateau", "update-ratio"]),     # of the severity
    ("nan", ["nonfinite-weights"]),                 # a keyword of the check
    ("nan or frozen", ["nonfinite-weights", "frozen-changed"]),   # the README's example
])
def test_grammar_and_matching(expr, want):
    assert selected(expr) == want


@pytest.mark.parametrize("expr, message", [
    ("", "empty expression"),
    ("frozen and", "ends too early"),
    ("(frozen", "missing ')'"),
    ("frozen)", "unexpected ')'"),
    ("or frozen", "unexpected 'or'"),
])
def test_malformed_expressions_are_one_line_errors(expr, message):
    with pytest.raises(KeywordError, match=re.escape(message)):
        compile_keyword(expr)


def test_nothing_is_evaluated():
    assert selected("__import__") == []
    with pytest.raises(KeywordError):
        compile_keyword("__import__('os').system('false')")
