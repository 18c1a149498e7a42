//! A request body checked against its schema in the served OpenAPI document.
//!
//! serde is more lenient than the document: it reads a struct from an array of its fields
//! (`"resources": [null, null]`), so a client could send what the document forbids and have
//! it accepted. After serde has read a body, its JSON is checked against the schema the
//! document declares for it, and any mismatch of *type* is a 422 naming the field. The other
//! rules (patterns, lengths, ranges) are checked by the service, with messages made for
//! people; the document declares them too, and the schema-driven tests hold the two
//! together.
//!
//! Written here rather than taken from a crate: the JSON Schema validation itself is
//! `jsonschema`'s; what is ours is only picking the schema out of the document and naming the
//! field the way the rest of the API does.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use jobdock_types::FieldError;
use jsonschema::error::ValidationErrorKind;
use serde_json::{json, Value};

/// The document's component schemas, in which every validator resolves its references.
/// The document is a pure function of the code, so it is built once per process, like a
/// compiled regular expression.
static SCHEMAS: LazyLock<Value> =
    LazyLock::new(|| super::openapi::document()["components"]["schemas"].clone());

/// Validators by schema name, each built on its first use (`None`: not usable). Building
/// one for every schema of the document at once, as this did, took the engine from 32 to
/// 84 MiB on the first request with a body, for the handful that request bodies use.
static VALIDATORS: LazyLock<Mutex<HashMap<String, Option<Arc<jsonschema::Validator>>>>> =
    LazyLock::new(Mutex::default);

/// The validator of schema `name`; `None` when the document has no such schema.
fn validator(name: &str) -> Option<Arc<jsonschema::Validator>> {
    // A panic while building leaves the map whole: an entry is inserted once built.
    let mut map = VALIDATORS.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(name.to_owned())
        .or_insert_with(|| build(name).map(Arc::new))
        .clone()
}

fn build(name: &str) -> Option<jsonschema::Validator> {
    SCHEMAS.get(name)?;
    let root = json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": { "schemas": &*SCHEMAS },
    });
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .inspect_err(|e| tracing::error!(schema = %name, error = %e, "schema not usable"))
        .ok()
}

/// The fields of `body` whose JSON type is not the one the schema `name` declares. A name
/// the document does not know checks nothing.
pub fn type_errors(name: &str, body: &Value) -> Vec<FieldError> {
    let Some(validator) = validator(name) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in validator.iter_errors(body) {
        shape_errors(&e, &mut found);
    }
    let mut errors: Vec<FieldError> = Vec::new();
    for (field, message) in found {
        if !errors.iter().any(|x| x.field == field) {
            errors.push(FieldError::new(field, message));
        }
    }
    errors
}

/// The (field, message) pairs of `e` that are about the body's shape: a wrong type, or a
/// member its schema does not have (a misspelt `{"descripton": null}` in a merge patch would
/// otherwise change nothing, silently). Inside a `oneOf`/`anyOf` whose branches do not all
/// fail on the type, the branches whose type matched are looked into.
fn shape_errors(e: &jsonschema::ValidationError<'_>, out: &mut Vec<(String, String)>) {
    // A conditional (`if`/`then`) states a rule between fields, which the service checks
    // with the others and a better message; only the plain shape is checked here.
    let schema_path = e.schema_path().to_string();
    if schema_path.contains("/then") || schema_path.contains("/else") {
        return;
    }
    let at = field_name(&e.instance_path().to_string());
    if let Some(expected) = expected_types(e) {
        out.push((at, format!("must be {}", expected.join(" or "))));
        return;
    }
    match e.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            for name in unexpected {
                let field = match at.as_str() {
                    "body" => name.clone(),
                    _ => format!("{at}.{name}"),
                };
                out.push((field, "is not a field of this body".to_owned()));
            }
        }
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
            let here = e.instance_path().to_string();
            for branch in context {
                let type_matched = !branch
                    .iter()
                    .any(|b| b.instance_path().to_string() == here && expected_types(b).is_some());
                if type_matched {
                    branch.iter().for_each(|b| shape_errors(b, out));
                }
            }
        }
        _ => {}
    }
}

/// The JSON types the schema allows where `e` failed, when it failed on the type: a `type`
/// keyword, or a `oneOf`/`anyOf` (utoipa's `null` or a `$ref`) each of whose branches fails
/// on the type at that place. `None` when the type is right and another rule failed.
fn expected_types(e: &jsonschema::ValidationError<'_>) -> Option<Vec<String>> {
    match e.kind() {
        ValidationErrorKind::Type { kind } => Some(vec![type_name(kind)]),
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
            let here = e.instance_path().to_string();
            let mut all = Vec::new();
            for branch in context {
                let types: Vec<String> = branch
                    .iter()
                    .filter(|b| b.instance_path().to_string() == here)
                    .filter_map(expected_types)
                    .flatten()
                    .collect();
                if types.is_empty() {
                    return None;
                }
                all.extend(types);
            }
            all.dedup();
            Some(all)
        }
        _ => None,
    }
}

fn type_name(kind: &jsonschema::error::TypeKind) -> String {
    let text = match kind {
        jsonschema::error::TypeKind::Single(t) => t.to_string(),
        jsonschema::error::TypeKind::Multiple(ts) => ts
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" or "),
    };
    let article = if text.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    if text == "null" {
        text
    } else {
        format!("{article} {text}")
    }
}

/// `/resources/memory_mb` → `resources.memory_mb`; `/command/0` → `command[0]`.
fn field_name(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').skip(1) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if part.chars().all(|c| c.is_ascii_digit()) && !part.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part);
        }
    }
    if out.is_empty() {
        "body".into()
    } else {
        out
    }
}

/// JSON Schema counts `2844.0` as an integer, and so do clients that write every number as
/// a float; serde does not. Integral floats become integers before serde reads them.
pub fn integral_floats_as_integers(value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    *value = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Validators are built on first use, so a schema no validator can be built from would
    /// otherwise show only when a request first needs it.
    #[test]
    fn every_schema_of_the_document_makes_a_validator() {
        let names: Vec<&String> = SCHEMAS.as_object().unwrap().keys().collect();
        assert!(names.len() > 20, "{names:?}");
        for name in names {
            assert!(validator(name).is_some(), "{name}");
        }
        assert!(validator("NoSuchSchema").is_none());
    }

    #[test]
    fn an_array_for_an_object_is_named() {
        let body = json!({"name": "a", "image": "b", "resources": [null, null]});
        let errors = type_errors("JobSpec", &body);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "resources");
        let ok = json!({"name": "a", "image": "b", "resources": {"memory_mb": 64}});
        assert!(type_errors("JobSpec", &ok).is_empty());
        assert!(type_errors("NoSuchSchema", &body).is_empty());
    }

    #[test]
    fn a_patch_names_only_known_members_and_may_remove_them() {
        let typo = json!({"descripton": null});
        let errors = type_errors("JobSpecPatch", &typo);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "descripton");
        let removals =
            json!({"description": null, "retries": {"backoff_seconds": null}, "env": {"A": null}});
        assert!(type_errors("JobSpecPatch", &removals).is_empty());
        let nested = json!({"monitoring": {"": null}});
        let errors = type_errors("JobSpecPatch", &nested);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "monitoring.");
        let fine = json!({"monitoring": {"min_samples": null}, "resources": null});
        assert!(type_errors("JobSpecPatch", &fine).is_empty());
        let wrong = json!({"retries": [1, 2]});
        assert_eq!(type_errors("JobSpecPatch", &wrong)[0].field, "retries");
    }

    #[test]
    fn pointers_become_field_names() {
        assert_eq!(field_name(""), "body");
        assert_eq!(field_name("/resources/memory_mb"), "resources.memory_mb");
        assert_eq!(field_name("/command/0"), "command[0]");
        assert_eq!(field_name("/env/A~1B"), "env.A/B");
    }

    #[test]
    fn integral_floats_are_integers() {
        let mut v = json!({"capacity": 2844.0, "ratio": 1.5, "list": [3.0]});
        integral_floats_as_integers(&mut v);
        assert_eq!(v, json!({"capacity": 2844, "ratio": 1.5, "list": [3]}));
    }
}
