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


#: How deeply parentheses and ``not`` may nest, and how long an expression may be.
MAX_DEPTH = 64
MAX_LENGTH = 10_000


def compile_keyword(expr: str):
    """Return ``match(rule) -> bool`` for a -k expression; KeywordError if malformed.

    Bounded: nesting deeper than :data:`MAX_DEPTH` or an expression longer than
    :data:`MAX_LENGTH` is refused in one line, and ``a or b or c ...`` is one
    flat node, so matching never recurses further than the nesting.
    """
    if len(expr) > MAX_LENGTH:
        raise KeywordError(f"-k: expression longer than {MAX_LENGTH:,} characters")
    tokens = _TOKEN.findall(expr)
    if not tokens:
        raise KeywordError(f"-k: empty expression {expr!r}")
    pos = 0
    shown = expr if len(expr) <= 80 else expr[:77] + "..."

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        tok = peek()
        pos += 1
        return tok

    def joined(word, operand, combine):
        """``operand (word operand)*``; several operands are combined with ``combine`` (any/all)."""
        def parse(depth):
            items = [operand(depth)]
            while peek() == word:
                take()
                items.append(operand(depth))
            return items[0] if len(items) == 1 else (lambda r, xs=tuple(items): combine(x(r) for x in xs))
        return parse

    parse_term = joined("and", lambda depth: parse_factor(depth), all)
    parse_expr = joined("or", parse_term, any)

    def parse_factor(depth):
        if depth > MAX_DEPTH:
            raise KeywordError(f"-k: parentheses or 'not' nested more than {MAX_DEPTH} deep in {shown!r}")
        tok = take()
        if tok is None:
            raise KeywordError(f"-k: expression ends too early: {shown!r}")
        if tok == "not":
            inner = parse_factor(depth + 1)
            return lambda r: not inner(r)
        if tok == "(":
            inner = parse_expr(depth + 1)
            if take() != ")":
                raise KeywordError(f"-k: missing ')' in {shown!r}")
            return inner
        if tok in (")", "and", "or"):
            raise KeywordError(f"-k: unexpected {tok!r} in {shown!r}")
        word = tok.lower()
        return lambda r: any(word in name.lower() for name in _names(r))

    node = parse_expr(0)
    if pos != len(tokens):
        raise KeywordError(f"-k: unexpected {tokens[pos]!r} in {shown!r}")
    return node
