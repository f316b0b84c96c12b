//! The audit trail: every decision, allow and deny, as a record.
//!
//! A record holds what was asked (principal, plugin version and digest,
//! intent, client address, time) and what was decided (outcome, deciding
//! policies, errors, policy-set version and hash, latency), so a later
//! reader can tell who ran what under which policies, and re-decide it.
//!
//! [`AuditLog`] writes records on the `audit` log target and, embedded, to an
//! append-only JSONL file in which each record carries the hash of the one
//! before ([`chain`]), so an edited or removed record is found by
//! [`verify`]. A decision takes effect only once its record is written.

pub mod chain;
mod writer;

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

use crate::decision::{Decision, DecisionRequest, PluginInfo, Principal};

pub use chain::{VerifyError, VerifyReport, verify};
pub use writer::{AuditError, AuditLog, Receipt};

/// The log target every record is written to.
pub const TARGET: &str = "audit";

/// The largest input a record carries, as JSON; a larger one is left out
/// (`input_omitted`), keeping every record well under a line's limit.
pub const MAX_RECORDED_INPUT: usize = 16 * 1024;

/// One decision, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Unique per decision.
    pub decision_id: String,
    /// When the decision was asked for (RFC 3339, microseconds): the time
    /// policies saw.
    pub time: String,
    /// The request's correlation id, as its caller saw it.
    pub correlation_id: String,
    /// What was asked to happen (`dispatch`).
    pub action: String,
    pub principal: Principal,
    pub plugin: AuditedPlugin,
    pub intent: String,
    pub source_ip: IpAddr,
    /// The input as policies saw it (a plugin with an input schema only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// True when that input was larger than [`MAX_RECORDED_INPUT`] and is
    /// not in the record (so the decision cannot be replayed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub input_omitted: bool,
    pub decision: Decision,
}

/// The plugin version asked for, with the digest that was governed (and
/// would run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditedPlugin {
    #[serde(flatten)]
    pub info: PluginInfo,
    pub digest: String,
}

impl AuditRecord {
    /// The record of `decision`, made for `request` about the module
    /// `digest`.
    pub fn new(
        correlation_id: &str,
        request: &DecisionRequest<'_>,
        digest: &str,
        decision: &Decision,
    ) -> Self {
        let recorded = request.input.filter(|input| {
            serde_json::to_vec(input).map_or(0, |json| json.len()) <= MAX_RECORDED_INPUT
        });
        Self {
            decision_id: uuid::Uuid::new_v4().to_string(),
            time: humantime::format_rfc3339_micros(request.time).to_string(),
            correlation_id: correlation_id.to_owned(),
            action: "dispatch".to_owned(),
            principal: request.principal.clone(),
            plugin: AuditedPlugin {
                info: request.plugin.clone(),
                digest: digest.to_owned(),
            },
            intent: request.intent.to_owned(),
            source_ip: request.source_ip,
            input: recorded.cloned(),
            input_omitted: request.input.is_some() && recorded.is_none(),
            decision: decision.clone(),
        }
    }

    /// The question as it was asked, to decide again (`policy replay`).
    pub fn request(&self) -> Result<DecisionRequest<'_>, humantime::TimestampError> {
        Ok(DecisionRequest {
            principal: &self.principal,
            plugin: &self.plugin.info,
            intent: &self.intent,
            source_ip: self.source_ip,
            time: humantime::parse_rfc3339(&self.time)?,
            input: self.input.as_ref(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::decision::{Outcome, PrincipalKind};

    /// A record of decision `n`: allows even ones, denies odd ones.
    pub(crate) fn sample(n: u64) -> AuditRecord {
        let principal = Principal {
            id: format!("user-{n}"),
            kind: PrincipalKind::User,
            groups: vec!["developers".into()],
            tenant: "default".into(),
        };
        let plugin = PluginInfo {
            name: "echo".into(),
            version: "1.0.0".parse().unwrap(),
            publisher: "agent-runtime".into(),
            tags: BTreeSet::new(),
            labels: BTreeSet::from(["approved".to_owned()]),
            needs: Default::default(),
        };
        let allowed = n.is_multiple_of(2);
        let decision = Decision {
            allowed,
            reason: if allowed {
                Outcome::Allowed
            } else {
                Outcome::NoPermittingPolicy
            },
            policies: if allowed { vec!["p".into()] } else { vec![] },
            errors: vec![],
            policy_version: 1,
            policy_set: "sha256:ab".into(),
            decision_time_us: 12,
            shadow: None,
        };
        let request = DecisionRequest {
            principal: &principal,
            plugin: &plugin,
            intent: "say \"hi\"\n",
            source_ip: "127.0.0.1".parse().unwrap(),
            time: UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456 + n),
            input: None,
        };
        AuditRecord::new(&format!("corr-{n}"), &request, "sha256:cd", &decision)
    }

    #[test]
    fn a_record_reads_back_as_written_and_asks_the_same_question() {
        let record = sample(2);
        let json = serde_json::to_string(&record).unwrap();
        let back: AuditRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record);
        let request = back.request().unwrap();
        assert_eq!(
            request.time,
            UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_458)
        );
        assert_eq!(request.intent, "say \"hi\"\n");
        assert_eq!(request.plugin.version.to_string(), "1.0.0");
    }
}
