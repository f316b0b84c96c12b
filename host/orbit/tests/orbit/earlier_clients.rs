//! The earlier system's API (the seed's docs/api.md), kept for its clients:
//! `/dispatch` with only `intent` and `context`, routed by the intent table;
//! its fields in the success and denial bodies; `X-Request-ID`; its
//! `/health` body.

use std::time::{Duration, SystemTime};

use plugin_store::admin;
use reqwest::StatusCode;
use serde_json::{Value, json};

use orbit::client::Reply;

use crate::support::{Stack, code};

/// The seed's request: no plugin, no input.
fn earlier_request(intent: &str) -> Value {
    json!({ "intent": intent, "context": { "user_id": "user123", "request_id": "req456" } })
}

/// `timestamp` is RFC 3339, as the seed's Go client parses it.
fn assert_timestamp(body: &Value) {
    let at = body["timestamp"].as_str().unwrap_or_default();
    assert!(humantime::parse_rfc3339(at).is_ok(), "{body}");
}

/// The seed's `governance` object: `allowed`, `reason` and whole
/// `decision_time_ms`, beside our own fields.
fn assert_earlier_governance(body: &Value, allowed: bool) {
    let governance = &body["governance"];
    assert_eq!(governance["allowed"], allowed, "{body}");
    assert!(governance["reason"].is_string(), "{body}");
    assert!(governance["decision_time_ms"].is_u64(), "{body}");
    assert!(governance["decision_time_us"].is_u64(), "{body}");
}

/// Dispatches `body` until it answers `want` (Orbit reads a registry
/// change within seconds), for at most 30 s; returns that answer.
async fn until_status(stack: &Stack, body: &Value, want: StatusCode) -> Reply {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = stack.dispatch(body.clone()).await;
        if reply.status == want || tokio::time::Instant::now() > deadline {
            assert_eq!(reply.status, want, "{}", reply.body);
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_request_with_only_intent_and_context_goes_where_its_intent_is_routed() {
    let stack = Stack::start().await;
    let registry = &**stack.source.registry();
    admin::set_route(registry, "call_reasoning", "echo".parse().unwrap(), "test")
        .await
        .unwrap();
    admin::set_route(registry, "classify", "triage@live".parse().unwrap(), "test")
        .await
        .unwrap();

    // Allowed: the seed's success body, with ours.
    let ok = until_status(&stack, &earlier_request("call_reasoning"), StatusCode::OK).await;
    assert_eq!(ok.body["status"], "success", "{}", ok.body);
    assert_eq!(
        ok.body["message"], "`echo` 1.0.0 answered intent `call_reasoning`",
        "{}",
        ok.body
    );
    assert_eq!(ok.body["plugin"]["name"], "echo");
    assert_eq!(ok.body["output"], Value::Null, "no input is `null`");
    assert_eq!(
        ok.body["correlation_id"].as_str(),
        ok.headers["x-correlation-id"].to_str().ok()
    );
    assert_timestamp(&ok.body);
    assert_earlier_governance(&ok.body, true);

    // Denied: the seed's denial body (`reason` as text), with ours. `dev`
    // is not in `beta`, and `triage` is experimental.
    let denied = stack.dispatch(earlier_request("classify")).await;
    assert_eq!(
        (denied.status, code(&denied)),
        (StatusCode::FORBIDDEN, "GOVERNANCE_DENIED"),
        "{}",
        denied.body
    );
    assert_eq!(denied.body["status"], "denied");
    assert_eq!(
        denied.body["reason"], "forbidden by policy experimental-only-for-beta",
        "{}",
        denied.body
    );
    assert!(denied.body["correlation_id"].is_string());
    assert_timestamp(&denied.body);
    assert_earlier_governance(&denied.body, false);
    // Governance decided on the plugin the intent resolved to.
    let records = stack.audit_records();
    let last = records.last().unwrap();
    assert_eq!(
        (last.plugin.info.name.as_str(), last.intent.as_str()),
        ("triage", "classify")
    );

    // The named plugin wins over the table; `alias` alone names no plugin.
    let named = stack
        .dispatch(json!({ "plugin": "echo", "intent": "classify", "input": 7 }))
        .await;
    assert_eq!(
        (named.status, &named.body["output"]),
        (StatusCode::OK, &json!(7))
    );
    let alias_alone = stack
        .dispatch(json!({ "intent": "call_reasoning", "alias": "live" }))
        .await;
    assert_eq!(
        (alias_alone.status, code(&alias_alone)),
        (StatusCode::BAD_REQUEST, "INVALID_REQUEST")
    );

    // Their Go client typed `context` as any JSON; ours takes strings.
    let typed = stack
        .dispatch(json!({ "intent": "call_reasoning", "context": { "count": 3 } }))
        .await;
    assert_eq!(
        (typed.status, code(&typed)),
        (StatusCode::BAD_REQUEST, "INVALID_REQUEST")
    );
    let message = typed.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("invalid type: integer `3`, expected a string"),
        "{message}"
    );

    // An intent nobody routed, and one whose route was removed.
    let unrouted = stack.dispatch(earlier_request("summarize")).await;
    assert_eq!(
        (unrouted.status, code(&unrouted)),
        (StatusCode::NOT_FOUND, "PLUGIN_NOT_FOUND")
    );
    assert_eq!(
        unrouted.body["error"]["message"],
        "no plugin is routed for intent `summarize`: name a `plugin`, or ask an operator to run `agentctl route set summarize <plugin>`"
    );
    admin::remove_route(registry, "call_reasoning", "test")
        .await
        .unwrap();
    let gone = until_status(
        &stack,
        &earlier_request("call_reasoning"),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(code(&gone), "PLUGIN_NOT_FOUND");
}

#[tokio::test]
async fn every_response_names_its_request_and_health_answers_the_earlier_body() {
    let stack = Stack::start().await;
    // The same correlation id twice (a caller may reuse one): two request ids.
    let url = format!("{}/dispatch", stack.orbit_url);
    let body = json!({ "plugin": "echo", "intent": "x", "input": 1 }).to_string();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let reply = Stack::send_signed(
            &url,
            &stack.dev_key,
            body.as_bytes(),
            SystemTime::now(),
            |_| {},
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.headers["x-correlation-id"], "sig-test");
        ids.push(reply.headers["x-request-id"].to_str().unwrap().to_owned());
    }
    assert_ne!(ids[0], ids[1]);
    assert!(uuid::Uuid::parse_str(&ids[0]).is_ok(), "{ids:?}");

    let health = crate::support::reply(
        reqwest::get(format!("{}/health", stack.orbit_url))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "healthy");
    assert_eq!(health.body["service"], "orbit");
    assert_eq!(health.body["version"], env!("CARGO_PKG_VERSION"));
    assert_timestamp(&health.body);
    assert!(health.headers.contains_key("x-request-id"));
}
