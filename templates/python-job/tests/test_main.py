"""Tests of {{name}} that run without Jobdock or the source."""

from {{module}}.main import bookmark, changed_since

RECORDS = [
    {"id": 2, "updated_at": "2026-12-02T08:00:00Z"},
    {"id": 1, "updated_at": "2026-12-01T08:00:00Z"},
]


def test_only_records_changed_since_the_bookmark_are_loaded_oldest_first():
    assert [r["id"] for r in changed_since(RECORDS, None)] == [1, 2]
    assert [r["id"] for r in changed_since(RECORDS, "2026-12-01T08:00:00Z")] == [2]


def test_the_bookmark_moves_to_the_newest_record_or_stays():
    assert bookmark(RECORDS, None) == "2026-12-02T08:00:00Z"
    assert bookmark([], "2026-12-01T08:00:00Z") == "2026-12-01T08:00:00Z"
