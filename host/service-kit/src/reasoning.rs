//! The reasoning requests Orbit and Axon accept: their bodies as parsed
//! from the wire, and the limits on the fields both take (`intent` and
//! `context`), checked the same way at both doors so a caller hears about a
//! bad field in the names it used. Kept here, away from the servers, so the
//! fuzz targets parse exactly what the handlers parse.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::error::{ApiError, ErrorCode};

/// A plugin name: 1 to 64 lowercase letters, digits or `-`, starting with a letter.
pub const PLUGIN_PATTERN: &str = "^[a-z][a-z0-9-]{0,63}$";
/// An alias name: 1 to 64 lowercase letters, digits or `-`.
pub const ALIAS_PATTERN: &str = "^[a-z0-9-]{1,64}$";
/// A semantic version (each number at most 16 digits, as `semver` reads it).
pub const VERSION_PATTERN: &str = "^(0|[1-9][0-9]{0,15})\\.(0|[1-9][0-9]{0,15})\\.(0|[1-9][0-9]{0,15})(-(0|[1-9][0-9]{0,15}|[0-9]*[A-Za-z-][0-9A-Za-z-]*)(\\.(0|[1-9][0-9]{0,15}|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*)?(\\+[0-9A-Za-z-]+(\\.[0-9A-Za-z-]+)*)?$";
/// A module digest.
pub const DIGEST_PATTERN: &str = "^sha256:[0-9a-f]{64}$";

/// `POST /dispatch` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(
    // The earlier system's request: the intent table picks the plugin.
    json!({"intent": "call_reasoning", "context": {"user_id": "user123", "session_id": "session456"}}),
    // A named plugin at its `live` alias.
    json!({"plugin": "keywords", "intent": "extract", "input": {"text": "the fox saw the other fox", "top": 2}}),
))]
pub struct DispatchBody {
    /// The plugin to run; without it, the intent table routes `intent`.
    #[serde(default)]
    pub plugin: Option<String>,
    /// Pins a version; governed like any dispatch. Only with `plugin`.
    #[serde(default)]
    pub version: Option<String>,
    /// The alias to resolve (default `live`, or the one the intent table
    /// names). Only with `plugin`, and not with `version`.
    #[serde(default)]
    pub alias: Option<String>,
    /// What the caller wants done; routes the request when no `plugin` is named.
    pub intent: String,
    /// Absent: `null` (the earlier system's requests carry only `intent`
    /// and `context`). A plugin with an input schema gets only input that
    /// fits it.
    #[serde(default)]
    #[schema(value_type = Value)]
    pub input: Option<Box<RawValue>>,
    /// Caller facts as strings; `session_id` keeps a caller on one side of a canary.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
}

impl DispatchBody {
    /// The input, `null` when absent.
    pub fn input(&self) -> &RawValue {
        self.input.as_deref().unwrap_or(RawValue::NULL)
    }
}

/// `POST /v1/reason` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    pub plugin: String,
    pub version: String,
    /// The module digest governance approved: Axon runs exactly it or refuses.
    pub digest: String,
    pub request: RequestBody,
}

/// The `request` member: what the plugin sees.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    pub intent: String,
    #[schema(value_type = Value)]
    pub input: Box<RawValue>,
    #[serde(default)]
    pub context: BTreeMap<String, String>,
}

/// Longest intent, in characters.
pub const MAX_INTENT_CHARS: usize = 256;
/// Most context entries per request.
pub const MAX_CONTEXT_ENTRIES: usize = 64;
/// Longest context key, in characters.
pub const MAX_CONTEXT_KEY_CHARS: usize = 128;
/// Longest context value, in characters.
pub const MAX_CONTEXT_VALUE_CHARS: usize = 4096;

/// What the bodies' schemas say that `utoipa` cannot derive, merged into
/// the named schemas by [`crate::openapi::finish`]: the names' patterns,
/// the `context` limits, and on `/dispatch` which fields go together.
pub fn schema_rules() -> Vec<(&'static str, Value)> {
    let context = json!({
        "type": "object",
        "maxProperties": MAX_CONTEXT_ENTRIES,
        "propertyNames": { "minLength": 1, "maxLength": MAX_CONTEXT_KEY_CHARS },
        "additionalProperties": { "type": "string", "maxLength": MAX_CONTEXT_VALUE_CHARS },
        "description": "Caller facts as strings; `session_id` keeps a caller on one side of a canary.",
    });
    let pattern = |pattern: &str| json!({ "pattern": pattern });
    let intent = json!({ "maxLength": MAX_INTENT_CHARS });
    vec![
        (
            "DispatchBody",
            json!({
                "properties": {
                    "plugin": pattern(PLUGIN_PATTERN),
                    "version": pattern(VERSION_PATTERN),
                    "alias": pattern(ALIAS_PATTERN),
                    "intent": intent,
                    "context": context,
                },
                // `version` and `alias` choose among a plugin's versions:
                // each needs `plugin`, and they exclude each other (`null`
                // is as absent).
                "allOf": [
                    { "not": {
                        "required": ["version", "alias"],
                        "properties": { "version": { "type": "string" }, "alias": { "type": "string" } },
                    } },
                    { "anyOf": [
                        { "required": ["plugin"], "properties": { "plugin": { "type": "string" } } },
                        { "properties": { "version": { "type": "null" }, "alias": { "type": "null" } } },
                    ] },
                ],
            }),
        ),
        (
            "ReasonBody",
            json!({
                "properties": {
                    "plugin": pattern(PLUGIN_PATTERN),
                    "version": pattern(VERSION_PATTERN),
                    "digest": pattern(DIGEST_PATTERN),
                },
            }),
        ),
        (
            "RequestBody",
            json!({ "properties": { "context": context } }),
        ),
    ]
}

/// Checks `intent` and `context` against the limits. `prefix` is where the
/// fields sit in the caller's body (`""` for Orbit, `"request."` for Axon).
pub fn check_fields(
    prefix: &str,
    intent: &str,
    context: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    let invalid = |message: String| Err(ApiError::new(ErrorCode::InvalidRequest, message));
    // Counted in characters, as JSON Schema's `maxLength` counts (the body
    // limit bounds the bytes).
    let chars = |s: &str| s.chars().count();
    if chars(intent) > MAX_INTENT_CHARS {
        return invalid(format!(
            "`{prefix}intent` is longer than {MAX_INTENT_CHARS} characters"
        ));
    }
    if context.len() > MAX_CONTEXT_ENTRIES {
        return invalid(format!(
            "`{prefix}context` has {} entries; at most {MAX_CONTEXT_ENTRIES} are allowed",
            context.len()
        ));
    }
    for (key, value) in context {
        if key.is_empty() || chars(key) > MAX_CONTEXT_KEY_CHARS {
            return invalid(format!(
                "`{prefix}context` keys must be 1 to {MAX_CONTEXT_KEY_CHARS} characters"
            ));
        }
        if chars(value) > MAX_CONTEXT_VALUE_CHARS {
            return invalid(format!(
                "`{prefix}context.{key}` is longer than {MAX_CONTEXT_VALUE_CHARS} characters"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_enforced_with_the_callers_field_names() {
        let ok = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
        assert!(check_fields("", "extract", &ok).is_ok());
        let err = check_fields("request.", &"x".repeat(300), &ok).unwrap_err();
        assert_eq!(
            err.message(),
            "`request.intent` is longer than 256 characters"
        );
        // Characters, not bytes: 256 four-byte characters fit.
        assert!(check_fields("", &"😀".repeat(256), &ok).is_ok());
        let long = BTreeMap::from([("k".to_owned(), "v".repeat(5000))]);
        assert_eq!(
            check_fields("", "x", &long).unwrap_err().message(),
            "`context.k` is longer than 4096 characters"
        );
        let many: BTreeMap<String, String> =
            (0..65).map(|i| (i.to_string(), String::new())).collect();
        assert!(
            check_fields("", "x", &many)
                .unwrap_err()
                .message()
                .contains("65 entries")
        );
    }
}
