"""The input checks both transports make before anything else reads a request."""

from __future__ import annotations

import pytest

from payments_svc.api.untrusted_input import MAX_JSON_DEPTH, check_text, json_too_deep, text_problem
from payments_svc.domain.errors import ValidationError


@pytest.mark.parametrize("text, deep", [
    ("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, False),
    ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), True),
    ('{"a":' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1), True),
    ('["' + "[" * 500 + '"]', False),  # brackets inside a string do not nest
    ('["\\"' + "[" * 500 + '"]', False),  # nor after an escaped quote
    ("[" + "[[]]," * 500 + "[]]", False),  # wide, not deep
    ('"' + "[" * 500, False),  # an unterminated string: the parser's to refuse
    ("[" * 65 + '"' + "\\" * 10, True),
])
def test_json_depth(text, deep):
    assert json_too_deep(text) is deep
    assert json_too_deep(text.encode()) is deep


def test_pathological_strings_are_scanned_once():
    """Many escaped quotes in an unterminated string: a backtracking scan would not finish."""
    assert json_too_deep('"' + '\\"' * 300_000 + "[" * 70) is False
    assert json_too_deep("[" * 70 + '"' + '\\"' * 300_000) is True


@pytest.mark.parametrize("text, problem", [
    ("plain text, ünïcödé and emoji \U0001f600", None),
    ("tab\tand\nnewline", None),
    ("a\x00b", "must not contain NUL characters"),
    ("a\ud800", "must be valid Unicode text (no unpaired surrogates such as \\ud800)"),
    ("\udcff", "must be valid Unicode text (no unpaired surrogates such as \\ud800)"),  # an undecodable header byte
])
def test_text_problems(text, problem):
    assert text_problem(text) == problem


def test_check_text_names_the_field():
    assert check_text("reason", "fine") == "fine"
    with pytest.raises(ValidationError) as refused:
        check_text("reason", "bad\x00")
    assert (refused.value.message, refused.value.field) == ("reason must not contain NUL characters", "reason")
