"""Tests of {{name}} that run without Jobdock: the source is the script's own code."""

from {{module}}.main import fetch


def test_only_records_changed_since_the_bookmark_are_fetched():
    everything = fetch("https://api.example.com", "token", None)
    assert [r["id"] for r in everything] == [1, 2]
    newer = fetch("https://api.example.com", "token", "2026-12-01T08:00:00Z")
    assert [r["id"] for r in newer] == [2]
