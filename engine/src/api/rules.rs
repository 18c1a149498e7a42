//! The rules the service checks, declared in the OpenAPI document where the derive cannot
//! place them (items of lists, names of map keys, path parameters, patches), so that a client
//! built from the document foresees the service's 422s. The service's own checks
//! (`service::validate` and its neighbours) stay the authority and give the messages; the
//! schema-driven tests (`tests/api/fuzz`) hold the two together.

use serde_json::{json, Value};

/// A job, channel or lock name: a DNS label.
const NAME: &str = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$";
/// A job-name pattern of a token or a subscription: `*` matches any run of characters.
const JOB_PATTERN: &str = "^[a-z0-9*-]+$";
/// An environment variable or secret name; `JOBDOCK_*` is the engine's.
const VAR_NAME: &str = "^(?![Jj][Oo][Bb][Dd][Oo][Cc][Kk]_)[A-Za-z_][A-Za-z0-9_]*$";
/// A lock key.
const LOCK_KEY: &str = "^[a-z0-9._-]+$";
/// Text without NUL characters.
const NO_NUL: &str = "^[^\\x00]*$";
/// Text without control characters (Unicode category Cc).
const NO_CONTROL: &str = "^[^\\x00-\\x1F\\x7F-\\x9F]*$";

fn name() -> Value {
    json!({"pattern": NAME, "minLength": 1, "maxLength": 63})
}

fn job_pattern() -> Value {
    json!({"type": "string", "pattern": JOB_PATTERN, "minLength": 1, "maxLength": 63})
}

fn var_name() -> Value {
    json!({"type": "string", "pattern": VAR_NAME, "minLength": 1, "maxLength": 255})
}

fn text() -> Value {
    json!({"type": "string", "pattern": NO_NUL})
}

fn lock_key() -> Value {
    json!({"type": "string", "pattern": LOCK_KEY, "minLength": 1, "maxLength": 63})
}

/// (component schema, property, keywords merged into the property's schema).
fn body_rules() -> Vec<(&'static str, &'static str, Value)> {
    let day = 86_400;
    vec![
        (
            "NewToken",
            "name",
            json!({"pattern": "\\S", "minLength": 1, "maxLength": 100}),
        ),
        (
            "NewToken",
            "jobs",
            json!({"minItems": 1, "items": job_pattern()}),
        ),
        ("ChannelSubscription", "jobs", job_pattern()),
        (
            "ChannelSubscription",
            "on",
            json!({"minItems": 1, "uniqueItems": true}),
        ),
        ("NewChannel", "name", name()),
        (
            "NewChannel",
            "url",
            json!({"pattern": crate::service::channels::URL_PATTERN, "maxLength": 2048}),
        ),
        (
            "NewChannel",
            "signing_secret",
            json!({"pattern": "^[!-~]{16,256}$"}),
        ),
        ("NewChannel", "description", json!({"pattern": NO_NUL})),
        ("SecretValue", "value", json!({"pattern": NO_NUL})),
        (
            "TriggerRequest",
            "idempotency_key",
            json!({"pattern": NO_CONTROL, "minLength": 1, "maxLength": 4096}),
        ),
        (
            "TriggerRequest",
            "env",
            json!({"propertyNames": var_name(), "additionalProperties": text()}),
        ),
        (
            "TriggerRequest",
            "command",
            json!({"minItems": 1, "items": text()}),
        ),
        (
            "JobSpec",
            "image",
            json!({"pattern": "^[^\\s\\x00-\\x1F\\x7F-\\x9F]+$", "maxLength": 512}),
        ),
        ("JobSpec", "command", json!({"items": text()})),
        (
            "JobSpec",
            "env",
            json!({"propertyNames": var_name(), "additionalProperties": text()}),
        ),
        (
            "JobSpec",
            "secrets",
            json!({"propertyNames": var_name(), "additionalProperties": text()}),
        ),
        (
            "JobSpec",
            "lock_keys",
            json!({"uniqueItems": true, "items": lock_key()}),
        ),
        (
            "JobSpec",
            "expected_duration_seconds",
            json!({"minimum": 1, "maximum": 366 * day}),
        ),
        (
            "JobSpec",
            "network",
            json!({"pattern": "^[A-Za-z0-9._-]+$", "minLength": 1, "maxLength": 128}),
        ),
        ("JobSpec", "description", json!({"pattern": NO_NUL})),
        (
            "Retries",
            "max_attempts",
            json!({"minimum": 1, "maximum": 100}),
        ),
        (
            "Retries",
            "backoff_seconds",
            json!({"minimum": 0, "maximum": day}),
        ),
        (
            "Monitoring",
            "long_running_factor",
            json!({"minimum": 1, "maximum": 1000}),
        ),
        (
            "Monitoring",
            "slow_start_factor",
            json!({"minimum": 1, "maximum": 1000}),
        ),
        (
            "Monitoring",
            "unusually_fast_ratio",
            json!({"minimum": 0, "maximum": 1}),
        ),
        (
            "Monitoring",
            "long_running_min_extra_seconds",
            json!({"minimum": 0, "maximum": 366 * day}),
        ),
        (
            "Monitoring",
            "slow_start_min_extra_seconds",
            json!({"minimum": 0, "maximum": 366 * day}),
        ),
        (
            "Monitoring",
            "stall_after_seconds",
            json!({"minimum": 0, "maximum": 366 * day}),
        ),
        (
            "Monitoring",
            "failure_streak",
            json!({"minimum": 0, "maximum": 1000}),
        ),
        (
            "Monitoring",
            "min_samples",
            json!({"minimum": 1, "maximum": 20}),
        ),
    ]
}

/// (operation id, parameter, keywords merged into its schema).
fn parameter_rules() -> Vec<(&'static str, &'static str, Value)> {
    // The lists whose cursor is a number (the others page by name).
    let numeric_cursor = json!({"pattern": "^[+-]?[0-9]{1,18}$"});
    let numbered = [
        "listRuns",
        "listRunEvents",
        "listAuditEntries",
        "listAnomalies",
        "listChannelDeliveries",
        "listJobStateVersions",
    ];
    let cursors = numbered
        .into_iter()
        .map(|op| (op, "cursor", numeric_cursor.clone()));
    cursors
        .chain([
            ("getLock", "key", lock_key()),
            ("setLockCapacity", "key", lock_key()),
            ("setJobSecret", "key", var_name()),
            ("deleteJobSecret", "key", var_name()),
            (
                "triggerRun",
                "Idempotency-Key",
                json!({"pattern": NO_CONTROL, "minLength": 1, "maxLength": 4096}),
            ),
            (
                "putJobState",
                "If-Match",
                json!({"type": "string", "pattern": "^\\s*(\\*|(W/)?\"?[0-9]{1,18}\"?)\\s*$"}),
            ),
        ])
        .collect()
}

/// Merges `keywords` into `schema`; an `items` (or `additionalProperties`) object is merged
/// into the existing one rather than replacing it.
fn merge(schema: &mut Value, keywords: &Value) {
    let (Some(schema), Some(keywords)) = (schema.as_object_mut(), keywords.as_object()) else {
        return;
    };
    for (k, v) in keywords {
        match schema.get_mut(k) {
            Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
            _ => {
                schema.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Makes `{name}Patch`, the schema of a JSON merge patch (RFC 7396) of the component `name`:
/// the same properties, none required, nothing else, and `null` allowed wherever a member
/// may be (it removes the member), down through nested objects and maps. Arrays are
/// replaced whole, so their items keep their schema. `keep` limits the properties.
fn add_patch_schema(schemas: &mut Value, name: &str, keep: Option<&[&str]>) -> String {
    let patch_name = format!("{name}Patch");
    if schemas.get(&patch_name).is_some() {
        return patch_name;
    }
    let mut patch = schemas[name].clone();
    schemas[&patch_name] = json!({}); // stops a cycle of references
    if let Some(obj) = patch.as_object_mut() {
        obj.remove("required");
        obj.remove("if");
        obj.remove("then");
        obj.insert("additionalProperties".into(), Value::Bool(false));
        let description =
            "A JSON merge patch (RFC 7396): the members to change; `null` removes one.";
        obj.insert("description".into(), description.into());
        if let Some(props) = obj.get_mut("properties").and_then(Value::as_object_mut) {
            if let Some(keep) = keep {
                props.retain(|k, _| keep.contains(&k.as_str()));
            }
            for prop in props.values_mut() {
                *prop = nullable(schemas, prop.clone());
            }
        }
    }
    schemas[&patch_name] = patch;
    patch_name
}

/// `schema` as a member of a merge patch: also `null`; a referenced object as its patch; a
/// map's values as members too.
fn nullable(schemas: &mut Value, mut schema: Value) -> Value {
    if let Some(target) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .map(str::to_owned)
    {
        let name = target
            .trim_start_matches("#/components/schemas/")
            .to_owned();
        if schemas[&name].get("properties").is_some() {
            let patch = add_patch_schema(schemas, &name, None);
            schema["$ref"] = format!("#/components/schemas/{patch}").into();
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(branches) = schema.get_mut(key).and_then(Value::as_array_mut) {
            let taken = std::mem::take(branches);
            *branches = taken.into_iter().map(|b| nullable(schemas, b)).collect();
        }
    }
    if schema
        .get("additionalProperties")
        .is_some_and(Value::is_object)
    {
        let values = schema["additionalProperties"].take();
        schema["additionalProperties"] = nullable(schemas, values);
    }
    json!({"anyOf": [{"type": "null"}, schema]})
}

/// Applies the rules to the document in its JSON form.
pub fn apply(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    for (schema, property, keywords) in body_rules() {
        let target = &mut schemas[schema]["properties"][property];
        assert!(
            target.is_object(),
            "no property `{property}` in schema `{schema}`"
        );
        merge(target, &keywords);
    }
    // Only webhooks sign their requests.
    schemas["NewChannel"]["if"] =
        json!({"properties": {"kind": {"const": "slack"}}, "required": ["kind"]});
    schemas["NewChannel"]["then"] = json!({"properties": {"signing_secret": {"type": "null"}}});
    add_patch_schema(schemas, "JobSpec", None);
    let patchable = [
        "name",
        "kind",
        "url",
        "signing_secret",
        "description",
        "subscribe",
    ];
    add_patch_schema(schemas, "NewChannel", Some(&patchable));

    let rules = parameter_rules();
    let patches = [
        ("patchJob", "JobSpecPatch"),
        ("patchChannel", "NewChannelPatch"),
    ];
    for item in doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|p| p.values_mut())
    {
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|m| m.values_mut())
        {
            let id = op["operationId"].as_str().unwrap_or_default().to_owned();
            for (_, param, schema) in rules.iter().filter(|(op_id, ..)| *op_id == id) {
                for p in op["parameters"].as_array_mut().into_iter().flatten() {
                    if p["name"] == *param {
                        merge(&mut p["schema"], schema);
                    }
                }
            }
            if let Some((_, schema)) = patches.iter().find(|(op_id, _)| *op_id == id) {
                op["requestBody"]["content"]["application/merge-patch+json"]["schema"] =
                    json!({"$ref": format!("#/components/schemas/{schema}")});
            }
        }
    }
}
