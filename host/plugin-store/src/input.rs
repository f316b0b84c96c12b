//! A plugin's input schema: a JSON Schema its publisher declares in the
//! manifest (`[input_schema]` in `plugin.toml`). It is checked when the
//! version is published, and Orbit checks every dispatch's input against it
//! before governance decides; the types it gives fields are what policies
//! see as `context.input`.

use serde_json::Value;

use crate::error::StoreError;

/// Largest input schema, as JSON: it travels in every signed manifest.
pub const MAX_INPUT_SCHEMA_BYTES: usize = 64 * 1024;

/// A compiled input schema.
pub struct InputSchema {
    validator: jsonschema::Validator,
}

/// Where an input breaks its schema: a JSON pointer ("" for the whole
/// input) and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", if pointer.is_empty() { "/" } else { pointer })]
pub struct InputViolation {
    pub pointer: String,
    pub message: String,
}

impl InputSchema {
    /// Compiles `schema` (JSON Schema, draft 2020-12 unless it says
    /// otherwise). References outside the schema are not fetched: an error.
    pub fn compile(schema: &Value) -> Result<Self, StoreError> {
        let size = serde_json::to_vec(schema).map_or(usize::MAX, |bytes| bytes.len());
        if size > MAX_INPUT_SCHEMA_BYTES {
            return Err(StoreError::Invalid(format!(
                "input_schema: {size} bytes of JSON, more than the {MAX_INPUT_SCHEMA_BYTES} allowed"
            )));
        }
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(StoreError::Invalid(
                "input_schema: must have \"type\": \"object\" (a dispatch's input is an object)"
                    .to_owned(),
            ));
        }
        let validator = jsonschema::validator_for(schema).map_err(|e| {
            StoreError::Invalid(format!("input_schema is not a valid JSON Schema: {e}"))
        })?;
        Ok(Self { validator })
    }

    /// The first place where `input` breaks the schema, if any.
    pub fn check(&self, input: &Value) -> Result<(), InputViolation> {
        self.validator
            .validate(input)
            .map_err(|error| InputViolation {
                pointer: error.instance_path().to_string(),
                message: error.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_input_is_checked_and_the_failing_path_named() {
        let schema = InputSchema::compile(&json!({
            "type": "object",
            "required": ["amount"],
            "properties": {"amount": {"type": "integer", "maximum": 100000},
                           "lines": {"type": "array", "items": {"type": "string"}}},
            "additionalProperties": false
        }))
        .unwrap();
        assert!(schema.check(&json!({"amount": 5, "lines": ["a"]})).is_ok());
        let wrong = schema
            .check(&json!({"amount": 5, "lines": ["a", 7]}))
            .unwrap_err();
        assert_eq!(wrong.pointer, "/lines/1");
        let missing = schema.check(&json!({})).unwrap_err();
        assert_eq!(missing.pointer, "");
        assert!(missing.message.contains("amount"), "{missing}");
        assert!(schema.check(&json!({"amount": 1, "x": 1})).is_err());
    }

    #[test]
    fn a_schema_that_is_not_one_or_not_an_object_is_refused() {
        for bad in [
            json!({"type": "string"}),
            json!({"type": "object", "properties": {"a": {"type": 7}}}),
            json!({"type": "object", "$ref": "https://example.com/schema.json"}),
        ] {
            assert!(InputSchema::compile(&bad).is_err(), "{bad}");
        }
    }
}
