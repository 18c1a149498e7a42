"""Singer pipelines: a Singer tap and target run as one job, `tap | target`, with the job's
configuration, secrets and state.

    jobdock-singer                  # or: python -m jobdock.singer

What it reads (the job's `env`; secrets through `jobdock.secret()`):

- `TAP`, `TARGET` (required): the tap's and the target's command lines, e.g.
  `/opt/tap/bin/tap-rest-api-msdk` (split as a shell would, without a shell).
- `TAP_CONFIG`, `TARGET_CONFIG`: JSON objects, the connectors' `--config` (default `{}`).
- `TAP_SECRETS`, `TARGET_SECRETS`: `key:SECRET_NAME,...` — each secret's value is put into
  the config under `key` (a dotted key, `api_keys.X-API-KEY`, goes into nested objects).
- `TAP_CATALOG`: a JSON catalog, passed to the tap as `--catalog` (optional).

How it runs: the configs (with their secrets) are written to a private temporary folder
(mode 0700, files 0600) removed when the pipeline ends. The job's state (`jobdock.state`) is
the Singer state: when it is not empty it is handed to the tap as `--state`. The tap's
messages go to the target through this process, which counts the `RECORD` messages and
reports them with `jobdock.progress`. The tap's and the target's standard error go to the
run's log, one line each, prefixed `[tap]` or `[target]`, with every secret value masked.
The last `STATE` message the target writes on its standard output becomes the job's state
(`state.set()`: held until the run succeeds), and only when both processes exit 0. When
either fails, the state is left as it was and the pipeline exits 1 with a line naming the
process and its exit code; a configuration error exits 2.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, Optional, Sequence

from . import _redact, log, state
from .config import config, secret
from .errors import InvalidConfig, JobdockError
from .log import write_line
from .protocol import progress

__all__ = ["Pipeline", "Result", "main", "pipeline_from_env", "run", "secret_map"]

#: The exit code of a pipeline whose tap or target failed.
EXIT_FAILED = 1
#: The exit code of a configuration error (a missing setting or secret, bad JSON).
EXIT_CONFIG = 2


@dataclass
class Pipeline:
    """A tap and a target, each a command line (a list of arguments) with its config."""

    tap: list[str]
    target: list[str]
    tap_config: dict[str, Any] = field(default_factory=dict)
    target_config: dict[str, Any] = field(default_factory=dict)
    catalog: Optional[dict[str, Any]] = None


@dataclass
class Result:
    """What a pipeline did: the exit codes, the records per stream, the last `STATE` the
    target wrote (None when it wrote none) and, when it failed, why."""

    tap_exit: int
    target_exit: int
    records: dict[str, int]
    state: Optional[dict[str, Any]]
    failure: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def total(self) -> int:
        return sum(self.records.values())


def secret_map(spec: str, variable: str = "TAP_SECRETS") -> list[tuple[str, str]]:
    """`"key:SECRET,other.key:NAME"` as `[("key", "SECRET"), ("other.key", "NAME")]`.
    Spaces around the parts are ignored; an empty spec is an empty list."""
    pairs: list[tuple[str, str]] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, name = part.partition(":")
        key, name = key.strip(), name.strip()
        if not sep or not key or not name:
            raise InvalidConfig(
                variable,
                f"{variable}: {part!r} is not `config_key:SECRET_NAME` "
                f"(e.g. {variable}=bearer_token:SOURCE_TOKEN,password:DB_PASSWORD)",
            )
        pairs.append((key, name))
    return pairs


def _put(target: dict[str, Any], dotted: str, value: str, variable: str) -> None:
    *parents, last = dotted.split(".")
    node = target
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise InvalidConfig(
                variable, f"{variable}: cannot put {dotted!r}: {part!r} is not an object"
            )
        node = child
    node[last] = value


def _json_object(variable: str, required: bool = False) -> Optional[dict[str, Any]]:
    text = config(variable) if required else config(variable, default=None)
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError as err:
        raise InvalidConfig(variable, f"{variable} is not JSON: {err}") from None
    if not isinstance(value, dict):
        raise InvalidConfig(variable, f"{variable} must be a JSON object, not {type(value).__name__}")
    return value


def _command(variable: str) -> list[str]:
    try:
        argv = shlex.split(config(variable))
    except ValueError as err:
        raise InvalidConfig(variable, f"{variable} is not a command line: {err}") from None
    if not argv:
        raise InvalidConfig(variable, f"{variable} is empty: it names the executable to run")
    return argv


def pipeline_from_env() -> Pipeline:
    """The pipeline the job's configuration describes (see the module's documentation);
    secrets are read here, so they are masked in the log from now on."""
    configs: dict[str, dict[str, Any]] = {}
    for side in ("TAP", "TARGET"):
        conf = _json_object(f"{side}_CONFIG") or {}
        for key, name in secret_map(config(f"{side}_SECRETS", default=""), f"{side}_SECRETS"):
            _put(conf, key, secret(name), f"{side}_SECRETS")
        configs[side] = conf
    return Pipeline(
        tap=_command("TAP"),
        target=_command("TARGET"),
        tap_config=configs["TAP"],
        target_config=configs["TARGET"],
        catalog=_json_object("TAP_CATALOG"),
    )


def _write_private(folder: Path, name: str, value: Any) -> Path:
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(value, out)
    return path


def _pass_stderr(stream: IO[bytes], prefix: str) -> None:
    """Copies a child's standard error to the run's log, line by line, secrets masked."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        write_line(_redact.mask(f"[{prefix}] {line}"))
    stream.close()


class _Counter:
    """Forwards the tap's messages to the target, counting the records per stream."""

    def __init__(self) -> None:
        self.records: dict[str, int] = {}
        self.target_gone = False
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.records.values())

    def pump(self, tap_out: IO[bytes], target_in: IO[bytes]) -> None:
        for raw in iter(tap_out.readline, b""):
            self._count(raw)
            if self.target_gone:
                continue  # keep reading, so that the tap never blocks on a full pipe
            try:
                target_in.write(raw)
            except (BrokenPipeError, OSError):
                self.target_gone = True
        tap_out.close()
        try:
            target_in.close()
        except (BrokenPipeError, OSError):
            self.target_gone = True

    def _count(self, raw: bytes) -> None:
        if b'"RECORD"' not in raw:
            return
        try:
            message = json.loads(raw)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("type") != "RECORD":
            return
        stream = str(message.get("stream", ""))
        with self._lock:
            self.records[stream] = self.records.get(stream, 0) + 1
            done = sum(self.records.values())
        progress(done, None, "records")


def _last_state(target_out: IO[bytes], found: list[dict[str, Any]]) -> None:
    """Reads the target's standard output: keeps its `STATE` values (the last is what
    counts); any other line goes to the log."""
    for raw in iter(target_out.readline, b""):
        text = raw.decode("utf-8", errors="replace").strip()
        if not text:
            continue
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if isinstance(message, dict) and message.get("type") == "STATE":
            if isinstance(message.get("value"), dict):
                found.append(message["value"])
        elif isinstance(message, dict) and "type" not in message:
            # Targets built on singer-python (target-jsonl, target-csv) write the bare value.
            found.append(message)
        else:
            write_line(_redact.mask(f"[target] {text}"))
    target_out.close()


def run(pipeline: Pipeline, start_state: Optional[dict[str, Any]] = None) -> Result:
    """Runs `tap | target` once, with `start_state` as the tap's `--state` when it is not
    empty. Does not touch the job's state: see `main()`."""
    folder = Path(tempfile.mkdtemp(prefix="jobdock-singer-"))  # mode 0700
    children: list[subprocess.Popen[bytes]] = []
    try:
        tap_args = [*pipeline.tap, "--config", str(_write_private(folder, "tap.json", pipeline.tap_config))]
        if start_state:
            tap_args += ["--state", str(_write_private(folder, "state.json", start_state))]
        if pipeline.catalog is not None:
            tap_args += ["--catalog", str(_write_private(folder, "catalog.json", pipeline.catalog))]
        target_args = [
            *pipeline.target, "--config",
            str(_write_private(folder, "target.json", pipeline.target_config)),
        ]
        try:
            target = subprocess.Popen(target_args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
        except OSError as err:
            return Result(-1, -1, {}, None, f"the target {pipeline.target[0]} could not start: {err}")
        children.append(target)
        try:
            tap = subprocess.Popen(tap_args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        except OSError as err:
            target.kill()
            target.wait()
            return Result(-1, -1, {}, None, f"the tap {pipeline.tap[0]} could not start: {err}")
        children.append(tap)
        previous = _on_term(children)
        assert tap.stdout and tap.stderr and target.stdin and target.stdout and target.stderr
        counter = _Counter()
        states: list[dict[str, Any]] = []
        threads = [
            threading.Thread(target=_pass_stderr, args=(tap.stderr, "tap"), daemon=True),
            threading.Thread(target=_pass_stderr, args=(target.stderr, "target"), daemon=True),
            threading.Thread(target=counter.pump, args=(tap.stdout, target.stdin), daemon=True),
            threading.Thread(target=_last_state, args=(target.stdout, states), daemon=True),
        ]
        for t in threads:
            t.start()
        target_exit = target.wait()
        stopped_tap = target_exit != 0 and tap.poll() is None
        if stopped_tap:
            tap.terminate()  # its records have nowhere to go
        tap_exit = tap.wait()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for t in threads:
            t.join(timeout=30)
        result = Result(tap_exit, target_exit, dict(counter.records), states[-1] if states else None)
        failed = []
        if tap_exit != 0 and not stopped_tap:
            failed.append(f"the tap {pipeline.tap[0]} failed with exit code {tap_exit}")
        if target_exit != 0:
            failed.append(f"the target {pipeline.target[0]} failed with exit code {target_exit}")
        if failed:
            result.failure = "; ".join(failed)
        return result
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _on_term(children: Sequence[subprocess.Popen[bytes]]) -> Any:
    """A cancelled run (SIGTERM to this process) stops the tap and the target too. Returns
    the handler it replaced (None off the main thread, where it does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, _frame: Optional[FrameType]) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, stop)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the pipeline the job's configuration describes, as a run's entry point; returns
    the exit code (0, `EXIT_FAILED` or `EXIT_CONFIG`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        pipeline = pipeline_from_env()
        start = state.get()
    except JobdockError as err:
        log.error(str(err))
        return EXIT_CONFIG
    log.info("singer pipeline starting", tap=shlex.join(pipeline.tap),
             target=shlex.join(pipeline.target),
             state="given" if start else "none")
    result = run(pipeline, start)
    progress(result.total, None, "records", force=True)
    if not result.ok:
        log.error(f"{result.failure}; the job's state is left as it was",
                  tap_exit=result.tap_exit, target_exit=result.target_exit,
                  records=result.total)
        return EXIT_FAILED
    if result.state is None:
        log.warning("the target wrote no STATE message; the job's state is left as it was")
    else:
        try:
            state.set(result.state)
        except JobdockError as err:
            log.error(f"the pipeline succeeded but its state could not be kept: {err}")
            return EXIT_FAILED
    log.info("singer pipeline done", records=result.total, streams=result.records,
             state="kept" if result.state is not None else "unchanged")
    return 0


def cli() -> None:
    """The `jobdock-singer` console script."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
