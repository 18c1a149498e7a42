//! Reading JSON so that an error names the field at fault (`resources.memory_mb`) and, for a
//! misspelt field, the one meant. Below both the HTTP layer (request bodies) and the service
//! (documents patched before they are checked).

use jobdock_types::FieldError;
use serde::de::DeserializeOwned;

/// Deserialises bytes, naming the bad field on error.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Vec<FieldError>> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| vec![field_error(e.path(), e.inner())])
}

/// Deserialises a JSON value, naming the bad field on error.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Vec<FieldError>> {
    serde_path_to_error::deserialize(value).map_err(|e| vec![field_error(e.path(), e.inner())])
}

/// For serde's "unknown field `imgae`, expected one of `name`, `image`, ...", the expected
/// field nearest to the unknown one, when one is near (a typo, not another word).
fn nearest_known_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, expected) = rest.split_once('`')?;
    let (_, list) = expected.split_once("expected ")?;
    nearest(unknown, list.split('`').skip(1).step_by(2)).map(str::to_owned)
}

/// Of the known names, the one nearest to `unknown` when one is near enough to be what was
/// meant (a typo, not another word).
pub fn nearest<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|known| (strsim::damerau_levenshtein(unknown, known), known))
        .filter(|(distance, known)| *distance <= 2.max(known.len() / 4))
        .min()
        .map(|(_, known)| known)
}

fn field_error(path: &serde_path_to_error::Path, err: &impl std::fmt::Display) -> FieldError {
    let mut field = path.to_string();
    if field == "." {
        field.clear();
    }
    let message = err.to_string();
    // serde reports a missing or unknown field at its parent; name the field itself.
    for prefix in ["missing field `", "unknown field `"] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some(name) = rest.split('`').next() {
                if !field.ends_with(name) {
                    field = if field.is_empty() {
                        name.to_string()
                    } else {
                        format!("{field}.{name}")
                    };
                }
            }
        }
    }
    let mut message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_string();
    if let Some(near) = nearest_known_field(&message) {
        message.push_str(&format!("; did you mean `{near}`?"));
    }
    FieldError::new(field, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobdock_types::JobSpec;

    fn err(body: &str) -> FieldError {
        from_slice::<JobSpec>(body.as_bytes())
            .unwrap_err()
            .remove(0)
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(r#"{"name":"a","image":"b","resources":{"memory_mb":"lots"}}"#);
        assert_eq!(e.field, "resources.memory_mb");
        let e = err(r#"{"name":"a","image":"b","colour":"red"}"#);
        assert_eq!(e.field, "colour");
        assert!(e.message.contains("unknown field"), "{}", e.message);
        assert!(!e.message.contains("did you mean"), "{}", e.message);
        let e = err(r#"{"name":"a","imgae":"b"}"#);
        assert_eq!(e.field, "imgae");
        assert!(
            e.message.ends_with("; did you mean `image`?"),
            "{}",
            e.message
        );
        let e = err(r#"{"name":"a","image":"b","timeout_second":5}"#);
        assert!(
            e.message.ends_with("did you mean `timeout_seconds`?"),
            "{}",
            e.message
        );
        let e = err(r#"{"name":"a"}"#);
        assert_eq!(e.field, "image");
        let e = err(r#"{"name":"a","image":"b","on_conflict":"wait"}"#);
        assert_eq!(e.field, "on_conflict");
        assert!(e.message.contains("queue"), "{}", e.message);
    }

    #[test]
    fn broken_json_is_an_error_not_a_panic() {
        let e = err(r#"{"name":"#);
        assert!(!e.message.is_empty());
    }
}
