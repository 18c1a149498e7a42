//! The OpenAPI 3 document, generated from the handlers' annotations and the API types.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::AppState;
use utoipa_axum::{router::OpenApiRouter, routes};

/// What the document says besides its paths, which come from the router
/// ([`super::openapi_router`]).
#[derive(OpenApi)]
#[openapi(
    info(title = "Jobdock", description = "Runs containerised data syncs on demand, on a schedule, on Docker, Swarm, Kubernetes or Nomad."),
    components(schemas(jobdock_types::FieldError, jobdock_types::Problem)),
    modifiers(&BearerAuth),
    security(("bearer" = []), ("basic" = [])),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "signed_link",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "sig",
                "A signed link: the `exp` and `sig` query parameters of a run's `logs_url` or of \
                 a 202's `Location`. It reads that run, its log and its outcome until `exp`.",
            ))),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "The token as the password, any user name: for callers that cannot \
                         send a bearer header.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Makes the error answers of every operation what the API really sends, in one place
/// rather than in each handler's annotation: every 4xx and 5xx is `application/problem+json`;
/// an operation that needs a token also answers 401 and 403, one that takes a body 415 and
/// 422, one with query parameters 422, and one with path parameters 404.
struct ProblemResponses;

impl Modify for ProblemResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let problem = || {
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                for (code, response) in op.responses.responses.iter_mut() {
                    let RefOr::T(r) = response else { continue };
                    if code.starts_with('4') || code.starts_with('5') {
                        r.content.shift_remove("application/json");
                        r.content.insert(PROBLEM_JSON.into(), problem());
                    }
                }
                // `security()` on an operation makes it open; otherwise the document's bearer
                // requirement applies.
                let open = op.security.as_ref().is_some_and(|s| s.is_empty());
                let mut add = |code: &str, why: &str| {
                    op.responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| {
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(why)
                                    .content(PROBLEM_JSON, problem())
                                    .build(),
                            )
                        });
                };
                if !open {
                    add("401", "The token is missing, unknown or revoked.");
                    add(
                        "403",
                        "The token's scope or job patterns do not allow this.",
                    );
                }
                if op.request_body.is_some() {
                    add("415", "The body is not JSON.");
                    add("422", "A field is invalid; `errors` names each.");
                }
                let params = op.parameters.iter().flatten();
                let (mut in_path, mut in_query) = (false, false);
                for p in params {
                    in_path |= p.parameter_in == ParameterIn::Path;
                    in_query |= p.parameter_in == ParameterIn::Query;
                }
                if in_query {
                    add("422", "A query parameter is invalid; `errors` names it.");
                }
                if in_path {
                    add(
                        "404",
                        "Nothing of that name or id (or not visible to the token).",
                    );
                }
            }
        }
    }
}

/// The media type of every error answer (RFC 9457).
const PROBLEM_JSON: &str = "application/problem+json";

/// The document without its paths, for the router to add them.
pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document once the router has added the paths, in its JSON form: error answers made
/// truthful and the service's rules declared ([`super::rules`]). JSON because utoipa's types
/// have no field for some keywords the rules use (`propertyNames`, for one).
pub fn finish(mut doc: utoipa::openapi::OpenApi) -> serde_json::Value {
    ProblemResponses.modify(&mut doc);
    let mut json = serde_json::to_value(&doc).expect("the document is JSON");
    super::rules::apply(&mut json);
    json
}

/// The whole document, as `GET /api/v1/openapi.json` serves it.
pub fn document() -> serde_json::Value {
    finish(super::openapi_router().split_for_parts().1)
}

/// The routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// This document.
#[utoipa::path(get, operation_id = "getOpenApiDocument", path = "/api/v1/openapi.json", tag = "meta", security(), responses((status = 200)))]
pub async fn openapi_json(
    axum::Extension(doc): axum::Extension<std::sync::Arc<serde_json::Value>>,
) -> Json<serde_json::Value> {
    Json(doc.as_ref().clone())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn operations() -> Vec<(String, String, Value)> {
        let doc = super::document();
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                ops.push((path.clone(), method.clone(), op.clone()));
            }
        }
        ops
    }

    /// Clients generated from the document name their methods after the operation ids, so
    /// each is unique (an OpenAPI validator refuses the document otherwise).
    #[test]
    fn operation_ids_are_unique() {
        let mut seen = std::collections::BTreeMap::new();
        for (path, method, op) in operations() {
            let id = op["operationId"].as_str().unwrap_or_default().to_owned();
            assert!(!id.is_empty(), "{method} {path} has no operationId");
            if let Some(other) = seen.insert(id.clone(), format!("{method} {path}")) {
                panic!("operationId `{id}` of {method} {path} is also that of {other}");
            }
        }
    }

    /// A path parameter is one the path names; everything else is in the query (or a header).
    #[test]
    fn parameters_are_where_the_server_reads_them() {
        for (path, method, op) in operations() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                let in_path = path.contains(&format!("{{{name}}}"));
                let declared = p["in"].as_str().unwrap();
                if declared == "header" {
                    continue;
                }
                assert_eq!(
                    declared,
                    if in_path { "path" } else { "query" },
                    "{method} {path}: parameter `{name}`"
                );
                if declared == "query" {
                    assert_ne!(p["required"], true, "{method} {path}: `{name}` is optional");
                }
            }
        }
    }

    /// The rules the server enforces on a job are declared, so that a client built from the
    /// document foresees its 422s.
    #[test]
    fn a_jobs_rules_are_declared() {
        let doc = super::document();
        let spec = &doc["components"]["schemas"]["JobSpec"]["properties"];
        assert_eq!(spec["name"]["maxLength"], 63, "{spec}");
        assert!(spec["name"]["pattern"].is_string(), "{spec}");
        assert_eq!(spec["image"]["minLength"], 1, "{spec}");
        assert_eq!(spec["command"]["minItems"], 1, "{spec}");
        assert_eq!(spec["max_parallel"]["minimum"], 1, "{spec}");
        let capacity = &doc["components"]["schemas"]["LockCapacity"]["properties"]["capacity"];
        assert_eq!(capacity["minimum"], 1, "{capacity}");
        let env = &spec["env"]["propertyNames"]["pattern"];
        assert!(env.as_str().unwrap().contains("[Kk]_)"), "{env}");
        assert_eq!(spec["lock_keys"]["uniqueItems"], true, "{spec}");
        let patch = &doc["components"]["schemas"]["JobSpecPatch"];
        assert!(patch.get("required").is_none(), "{patch}");
        assert_eq!(patch["additionalProperties"], false, "{patch}");
        let lock = &doc["paths"]["/api/v1/locks/{key}"]["get"]["parameters"][0]["schema"];
        assert!(lock["pattern"].is_string(), "{lock}");
    }

    /// Every error answer is problem+json, and every operation that needs a token declares
    /// 401 and 403.
    #[test]
    fn errors_are_declared_as_they_are_sent() {
        for (path, method, op) in operations() {
            let responses = op["responses"].as_object().unwrap();
            for (code, r) in responses {
                if code.starts_with('4') || code.starts_with('5') {
                    let types: Vec<&String> = r["content"].as_object().unwrap().keys().collect();
                    assert_eq!(
                        types,
                        ["application/problem+json"],
                        "{method} {path} {code}"
                    );
                }
            }
            let open = op["security"].as_array().is_some_and(|s| s.is_empty());
            if !open {
                for code in ["401", "403"] {
                    assert!(responses.contains_key(code), "{method} {path} lacks {code}");
                }
            }
            if op.get("requestBody").is_some() {
                assert!(responses.contains_key("422"), "{method} {path} lacks 422");
            }
        }
        let health = operations()
            .into_iter()
            .find(|(p, m, _)| p == "/healthz" && m == "get")
            .unwrap()
            .2;
        assert!(health["responses"].get("401").is_none(), "{health}");
    }
}
