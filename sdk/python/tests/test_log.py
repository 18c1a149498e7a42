"""jobdock.log's logfmt lines, and the progress and heartbeat lines of the line protocol."""

from __future__ import annotations

import datetime as dt
import logging
import threading

import pytest

import jobdock
from jobdock import log, protocol


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


def parse_logfmt(line: str) -> dict[str, str]:
    """A strict logfmt reader, to prove the lines parse back to what was logged."""
    out: dict[str, str] = {}
    i = 0
    while i < len(line):
        eq = line.index("=", i)
        key = line[i:eq]
        i = eq + 1
        if i < len(line) and line[i] == '"':
            i += 1
            value = []
            while line[i] != '"':
                if line[i] == "\\":
                    i += 1
                    value.append({"n": "\n", "r": "\r", "t": "\t"}.get(line[i], line[i]))
                else:
                    value.append(line[i])
                i += 1
            i += 1
            out[key] = "".join(value)
        else:
            end = line.find(" ", i)
            end = len(line) if end < 0 else end
            out[key] = line[i:end]
            i = end
        assert i == len(line) or line[i] == " ", line
        i += 1
    return out


def test_an_info_line(capsys: pytest.CaptureFixture[str]) -> None:
    log.info("loaded page", page=3, rows=120, source="erp")
    assert lines(capsys) == ["level=info msg=\"loaded page\" page=3 rows=120 source=erp"]


def test_values_round_trip_and_stay_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    tricky = 'two\nlines with "quotes" and a \\ and\ttab = sign'
    log.warning(tricky, note=tricky, empty="", none=None, yes=True, no=False, ratio=0.25,
                when=dt.date(2026, 12, 5), tags=["a", "b"])
    out = lines(capsys)
    assert len(out) == 1
    fields = parse_logfmt(out[0])
    assert fields == {
        "level": "warning", "msg": tricky, "note": tricky, "empty": "", "none": "null",
        "yes": "true", "no": "false", "ratio": "0.25", "when": "2026-12-05", "tags": '["a","b"]',
    }


def test_fields_named_like_the_lines_own_keys(capsys: pytest.CaptureFixture[str]) -> None:
    log.info("x", level=3, msg="y", **{"odd key=": 1})
    assert lines(capsys) == ["level=info msg=x level_=3 msg_=y odd_key_=1"]


def test_levels_below_the_threshold_are_dropped(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log.debug("hidden")
    monkeypatch.setenv("JOBDOCK_LOG_LEVEL", "warning")
    log.info("hidden too")
    log.error("shown")
    monkeypatch.setenv("JOBDOCK_LOG_LEVEL", "DEBUG")
    log.debug("now shown")
    assert lines(capsys) == ["level=error msg=shown", "level=debug msg=\"now shown\""]


def test_set_level_and_bind(capsys: pytest.CaptureFixture[str]) -> None:
    orders = log.bind(entity="orders", step=1)
    orders.info("start", step=2)
    custom = log.Logger(level="error")
    custom.warning("dropped")
    custom.error("kept")
    assert lines(capsys) == ["level=info msg=start entity=orders step=2", "level=error msg=kept"]
    with pytest.raises(ValueError, match="unknown log level"):
        log.set_level("loud")


def test_exception_carries_the_error_and_traceback_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("load failed", table="orders")
    out = lines(capsys)
    assert len(out) == 1
    fields = parse_logfmt(out[0])
    assert fields["level"] == "error" and fields["error"] == "RuntimeError: boom"
    assert "Traceback (most recent call last)" in fields["traceback"]
    assert fields["table"] == "orders"


def test_the_standard_logging_module_writes_the_same_lines(capsys: pytest.CaptureFixture[str]) -> None:
    std = logging.getLogger("jobdock.test.lib")
    std.propagate = False
    std.setLevel(logging.DEBUG)
    handler = log.handler()
    std.addHandler(handler)
    try:
        std.info("hello %s", "world")
        std.warning("careful")
    finally:
        std.removeHandler(handler)
    assert lines(capsys) == [
        "level=info msg=\"hello world\" logger=jobdock.test.lib",
        "level=warning msg=careful logger=jobdock.test.lib",
    ]


def test_progress_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert jobdock.progress(0, 200, "loading orders")
    assert jobdock.progress(5, message="multi\nline", force=True)
    assert jobdock.progress(7, force=True)
    assert jobdock.progress(12.9, 100.0, force=True)
    assert lines(capsys) == [
        "::jobdock::progress 0/200 loading orders",
        "::jobdock::progress 5 multi\\nline",
        "::jobdock::progress 7",
        "::jobdock::progress 12/100",
    ]


def test_progress_is_throttled_but_the_end_always_prints(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(protocol, "_clock", lambda: now[0])
    printed = [jobdock.progress(i, 1000) for i in range(500)]
    assert printed.count(True) == 1  # the first
    now[0] += 1.0
    assert jobdock.progress(500, 1000)  # a second later
    assert not jobdock.progress(501, 1000)
    assert jobdock.progress(1000, 1000, "done")  # the end, within the interval
    assert lines(capsys) == [
        "::jobdock::progress 0/1000",
        "::jobdock::progress 500/1000",
        "::jobdock::progress 1000/1000 done",
    ]


def test_progress_takes_any_integer_like_number(capsys: pytest.CaptureFixture[str]) -> None:
    import decimal
    import fractions

    class Index:  # what numpy's integers look like to Python
        def __index__(self) -> int:
            return 42

    assert jobdock.progress(Index(), decimal.Decimal("100.7"), force=True)  # type: ignore[arg-type]
    assert jobdock.progress(fractions.Fraction(7, 2), force=True)  # type: ignore[arg-type]
    assert lines(capsys) == ["::jobdock::progress 42/100", "::jobdock::progress 3"]


@pytest.mark.parametrize("args,error", [((-1,), ValueError), ((1, -5), ValueError),
                                        (("3",), TypeError), ((True,), TypeError),
                                        ((float("nan"),), ValueError)])
def test_progress_refuses_bad_numbers(args: tuple, error: type) -> None:
    with pytest.raises(error):
        jobdock.progress(*args)


def test_heartbeat_is_throttled(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    now = [50.0]
    monkeypatch.setattr(protocol, "_clock", lambda: now[0])
    assert jobdock.heartbeat()
    assert not jobdock.heartbeat()
    now[0] += protocol.HEARTBEAT_INTERVAL
    assert jobdock.heartbeat()
    assert jobdock.heartbeat(force=True)
    assert lines(capsys) == ["::jobdock::heartbeat"] * 3


def test_heartbeats_beat_while_a_block_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with jobdock.heartbeats(every=0.05):
        threading.Event().wait(0.3)
    count = lines(capsys).count("::jobdock::heartbeat")
    assert 2 <= count <= 9  # one at once, then one per 50 ms (fewer on a loaded machine)
    threading.Event().wait(0.15)
    assert lines(capsys) == []  # stopped with the block


def test_lines_from_many_threads_never_interleave(capsys: pytest.CaptureFixture[str]) -> None:
    def work(n: int) -> None:
        for i in range(200):
            log.info("tick", thread=n, i=i, pad="x" * 50)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = lines(capsys)
    assert len(out) == 800
    assert all(parse_logfmt(line)["pad"] == "x" * 50 for line in out)


def test_progress_messages_mask_secrets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKEN", "tok-123456")
    jobdock.secret("TOKEN")
    jobdock.progress(1, 2, "calling with tok-123456")
    assert lines(capsys) == ["::jobdock::progress 1/2 calling with ***"]
