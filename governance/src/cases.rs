//! Policy test cases: a file of requests and the decision each must get,
//! run against a candidate set before it is put (`agentctl policy test`),
//! the way `opa test` and Cedar's own tooling check policies.
//!
//! ```toml
//! [[case]]
//! name = "dev may run an approved plugin"
//! principal = { id = "dev", groups = ["developers"] }  # kind = "user", tenant = "local"
//! plugin = { name = "echo", labels = ["approved"], publisher = "agent-runtime" }
//! intent = "echo"                  # default ""
//! source_ip = "127.0.0.1"          # the default
//! time = "2026-12-01T00:00:00Z"    # default: now
//! input = { amount = 500 }         # `context.input`, for a plugin with an input schema
//! expect = "allow"                 # "deny", or a reason such as "forbidden_by_policy"
//! policies = ["developers-may-dispatch-approved"]  # optional: exactly these decided
//! ```

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::SystemTime;

use serde::Deserialize;

use crate::decision::{
    Decision, DecisionRequest, PluginInfo, PluginNeeds, Principal, PrincipalKind,
};
use crate::engine::Governance;

/// A file of cases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cases {
    #[serde(rename = "case", default)]
    pub cases: Vec<Case>,
}

/// One request and what it must get.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub principal: CasePrincipal,
    pub plugin: CasePlugin,
    #[serde(default)]
    pub intent: String,
    #[serde(default = "loopback")]
    pub source_ip: IpAddr,
    /// RFC 3339; default: when the case runs.
    pub time: Option<String>,
    /// The input as policies see it (`context.input` of a plugin with an
    /// action of its own); default none.
    pub input: Option<serde_json::Value>,
    /// `allow`, `deny`, or a reason code.
    pub expect: String,
    /// The deciding policies, exactly, when given.
    pub policies: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasePrincipal {
    pub id: String,
    #[serde(default = "user")]
    pub kind: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default = "local")]
    pub tenant: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasePlugin {
    pub name: String,
    #[serde(default = "first_version")]
    pub version: semver::Version,
    #[serde(default)]
    pub publisher: String,
    #[serde(default)]
    pub tags: BTreeSet<String>,
    #[serde(default)]
    pub labels: BTreeSet<String>,
    #[serde(default)]
    pub capabilities: BTreeSet<String>,
    #[serde(default)]
    pub models: BTreeSet<String>,
    /// `none` (the default), `preferred` or `required`.
    #[serde(default)]
    pub gpu: Option<String>,
}

fn loopback() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}
fn user() -> String {
    "user".to_owned()
}
fn local() -> String {
    "local".to_owned()
}
fn first_version() -> semver::Version {
    semver::Version::new(1, 0, 0)
}

/// What one case got.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub decision: Decision,
    /// Why it failed; `None` when it passed.
    pub failure: Option<String>,
}

/// Why a file of cases cannot run.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CasesError(String);

impl Cases {
    /// Parses a TOML file of cases and checks each can run.
    pub fn parse(text: &str) -> Result<Self, CasesError> {
        let cases: Self = toml::from_str(text).map_err(|e| CasesError(e.to_string()))?;
        if cases.cases.is_empty() {
            return Err(CasesError("no `[[case]]` in the file".to_owned()));
        }
        for case in &cases.cases {
            case.check()?;
        }
        Ok(cases)
    }

    /// Decides every case with `governance`.
    pub fn run(&self, governance: &Governance) -> Vec<CaseResult> {
        self.cases.iter().map(|case| case.run(governance)).collect()
    }
}

const OUTCOMES: &[&str] = &[
    "allowed",
    "forbidden_by_policy",
    "no_permitting_policy",
    "evaluation_error",
    "invalid_request",
    "stale",
];

impl Case {
    fn check(&self) -> Result<(), CasesError> {
        let fail = |m: String| Err(CasesError(format!("case `{}`: {m}", self.name)));
        if !matches!(self.expect.as_str(), "allow" | "deny")
            && !OUTCOMES.contains(&self.expect.as_str())
        {
            return fail(format!(
                "`expect = \"{}\"`: use `allow`, `deny` or one of {}",
                self.expect,
                OUTCOMES.join(", ")
            ));
        }
        if !matches!(self.principal.kind.as_str(), "user" | "service") {
            return fail(format!(
                "principal kind `{}`: use `user` or `service`",
                self.principal.kind
            ));
        }
        if let Some(time) = &self.time
            && humantime::parse_rfc3339_weak(time).is_err()
        {
            return fail(format!("`time = \"{time}\"` is not an RFC 3339 time"));
        }
        Ok(())
    }

    fn run(&self, governance: &Governance) -> CaseResult {
        let principal = Principal {
            id: self.principal.id.clone(),
            kind: if self.principal.kind == "service" {
                PrincipalKind::Service
            } else {
                PrincipalKind::User
            },
            groups: self.principal.groups.clone(),
            tenant: self.principal.tenant.clone(),
        };
        let plugin = PluginInfo {
            name: self.plugin.name.clone(),
            version: self.plugin.version.clone(),
            publisher: self.plugin.publisher.clone(),
            tags: self.plugin.tags.clone(),
            labels: self.plugin.labels.clone(),
            needs: PluginNeeds {
                capabilities: self.plugin.capabilities.clone(),
                models: self.plugin.models.clone(),
                gpu: self.plugin.gpu.clone().unwrap_or_else(|| "none".to_owned()),
            },
        };
        let time = self
            .time
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .unwrap_or_else(SystemTime::now);
        let decision = governance.decide_now(&DecisionRequest {
            principal: &principal,
            plugin: &plugin,
            intent: &self.intent,
            source_ip: self.source_ip,
            time,
            input: self.input.as_ref(),
        });
        let matches = match self.expect.as_str() {
            "allow" => decision.allowed,
            "deny" => !decision.allowed,
            reason => decision.reason.as_str() == reason,
        };
        let failure = if !matches {
            Some(format!(
                "expected {}, got {} ({})",
                self.expect,
                decision.reason.as_str(),
                decision.explain()
            ))
        } else {
            self.policies
                .as_ref()
                .filter(|expected| **expected != decision.policies)
                .map(|expected| {
                    format!(
                        "expected the deciding policies {expected:?}, got {:?}",
                        decision.policies
                    )
                })
        };
        CaseResult {
            name: self.name.clone(),
            decision,
            failure,
        }
    }
}
