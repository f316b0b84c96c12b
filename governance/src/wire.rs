//! The decision wire format: how Orbit asks a remote decider (the Lambda
//! function) and how it answers, as versioned JSON.
//!
//! ```json
//! {"wire_version": 1, "principal": {...}, "plugin": {...}, "intent": "...",
//!  "source_ip": "203.0.113.7", "time": "2026-12-03T08:00:00.123456Z"}
//!
//! {"wire_version": 1, "decision": {"allowed": true, "reason": "allowed", ...}}
//! {"wire_version": 1, "error": {"code": "unsupported_wire_version", "message": "..."}}
//!
//! {"wire_version": 1, "discover": {"principal": {...}, "plugins": [{...}, ...],
//!  "source_ip": "203.0.113.7", "time": "..."}}
//! {"wire_version": 1, "visible": [true, false, ...]}
//! ```
//!
//! A reader ignores fields it does not know, so adding a field is not a new
//! version; changing or removing one is. A decider answers a version it does
//! not speak with an `error` that says which it does.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::decision::{Decision, DecisionRequest, DiscoveryRequest, PluginInfo, Principal};

/// The version this release speaks.
pub const WIRE_VERSION: u32 = 1;

/// A question on the wire, as written (borrowing the request).
#[derive(Serialize)]
struct Outgoing<'a> {
    wire_version: u32,
    principal: &'a Principal,
    plugin: &'a PluginInfo,
    intent: &'a str,
    source_ip: IpAddr,
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a serde_json::Value>,
}

/// A discovery question on the wire, as written.
#[derive(Serialize)]
struct OutgoingDiscovery<'a> {
    wire_version: u32,
    discover: DiscoveryBody<'a>,
}

#[derive(Serialize)]
struct DiscoveryBody<'a> {
    principal: &'a Principal,
    plugins: &'a [PluginInfo],
    source_ip: IpAddr,
    time: String,
}

/// What a decider is asked, as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question {
    Decide(Box<WireRequest>),
    Discover(WireDiscovery),
}

/// A discovery question as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WireDiscovery {
    pub principal: Principal,
    pub plugins: Vec<PluginInfo>,
    pub source_ip: IpAddr,
    pub time: String,
}

impl WireDiscovery {
    /// The question to answer.
    pub fn request(&self) -> Result<DiscoveryRequest<'_>, WireError> {
        Ok(DiscoveryRequest {
            principal: &self.principal,
            plugins: &self.plugins,
            source_ip: self.source_ip,
            time: parse_time(&self.time)?,
        })
    }
}

fn parse_time(time: &str) -> Result<std::time::SystemTime, WireError> {
    humantime::parse_rfc3339(time).map_err(|e| WireError {
        code: WireErrorCode::InvalidRequest,
        message: format!("`time` must be an RFC 3339 UTC time: {e}"),
    })
}

/// A question as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WireRequest {
    pub principal: Principal,
    pub plugin: PluginInfo,
    pub intent: String,
    pub source_ip: IpAddr,
    /// RFC 3339, microseconds: the time policies see.
    pub time: String,
    /// The input as policies see it, for a plugin with an input schema.
    #[serde(default)]
    pub input: Option<serde_json::Value>,
}

impl WireRequest {
    /// The question to decide.
    pub fn request(&self) -> Result<DecisionRequest<'_>, WireError> {
        Ok(DecisionRequest {
            principal: &self.principal,
            plugin: &self.plugin,
            intent: &self.intent,
            source_ip: self.source_ip,
            time: parse_time(&self.time)?,
            input: self.input.as_ref(),
        })
    }
}

/// An answer on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireResponse {
    pub wire_version: u32,
    #[serde(flatten)]
    pub answer: Answer,
}

/// A decision, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Decision(Decision),
    /// To a discovery question: one per plugin asked about, in order.
    Visible(Vec<bool>),
    Error(WireError),
}

/// Why a decider could not decide: a stable code and a message for
/// operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct WireError {
    pub code: WireErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireErrorCode {
    /// The request names a `wire_version` this decider does not speak.
    UnsupportedWireVersion,
    /// The request is not a decision request of its version.
    InvalidRequest,
}

impl std::fmt::Display for WireErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::UnsupportedWireVersion => "unsupported_wire_version",
            Self::InvalidRequest => "invalid_request",
        })
    }
}

/// `request` as a wire request of [`WIRE_VERSION`].
pub fn encode_request(request: &DecisionRequest<'_>) -> Vec<u8> {
    let outgoing = Outgoing {
        wire_version: WIRE_VERSION,
        principal: request.principal,
        plugin: request.plugin,
        intent: request.intent,
        source_ip: request.source_ip,
        time: humantime::format_rfc3339_micros(request.time).to_string(),
        input: request.input,
    };
    // Strings, numbers, sets of strings and JSON: serializing cannot fail.
    serde_json::to_vec(&outgoing).unwrap_or_default()
}

/// `request` as a discovery question of [`WIRE_VERSION`].
pub fn encode_discovery(request: &DiscoveryRequest<'_>) -> Vec<u8> {
    let outgoing = OutgoingDiscovery {
        wire_version: WIRE_VERSION,
        discover: DiscoveryBody {
            principal: request.principal,
            plugins: request.plugins,
            source_ip: request.source_ip,
            time: humantime::format_rfc3339_micros(request.time).to_string(),
        },
    };
    // As for a decision request: serializing cannot fail.
    serde_json::to_vec(&outgoing).unwrap_or_default()
}

/// Reads a wire request, checking its version first so that a request of
/// another version is answered as such, not as malformed.
pub fn decode_request(payload: &serde_json::Value) -> Result<Question, WireError> {
    let invalid = |message: String| WireError {
        code: WireErrorCode::InvalidRequest,
        message,
    };
    match payload.get("wire_version").map(serde_json::Value::as_u64) {
        None => return Err(invalid("`wire_version` is missing".to_owned())),
        Some(None) => {
            return Err(invalid(
                "`wire_version` must be a whole number, such as 1".to_owned(),
            ));
        }
        Some(Some(v)) if v == u64::from(WIRE_VERSION) => {}
        Some(Some(other)) => {
            return Err(WireError {
                code: WireErrorCode::UnsupportedWireVersion,
                message: format!(
                    "wire_version {other} is not spoken here; this decider speaks {WIRE_VERSION}"
                ),
            });
        }
    }
    match payload.get("discover") {
        Some(discover) => WireDiscovery::deserialize(discover)
            .map(Question::Discover)
            .map_err(|e| invalid(format!("`discover`: {e}"))),
        None => WireRequest::deserialize(payload)
            .map(|request| Question::Decide(Box::new(request)))
            .map_err(|e| invalid(e.to_string())),
    }
}

/// The answer to a wire request.
pub fn respond(answer: Answer) -> WireResponse {
    WireResponse {
        wire_version: WIRE_VERSION,
        answer,
    }
}

/// Why an answer holds no decision.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error("the answer is not a decision response: {0}")]
    Unreadable(String),
    /// Checked before the rest is read: another version may be shaped
    /// otherwise.
    #[error("the answer is wire_version {0}, not {WIRE_VERSION}")]
    OtherVersion(String),
    #[error("the decider refused the request: {0}")]
    Refused(WireError),
}

/// Reads a decider's answer: a decision, or why there is none.
pub fn decode_response(payload: &[u8]) -> Result<Decision, ResponseError> {
    match decode_answer(payload)? {
        Answer::Decision(decision) => Ok(decision),
        _ => Err(ResponseError::Unreadable(
            "it answers another question".to_owned(),
        )),
    }
}

/// Reads a decider's answer to a discovery question of `asked` plugins.
pub fn decode_visible(payload: &[u8], asked: usize) -> Result<Vec<bool>, ResponseError> {
    match decode_answer(payload)? {
        Answer::Visible(visible) if visible.len() == asked => Ok(visible),
        Answer::Visible(visible) => Err(ResponseError::Unreadable(format!(
            "{} answers to {asked} plugins",
            visible.len()
        ))),
        _ => Err(ResponseError::Unreadable(
            "it answers another question".to_owned(),
        )),
    }
}

fn decode_answer(payload: &[u8]) -> Result<Answer, ResponseError> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| ResponseError::Unreadable(e.to_string()))?;
    match value.get("wire_version") {
        Some(v) if v.as_u64() == Some(u64::from(WIRE_VERSION)) => {}
        Some(other) => return Err(ResponseError::OtherVersion(other.to_string())),
        None => {
            return Err(ResponseError::Unreadable(
                "it has no `wire_version`".to_owned(),
            ));
        }
    }
    let response =
        WireResponse::deserialize(value).map_err(|e| ResponseError::Unreadable(e.to_string()))?;
    match response.answer {
        Answer::Error(error) => Err(ResponseError::Refused(error)),
        answer => Ok(answer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Outcome;

    fn sample() -> crate::audit::AuditRecord {
        crate::audit::tests::sample(3)
    }

    #[test]
    fn a_request_reads_back_as_the_question_it_encodes() {
        let record = sample();
        let request = record.request().unwrap();
        let bytes = encode_request(&request);
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["wire_version"], 1);
        let Question::Decide(back) = decode_request(&value).unwrap() else {
            panic!("not a decision request")
        };
        let decoded = back.request().unwrap();
        assert_eq!(decoded.principal, request.principal);
        assert_eq!(decoded.plugin, request.plugin);
        assert_eq!(decoded.intent, request.intent);
        assert_eq!(decoded.source_ip, request.source_ip);
        assert_eq!(decoded.time, request.time);
    }

    #[test]
    fn another_version_is_refused_as_such_and_malformed_input_as_invalid() {
        let mut value: serde_json::Value =
            serde_json::from_slice(&encode_request(&sample().request().unwrap())).unwrap();
        value["wire_version"] = 2.into();
        let error = decode_request(&value).unwrap_err();
        assert_eq!(error.code, WireErrorCode::UnsupportedWireVersion);
        assert!(error.message.contains("speaks 1"), "{error}");

        value["wire_version"] = 1.into();
        value["intent"] = 7.into();
        let error = decode_request(&value).unwrap_err();
        assert_eq!(error.code, WireErrorCode::InvalidRequest);
        assert!(error.message.contains("string"), "{error}");

        let error = decode_request(&serde_json::json!({"principal": {}})).unwrap_err();
        assert_eq!(error.code, WireErrorCode::InvalidRequest);
        for not_a_version in [serde_json::json!(null), "1".into(), 1.5.into()] {
            let error =
                decode_request(&serde_json::json!({ "wire_version": not_a_version })).unwrap_err();
            assert_eq!(error.code, WireErrorCode::InvalidRequest, "{error}");
        }

        value["time"] = "yesterday".into();
        value["intent"] = "x".into();
        let Question::Decide(asked) = decode_request(&value).unwrap() else {
            panic!("not a decision request")
        };
        let error = asked.request().unwrap_err();
        assert!(error.message.contains("RFC 3339"), "{error}");
    }

    #[test]
    fn a_discovery_question_and_its_answer_read_back() {
        let record = sample();
        let plugins = vec![record.plugin.info.clone(), record.plugin.info.clone()];
        let request = DiscoveryRequest {
            principal: &record.principal,
            plugins: &plugins,
            source_ip: record.source_ip,
            time: record.request().unwrap().time,
        };
        let value: serde_json::Value = serde_json::from_slice(&encode_discovery(&request)).unwrap();
        let Question::Discover(asked) = decode_request(&value).unwrap() else {
            panic!("not a discovery question")
        };
        let back = asked.request().unwrap();
        assert_eq!(back.principal, request.principal);
        assert_eq!(back.plugins, request.plugins);
        assert_eq!(back.time, request.time);

        let answer = serde_json::to_vec(&respond(Answer::Visible(vec![true, false]))).unwrap();
        assert_eq!(decode_visible(&answer, 2).unwrap(), [true, false]);
        assert!(decode_visible(&answer, 3).is_err(), "one answer per plugin");
        assert!(decode_response(&answer).is_err(), "not a decision");
    }

    #[test]
    fn answers_read_back_and_fields_added_later_are_ignored() {
        let decision = sample().decision;
        let json = serde_json::to_value(respond(Answer::Decision(decision.clone()))).unwrap();
        assert_eq!(json["decision"]["reason"], "no_permitting_policy");
        let mut extended = json.clone();
        extended["served_by"] = "a newer decider".into();
        extended["decision"]["explanation"] = "also newer".into();
        for payload in [json, extended] {
            let back = decode_response(&serde_json::to_vec(&payload).unwrap()).unwrap();
            assert_eq!(back, decision);
            assert_eq!(back.reason, Outcome::NoPermittingPolicy);
        }

        let refused = respond(Answer::Error(WireError {
            code: WireErrorCode::UnsupportedWireVersion,
            message: "this decider speaks 1".into(),
        }));
        let error = decode_response(&serde_json::to_vec(&refused).unwrap()).unwrap_err();
        assert!(
            matches!(&error, ResponseError::Refused(e) if e.code == WireErrorCode::UnsupportedWireVersion),
            "{error}"
        );
        // Another version is named as such, whatever its shape.
        let error = decode_response(br#"{"wire_version": 9, "verdict": "yes"}"#).unwrap_err();
        assert_eq!(error.to_string(), "the answer is wire_version 9, not 1");
        let error = decode_response(b"{\"errorType\":\"Runtime.ExitError\"}").unwrap_err();
        assert!(matches!(error, ResponseError::Unreadable(_)), "{error}");
    }
}
