"""Checks on raw request input, shared by both transports, made before anything
else reads it: text that every database, log and encoder can hold, and JSON that a
parser can walk without running out of stack."""

from __future__ import annotations

import re

from ..domain.errors import ValidationError

# Far deeper than any request or provider event (Stripe's nest about ten levels),
# far below where Python's parser raises RecursionError (about a thousand).
MAX_JSON_DEPTH = 64

_SURROGATE = re.compile("[\ud800-\udfff]")
# A JSON string (possessive, so an unterminated one ends the scan instead of
# backtracking), or one bracket.
_JSON_TOKENS = re.compile(rb'"(?:[^"\\]++|\\.?)*+(?:"|\Z)|[\[\]{}]', re.S)


def text_problem(value: str) -> str | None:
    """Why `value` cannot be taken as text, or None. A lone surrogate (JSON's
    "\\ud800", or undecodable header bytes) has no UTF-8 form; NUL truncates C
    strings and is refused by some databases."""
    if "\x00" in value:
        return "must not contain NUL characters"
    if _SURROGATE.search(value):
        return "must be valid Unicode text (no unpaired surrogates such as \\ud800)"
    return None


def check_text(field: str, value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ValidationError(f"{field} {problem}", field=field)
    return value


def json_too_deep(raw: bytes | str) -> bool:
    """True if the JSON text nests arrays/objects more than MAX_JSON_DEPTH deep
    (brackets inside strings do not count). Malformed text is left to the parser."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    for token in _JSON_TOKENS.finditer(raw):
        bracket = token.group()
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif bracket in (b"]", b"}"):
            depth -= 1
    return False
