//! The OpenAPI 3.1 document each service serves at `GET /openapi.json`.
//!
//! Operations and bodies come from the handlers' own types (`utoipa`), so the
//! document cannot drift from the code. What every operation shares is added
//! here once, as the shared layers add it to every response: the
//! `X-Correlation-ID` a caller may send, the correlation and request ids on
//! every response, the SigV4 scheme, and the document's own route.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use bytes::Bytes;
use serde_json::{Value, json};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response as ApiResponse, ResponseBuilder};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Ref, Type};
use utoipa::openapi::{ContentBuilder, RefOr};

use utoipa::OpenApi as _;

use crate::error::{ErrorBody, ErrorCode, ErrorEnvelope};

/// The name of the SigV4 security scheme operations refer to.
pub const SIGV4: &str = "sigv4";

/// What any operation may answer: a malformed `X-Correlation-ID`, a fault
/// on our side.
pub const EVERY: &[ErrorCode] = &[ErrorCode::InvalidRequest, ErrorCode::InternalError];

/// What an operation behind SigV4 may answer before its handler runs (the
/// body is read, within its limit, to check its hash). A service that
/// accepts each signature once adds `REPLAYED_REQUEST`.
pub const SIGNED: &[ErrorCode] = &[
    ErrorCode::MissingAuthorization,
    ErrorCode::UnknownAccessKey,
    ErrorCode::InvalidSignature,
    ErrorCode::SignatureExpired,
    ErrorCode::PayloadTooLarge,
];

/// What running a plugin version may answer: Axon answers these, and Orbit
/// passes them on (a version it cannot serve, a sandbox limit, a busy or
/// unready host).
pub const PLUGIN_RUN: &[ErrorCode] = &[
    ErrorCode::PluginNotFound,
    ErrorCode::PluginRevoked,
    ErrorCode::PluginUntrusted,
    ErrorCode::PluginDigestMismatch,
    ErrorCode::PluginInvalidInput,
    ErrorCode::PluginError,
    ErrorCode::PluginTrapped,
    ErrorCode::PluginMemoryLimit,
    ErrorCode::PluginResourceLimit,
    ErrorCode::PluginOutputLimit,
    ErrorCode::PluginTimeout,
    ErrorCode::Overloaded,
    ErrorCode::ServiceUnavailable,
];

/// The error responses for `groups` of codes: one per status, whose body is
/// the envelope with `error.code` one of the codes of that status.
pub fn error_responses(groups: &[&[ErrorCode]]) -> BTreeMap<String, RefOr<ApiResponse>> {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for &code in groups.iter().flat_map(|group| group.iter()) {
        let codes = by_status.entry(code.status().as_u16()).or_default();
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    by_status
        .into_iter()
        .map(|(status, codes)| {
            let names: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
            let code_schema = ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(names.clone()));
            let narrowed = ObjectBuilder::new()
                .property(
                    "error",
                    ObjectBuilder::new()
                        .property("code", code_schema)
                        .required("code"),
                )
                .required("error");
            let schema = AllOfBuilder::new()
                .item(Ref::from_schema_name("ErrorEnvelope"))
                .item(narrowed);
            let mut response = ResponseBuilder::new()
                .description(format!("`error.code` is {}", names.join(" or ")))
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(schema)).build(),
                );
            if status == 429 || status == 503 {
                response = response.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                        .description(Some(
                            "Seconds to wait before retrying, when a retry may succeed.",
                        ))
                        .build(),
                );
            }
            let response = response.build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// Declares a type whose responses are the error responses of the groups
/// of codes given (for `responses(...)` in `#[utoipa::path]`):
/// `error_responses!(DispatchErrors: EVERY, SIGNED, PLUGIN_RUN, [GovernanceDenied]);`
#[macro_export]
macro_rules! error_responses {
    ($name:ident: $($group:ident,)* [$($code:ident),* $(,)?]) => {
        pub(crate) struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                $crate::openapi::error_responses(&[
                    $($crate::openapi::$group,)*
                    &[$($crate::ErrorCode::$code),*],
                ])
            }
        }
    };
}

/// The schemas every error response refers to.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(ErrorEnvelope, ErrorBody, ErrorCode)))]
struct Shared;

/// A request header every operation accepts.
fn correlation_parameter() -> Value {
    json!({
        "name": "X-Correlation-ID",
        "in": "header",
        "required": false,
        "description": "Ties this request to the caller's own; a new one is made when absent. Echoed on the response and passed on to every hop.",
        "schema": { "type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$" },
    })
}

/// The headers every response carries.
fn response_headers() -> Value {
    json!({
        "X-Correlation-ID": {
            "required": true,
            "description": "The caller's correlation id, or the one made for this request.",
            "schema": { "type": "string" },
        },
        "X-Request-ID": {
            "required": true,
            "description": "A new UUID naming this one request (a correlation id may be reused).",
            "schema": { "type": "string", "format": "uuid" },
        },
    })
}

/// Merges `patch` into `target`, object members recursively.
fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch,
    }
}

/// How a caller signs, as any SigV4 client does.
pub const SIGV4_DESCRIPTION: &str = "AWS Signature Version 4 (`AWS4-HMAC-SHA256`) with an access key the service's keyring holds, for service `execute-api` and region `us-east-1` (or the service's `AGENT_RUNTIME_REGION`): any SigV4 signer works (botocore's `SigV4Auth`, awscurl, `aws-sigv4`). The signature covers `host`, `x-amz-date` and the body's SHA-256.";

/// Finishes a service's document: `rules` merged into the schemas they
/// name (what `utoipa` cannot derive), the shared parameter and response
/// headers on every operation, the SigV4 scheme (`sigv4` describes how to
/// sign), and `GET /openapi.json`.
pub fn finish(
    mut document: utoipa::openapi::OpenApi,
    rules: Vec<(&str, Value)>,
    sigv4: &str,
) -> Value {
    document.merge(Shared::openapi());
    let mut document = serde_json::to_value(document).unwrap_or_else(|_| json!({}));
    for (schema, rule) in rules {
        merge(&mut document["components"]["schemas"][schema], rule);
    }
    document["paths"]["/openapi.json"] = json!({
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["service"],
            "responses": {
                "200": {
                    "description": "The OpenAPI 3.1 document of this service.",
                    "content": { "application/json": { "schema": { "type": "object" } } },
                },
            },
        },
    });
    document["components"]["securitySchemes"][SIGV4] = json!({
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": sigv4,
    });
    if let Some(operations) = operations(&mut document) {
        for operation in operations {
            if let Some(parameters) = operation
                .entry("parameters")
                .or_insert_with(|| json!([]))
                .as_array_mut()
            {
                parameters.push(correlation_parameter());
            }
        }
    }
    add_response_headers(&mut document, false, response_headers());
    document
}

/// Every operation of `document`.
fn operations(
    document: &mut Value,
) -> Option<impl Iterator<Item = &mut serde_json::Map<String, Value>>> {
    let paths = document["paths"].as_object_mut()?;
    Some(
        paths
            .values_mut()
            .filter_map(Value::as_object_mut)
            .flat_map(|item| item.values_mut())
            .filter_map(Value::as_object_mut),
    )
}

/// Adds `headers` (a map of header objects) to every response of every
/// operation, or only of those behind SigV4.
pub fn add_response_headers(document: &mut Value, only_signed: bool, headers: Value) {
    let (Some(operations), Some(headers)) = (operations(document), headers.as_object()) else {
        return;
    };
    for operation in operations {
        if only_signed && !operation.contains_key("security") {
            continue;
        }
        let Some(responses) = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for response in responses.values_mut().filter_map(Value::as_object_mut) {
            if let Some(existing) = response
                .entry("headers")
                .or_insert_with(|| json!({}))
                .as_object_mut()
            {
                existing.extend(headers.clone());
            }
        }
    }
}

/// `GET /openapi.json`, answering `document`.
pub fn route<S: Clone + Send + Sync + 'static>(document: &Value) -> MethodRouter<S> {
    let body = Bytes::from(serde_json::to_vec(document).unwrap_or_default());
    get(move || {
        let body = body.clone();
        async move {
            let mut response: Response = body.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
    })
}

/// Every error code a document names: the codes of its error responses
/// and of the `ErrorCode` schema.
pub fn codes_in(document: &Value) -> std::collections::BTreeSet<String> {
    let mut codes = std::collections::BTreeSet::new();
    collect_codes(document, &mut codes);
    if let Some(names) = document["components"]["schemas"]["ErrorCode"]["enum"].as_array() {
        codes.extend(names.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    codes
}

fn collect_codes(value: &Value, codes: &mut std::collections::BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(code)) = map.get("code")
                && let Some(Value::Array(names)) = code.get("enum")
            {
                codes.extend(names.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            map.values().for_each(|v| collect_codes(v, codes));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_codes(v, codes)),
        _ => {}
    }
}
