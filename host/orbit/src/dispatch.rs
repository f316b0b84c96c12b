//! `POST /dispatch`: Think -> Govern -> Act.
//!
//! The caller is who signed the request (never anything in the body). A
//! request that names no plugin goes where the intent table routes its
//! intent (the earlier system's clients send only `intent` and `context`).
//! The plugin version is resolved (a pinned `version`, or an `alias`, `live` by
//! default, with its canary split by the routing key), governance decides on
//! the verified version, and only on an allow is the request signed again by
//! Orbit and sent to Axon with the digest that was governed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use auth::Authenticated;
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use governance::{AuditRecord, Decision, DecisionRequest, Outcome, Principal, PrincipalKind};
use plugin_store::{PluginName, PluginRef, VerifyError, Version};
use serde::Serialize;
use serde_json::value::RawValue;
use service_kit::reasoning::DispatchBody;
use service_kit::{ApiError, ApiJson, CorrelationId, ErrorCode};

use crate::catalogue::{DEFAULT_ALIAS, ResolveError, Selector};
use crate::server::OrbitState;

/// How long Orbit waits for a plugin that does not state a deadline: the
/// longest Axon allows by default (Axon enforces the real one).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// The governance part of a response: the decision and what made it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct GovernanceSummary<'a> {
    allowed: bool,
    reason: Outcome,
    /// The ids of the policies that decided.
    #[schema(value_type = Vec<String>)]
    policies: &'a [String],
    /// Policies that failed to evaluate (a deny); absent when none did.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    #[schema(value_type = Vec<String>, required = false)]
    errors: &'a [String],
    /// The version of the policy set that decided.
    policy_version: u64,
    #[schema(value_type = String)]
    policy_set: &'a str,
    decision_time_us: u64,
    /// The earlier system's field: whole milliseconds, rounded.
    decision_time_ms: u64,
}

impl<'a> From<&'a Decision> for GovernanceSummary<'a> {
    fn from(d: &'a Decision) -> Self {
        Self {
            allowed: d.allowed,
            reason: d.reason,
            policies: &d.policies,
            errors: &d.errors,
            policy_version: d.policy_version,
            policy_set: &d.policy_set,
            decision_time_us: d.decision_time_us,
            decision_time_ms: d.decision_time_us.saturating_add(500) / 1000,
        }
    }
}

/// A dispatch's answer: the plugin's, and the decision that allowed it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct DispatchReply<'a> {
    /// Always `success`.
    #[schema(value_type = String, example = "success")]
    status: &'static str,
    /// A line for people (the earlier system's `message`).
    message: String,
    /// What the plugin answered: any JSON.
    #[schema(value_type = serde_json::Value)]
    output: &'a RawValue,
    /// The plugin's confidence in its answer, when it gave one.
    confidence: Option<f64>,
    #[schema(value_type = Vec<String>)]
    notes: &'a [String],
    /// The version that answered.
    #[schema(value_type = PluginRef)]
    plugin: &'a PluginRef,
    #[schema(value_type = String)]
    correlation_id: &'a str,
    /// RFC 3339, UTC.
    timestamp: String,
    governance: GovernanceSummary<'a>,
}

/// What Orbit sends Axon: the caller's input passed through as raw JSON.
#[derive(Serialize)]
struct AxonReason<'a> {
    plugin: &'a str,
    version: String,
    /// What governance approved: Axon runs exactly this module or refuses.
    digest: String,
    request: AxonRequest<'a>,
}

/// The context entry that keeps one caller on one side of a canary.
pub const ROUTING_KEY: &str = "session_id";

#[derive(Serialize)]
struct AxonRequest<'a> {
    intent: &'a str,
    input: &'a RawValue,
    context: &'a BTreeMap<String, String>,
}

pub(crate) fn principal_of(caller: &Authenticated) -> Principal {
    let identity = caller.identity();
    Principal {
        id: identity.principal.clone(),
        kind: match identity.kind {
            auth::PrincipalKind::User => PrincipalKind::User,
            auth::PrincipalKind::Service => PrincipalKind::Service,
        },
        groups: identity.groups.clone(),
        tenant: identity.tenant.clone(),
    }
}

fn resolve_error(error: ResolveError) -> ApiError {
    let code = match &error {
        ResolveError::Unavailable(_) => {
            return ApiError::new(ErrorCode::ServiceUnavailable, error.to_string()).retry_after(1);
        }
        ResolveError::NotServable(VerifyError::Revoked { .. }) => ErrorCode::PluginRevoked,
        ResolveError::NotServable(VerifyError::Untrusted { .. }) => ErrorCode::PluginUntrusted,
        ResolveError::NotServable(VerifyError::RecordMismatch { .. }) => {
            ErrorCode::PluginDigestMismatch
        }
        _ => ErrorCode::PluginNotFound,
    };
    ApiError::new(code, error.to_string())
}

service_kit::error_responses!(DispatchErrors: EVERY, SIGNED, PLUGIN_RUN, [
    InvalidInput,
    RateLimitExceeded,
    GovernanceDenied,
    GovernanceStale,
    GovernanceUnavailable,
    GpuUnavailable,
]);

/// `POST /dispatch`: run a plugin (named, or routed by `intent`) after governance allows it.
#[utoipa::path(
    post,
    path = "/dispatch",
    tag = "dispatch",
    operation_id = "dispatch",
    security(("sigv4" = [])),
    request_body(content = DispatchBody),
    responses(
        (status = 200, description = "The plugin answered.", body = DispatchReply, example = json!({
            "status": "success",
            "message": "`keywords` 1.0.0 answered intent `extract`",
            "output": {"keywords": ["fox", "saw"]},
            "confidence": null,
            "notes": [],
            "plugin": {"name": "keywords", "version": "1.0.0", "digest": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
            "correlation_id": "5f0c6c1e-2f51-4a53-9d0a-8a8f5d3c2b1a",
            "timestamp": "2026-12-04T09:00:00.000Z",
            "governance": {
                "allowed": true, "reason": "allowed", "policies": ["developers-may-dispatch-approved"],
                "policy_version": 1, "policy_set": "default", "decision_time_us": 42, "decision_time_ms": 0
            }
        })),
        DispatchErrors,
    ),
)]
pub async fn dispatch(
    State(state): State<OrbitState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    caller: Authenticated,
    correlation_id: CorrelationId,
    ApiJson(body): ApiJson<DispatchBody>,
) -> Result<Response, ApiError> {
    let caller = Caller {
        identity: &caller,
        peer,
        headers: &headers,
        correlation_id: &correlation_id,
    };
    let dispatched = run(&state, &caller, &body).await?;
    Ok(Json(dispatched.reply(&body.intent, &correlation_id)).into_response())
}

/// Who asks, as the front door saw them.
pub(crate) struct Caller<'a> {
    pub identity: &'a Authenticated,
    pub peer: SocketAddr,
    pub headers: &'a HeaderMap,
    pub correlation_id: &'a CorrelationId,
}

/// A governed dispatch that ran: the plugin's answer and the decision that
/// allowed it.
pub(crate) struct Dispatched {
    answer: crate::axon_client::AxonAnswer,
    decision: Decision,
}

impl Dispatched {
    /// The reply body for a request with `intent`.
    pub(crate) fn reply<'a>(
        &'a self,
        intent: &str,
        correlation_id: &'a CorrelationId,
    ) -> DispatchReply<'a> {
        let answer = &self.answer;
        DispatchReply {
            status: "success",
            message: format!(
                "`{}` {} answered intent `{intent}`",
                answer.plugin.name, answer.plugin.version
            ),
            output: &answer.output,
            confidence: answer.confidence,
            notes: &answer.notes,
            plugin: &answer.plugin,
            correlation_id: correlation_id.as_str(),
            timestamp: service_kit::timestamp(),
            governance: GovernanceSummary::from(&self.decision),
        }
    }
}

/// Think -> Govern -> Act for `body` from `caller`, every check and record
/// included: what `POST /dispatch` and the MCP `tools/call` both run.
pub(crate) async fn run(
    state: &OrbitState,
    caller: &Caller<'_>,
    body: &DispatchBody,
) -> Result<Dispatched, ApiError> {
    let Caller {
        identity: caller,
        peer,
        headers,
        correlation_id,
    } = *caller;
    let invalid = |message: String| ApiError::new(ErrorCode::InvalidRequest, message);
    service_kit::reasoning::check_fields("", &body.intent, &body.context)?;
    // The plugin named, or the one the intent table routes the intent to.
    let (name, routed_alias) = match &body.plugin {
        Some(plugin) => (
            plugin
                .parse::<PluginName>()
                .map_err(|e| invalid(format!("`plugin`: {e}")))?,
            None,
        ),
        None if body.version.is_some() || body.alias.is_some() => {
            return Err(invalid(
                "`version` and `alias` choose among a plugin's versions: name the `plugin` too"
                    .into(),
            ));
        }
        None => {
            let target = state
                .catalogue()
                .route(&body.intent)
                .await
                .map_err(resolve_error)?;
            (target.plugin, Some(target.alias))
        }
    };
    let version: Option<Version> = body
        .version
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e| {
            invalid(format!(
                "`version` must be a semantic version such as `1.0.0`: {e}"
            ))
        })?;

    let alias = body.alias.as_deref().or(routed_alias.as_deref());
    let selector = match (&version, alias) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "give `version` or `alias`, not both: a pinned version has no alias".into(),
            ));
        }
        (Some(version), None) => Selector::Version(version),
        (None, Some(alias)) => Selector::Alias(alias),
        (None, None) => Selector::Alias(DEFAULT_ALIAS),
    };
    let routing_key = body
        .context
        .get(ROUTING_KEY)
        .map_or(correlation_id.as_str(), String::as_str);

    // Resolve what would run: a verified, unrevoked version.
    let resolved = state
        .catalogue()
        .resolve(&name, selector, routing_key)
        .await
        .map_err(resolve_error)?;
    let manifest = &resolved.verified.manifest;
    let plugin_ref = manifest.reference();

    // The input the plugin declared it takes, before anything is decided.
    let input = match &manifest.input_schema {
        Some(schema) => Some(
            state
                .inputs()
                .check(&manifest.digest, schema, body.input())?,
        ),
        None => None,
    };

    // Govern.
    let principal = principal_of(caller);
    let plugin = crate::discovery::plugin_info(&resolved.entry, &resolved.verified);
    let request = DecisionRequest {
        principal: &principal,
        plugin: &plugin,
        intent: &body.intent,
        source_ip: state.limits().client_ip(peer, headers),
        time: SystemTime::now(),
        input: input.as_ref(),
    };
    let decision = state.decider().decide(&request).await;
    state
        .metrics()
        .decision(decision.reason.as_str(), decision.decision_time_us);
    if let Some(shadow) = &decision.shadow {
        state.metrics().shadow_decision(shadow.differs);
    }
    // No decision takes effect, allow or deny, before it is on record.
    let record = AuditRecord::new(
        correlation_id.as_str(),
        &request,
        &manifest.digest.to_string(),
        &decision,
    );
    let written = state.audit().record(&record).await;
    state.metrics().audited(written.is_ok());
    if let Err(error) = written {
        tracing::error!(%error, "the decision was not recorded; refusing the request");
        return Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            "governance could not record its decision in the audit log, so it does not stand; nothing ran",
        )
        .retry_after(5));
    }
    if !decision.allowed {
        let (code, status) = match decision.reason {
            Outcome::Stale => (ErrorCode::GovernanceStale, "unavailable"),
            Outcome::Unavailable => (ErrorCode::GovernanceUnavailable, "unavailable"),
            _ => (ErrorCode::GovernanceDenied, "denied"),
        };
        let mut error = ApiError::new(
            code,
            format!(
                "`{}` may not dispatch `{name}`: {}",
                principal.id,
                decision.explain()
            ),
        )
        .with_detail("status", status)
        // The earlier system's denial carries the reason as text.
        .with_detail("reason", decision.explain())
        .with_detail("plugin", &plugin_ref)
        .with_detail("governance", GovernanceSummary::from(&decision));
        match code {
            ErrorCode::GovernanceStale => error = error.retry_after(5),
            ErrorCode::GovernanceUnavailable => error = error.retry_after(1),
            _ => {}
        }
        return Err(error);
    }

    // Act.
    let axon_body = serde_json::to_vec(&AxonReason {
        plugin: name.as_str(),
        version: manifest.version.to_string(),
        digest: manifest.digest.to_string(),
        request: AxonRequest {
            intent: &body.intent,
            input: body.input(),
            context: &body.context,
        },
    })
    .map_err(ApiError::internal)?;
    let deadline = manifest
        .limits
        .deadline_ms
        .map_or(DEFAULT_DEADLINE, |ms| Duration::from_millis(u64::from(ms)));
    let _in_flight = state.in_flight().enter(&principal.id)?;
    let answer = state
        .axon()
        .reason(manifest, correlation_id, axon_body.into(), deadline)
        .await?;
    Ok(Dispatched { answer, decision })
}
