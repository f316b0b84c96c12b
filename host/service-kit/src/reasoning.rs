//! The reasoning requests Orbit and Axon accept: their bodies as parsed
//! from the wire, and the limits on the fields both take (`intent` and
//! `context`), checked the same way at both doors so a caller hears about a
//! bad field in the names it used. Kept here, away from the servers, so the
//! fuzz targets parse exactly what the handlers parse.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{ApiError, ErrorCode};

/// `POST /dispatch` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchBody {
    /// The plugin to run; without it, the intent table routes `intent`.
    #[serde(default)]
    pub plugin: Option<String>,
    /// Pins a version; governed like any dispatch.
    #[serde(default)]
    pub version: Option<String>,
    /// The alias to resolve (default `live`); not with `version`.
    #[serde(default)]
    pub alias: Option<String>,
    pub intent: String,
    /// Absent: `null` (the earlier system's requests carry only `intent`
    /// and `context`).
    #[serde(default)]
    pub input: Option<Box<RawValue>>,
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    pub plugin: String,
    pub version: String,
    /// The module digest governance approved: Axon runs exactly it or refuses.
    pub digest: String,
    pub request: RequestBody,
}

/// The `request` member: what the plugin sees.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    pub intent: String,
    pub input: Box<RawValue>,
    #[serde(default)]
    pub context: BTreeMap<String, String>,
}

/// Longest intent, in bytes.
pub const MAX_INTENT_BYTES: usize = 256;
/// Most context entries per request.
pub const MAX_CONTEXT_ENTRIES: usize = 64;
/// Longest context key, in bytes.
pub const MAX_CONTEXT_KEY_BYTES: usize = 128;
/// Longest context value, in bytes.
pub const MAX_CONTEXT_VALUE_BYTES: usize = 4096;

/// Checks `intent` and `context` against the limits. `prefix` is where the
/// fields sit in the caller's body (`""` for Orbit, `"request."` for Axon).
pub fn check_fields(
    prefix: &str,
    intent: &str,
    context: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    let invalid = |message: String| Err(ApiError::new(ErrorCode::InvalidRequest, message));
    if intent.len() > MAX_INTENT_BYTES {
        return invalid(format!(
            "`{prefix}intent` is longer than {MAX_INTENT_BYTES} bytes"
        ));
    }
    if context.len() > MAX_CONTEXT_ENTRIES {
        return invalid(format!(
            "`{prefix}context` has {} entries; at most {MAX_CONTEXT_ENTRIES} are allowed",
            context.len()
        ));
    }
    for (key, value) in context {
        if key.is_empty() || key.len() > MAX_CONTEXT_KEY_BYTES {
            return invalid(format!(
                "`{prefix}context` keys must be 1 to {MAX_CONTEXT_KEY_BYTES} bytes"
            ));
        }
        if value.len() > MAX_CONTEXT_VALUE_BYTES {
            return invalid(format!(
                "`{prefix}context.{key}` is longer than {MAX_CONTEXT_VALUE_BYTES} bytes"
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
        assert_eq!(err.message(), "`request.intent` is longer than 256 bytes");
        let long = BTreeMap::from([("k".to_owned(), "v".repeat(5000))]);
        assert_eq!(
            check_fields("", "x", &long).unwrap_err().message(),
            "`context.k` is longer than 4096 bytes"
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
