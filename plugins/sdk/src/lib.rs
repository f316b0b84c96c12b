//! The Rust SDK for agent-runtime reasoning plugins.
//!
//! A plugin is a WebAssembly component that implements the `agent:reasoning@1.1.0`
//! contract (`wit/reasoning.wit`). This crate hides the generated bindings behind
//! a small typed API: implement [`Plugin`], call [`export_plugin!`], build with
//! `cargo build --release --target wasm32-wasip2`.
//!
//! ```no_run
//! use agent_plugin_sdk::{export_plugin, Error, Plugin, Request, Response};
//!
//! #[derive(serde::Deserialize)]
//! struct Input { name: String }
//!
//! struct Greeter;
//!
//! impl Plugin for Greeter {
//!     fn reason(request: Request) -> Result<Response, Error> {
//!         let input: Input = request.input()?;
//!         Response::json(&serde_json::json!({ "greeting": format!("hello, {}", input.name) }))
//!     }
//! }
//!
//! export_plugin!(Greeter);
//! ```
//!
//! Every request runs in a fresh instance: globals start from their initial
//! values each time. The sandbox has no files, no network, no environment
//! variables; the clock reads the Unix epoch and randomness is deterministic,
//! so the same input always gives the same answer.

use serde::Serialize;
use serde::de::DeserializeOwned;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "agent:reasoning/reasoning-plugin",
        pub_export_macro: true,
        default_bindings_module: "agent_plugin_sdk::bindings",
    });
}

#[cfg(feature = "inference")]
pub mod inference;

use bindings::exports::agent::reasoning::reasoner as wit;

/// What a plugin implements: one function from request to response.
pub trait Plugin {
    /// Answer one request. Return [`Error::InvalidInput`] when the caller must
    /// change the input, [`Error::Failed`] when the plugin cannot answer.
    fn reason(request: Request) -> Result<Response, Error>;
}

/// One reasoning request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The caller's correlation id: use it in logs, never for logic.
    pub correlation_id: String,
    /// What the caller wants done, in the caller's words.
    pub intent: String,
    /// Caller-supplied key/value context, in the order it was sent.
    pub context: Vec<(String, String)>,
    input: String,
}

impl Request {
    /// Parses the JSON input into `T`. A mismatch is reported to the caller as
    /// invalid input, with serde's description of what is wrong.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.input).map_err(|e| Error::InvalidInput(format!("input: {e}")))
    }

    /// The JSON input as the caller sent it, without parsing it.
    pub fn input_json(&self) -> &str {
        &self.input
    }

    /// The JSON input as the caller sent it, taken out of the request.
    pub fn into_input_json(self) -> String {
        self.input
    }

    /// The first context value for `key`.
    pub fn context(&self, key: &str) -> Option<&str> {
        self.context
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    output: String,
    confidence: Option<f64>,
    notes: Vec<String>,
}

impl Response {
    /// An answer whose output is `value` serialised as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        let output = serde_json::to_string(value)
            .map_err(|e| Error::Failed(format!("cannot encode output: {e}")))?;
        Ok(Self::raw_json(output))
    }

    /// An answer whose output is already JSON text. The host rejects text that
    /// is not valid JSON.
    pub fn raw_json(output: String) -> Self {
        Self {
            output,
            confidence: None,
            notes: Vec::new(),
        }
    }

    /// Sets how sure the plugin is, from 0.0 to 1.0 (clamped).
    pub fn with_confidence(mut self, confidence: f64) -> Self {
        self.confidence = Some(confidence.clamp(0.0, 1.0));
        self
    }

    /// Adds a short human-readable note on how the answer was reached.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }
}

/// Why a plugin could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The caller must change the input; the message says what to fix.
    InvalidInput(String),
    /// The input was acceptable but no answer could be produced.
    Failed(String),
}

impl Error {
    /// Invalid input, with what the caller must fix.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }

    /// A failure to answer.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidInput(message) => write!(f, "invalid input: {message}"),
            Self::Failed(message) => write!(f, "failed: {message}"),
        }
    }
}

impl std::error::Error for Error {}

/// Structured logging into the host's log. The host keeps a bounded number of
/// records per request and counts the rest as dropped; logging never fails.
pub mod log {
    use crate::bindings::agent::reasoning::log as wit;

    /// Log severity.
    pub use wit::Level;

    /// Logs `message` with key/value `fields`.
    pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        wit::log(level, message, &fields);
    }

    /// Logs at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message, &[]);
    }

    /// Logs at info level.
    pub fn info(message: &str) {
        log(Level::Info, message, &[]);
    }

    /// Logs at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message, &[]);
    }

    /// Logs at error level.
    pub fn error(message: &str) {
        log(Level::Error, message, &[]);
    }
}

/// Read-only configuration the operator set for this plugin version.
pub mod config {
    use crate::Error;
    use crate::bindings::agent::reasoning::config as wit;
    use serde::de::DeserializeOwned;

    /// The value of `key`, if set.
    pub fn get(key: &str) -> Option<String> {
        wit::get(key)
    }

    /// Every key/value pair, sorted by key.
    pub fn all() -> Vec<(String, String)> {
        wit::get_all()
    }

    /// The value of `key` parsed as JSON into `T`, or `None` if unset. A value
    /// that does not parse is a plugin failure: the operator must fix it.
    pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
        match get(key) {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::Failed(format!("plugin config `{key}` is not valid: {e}"))),
        }
    }
}

/// Glue between [`Plugin`] and the generated bindings; used by [`export_plugin!`].
#[doc(hidden)]
pub fn __reason<P: Plugin>(
    request: wit::ReasonRequest,
) -> Result<wit::ReasonResponse, wit::ReasoningError> {
    let request = Request {
        correlation_id: request.correlation_id,
        intent: request.intent,
        context: request.context,
        input: request.input,
    };
    match P::reason(request) {
        Ok(response) => Ok(wit::ReasonResponse {
            output: response.output,
            confidence: response.confidence,
            notes: response.notes,
        }),
        Err(Error::InvalidInput(message)) => Err(wit::ReasoningError::InvalidInput(message)),
        Err(Error::Failed(message)) => Err(wit::ReasoningError::Failed(message)),
    }
}

/// Exports a [`Plugin`] implementation as the component's `reasoner`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct __AgentPluginExport;

            impl $crate::bindings::exports::agent::reasoning::reasoner::Guest for __AgentPluginExport {
                fn reason(
                    request: $crate::bindings::exports::agent::reasoning::reasoner::ReasonRequest,
                ) -> ::core::result::Result<
                    $crate::bindings::exports::agent::reasoning::reasoner::ReasonResponse,
                    $crate::bindings::exports::agent::reasoning::reasoner::ReasoningError,
                > {
                    $crate::__reason::<$plugin>(request)
                }
            }

            $crate::bindings::export!(__AgentPluginExport with_types_in $crate::bindings);
        };
    };
}
