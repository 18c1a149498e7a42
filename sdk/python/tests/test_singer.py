"""Singer pipelines (jobdock.singer) with a fake tap and a fake target, small Python scripts
written here, against the in-process engine of fake_engine.py: the state handed to the tap,
the target's last STATE kept only when both succeed, failures named with their exit codes,
records counted as progress, secrets merged into the config and never in the log. The real
published connectors run in templates/tests/test_singer_proof.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import TestServer
from fake_engine import RUN, FakeEngine, JobState
from jobdock import InvalidConfig, singer

SRC = Path(__file__).resolve().parents[1] / "src"
TOKEN = "src-t0k3n-" + os.urandom(6).hex()

# Emits SCHEMA, `records` RECORDs after the bookmark in its --state, then a STATE; records
# what it was given in `seen`; logs its config on stderr (as careless taps do); fails with
# `fail` after its records when asked.
FAKE_TAP = textwrap.dedent("""
    import json, os, stat, sys
    args = sys.argv[1:]
    opt = lambda name: args[args.index(name) + 1] if name in args else None
    conf = json.load(open(opt("--config")))
    state = json.load(open(opt("--state"))) if opt("--state") else None
    modes = {n: oct(stat.S_IMODE(os.stat(opt(n)).st_mode)) for n in ("--config", "--state") if opt(n)}
    json.dump({"args": args, "config": conf, "state": state, "modes": modes,
               "folder_mode": oct(stat.S_IMODE(os.stat(os.path.dirname(opt("--config"))).st_mode))},
              open(conf["seen"], "w"))
    print("tap config:", json.dumps(conf), file=sys.stderr, flush=True)
    since = (state or {}).get("bookmarks", {}).get("orders", {}).get("since", 0)
    print(json.dumps({"type": "SCHEMA", "stream": "orders", "schema": {}, "key_properties": ["id"]}))
    for i in range(since + 1, since + 1 + conf.get("records", 3)):
        print(json.dumps({"type": "RECORD", "stream": "orders", "record": {"id": i}}))
        print(json.dumps({"type": "STATE", "value": {"bookmarks": {"orders": {"since": i}}}}))
    print("not a Singer message")
    sys.stdout.flush()
    if conf.get("fail"):
        print("tap: the source refused", file=sys.stderr)
        sys.exit(conf["fail"])
""")

# Writes the records it gets to `out`, echoes each STATE on stdout (as a Singer message, or
# as the bare value like singer-python's targets with `bare`), fails with `fail` when asked.
FAKE_TARGET = textwrap.dedent("""
    import json, sys
    args = sys.argv[1:]
    conf = json.load(open(args[args.index("--config") + 1]))
    out = open(conf["out"], "a")
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg["type"] == "RECORD":
            out.write(json.dumps(msg["record"]) + "\\n")
        elif msg["type"] == "STATE" and not conf.get("silent"):
            value = msg["value"]
            print(json.dumps(value if conf.get("bare") else {"type": "STATE", "value": value}))
    out.close()
    print("target: wrote records", file=sys.stderr)
    if conf.get("fail"):
        sys.exit(conf["fail"])
""")


@pytest.fixture
def in_run(monkeypatch: pytest.MonkeyPatch, server: TestServer) -> FakeEngine:
    """The environment the engine gives a run of the job `orders`, with its state API."""
    engine = FakeEngine()
    server.handler = engine
    monkeypatch.setenv("JOBDOCK_URL", server.url)
    monkeypatch.setenv("JOBDOCK_RUN_TOKEN", RUN)
    monkeypatch.setenv("JOBDOCK_JOB", "orders")
    monkeypatch.setenv("JOBDOCK_RUN_ID", "run-42")
    return engine


class Job:
    """A pipeline's configuration (the job's env) around the fake connectors."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch, engine: FakeEngine) -> None:
        self.tmp, self.mp, self.engine = tmp, monkeypatch, engine
        (tmp / "tap.py").write_text(FAKE_TAP)
        (tmp / "target.py").write_text(FAKE_TARGET)
        self.seen = tmp / "seen.json"
        self.out = tmp / "out.jsonl"
        monkeypatch.setenv("TAP", f"{sys.executable} {tmp / 'tap.py'}")
        monkeypatch.setenv("TARGET", f"{sys.executable} {tmp / 'target.py'}")
        self.configure()

    def configure(self, tap: dict[str, Any] | None = None, target: dict[str, Any] | None = None) -> None:
        self.mp.setenv("TAP_CONFIG", json.dumps({"seen": str(self.seen), **(tap or {})}))
        self.mp.setenv("TARGET_CONFIG", json.dumps({"out": str(self.out), **(target or {})}))

    def tap_saw(self) -> dict[str, Any]:
        return json.loads(self.seen.read_text())

    def written(self) -> list[dict[str, Any]]:
        return [json.loads(ln) for ln in self.out.read_text().splitlines()] if self.out.exists() else []

    def start_at(self, value: dict[str, Any]) -> None:
        """The job's state before the run, as a previous run left it."""
        self.engine.jobs.setdefault("orders", JobState()).add(value, "run-41")


@pytest.fixture
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_run: FakeEngine) -> Job:
    return Job(tmp_path, monkeypatch, in_run)


def held(engine: FakeEngine) -> Any:
    st = engine.jobs.get("orders")
    return None if st is None else st.held


def test_a_first_run_loads_everything_and_keeps_the_targets_last_state(
    job: Job, capsys: pytest.CaptureFixture[str]
) -> None:
    assert singer.main([]) == 0
    out = capsys.readouterr().out
    assert "--state" not in job.tap_saw()["args"]  # no state yet: none handed
    assert [r["id"] for r in job.written()] == [1, 2, 3]
    assert held(job.engine) == {"bookmarks": {"orders": {"since": 3}}}
    job.engine.commit_run("orders")  # the run succeeded
    assert job.engine.jobs["orders"].current == {"bookmarks": {"orders": {"since": 3}}}
    assert "::jobdock::progress 3 records" in out, out
    assert "[tap] tap config:" in out and "[target] target: wrote records" in out, out
    assert 'msg="singer pipeline done" records=3 streams="{\\"orders\\":3}" state=kept' in out, out
    assert "not a Singer message" not in out  # the tap's stray stdout is not a message: dropped


def test_the_jobs_state_is_handed_to_the_tap_and_the_next_run_loads_only_what_is_new(
    job: Job, capsys: pytest.CaptureFixture[str]
) -> None:
    job.start_at({"bookmarks": {"orders": {"since": 3}}})
    job.configure(tap={"records": 2})
    assert singer.main([]) == 0
    saw = job.tap_saw()
    assert saw["state"] == {"bookmarks": {"orders": {"since": 3}}}
    assert [r["id"] for r in job.written()] == [4, 5]
    assert held(job.engine) == {"bookmarks": {"orders": {"since": 5}}}
    # Private files, gone after the run.
    assert saw["modes"] == {"--config": "0o600", "--state": "0o600"}
    assert saw["folder_mode"] == "0o700"
    config_path = Path(saw["args"][saw["args"].index("--config") + 1])
    assert not config_path.exists() and not config_path.parent.exists()
    assert "::jobdock::progress 2 records" in capsys.readouterr().out


@pytest.mark.parametrize("bare", [False, True])
def test_the_state_is_the_last_the_target_wrote(job: Job, bare: bool) -> None:
    job.configure(tap={"records": 4}, target={"bare": bare})
    assert singer.main([]) == 0
    assert held(job.engine) == {"bookmarks": {"orders": {"since": 4}}}


def test_a_failed_tap_fails_the_run_names_it_and_leaves_the_state(
    job: Job, capsys: pytest.CaptureFixture[str]
) -> None:
    job.start_at({"bookmarks": {"orders": {"since": 1}}})
    job.configure(tap={"fail": 3})
    assert singer.main([]) == singer.EXIT_FAILED
    out = capsys.readouterr().out
    assert held(job.engine) is None  # nothing set: the job keeps its state
    assert job.engine.jobs["orders"].current == {"bookmarks": {"orders": {"since": 1}}}
    assert "level=error" in out and "the tap" in out and "failed with exit code 3" in out, out
    assert "the target" not in out.split("level=error")[1], out
    assert "tap_exit=3 target_exit=0" in out
    assert "[tap] tap: the source refused" in out


def test_a_failed_target_fails_the_run_names_it_and_leaves_the_state(
    job: Job, capsys: pytest.CaptureFixture[str]
) -> None:
    job.configure(target={"fail": 4})
    assert singer.main([]) == singer.EXIT_FAILED
    out = capsys.readouterr().out
    assert held(job.engine) is None
    error = out.split("level=error")[1]
    assert "the target" in error and "failed with exit code 4" in error, out
    assert "the tap" not in error, out


def test_a_target_that_dies_at_once_stops_the_tap(
    job: Job, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "dead.py").write_text("import sys; sys.exit(5)\n")
    monkeypatch.setenv("TARGET", f"{sys.executable} {tmp_path / 'dead.py'}")
    job.configure(tap={"records": 20000})  # more than a pipe holds
    assert singer.main([]) == singer.EXIT_FAILED
    out = capsys.readouterr().out
    assert "failed with exit code 5" in out and held(job.engine) is None


def test_a_target_that_writes_no_state_leaves_it(
    job: Job, capsys: pytest.CaptureFixture[str]
) -> None:
    job.configure(target={"silent": True})
    assert singer.main([]) == 0
    assert held(job.engine) is None
    assert "wrote no STATE message" in capsys.readouterr().out


def test_secrets_go_into_the_config_and_never_into_the_log(
    job: Job, clean_env: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (clean_env / "SOURCE_TOKEN").write_text(TOKEN)
    monkeypatch.setenv("API_KEY", "k3y-" + TOKEN[::-1])  # a secret delivered as a variable
    monkeypatch.setenv("TAP_SECRETS", "bearer_token:SOURCE_TOKEN, api_keys.X-API-KEY:API_KEY")
    job.configure(tap={"api_keys": {"other": "x"}, "fail": 2})
    assert singer.main([]) == singer.EXIT_FAILED
    saw = job.tap_saw()
    assert saw["config"]["bearer_token"] == TOKEN
    assert saw["config"]["api_keys"] == {"other": "x", "X-API-KEY": "k3y-" + TOKEN[::-1]}
    out = capsys.readouterr().out
    assert "[tap] tap config:" in out and '"bearer_token": "***"' in out, out
    assert TOKEN not in out and TOKEN[::-1] not in out


def test_configuration_errors_exit_2_naming_the_setting(
    job: Job, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TAP")
    assert singer.main([]) == singer.EXIT_CONFIG
    assert "TAP is not set" in capsys.readouterr().out
    monkeypatch.setenv("TAP", "tap-x")
    monkeypatch.setenv("TAP_CONFIG", "[1]")
    assert singer.main([]) == singer.EXIT_CONFIG
    assert "TAP_CONFIG must be a JSON object" in capsys.readouterr().out
    monkeypatch.setenv("TAP_CONFIG", "{}")
    monkeypatch.setenv("TAP_SECRETS", "bearer_token:MISSING")
    assert singer.main([]) == singer.EXIT_CONFIG
    assert "secret MISSING is not set" in capsys.readouterr().out


def test_a_tap_that_cannot_start_is_named(
    job: Job, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TAP", "/nonexistent/tap-nothing")
    assert singer.main([]) == singer.EXIT_FAILED
    assert "the tap /nonexistent/tap-nothing could not start" in capsys.readouterr().out


def test_secret_map() -> None:
    assert singer.secret_map("") == []
    assert singer.secret_map("a:B, c.d:E") == [("a", "B"), ("c.d", "E")]
    with pytest.raises(InvalidConfig, match="config_key:SECRET_NAME"):
        singer.secret_map("just_a_key")


def test_the_console_script_and_python_dash_m(job: Job) -> None:
    """`python -m jobdock.singer` as a run's command, in a process of its own."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-m", "jobdock.singer"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "singer pipeline done" in done.stdout and held(job.engine) is not None
    helped = subprocess.run([sys.executable, "-m", "jobdock.singer", "--help"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "TAP_SECRETS" in helped.stdout
