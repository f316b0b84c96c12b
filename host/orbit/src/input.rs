//! Checking a dispatch's input against the plugin's declared input schema,
//! before governance decides, and the part of it policies see.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use governance::InputType;
use plugin_store::{Digest, InputSchema};
use serde_json::Value;
use serde_json::value::RawValue;
use service_kit::{ApiError, ErrorCode};

/// Compiled schemas kept; past this many the cache starts over.
const MAX_CACHED: usize = 1024;

/// Input schemas compiled once per plugin version (by digest).
#[derive(Default)]
pub struct InputSchemas {
    compiled: Mutex<HashMap<Digest, Arc<Compiled>>>,
}

struct Compiled {
    schema: InputSchema,
    policy_view: InputType,
}

impl InputSchemas {
    /// `input` checked against `schema` (the manifest's, of the version
    /// with `digest`), and projected to what policies see: an
    /// `INVALID_INPUT` error naming the failing path otherwise.
    pub fn check(
        &self,
        digest: &Digest,
        schema: &Value,
        input: &RawValue,
    ) -> Result<Value, ApiError> {
        let compiled = self.compiled(digest, schema)?;
        let input: Value = serde_json::from_str(input.get())
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("`input`: {e}")))?;
        let violation = |path: &str, message: &str| {
            let shown = if path.is_empty() { "/" } else { path };
            ApiError::new(
                ErrorCode::InvalidInput,
                format!("`input` does not match the plugin's input schema at {shown}: {message}"),
            )
            .with_detail("path", path)
        };
        compiled
            .schema
            .check(&input)
            .map_err(|v| violation(&v.pointer, &v.message))?;
        compiled
            .policy_view
            .project(&input)
            .map_err(|m| violation(&m.path, &m.message))
    }

    fn compiled(&self, digest: &Digest, schema: &Value) -> Result<Arc<Compiled>, ApiError> {
        let mut cache = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(hit) = cache.get(digest) {
            return Ok(hit.clone());
        }
        // Checked at publish; a manifest that fails here was not published by
        // this release's tools.
        let broken = |e: String| {
            tracing::error!(%digest, error = %e, "a plugin version's input schema does not compile");
            ApiError::new(
                ErrorCode::ServiceUnavailable,
                "this plugin version's input schema cannot be used; nothing ran",
            )
        };
        let compiled = Arc::new(Compiled {
            schema: InputSchema::compile(schema).map_err(|e| broken(e.to_string()))?,
            policy_view: InputType::of_schema(schema).map_err(broken)?,
        });
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(*digest, compiled.clone());
        Ok(compiled)
    }
}
