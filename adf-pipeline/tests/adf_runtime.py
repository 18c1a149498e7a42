"""Replays a Data Factory pipeline: runs its activities in the order Data Factory would, and
makes the HTTP calls its Web and Webhook activities describe, for real.

Everything a call carries comes from the template: the url, method, headers and body are its
expressions evaluated (adf_expr), the order follows `dependsOn` with its conditions, loops
follow the Until's expression, the Switch's `on`, the ForEach's `items`. Only what Data
Factory itself supplies is given from outside: the managed identity's token (`msi_token`),
the Key Vault linked services (`linked_services`), the callback URI of a Webhook activity
(`callbacks`) and the clock.

What Data Factory does, as this replay does it (documented behaviour unless marked):
- Web activity: a response status of 400 or more fails the activity; the response must be a
  JSON object of at most 4 MB, which becomes the output (with ADFWebActivityResponseHeaders);
  each request has `httpRequestTimeout` (1 minute by default) to answer. A 202 with a
  Location is followed (unless turnOffAsync) with GETs of the Location until the status is
  no longer 202. Undocumented, and chosen here on the safe side: the Location is fetched
  with no headers at all (so a template only works if the URL carries its own credential),
  and the wait between polls is the response's Retry-After, capped by
  `async_poll_cap_seconds` to keep tests short.
- policy.retry: a failed attempt is tried again (after `retry_sleep_seconds`, not the
  template's retryIntervalInSeconds, to keep tests short).
- Webhook activity: POSTs the body with `callBackUri` added and waits for the callback; with
  reportStatusOnCallBack a StatusCode of 400 or more fails it with the callback's Error, and
  the callback's Output is the activity's output.
- Execute Pipeline runs the referenced pipeline as a child run with a new RunId.
- A pipeline (or a container's inner block) fails when a leaf activity failed; a skipped leaf
  counts as its parents' outcome ("Pipeline failure and error handling").
- ForEach iterations run one after another here (Data Factory may run them in parallel).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import adf_expr

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
DEFAULT_HTTP_TIMEOUT = 60.0


class ActivityFailed(Exception):
    def __init__(self, code: str, message: str, output: Any = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.output = output


@dataclass(repr=False)
class HttpCall:
    """One request a replay made, and its answer."""

    activity: str
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: Any = None
    seconds: float = 0.0
    error: str | None = None

    def summary(self) -> str:
        """Method, URL path and status: safe to print (no headers, no bodies)."""
        path = urllib.parse.urlsplit(self.url).path
        return f"{self.activity}: {self.method} {path} -> {self.status or self.error}"

    # Headers carry credentials: a test report shows the summary only.
    __repr__ = summary


@dataclass(repr=False)
class ActivityRun:
    name: str
    type: str
    status: str = "Succeeded"  # Succeeded, Failed, Skipped
    input: Any = None
    output: Any = None
    error: dict[str, str] | None = None
    attempts: int = 0
    secure_input: bool = False
    secure_output: bool = False
    pipeline_run: str = ""

    def __repr__(self) -> str:
        # As the monitoring view shows it: secure inputs and outputs are left out.
        shown_input = "(secure)" if self.secure_input else self.input
        shown_output = "(secure)" if self.secure_output else self.output
        return f"ActivityRun({self.name!r}, {self.status}, input={shown_input!r}, output={shown_output!r}, error={self.error!r})"


@dataclass(repr=False)
class PipelineRun:
    name: str
    run_id: str
    parameters: dict[str, Any]
    system: dict[str, Any]
    status: str = "InProgress"
    error: dict[str, str] | None = None
    activity_runs: list[ActivityRun] = field(default_factory=list)
    children: list["PipelineRun"] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)
    latest: dict[str, ActivityRun] = field(default_factory=dict)

    def all_activity_runs(self) -> list[ActivityRun]:
        out = list(self.activity_runs)
        for c in self.children:
            out.extend(c.all_activity_runs())
        return out

    def runs_of(self, name: str) -> list[ActivityRun]:
        return [a for a in self.all_activity_runs() if a.name == name]

    def monitoring_view(self) -> list[dict[str, Any]]:
        """What Data Factory's monitoring shows of each activity run: its input and output,
        unless the activity's policy marks them secure."""
        return [
            {
                "pipeline_run": a.pipeline_run,
                "activity": a.name,
                "status": a.status,
                "input": "(secure)" if a.secure_input else a.input,
                "output": "(secure)" if a.secure_output else a.output,
                "error": a.error,
            }
            for a in self.all_activity_runs()
        ]

    def __repr__(self) -> str:
        return f"PipelineRun({self.name!r}, {self.status}, {self.run_id})"

    def summary(self) -> str:
        """The activity runs in order with their statuses and errors."""
        lines = [f"pipeline {self.name} {self.status}: {self.error}"]
        for a in self.all_activity_runs():
            lines.append(f"  {a.pipeline_run[:8]} {a.name} [{a.type}] {a.status} x{a.attempts} {a.error or ''}")
        return "\n".join(lines)


def parse_timespan(value: Any, default: float) -> float:
    """Seconds of a Data Factory timespan (`d.hh:mm:ss` or `hh:mm:ss`)."""
    if value is None:
        return default
    m = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.\d+)?", str(value))
    if not m:
        raise ActivityFailed("InvalidTemplate", f"not a timespan: {value!r}")
    d, h, mi, s = (int(x or 0) for x in m.groups())
    return d * 86400 + h * 3600 + mi * 60 + s


class CallbackReceiver:
    """Plays Data Factory's side of a Webhook activity's callback: a local HTTP server whose
    every `new_uri()` is a one-use callBackUri."""

    def __init__(self) -> None:
        self._bodies: dict[str, Any] = {}
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"_unparsable": raw.decode(errors="replace")}
                with receiver._cond:
                    receiver._bodies.setdefault(self.path, [])
                    receiver._bodies[self.path].append(body)
                    receiver._cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def new_uri(self) -> str:
        return f"{self.base}/callbacks/{uuid.uuid4()}"

    def wait(self, uri: str, timeout: float) -> list[Any] | None:
        """The bodies posted to `uri`, once at least one arrived; None after `timeout`."""
        path = urllib.parse.urlsplit(uri).path
        deadline = time.monotonic() + timeout
        with self._cond:
            while path not in self._bodies:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return list(self._bodies[path])

    def bodies(self, uri: str) -> list[Any]:
        with self._cond:
            return list(self._bodies.get(urllib.parse.urlsplit(uri).path, []))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Runtime:
    def __init__(
        self,
        pipelines: dict[str, dict[str, Any]],
        msi_token: Callable[[str], str],
        linked_services: dict[str, dict[str, Any]] | None = None,
        callbacks: CallbackReceiver | None = None,
        retry_sleep_seconds: float = 0.2,
        async_poll_cap_seconds: float = 1.0,
        webhook_wait_cap_seconds: float = 120.0,
        max_loop_iterations: int = 300,
        fault: Callable[[HttpCall], bool] | None = None,
    ):
        self.pipelines = pipelines
        self.msi_token = msi_token
        self.linked_services = linked_services or {}
        self.callbacks = callbacks
        self.retry_sleep_seconds = retry_sleep_seconds
        self.async_poll_cap_seconds = async_poll_cap_seconds
        self.webhook_wait_cap_seconds = webhook_wait_cap_seconds
        self.max_loop_iterations = max_loop_iterations
        # fault(call) -> True: the call's answer is lost on the way back (the activity attempt
        # fails as on a network error), after the server has handled it.
        self.fault = fault
        self.calls: list[HttpCall] = []
        self.retry_after_seen: list[str] = []

    # ----------------------------------------------------------------------------------
    # Pipelines

    def run(self, name: str, parameters: dict[str, Any] | None = None, parent: PipelineRun | None = None) -> PipelineRun:
        if name not in self.pipelines:
            raise KeyError(f"no pipeline {name!r}")
        props = self.pipelines[name]["properties"]
        params = self._parameters(name, props.get("parameters") or {}, parameters or {})
        run_id = str(uuid.uuid4())
        now = adf_expr.format_timestamp(dt.datetime.now(dt.timezone.utc))
        system = {
            "DataFactory": "replay-factory",
            "Pipeline": name,
            "RunId": run_id,
            "TriggerType": "PipelineActivity" if parent else "Manual",
            "TriggerId": str(uuid.uuid4()),
            "TriggerName": parent.name if parent else "Manual",
            "TriggerTime": now,
            "GroupId": parent.system["GroupId"] if parent else run_id,
            "parameters": params,
        }
        if parent:
            system["TriggeredByPipelineName"] = parent.name
            system["TriggeredByPipelineRunId"] = parent.run_id
        prun = PipelineRun(name=name, run_id=run_id, parameters=params, system=system)
        for vname, spec in (props.get("variables") or {}).items():
            prun.variables[vname] = (spec or {}).get("defaultValue")
        if parent:
            parent.children.append(prun)
        status, error = self._block(prun, props.get("activities") or [], None, False)
        prun.status, prun.error = status, error
        return prun

    def _parameters(self, name: str, declared: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        unknown = set(given) - set(declared)
        if unknown:
            raise ValueError(f"{name}: parameters {sorted(unknown)} are not declared")
        out = {}
        kinds = {"string": str, "securestring": str, "int": int, "float": (int, float), "bool": bool, "array": list, "object": dict}
        for pname, spec in declared.items():
            if pname in given:
                value = given[pname]
            elif "defaultValue" in spec:
                value = spec["defaultValue"]
            else:
                raise ValueError(f"{name}: parameter {pname!r} has no value and no default")
            kind = kinds[spec["type"].lower()]
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
                raise ValueError(f"{name}: parameter {pname!r} should be {spec['type']}, got {value!r}")
            out[pname] = value
        return out

    def _context(self, prun: PipelineRun, item: Any, has_item: bool) -> adf_expr.Context:
        def activity(name: str) -> dict[str, Any]:
            run = prun.latest.get(name)
            if run is None:
                raise adf_expr.ExpressionError(f"activity {name!r} has not run (yet) in this pipeline run")
            return {"output": run.output, "error": run.error, "status": run.status}

        return adf_expr.Context(
            pipeline=prun.system, activities=activity, variables=prun.variables, item=item, has_item=has_item
        )

    # ----------------------------------------------------------------------------------
    # Blocks of activities

    def _block(self, prun: PipelineRun, items: list[dict[str, Any]], item: Any, has_item: bool) -> tuple[str, dict[str, str] | None]:
        """Runs a list of activities along their dependencies; returns the block's outcome."""
        state: dict[str, ActivityRun] = {}
        pending = list(items)
        while pending:
            ready = [a for a in pending if all(d["activity"] in state for d in a.get("dependsOn") or [])]
            if not ready:
                raise RuntimeError(f"dependency cycle or unknown dependency among {[a['name'] for a in pending]}")
            a = ready[0]
            pending.remove(a)
            met = all(
                _condition_met(state[d["activity"]].status, d["dependencyConditions"]) for d in a.get("dependsOn") or []
            )
            if met:
                run = self._activity(prun, a, item, has_item)
            else:
                run = ActivityRun(name=a["name"], type=a["type"], status="Skipped", pipeline_run=prun.run_id)
                prun.activity_runs.append(run)
            state[a["name"]] = run
            prun.latest[a["name"]] = run
        depended = {d["activity"] for a in items for d in a.get("dependsOn") or []}
        by_name = {a["name"]: a for a in items}

        def outcome(name: str) -> list[ActivityRun]:
            run = state[name]
            if run.status != "Skipped":
                return [run]
            parents = [d["activity"] for d in by_name[name].get("dependsOn") or []]
            return [r for p in parents for r in outcome(p)]

        for leaf in [a["name"] for a in items if a["name"] not in depended]:
            for r in outcome(leaf):
                if r.status == "Failed":
                    return "Failed", r.error
        return "Succeeded", None

    def _activity(self, prun: PipelineRun, a: dict[str, Any], item: Any, has_item: bool) -> ActivityRun:
        policy = a.get("policy") or {}
        run = ActivityRun(
            name=a["name"],
            type=a["type"],
            secure_input=bool(policy.get("secureInput")),
            secure_output=bool(policy.get("secureOutput")),
            pipeline_run=prun.run_id,
        )
        prun.activity_runs.append(run)
        ctx = self._context(prun, item, has_item)
        handler = getattr(self, f"_do_{a['type']}", None)
        if handler is None:
            raise NotImplementedError(f"the replay has no {a['type']} activity")
        retries = policy.get("retry", 0) if a["type"] in ("WebActivity",) else 0
        retries = adf_expr.evaluate_value(retries, ctx) if not isinstance(retries, int) else retries
        for attempt in range(int(retries) + 1):
            run.attempts = attempt + 1
            try:
                run.output = handler(prun, a, run, ctx, item, has_item)
                run.status, run.error = "Succeeded", None
                break
            except ActivityFailed as err:
                run.status = "Failed"
                run.error = {"errorCode": err.code, "message": err.message}
                run.output = err.output
            except adf_expr.ExpressionError as err:
                run.status = "Failed"
                run.error = {"errorCode": "InvalidTemplate", "message": str(err)}
                break  # an invalid expression fails every attempt alike
            if attempt < retries:
                time.sleep(self.retry_sleep_seconds)
        return run

    # ----------------------------------------------------------------------------------
    # Activities

    def _do_WebActivity(self, prun, a, run, ctx, item, has_item) -> Any:  # noqa: N802
        tp = a["typeProperties"]
        url = adf_expr.evaluate_value(tp["url"], ctx)
        method = adf_expr.evaluate_value(tp["method"], ctx)
        headers = {k: adf_expr.evaluate_value(v, ctx) for k, v in (tp.get("headers") or {}).items()}
        body = adf_expr.evaluate_value(tp["body"], ctx) if "body" in tp else None
        run.input = {"url": url, "method": method, "headers": headers, "body": body}
        if "authentication" in tp:
            run.input["authentication"] = tp["authentication"]
        _check_url(url)
        for k, v in headers.items():
            if not isinstance(v, str):
                raise ActivityFailed("InvalidTemplate", f"header {k} is not a string: {v!r}")
        if method in ("POST", "PUT") and body is None:
            raise ActivityFailed("InvalidTemplate", f"a {method} Web activity needs a body")
        send_headers = dict(headers)
        self._authenticate(tp.get("authentication"), send_headers, ctx)
        timeout = parse_timespan(adf_expr.evaluate_value(tp.get("httpRequestTimeout"), ctx), DEFAULT_HTTP_TIMEOUT)
        data = None if method in ("GET", "DELETE") or body is None else _encode_body(body)
        call = self._http(a["name"], method, url, send_headers, data, timeout)
        turn_off_async = bool(adf_expr.evaluate_value(tp.get("turnOffAsync", False), ctx))
        if call.status == 202 and "location" in call.response_headers and not turn_off_async:
            call = self._follow(a["name"], call, parse_timespan((a.get("policy") or {}).get("timeout"), 7 * 86400))
        return self._web_output(call)

    def _follow(self, activity: str, call: HttpCall, limit: float) -> HttpCall:
        """Data Factory's asynchronous pattern: GET the Location until it is not 202."""
        deadline = time.monotonic() + limit
        while call.status == 202 and "location" in call.response_headers:
            retry_after = call.response_headers.get("retry-after")
            if retry_after is not None:
                self.retry_after_seen.append(retry_after)
            wait = float(retry_after) if retry_after and retry_after.isdigit() else 1.0
            time.sleep(min(wait, self.async_poll_cap_seconds))
            if time.monotonic() > deadline:
                raise ActivityFailed("2108", "the activity timed out while following the Location")
            call = self._http(activity, "GET", call.response_headers["location"], {}, None, DEFAULT_HTTP_TIMEOUT)
        return call

    def _web_output(self, call: HttpCall) -> Any:
        if call.status is None or call.status >= 400:
            raise ActivityFailed(
                "2108",
                f"Error calling the endpoint '{_without_query(call.url)}'. Response status code: {call.status}. "
                f"Response: {_text(call.response_body)}",
                output=call.response_body if isinstance(call.response_body, dict) else None,
            )
        if not isinstance(call.response_body, dict):
            raise ActivityFailed("2108", f"the response of {_without_query(call.url)} is not a JSON object")
        out = dict(call.response_body)
        out["ADFWebActivityResponseHeaders"] = dict(call.response_headers)
        return out

    def _do_WebHook(self, prun, a, run, ctx, item, has_item) -> Any:  # noqa: N802
        tp = a["typeProperties"]
        if self.callbacks is None:
            raise RuntimeError("a Webhook activity needs a CallbackReceiver")
        url = adf_expr.evaluate_value(tp["url"], ctx)
        method = adf_expr.evaluate_value(tp["method"], ctx)
        headers = {k: adf_expr.evaluate_value(v, ctx) for k, v in (tp.get("headers") or {}).items()}
        body = adf_expr.evaluate_value(tp.get("body", {}), ctx)
        run.input = {"url": url, "method": method, "headers": headers, "body": body, "authentication": tp.get("authentication")}
        _check_url(url)
        if method != "POST":
            raise ActivityFailed("InvalidTemplate", "a Webhook activity only POSTs")
        if isinstance(body, str):
            try:
                body = json.loads(body)
            except ValueError as err:
                raise ActivityFailed("InvalidTemplate", f"the Webhook body is not JSON: {err}") from None
        if not isinstance(body, dict):
            raise ActivityFailed("InvalidTemplate", "the Webhook body must be a JSON object")
        callback = self.callbacks.new_uri()
        body = {**body, "callBackUri": callback}
        send_headers = dict(headers)
        self._authenticate(tp.get("authentication"), send_headers, ctx)
        call = self._http(a["name"], method, url, send_headers, _encode_body(body), DEFAULT_HTTP_TIMEOUT)
        if call.status is None or call.status >= 400:
            raise ActivityFailed("2108", f"Webhook call failed: {call.status} {_text(call.response_body)}")
        timeout = min(parse_timespan(tp.get("timeout"), 600), self.webhook_wait_cap_seconds)
        bodies = self.callbacks.wait(callback, timeout)
        if bodies is None:
            raise ActivityFailed("2108", f"no callback within {timeout:.0f}s")
        cb = bodies[0]
        report = adf_expr.evaluate_value(tp.get("reportStatusOnCallBack", False), ctx)
        output = cb.get("Output", cb) if isinstance(cb, dict) else cb
        status_code = cb.get("StatusCode") if isinstance(cb, dict) else None
        if report is True and status_code is not None and int(status_code) >= 400:
            err = cb.get("Error") or {}
            raise ActivityFailed(str(err.get("ErrorCode", status_code)), str(err.get("Message", "")), output=output)
        return output

    def _authenticate(self, auth: Any, headers: dict[str, str], ctx: adf_expr.Context) -> None:
        if not auth:
            return
        kind = auth.get("type")
        if kind == "MSI":
            resource = adf_expr.evaluate_value(auth["resource"], ctx)
            headers["Authorization"] = "Bearer " + self.msi_token(resource)
        elif kind == "Basic":
            user = adf_expr.evaluate_value(auth["username"], ctx)
            password = self._secret(auth["password"], ctx)
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        else:
            raise NotImplementedError(f"the replay has no {kind} authentication")

    def _secret(self, secret: dict[str, Any], ctx: adf_expr.Context) -> str:
        """A SecretBase's value: inline, or read from Key Vault through its linked service with
        the factory's managed identity."""
        if secret["type"] == "SecureString":
            return secret["value"]
        if secret["type"] != "AzureKeyVaultSecret":
            raise NotImplementedError(secret["type"])
        ls_name = secret["store"]["referenceName"]
        ls = self.linked_services.get(ls_name)
        if ls is None or ls.get("type") != "AzureKeyVault":
            raise ActivityFailed("InvalidTemplate", f"no Key Vault linked service {ls_name!r}")
        name = adf_expr.evaluate_value(secret["secretName"], ctx)
        url = f"{ls['baseUrl'].rstrip('/')}/secrets/{urllib.parse.quote(name, safe='')}?api-version=7.4"
        call = self._http(f"(linked service {ls_name})", "GET", url,
                          {"Authorization": "Bearer " + self.msi_token("https://vault.azure.net")}, None, 30)
        if call.status != 200 or not isinstance(call.response_body, dict) or "value" not in call.response_body:
            raise ActivityFailed("2108", f"Key Vault secret {name!r}: {call.status}")
        return call.response_body["value"]

    def _do_Until(self, prun, a, run, ctx, item, has_item) -> Any:  # noqa: N802
        tp = a["typeProperties"]
        limit = parse_timespan(adf_expr.evaluate_value(tp.get("timeout"), ctx), 7 * 86400)
        start = time.monotonic()
        for _ in range(self.max_loop_iterations):
            status, error = self._block(prun, tp["activities"], item, has_item)
            if status == "Failed":
                raise ActivityFailed("ActivityFailed", f"Activity failed because an inner activity failed: {error}")
            done = adf_expr.evaluate_value(tp["expression"], self._context(prun, item, has_item))
            if not isinstance(done, bool):
                raise ActivityFailed("InvalidTemplate", f"the Until expression gave {done!r}, not a boolean")
            if done:
                return {}
            if time.monotonic() - start > limit:
                raise ActivityFailed("ActivityTimedOut", "the Until loop timed out")
        raise ActivityFailed("ReplayGuard", f"the Until loop ran {self.max_loop_iterations} times")

    def _do_ForEach(self, prun, a, run, ctx, item, has_item) -> Any:  # noqa: N802
        tp = a["typeProperties"]
        items = adf_expr.evaluate_value(tp["items"], ctx)
        if not isinstance(items, list):
            raise ActivityFailed("InvalidTemplate", f"ForEach items is not an array: {items!r}")
        run.input = {"items": items}
        errors = []
        for it in items:
            status, error = self._block(prun, tp["activities"], it, True)
            if status == "Failed":
                errors.append(error)
        if errors:
            raise ActivityFailed("ActivityFailed", f"Activity failed because an inner activity failed: {errors[0]}")
        return {}

    def _do_Switch(self, prun, a, run, ctx, item, has_item) -> Any:  # noqa: N802
        tp = a["typeProperties"]
        on = adf_expr.evaluate_value(tp["on"], ctx)
        if not isinstance(on, str):
            raise ActivityFailed("InvalidTemplate", f"the Switch's on gave {on!r}, not a string")
        run.input = {"on": on}
        chosen = next((c.get("activities") or [] for c in tp.get("cases") or [] if c.get("value") == on), None)
        if chosen is None:
            chosen = tp.get("defaultActivities") or []
        status, error = self._block(prun, chosen, item, has_item)
        if status == "Failed":
            raise ActivityFailed(error["errorCode"] if error else "ActivityFailed", error["message"] if error else "")
        return {}

    def _do_IfCondition(self, prun, a, run, ctx, item, has_item) -> Any:  # noqa: N802
        tp = a["typeProperties"]
        cond = adf_expr.evaluate_value(tp["expression"], ctx)
        if not isinstance(cond, bool):
            raise ActivityFailed("InvalidTemplate", f"the If Condition gave {cond!r}, not a boolean")
        status, error = self._block(prun, tp.get("ifTrueActivities" if cond else "ifFalseActivities") or [], item, has_item)
        if status == "Failed":
            raise ActivityFailed(error["errorCode"] if error else "ActivityFailed", error["message"] if error else "")
        return {}

    def _do_Fail(self, prun, a, run, ctx, item, has_item) -> Any:  # noqa: N802
        tp = a["typeProperties"]
        message = adf_expr.evaluate_value(tp["message"], ctx)
        code = adf_expr.evaluate_value(tp["errorCode"], ctx)
        for what, v in (("message", message), ("errorCode", code)):
            if not isinstance(v, str) or not v.strip():
                raise ActivityFailed("InvalidTemplate", f"the Fail activity's {what} must be a non-empty string, got {v!r}")
        run.input = {"message": message, "errorCode": code}
        raise ActivityFailed(code, message)

    def _do_ExecutePipeline(self, prun, a, run, ctx, item, has_item) -> Any:  # noqa: N802
        tp = a["typeProperties"]
        params = {k: adf_expr.evaluate_value(v, ctx) for k, v in (tp.get("parameters") or {}).items()}
        run.input = {"pipeline": tp["pipeline"]["referenceName"], "parameters": params}
        try:
            child = self.run(tp["pipeline"]["referenceName"], params, parent=prun)
        except ValueError as err:
            raise ActivityFailed("InvalidTemplate", str(err)) from None
        output = {"pipelineName": child.name, "pipelineRunId": child.run_id}
        if tp.get("waitOnCompletion", True) and child.status == "Failed":
            failed = next((r.name for r in reversed(child.activity_runs) if r.status == "Failed"), "?")
            raise ActivityFailed(
                (child.error or {}).get("errorCode", "ActivityFailed"),
                f"Operation on target {failed} failed: {(child.error or {}).get('message', '')}",
                output=output,
            )
        return output

    def _do_SetVariable(self, prun, a, run, ctx, item, has_item) -> Any:  # noqa: N802
        tp = a["typeProperties"]
        value = adf_expr.evaluate_value(tp.get("value"), ctx)
        prun.variables[tp["variableName"]] = value
        return {"name": tp["variableName"], "value": value}

    def _do_Wait(self, prun, a, run, ctx, item, has_item) -> Any:  # noqa: N802
        seconds = adf_expr.evaluate_value(a["typeProperties"]["waitTimeInSeconds"], ctx)
        time.sleep(min(float(seconds), 5.0))
        return {}

    # ----------------------------------------------------------------------------------
    # HTTP

    def _http(self, activity: str, method: str, url: str, headers: dict[str, str], data: bytes | None, timeout: float) -> HttpCall:
        call = HttpCall(activity=activity, method=method, url=url, headers=dict(headers), body=data)
        self.calls.append(call)
        req = urllib.request.Request(url, data=data, method=method)
        for k, v in headers.items():
            req.add_header(k, v)
        started = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                call.status, call.response_headers, raw = resp.status, _lower(resp.headers), resp.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as err:
            call.status, call.response_headers, raw = err.code, _lower(err.headers), err.read(MAX_RESPONSE_BYTES + 1)
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            call.error = f"{type(err).__name__}: {err}"
            call.seconds = time.monotonic() - started
            raise ActivityFailed("2108", f"calling {_without_query(url)} failed: {call.error}") from None
        call.seconds = time.monotonic() - started
        if len(raw) > MAX_RESPONSE_BYTES:
            raise ActivityFailed("2108", "the response is larger than 4 MB")
        try:
            call.response_body = json.loads(raw) if raw else None
        except ValueError:
            call.response_body = raw.decode(errors="replace")
        if self.fault is not None and self.fault(call):
            call.error = "answer lost (injected)"
            raise ActivityFailed("2108", f"calling {_without_query(url)} failed: the answer was lost")
        return call


def _condition_met(status: str, conditions: list[str]) -> bool:
    return any(
        (c == "Succeeded" and status == "Succeeded")
        or (c == "Failed" and status == "Failed")
        or (c == "Skipped" and status == "Skipped")
        or (c == "Completed" and status in ("Succeeded", "Failed"))
        for c in conditions
    )


def _check_url(url: Any) -> None:
    if not isinstance(url, str) or not re.match(r"https?://[^/\s]+", url):
        raise ActivityFailed("InvalidTemplate", f"not an absolute http(s) URL: {url!r}")


def _encode_body(body: Any) -> bytes:
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body, separators=(",", ":")).encode()


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _without_query(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _text(body: Any) -> str:
    return body if isinstance(body, str) else json.dumps(body)
