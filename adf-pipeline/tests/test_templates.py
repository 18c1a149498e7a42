"""The templates as files: strict JSON, the models of Microsoft's Python SDK (every property
known, every required one present, nested activities included), the ARM templates built
from the pipeline files, and what the templates promise about secrets and keys."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

import adf_expr
import adf_model
from conftest import PIPELINES_DIR, TEMPLATES_DIR, load_pipelines

PIPELINES = load_pipelines()
ARM_FILES = sorted(p for p in TEMPLATES_DIR.glob("*/*.json") if p.name != "manifest.json")
LINKED_SERVICES = sorted((PIPELINES_DIR.parent / "linkedServices").glob("*.json"))
ALL_JSON = sorted(PIPELINES_DIR.glob("*.json")) + sorted(TEMPLATES_DIR.glob("*/*.json")) + LINKED_SERVICES
EXPECTED = {"Jobdock_RunJob", "Jobdock_RunJob_Async", "Jobdock_RunJob_Webhook", "Jobdock_RunJob_ForEach"}


def test_the_four_templates_are_there():
    assert set(PIPELINES) == EXPECTED
    assert {p.parent.name for p in ARM_FILES} == EXPECTED


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dupes = {k for k in keys if keys.count(k) > 1}
    if dupes:
        raise ValueError(f"duplicate keys {sorted(dupes)}")
    return dict(pairs)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@pytest.mark.parametrize("path", ALL_JSON, ids=lambda p: str(p.relative_to(TEMPLATES_DIR.parent)))
def test_files_are_strict_json_with_two_space_indentation(path: Path):
    text = path.read_text(encoding="utf-8")
    doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    assert text == json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_pipeline_files_match_the_sdk_models(name: str):
    assert adf_model.check_pipeline(PIPELINES[name]) == []


def arm_pipelines(path: Path) -> list[dict[str, Any]]:
    """The pipelines of an ARM template as {name, properties} documents, with the template's
    own escapes (`[[`) and linked-service parameters resolved to their defaults."""
    template = json.loads(path.read_text())
    defaults = {k: v.get("defaultValue") for k, v in template["parameters"].items()}

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        if isinstance(node, str) and node.startswith("[["):
            return node[1:]
        if isinstance(node, str) and node.startswith("[parameters('") and node.endswith("')]"):
            return defaults[node[len("[parameters('") : -len("')]")]]
        assert not (isinstance(node, str) and node.startswith("[")), f"an ARM expression in a pipeline: {node}"
        return node

    out = []
    for r in template["resources"]:
        assert r["type"] == "Microsoft.DataFactory/factories/pipelines" and r["apiVersion"] == "2018-06-01"
        name = r["name"].removeprefix("[concat(parameters('factoryName'), '/").removesuffix("')]")
        out.append({"name": name, "properties": resolve(r["properties"])})
    return out


@pytest.mark.parametrize("path", ARM_FILES, ids=lambda p: p.parent.name)
def test_arm_templates_hold_the_pipeline_files_and_match_the_sdk_models(path: Path):
    docs = arm_pipelines(path)
    assert docs[-1]["name"] == path.parent.name
    for doc in docs:
        assert doc == PIPELINES[doc["name"]], f"{path} differs from pipelines/{doc['name']}.json"
        assert adf_model.check_pipeline(doc) == []


def test_arm_templates_are_up_to_date():
    result = subprocess.run(
        [sys.executable, str(TEMPLATES_DIR.parent / "package"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", LINKED_SERVICES, ids=lambda p: p.stem)
def test_the_example_linked_service_matches_the_sdk_models(path: Path):
    doc = json.loads(path.read_text())
    assert adf_model.check_linked_service(doc) == []
    broken = copy.deepcopy(doc)
    _rename(broken["properties"]["typeProperties"], "baseUrl", "baseURL")
    assert any("baseURL" in e for e in adf_model.check_linked_service(broken))


def test_the_webhook_template_asks_for_its_key_vault_linked_service():
    template = json.loads((TEMPLATES_DIR / "Jobdock_RunJob_Webhook" / "Jobdock_RunJob_Webhook.json").read_text())
    manifest = json.loads((TEMPLATES_DIR / "Jobdock_RunJob_Webhook" / "manifest.json").read_text())
    assert "JobdockKeyVault" in template["parameters"]
    assert manifest["requires"]["linkedservices"] == {"JobdockKeyVault": {"supportTypes": ["AzureKeyVault"]}}


# ----------------------------------------------------------------------------------------
# The checker must catch mistakes: each change below breaks a template in one place.


def _acts(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["properties"]["activities"]


def _poll(doc):  # inside the Until
    return _acts(doc)[2]["typeProperties"]["activities"][0]


def _fail(doc):  # inside a Switch case
    return _acts(doc)[3]["typeProperties"]["cases"][0]["activities"][0]


def _each(doc):  # inside the ForEach
    return _acts(doc)[0]["typeProperties"]["activities"][0]


def _rename(d: dict[str, Any], old: str, new: str) -> None:
    d[new] = d.pop(old)


BREAKAGES: dict[str, tuple[str, Callable[[dict[str, Any]], None], str]] = {
    "misspelt top-level key": ("Jobdock_RunJob", lambda d: _rename(d["properties"], "activities", "activites"), "activites"),
    "misspelt activity key": ("Jobdock_RunJob", lambda d: _rename(_acts(d)[1], "dependsOn", "dependOn"), "dependOn"),
    "misspelt typeProperties key": ("Jobdock_RunJob", lambda d: _rename(_acts(d)[1]["typeProperties"], "headers", "header"), "header"),
    "misspelt key inside Until": ("Jobdock_RunJob", lambda d: _rename(_poll(d)["typeProperties"], "url", "uri"), "uri"),
    "misspelt key inside Switch": ("Jobdock_RunJob", lambda d: _rename(_fail(d)["typeProperties"], "errorCode", "errorcode"), "errorcode"),
    "misspelt key inside ForEach": ("Jobdock_RunJob_ForEach", lambda d: _rename(_each(d)["typeProperties"], "waitOnCompletion", "waitOnCompleted"), "waitOnCompleted"),
    "misspelt policy key": ("Jobdock_RunJob", lambda d: _rename(_acts(d)[0]["policy"], "secureOutput", "secureOuput"), "secureOuput"),
    "misspelt authentication key": ("Jobdock_RunJob", lambda d: _rename(_acts(d)[0]["typeProperties"]["authentication"], "resource", "ressource"), "ressource"),
    "misspelt Webhook key": ("Jobdock_RunJob_Webhook", lambda d: _rename(_acts(d)[0]["typeProperties"], "reportStatusOnCallBack", "reportStatusOnCallback"), "reportStatusOnCallback"),
    "misspelt secret reference key": ("Jobdock_RunJob_Webhook", lambda d: _rename(_acts(d)[0]["typeProperties"]["authentication"]["password"], "secretName", "secret"), "secret"),
    "unknown activity type": ("Jobdock_RunJob", lambda d: _acts(d)[1].update(type="WebActivty"), "WebActivty"),
    "unknown nested activity type": ("Jobdock_RunJob", lambda d: _poll(d).update(type="Web"), "'Web'"),
    "unknown secret type": ("Jobdock_RunJob_Webhook", lambda d: _acts(d)[0]["typeProperties"]["authentication"]["password"].update(type="KeyVaultSecret"), "KeyVaultSecret"),
    "missing required url": ("Jobdock_RunJob", lambda d: _poll(d)["typeProperties"].pop("url"), "typeProperties.url"),
    "missing Until expression": ("Jobdock_RunJob", lambda d: _acts(d)[2]["typeProperties"].pop("expression"), "typeProperties.expression"),
    "missing Fail message": ("Jobdock_RunJob", lambda d: _fail(d)["typeProperties"].pop("message"), "typeProperties.message"),
    "bad method": ("Jobdock_RunJob", lambda d: _acts(d)[1]["typeProperties"].update(method="FETCH"), "FETCH"),
    "bad dependency condition": ("Jobdock_RunJob", lambda d: _acts(d)[1]["dependsOn"][0].update(dependencyConditions=["Succeded"]), "Succeded"),
    "bad parameter type": ("Jobdock_RunJob", lambda d: d["properties"]["parameters"]["env"].update(type="dict"), "dict"),
    "wrong value type": ("Jobdock_RunJob", lambda d: _acts(d)[1]["policy"].update(secureInput="true"), "expected bool"),
    "retry interval under the minimum": ("Jobdock_RunJob", lambda d: _acts(d)[1]["policy"].update(retryIntervalInSeconds=5), "minimum"),
    "unknown function": ("Jobdock_RunJob", lambda d: _poll(d)["typeProperties"]["url"].update(value="@concatt('a')"), "concatt"),
    "undeclared parameter": ("Jobdock_RunJob", lambda d: _acts(d)[1]["typeProperties"]["url"].update(value="@pipeline().parameters.jobdockURL"), "jobdockURL"),
    "unknown activity in an expression": ("Jobdock_RunJob", lambda d: _poll(d)["typeProperties"]["headers"]["Authorization"].update(value="@activity('Read tokens').output.value"), "Read tokens"),
    "broken expression": ("Jobdock_RunJob", lambda d: _acts(d)[2]["typeProperties"]["expression"].update(value="@or(true, "), "expression"),
    "dependsOn outside its container": ("Jobdock_RunJob", lambda d: _poll(d).update(dependsOn=[{"activity": "Start run", "dependencyConditions": ["Succeeded"]}]), "same container"),
}


@pytest.mark.parametrize("label", sorted(BREAKAGES))
def test_the_checker_rejects_a_broken_template(label: str):
    name, breaks, expected = BREAKAGES[label]
    doc = copy.deepcopy(PIPELINES[name])
    breaks(doc)
    errors = adf_model.check_pipeline(doc)
    assert errors, f"{label}: not caught"
    assert any(expected in e for e in errors), errors


# ----------------------------------------------------------------------------------------
# Secrets and keys, as written in the templates


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_no_credential_is_written_in_a_template(name: str):
    doc = PIPELINES[name]
    for s in _strings(doc):
        assert "jd_" not in s and "Bearer ey" not in s
    for a in adf_model.all_activities(doc):
        tp = a.get("typeProperties", {})
        auth = (tp.get("headers") or {}).get("Authorization")
        if auth is not None:
            # Only ever the Key Vault read's output, as a bearer token.
            assert adf_expr.is_expression_object(auth)
            assert auth["value"] == "@concat('Bearer ', activity('Read token').output.value)"
            assert a["policy"]["secureInput"] is True, f"{a['name']} sends the token but shows its input"
        if "authentication" in tp and tp["authentication"]["type"] == "Basic":
            assert tp["authentication"]["password"]["type"] == "AzureKeyVaultSecret"


@pytest.mark.parametrize("name", ["Jobdock_RunJob", "Jobdock_RunJob_Async"])
def test_the_token_is_read_from_key_vault_with_the_managed_identity(name: str):
    read = _acts(PIPELINES[name])[0]
    assert read["name"] == "Read token" and read["type"] == "WebActivity"
    tp = read["typeProperties"]
    assert tp["method"] == "GET"
    assert tp["authentication"] == {"type": "MSI", "resource": "https://vault.azure.net"}
    assert "/secrets/" in tp["url"]["value"] and "?api-version=7.4" in tp["url"]["value"]
    assert read["policy"]["secureOutput"] is True


def test_the_webhook_reports_the_status_of_the_callback():
    hook = _acts(PIPELINES["Jobdock_RunJob_Webhook"])[0]
    assert hook["type"] == "WebHook" and hook["typeProperties"]["reportStatusOnCallBack"] is True


def test_the_foreach_key_is_built_from_the_run_the_activity_and_the_item():
    each = _each(PIPELINES["Jobdock_RunJob_ForEach"])
    key = each["typeProperties"]["parameters"]["idempotencyKey"]["value"]
    assert "pipeline().RunId" in key and "item()" in key
    assert f"'/{each['name']}/'" in key, "the key names another activity than its own"
    assert each["typeProperties"]["pipeline"]["referenceName"] == "Jobdock_RunJob"
    assert each["typeProperties"]["waitOnCompletion"] is True


@pytest.mark.parametrize("name", ["Jobdock_RunJob", "Jobdock_RunJob_Async", "Jobdock_RunJob_Webhook"])
def test_every_trigger_defaults_its_key_to_the_pipeline_run_id(name: str):
    assert PIPELINES[name]["properties"]["parameters"]["idempotencyKey"] == {"type": "string", "defaultValue": ""}
    triggers = [a for a in adf_model.all_activities(PIPELINES[name]) if "idempotency_key" in json.dumps(a.get("typeProperties", {}))]
    assert len(triggers) == 1
    assert "if(empty(pipeline().parameters.idempotencyKey), pipeline().RunId, pipeline().parameters.idempotencyKey)" in triggers[0]["typeProperties"]["body"]["value"]


def test_the_checker_walks_into_if_condition_activities():
    """No template uses If Condition, but a user's copy may: its branches are walked too."""
    doc = copy.deepcopy(PIPELINES["Jobdock_RunJob"])
    fail = copy.deepcopy(_fail(doc))
    _acts(doc).append({
        "name": "Branch",
        "type": "IfCondition",
        "dependsOn": [{"activity": "Check outcome", "dependencyConditions": ["Succeeded"]}],
        "userProperties": [],
        "typeProperties": {
            "expression": {"value": "@equals(activity('Poll run').output.status, 'failed')", "type": "Expression"},
            "ifTrueActivities": [{**fail, "name": "Fail again"}],
        },
    })
    assert adf_model.check_pipeline(doc) == []
    _rename(_acts(doc)[-1]["typeProperties"]["ifTrueActivities"][0]["typeProperties"], "message", "mesage")
    assert any("mesage" in e for e in adf_model.check_pipeline(doc))
