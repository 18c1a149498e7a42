"""The HTTP calls each template makes, replayed in Data Factory's order against a live engine
running real containers: for a run that succeeds and one that fails (and, for the standard
template, one that outlasts the timeout and a trigger whose answer is lost).

The replay evaluates the templates' own expressions (adf_runtime, adf_expr): a wrong URL,
header, body or condition in a template fails these tests."""

from __future__ import annotations

import base64
import copy
import json
import re
import urllib.parse
import urllib.request
from typing import Any

import pytest

from adf_runtime import PipelineRun, Runtime

pytestmark = pytest.mark.engine

FINAL = {"succeeded", "failed", "timed_out", "cancelled", "lost", "skipped"}


def params_for(pipelines: dict[str, Any], name: str, base: dict[str, Any], **extra: Any) -> dict[str, Any]:
    declared = pipelines[name]["properties"]["parameters"]
    return {**{k: v for k, v in base.items() if k in declared}, **extra}


def jobdock_calls(rt: Runtime) -> list:
    return [c for c in rt.calls if "/api/v1/" in c.url]


def path_of(url: str) -> str:
    return urllib.parse.urlsplit(url).path


def read_log(logs_url: str) -> str:
    """A run's log through its signed URL, with no credential at all."""
    with urllib.request.urlopen(logs_url, timeout=30) as resp:
        return resp.read().decode()


def assert_no_token_in_monitoring(prun: PipelineRun, token: str) -> None:
    """What the monitoring view shows (inputs and outputs not marked secure) never holds the
    token. Only the activity names are reported, never the matching content."""
    leaking = [
        entry["activity"]
        for entry in prun.monitoring_view()
        if token in json.dumps(entry["input"]) or token in json.dumps(entry["output"])
        or token in json.dumps(entry["error"])
    ]
    assert not leaking, f"the token shows in the monitoring view of {leaking}"


def assert_calls_answered_in_time(rt: Runtime) -> None:
    """Every call answered inside Data Factory's one-minute Web activity limit, and no long
    poll asked for more than 50 seconds."""
    for c in rt.calls:
        assert c.seconds < 60, f"{c.summary()} took {c.seconds:.1f}s"
        wait = urllib.parse.parse_qs(urllib.parse.urlsplit(c.url).query).get("wait_seconds")
        if wait:
            assert 1 <= int(wait[0]) <= 50, f"{c.summary()} asks wait_seconds={wait[0]}"


# ----------------------------------------------------------------------------------------
# The standard template: Web (Key Vault) -> Web (trigger) -> Until(long poll) -> Switch(Fail)


def test_standard_template_run_succeeds(pipelines, make_runtime, base_params, jobdock, adf_token):
    rt = make_runtime()
    env = {"CUSTOMER": 'a "quoted" \\ value', "NOTE": "hi"}
    prun = rt.run("Jobdock_RunJob", params_for(pipelines, "Jobdock_RunJob", base_params,
                                               jobName="adf-ok", env=env, pollIntervalSeconds=20))
    assert prun.status == "Succeeded", prun.summary()

    # Key Vault first, with the managed identity, then the trigger, then long polls.
    assert rt.calls[0].activity == "Read token"
    assert path_of(rt.calls[0].url) == "/secrets/jobdock-adf"
    calls = jobdock_calls(rt)
    assert [c.activity for c in calls[:1]] == ["Start run"]
    start = calls[0]
    assert (start.method, path_of(start.url), start.status) == ("POST", "/api/v1/jobs/adf-ok/runs", 201)
    # Compared apart, so that a failure never prints the token.
    bearer = start.headers.get("Authorization") == f"Bearer {adf_token}"
    assert bearer, "the trigger does not send the Key Vault secret as its bearer token"
    body = json.loads(start.body)
    assert body == {"env": env, "idempotency_key": prun.run_id}
    polls = calls[1:]
    assert polls and all(c.activity == "Poll run" and c.method == "GET" for c in polls)
    run_id = start.response_body["id"]
    assert all(path_of(c.url) == f"/api/v1/runs/{run_id}" for c in polls)
    assert all("wait_seconds=20" in c.url for c in polls)
    assert polls[-1].response_body["status"] == "succeeded"
    assert all(c.response_body["status"] not in FINAL for c in polls[:-1])
    assert not prun.runs_of("Cancel run") and not prun.runs_of("Run did not succeed")
    assert_calls_answered_in_time(rt)
    assert_no_token_in_monitoring(prun, adf_token)

    # The engine's side: one run, with the pipeline run's id as its key and the env overrides.
    run = jobdock.wait_final(run_id)
    assert run["status"] == "succeeded" and run["idempotency_key"] == prun.run_id
    log = read_log(run["logs_url"])
    assert f"customer={env['CUSTOMER']}" in log and "note=hi" in log


def test_standard_template_run_fails_with_reason_and_log_link(pipelines, make_runtime, base_params, adf_token):
    rt = make_runtime()
    prun = rt.run("Jobdock_RunJob", params_for(pipelines, "Jobdock_RunJob", base_params,
                                               jobName="adf-fail", env={"CUSTOMER": "b"}, pollIntervalSeconds=20))
    assert prun.status == "Failed", prun.summary()
    [fail] = prun.runs_of("Run did not succeed")
    assert fail.status == "Failed"
    last_poll = prun.runs_of("Poll run")[-1].output
    assert last_poll["status"] == "failed" and last_poll["exit_code"] == 3
    reason, logs_url = last_poll["reason"], last_poll["logs_url"]
    assert reason and re.match(r"https?://", logs_url)
    # The Fail activity carries the run's reason and its log link, and the pipeline fails with it.
    assert reason in fail.error["message"] and logs_url in fail.error["message"]
    assert "exit code 3" in fail.error["message"]
    assert fail.error["errorCode"] == "Jobdock.failed"
    assert prun.error == fail.error
    # The link opens the run's log without a token.
    assert "failing for b" in read_log(logs_url)
    assert not prun.runs_of("Cancel run")
    assert_calls_answered_in_time(rt)
    assert_no_token_in_monitoring(prun, adf_token)


def test_standard_template_cancels_a_run_that_outlasts_the_timeout(pipelines, make_runtime, base_params, jobdock, adf_token):
    rt = make_runtime()
    prun = rt.run("Jobdock_RunJob", params_for(pipelines, "Jobdock_RunJob", base_params,
                                               jobName="adf-slow", timeoutSeconds=3, pollIntervalSeconds=1))
    assert prun.status == "Failed", prun.summary()
    [cancel] = prun.runs_of("Cancel run")
    assert cancel.status == "Succeeded", prun.summary()
    cancel_call = next(c for c in rt.calls if c.activity == "Cancel run")
    run_id = jobdock_calls(rt)[0].response_body["id"]
    assert (cancel_call.method, path_of(cancel_call.url)) == ("POST", f"/api/v1/runs/{run_id}/cancel")
    [timed_out] = prun.runs_of("Run timed out")
    assert timed_out.error["errorCode"] == "Jobdock.wait_timed_out"
    assert run_id in timed_out.error["message"] and prun.runs_of("Poll run")[-1].output["logs_url"] in timed_out.error["message"]
    assert jobdock.wait_final(run_id)["status"] == "cancelled"
    assert_calls_answered_in_time(rt)
    assert_no_token_in_monitoring(prun, adf_token)


def test_a_retried_trigger_does_not_start_a_second_run(pipelines, make_runtime, base_params, jobdock):
    """The first trigger's answer is lost after the engine handled it; the activity's retry
    sends the same key and gets the same run back (200), not a new one."""
    lost = []

    def lose_first_trigger_answer(call) -> bool:
        if call.activity == "Start run" and not lost:
            lost.append(call)
            return True
        return False

    rt = make_runtime(fault=lose_first_trigger_answer)
    prun = rt.run("Jobdock_RunJob", params_for(pipelines, "Jobdock_RunJob", base_params,
                                               jobName="adf-ok", env={"CUSTOMER": "retry"}, pollIntervalSeconds=20))
    assert prun.status == "Succeeded", prun.summary()
    triggers = [c for c in rt.calls if c.activity == "Start run"]
    assert [c.status for c in triggers] == [201, 200]
    assert triggers[0].body == triggers[1].body
    assert triggers[0].response_body["id"] == triggers[1].response_body["id"]
    [start] = prun.runs_of("Start run")
    assert start.attempts == 2
    status, _, page = jobdock.request("GET", "/api/v1/runs?job=adf-ok&limit=100")
    assert status == 200
    assert [r["id"] for r in page["items"] if r["idempotency_key"] == prun.run_id] == [triggers[0].response_body["id"]]


def test_a_wrong_expression_in_a_template_fails_the_replay(pipelines, make_runtime, base_params):
    """The replay uses the template's own expressions: a wrong path in the poll URL fails."""
    broken = copy.deepcopy(pipelines["Jobdock_RunJob"])
    poll = broken["properties"]["activities"][2]["typeProperties"]["activities"][0]
    poll["typeProperties"]["url"]["value"] = poll["typeProperties"]["url"]["value"].replace("/api/v1/runs/", "/api/v1/run/")
    rt = make_runtime({"Jobdock_RunJob": broken}, retry_sleep_seconds=0)
    prun = rt.run("Jobdock_RunJob", params_for(pipelines, "Jobdock_RunJob", base_params, jobName="adf-ok"))
    assert prun.status == "Failed"
    assert [c.status for c in rt.calls if c.activity == "Poll run"] == [404] * 4  # 1 + 3 retries


def test_the_monitoring_check_sees_a_token_when_an_activity_is_not_secure(pipelines, make_runtime, base_params, adf_token):
    """The check above can fail: with secureInput off, the trigger's Authorization header
    shows in the monitoring view."""
    leaky = copy.deepcopy(pipelines["Jobdock_RunJob"])
    leaky["properties"]["activities"][1]["policy"]["secureInput"] = False
    rt = make_runtime({"Jobdock_RunJob": leaky})
    prun = rt.run("Jobdock_RunJob", params_for(pipelines, "Jobdock_RunJob", base_params, jobName="adf-ok"))
    assert prun.status == "Succeeded", prun.summary()
    with pytest.raises(AssertionError, match=r"\['Start run'\]"):
        assert_no_token_in_monitoring(prun, adf_token)


# ----------------------------------------------------------------------------------------
# The asynchronous template: one Web activity, Data Factory follows 202 + Location


def test_async_template_follows_the_signed_location_until_success(pipelines, make_runtime, base_params, adf_token):
    rt = make_runtime()
    prun = rt.run("Jobdock_RunJob_Async", params_for(pipelines, "Jobdock_RunJob_Async", base_params,
                                                     jobName="adf-ok", env={"CUSTOMER": "async"}))
    assert prun.status == "Succeeded", prun.summary()
    calls = jobdock_calls(rt)
    first = calls[0]
    assert (first.method, path_of(first.url), first.status) == ("POST", "/api/v1/jobs/adf-ok/runs", 202)
    assert first.headers["Prefer"] == "respond-async"
    run_id = first.response_body["id"]
    follows = calls[1:]
    assert follows, "the answer was final at once; the Location was never followed"
    for c in follows:
        # No Authorization, no header at all: the signed URL is the only credential.
        assert c.method == "GET" and c.headers == {}
        assert path_of(c.url) == f"/api/v1/runs/{run_id}/outcome" and "sig=" in c.url
    assert [c.status for c in follows][-1] == 200 and all(c.status == 202 for c in follows[:-1])
    assert rt.retry_after_seen and all(int(v) > 0 for v in rt.retry_after_seen)
    [run_job] = prun.runs_of("Run job")
    assert run_job.output["id"] == run_id and run_job.output["status"] == "succeeded"
    assert_calls_answered_in_time(rt)
    assert_no_token_in_monitoring(prun, adf_token)


def test_async_template_fails_with_the_outcome_problem(pipelines, make_runtime, base_params, adf_token):
    rt = make_runtime()
    prun = rt.run("Jobdock_RunJob_Async", params_for(pipelines, "Jobdock_RunJob_Async", base_params,
                                                     jobName="adf-fail", env={"CUSTOMER": "c"}))
    assert prun.status == "Failed", prun.summary()
    calls = jobdock_calls(rt)
    # The first attempt: the trigger, then the Location until the final answer. (The
    # activity's retries then ask again with the same key, and get the same 424 at once.)
    ends = next(i for i, c in enumerate(calls) if c.status >= 400)
    assert calls[0].status == 202 and all(c.headers == {} for c in calls[1 : ends + 1])
    final = calls[ends]
    assert final.status == 424
    retries = calls[ends + 1 :]
    assert [(c.method, c.status) for c in retries] == [("POST", 424)] * 3
    assert all(c.body == calls[0].body for c in retries)
    problem = final.response_body
    assert problem["run_status"] == "failed" and problem["exit_code"] == 3
    [run_job] = prun.runs_of("Run job")
    # Data Factory's error for a 4xx carries the response: the reason and the log link.
    assert problem["reason"] in run_job.error["message"] and problem["logs_url"] in run_job.error["message"]
    assert "failing for c" in read_log(problem["logs_url"])
    assert_calls_answered_in_time(rt)
    assert_no_token_in_monitoring(prun, adf_token)


# ----------------------------------------------------------------------------------------
# The Webhook template: Jobdock calls Data Factory back


def test_webhook_template_succeeds_on_callback(pipelines, make_runtime, base_params, callbacks, adf_token):
    rt = make_runtime()
    prun = rt.run("Jobdock_RunJob_Webhook", params_for(pipelines, "Jobdock_RunJob_Webhook", base_params,
                                                       jobName="adf-ok", env={"CUSTOMER": "hook"}))
    assert prun.status == "Succeeded", prun.summary()
    # The secret comes through the Key Vault linked service, as the Basic password.
    kv_call, trigger = rt.calls[0], jobdock_calls(rt)[0]
    assert kv_call.activity == "(linked service JobdockKeyVault)"
    basic = trigger.headers.get("Authorization") == "Basic " + base64.b64encode(f"adf:{adf_token}".encode()).decode()
    assert basic, "the Webhook does not send the Key Vault secret as its Basic password"
    assert trigger.status in (201, 200)
    sent = json.loads(trigger.body)
    assert sent["env"] == {"CUSTOMER": "hook"} and sent["idempotency_key"] == prun.run_id
    [cb] = callbacks.bodies(sent["callBackUri"])
    assert cb["StatusCode"] == "200" and cb["Output"]["status"] == "succeeded"
    [run_job] = prun.runs_of("Run job")
    assert run_job.output["id"] == trigger.response_body["id"]
    assert_no_token_in_monitoring(prun, adf_token)


def test_webhook_template_fails_on_a_failed_run(pipelines, make_runtime, base_params, callbacks, adf_token):
    rt = make_runtime()
    prun = rt.run("Jobdock_RunJob_Webhook", params_for(pipelines, "Jobdock_RunJob_Webhook", base_params,
                                                       jobName="adf-fail", env={"CUSTOMER": "d"}))
    assert prun.status == "Failed", prun.summary()
    trigger = jobdock_calls(rt)[0]
    [cb] = callbacks.bodies(json.loads(trigger.body)["callBackUri"])
    assert int(cb["StatusCode"]) >= 400 and cb["Output"]["status"] == "failed"
    [run_job] = prun.runs_of("Run job")
    assert run_job.error == {"errorCode": cb["Error"]["ErrorCode"], "message": cb["Error"]["Message"]}
    assert cb["Output"]["reason"] in run_job.error["message"]
    assert cb["Output"]["logs_url"] in run_job.error["message"]
    assert_no_token_in_monitoring(prun, adf_token)


def test_without_report_status_on_callback_a_failed_run_would_pass(pipelines, make_runtime, base_params):
    """Why the template sets reportStatusOnCallBack: without it the same failed run passes."""
    lax = copy.deepcopy(pipelines["Jobdock_RunJob_Webhook"])
    lax["properties"]["activities"][0]["typeProperties"]["reportStatusOnCallBack"] = False
    rt = make_runtime({"Jobdock_RunJob_Webhook": lax})
    prun = rt.run("Jobdock_RunJob_Webhook", params_for(pipelines, "Jobdock_RunJob_Webhook", base_params,
                                                       jobName="adf-fail", env={"CUSTOMER": "e"}))
    assert prun.status == "Succeeded", prun.summary()
    assert prun.runs_of("Run job")[0].output["status"] == "failed"


# ----------------------------------------------------------------------------------------
# The ForEach template: one run per item through the standard template


def test_foreach_template_keys_each_run_by_pipeline_run_activity_and_item(pipelines, make_runtime, base_params, jobdock, adf_token):
    long_note = 'x"y\\z ' * 60  # makes a key longer than 255 characters
    items = [{"CUSTOMER": "f1"}, {"CUSTOMER": "f2", "NOTE": long_note}]
    rt = make_runtime()
    prun = rt.run("Jobdock_RunJob_ForEach", params_for(pipelines, "Jobdock_RunJob_ForEach", base_params,
                                                       jobName="adf-ok", items=items, pollIntervalSeconds=20))
    assert prun.status == "Succeeded", prun.summary()
    assert len(prun.children) == 2
    triggers = [c for c in rt.calls if c.activity == "Start run"]
    assert len(triggers) == 2
    for item, child, trig in zip(items, prun.children, triggers):
        assert child.status == "Succeeded"
        key = f"{prun.run_id}/Run job for item/{json.dumps(item, separators=(',', ':'))}"
        assert child.parameters["idempotencyKey"] == key and child.parameters["env"] == item
        assert json.loads(trig.body) == {"env": item, "idempotency_key": key}
        run = jobdock.wait_final(trig.response_body["id"])
        assert run["status"] == "succeeded"
        assert f"customer={item['CUSTOMER']}" in read_log(run["logs_url"])
    assert len(json.loads(triggers[1].body)["idempotency_key"]) > 255

    # An Execute Pipeline retried with the same key (a retry inside the child, or the child
    # started again) gets the same run back: it never starts a second one.
    again = make_runtime()
    child = again.run("Jobdock_RunJob", prun.children[1].parameters)
    assert child.status == "Succeeded", child.summary()
    [retrigger] = [c for c in again.calls if c.activity == "Start run"]
    assert retrigger.status == 200 and retrigger.response_body["id"] == triggers[1].response_body["id"]
    assert_no_token_in_monitoring(prun, adf_token)


def test_foreach_template_fails_when_an_item_fails(pipelines, make_runtime, base_params):
    rt = make_runtime()
    prun = rt.run("Jobdock_RunJob_ForEach", params_for(pipelines, "Jobdock_RunJob_ForEach", base_params,
                                                       jobName="adf-fail", items=[{"CUSTOMER": "g"}], pollIntervalSeconds=20))
    assert prun.status == "Failed", prun.summary()
    [child] = prun.children
    [fail] = child.runs_of("Run did not succeed")
    assert fail.error["message"] in prun.error["message"]
