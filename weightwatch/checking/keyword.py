"""``-k EXPR``: pytest's keyword expressions over rule ids, parsed without eval.

Grammar (as pytest's): ``expr := term ('or' term)*``, ``term := factor ('and'
factor)*``, ``factor := 'not' factor | '(' expr ')' | NAME``.  A NAME matches a
rule when it is a case-insensitive substring of the rule's id, its check, its
severity or one of its check's keywords (``nan`` for the NaN checks), as
pytest matches a substring of a test's name or keywords.
"""

from __future__ import annotations

import re

from ..errors import WeightwatchError

_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")


class KeywordError(WeightwatchError):
    pass


def _names(rule) -> tuple:
    """What ``-k`` matches a rule by, as pytest matches a test by its name and keywords."""
    check = getattr(rule, "check_def", None)
    return (rule.id, rule.check, rule.severity, *(getattr(check, "keywords", ()) or ()))


def compile_keyword(expr: str):
    """Return ``match(rule) -> bool`` for a -k expression; KeywordError if malformed."""
    tokens = _TOKEN.findall(expr)
    if not tokens:
        raise KeywordError(f"-k: empty expression {expr!r}")
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        tok = peek()
        pos += 1
        return tok

    def binary(word, operand, combine):
        """``operand (word operand)*``, folded left with ``combine``."""
        def parse():
            node = operand()
            while peek() == word:
                take()
                left, right = node, operand()
                node = lambda r, a=left, b=right: combine(a(r), b(r))  # noqa: E731
            return node
        return parse

    parse_term = binary("and", lambda: parse_factor(), lambda a, b: a and b)
    parse_expr = binary("or", parse_term, lambda a, b: a or b)

    def parse_factor():
        tok = take()
        if tok is None:
            raise KeywordError(f"-k: expression ends too early: {expr!r}")
        if tok == "not":
            inner = parse_factor()
            return lambda r: not inner(r)
        if tok == "(":
            inner = parse_expr()
            if take() != ")":
                raise KeywordError(f"-k: missing ')' in {expr!r}")
            return inner
        if tok in (")", "and", "or"):
            raise KeywordError(f"-k: unexpected {tok!r} in {expr!r}")
        word = tok.lower()
        return lambda r: any(word in name.lower() for name in _names(r))

    node = parse_expr()
    if pos != len(tokens):
        raise KeywordError(f"-k: unexpected {tokens[pos]!r} in {expr!r}")
    return node
