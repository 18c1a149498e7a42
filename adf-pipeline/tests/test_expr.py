"""The expression evaluator the replays rely on: Data Factory's syntax, and strictness where
leniency would let a broken template pass."""

from __future__ import annotations

import datetime as dt

import pytest

import adf_expr as e


def ctx(**kw):
    outputs = kw.pop("outputs", {"Poll": {"status": "running", "exit_code": None, "n": 3}})
    return e.Context(
        pipeline={"RunId": "r-1", "TriggerTime": "2024-05-01T10:00:00.1234567Z",
                  "parameters": {"u": "https://x/", "env": {"A": 'q"b'}, "n": 7}},
        activities=lambda name: {"output": outputs[name]},
        variables={"v": "val"},
        **kw,
    )


@pytest.mark.parametrize(
    "text, value",
    [
        ("plain", "plain"),
        ("@@literal", "@literal"),
        ("@pipeline().RunId", "r-1"),
        ("run @{pipeline().RunId} of @{pipeline().parameters.n}", "run r-1 of 7"),
        ("@{pipeline().parameters.n}", "7"),
        ("@pipeline().parameters.n", 7),
        ("@string(pipeline().parameters.env)", '{"A":"q\\"b"}'),
        ("@concat('it''s', ' ', 'ok')", "it's ok"),
        ("@if(endsWith(pipeline().parameters.u, '/'), substring(pipeline().parameters.u, 0, sub(length(pipeline().parameters.u), 1)), pipeline().parameters.u)", "https://x"),
        ("@string(min(max(pipeline().parameters.n, 1), 5))", "5"),
        ("@contains(createArray('a', 'running'), activity('Poll').output.status)", True),
        ("@string(coalesce(activity('Poll').output?.exit_code, 'none'))", "none"),
        ("@activity('Poll').output?.missing", None),
        ("@activity('Poll')['output']['n']", 3),
        ("@replace(replace('a\\b\"c', '\\', '\\\\'), '\"', '\\\"')", 'a\\\\b\\"c'),
        ("@encodeUriComponent('a b/c')", "a%20b%2Fc"),
        ("@string(true)", "True"),
        ("@equals(1, 1.0)", True),
        ("@equals('1', 1)", False),
        ("@variables('v')", "val"),
        ("@ticks('0001-01-01T00:00:00Z')", 0),
        ("@addSeconds(pipeline().TriggerTime, 90)", "2024-05-01T10:01:30.1234560Z"),
        ("@greater(ticks(addSeconds(pipeline().TriggerTime, 1)), ticks(pipeline().TriggerTime))", True),
        ("@UTCNOW()", "2030-01-02T03:04:05.0000000Z"),
    ],
)
def test_evaluates(text, value):
    now = lambda: dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)  # noqa: E731
    assert e.evaluate_string(text, ctx(now=now)) == value


@pytest.mark.parametrize(
    "text, message",
    [
        ("@concatt('a')", "unknown function"),
        ("@concat('a', activity('Poll').output.exit_code)", "expects strings"),
        ("@concat('a', 1)", "expects strings"),
        ("@activity('Poll').output.missing", "does not exist"),
        ("@string(activity('Poll').output.exit_code)", "null"),
        ("@if('yes', 1, 2)", "booleans"),
        ("@item()", "outside a ForEach"),
        ("@variables('nope')", "not declared"),
        ("@substring('abc', 2, 5)", "out of range"),
        ("@or(true,", "expected"),
    ],
)
def test_is_strict(text, message):
    with pytest.raises(e.ExpressionError, match=message):
        e.evaluate_string(text, ctx())


def test_expression_objects_and_nested_values():
    value = {"a": {"value": "@pipeline().RunId", "type": "Expression"}, "b": ["@{pipeline().parameters.n}", 1]}
    assert e.evaluate_value(value, ctx()) == {"a": "r-1", "b": ["7", 1]}
