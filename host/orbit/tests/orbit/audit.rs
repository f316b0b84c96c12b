//! Every decision is on record: the audit file against what callers saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Stack, eventually};

/// Allowed and denied dispatches from several callers at once; Orbit is
/// shut down (as on SIGTERM) while they are still coming. Each decision a
/// caller got an answer for is in the file exactly once, with the outcome
/// the caller saw, and the file holds nothing else.
#[tokio::test]
async fn every_decision_answered_under_load_is_on_record_once_also_across_a_shutdown() {
    let mut stack = Stack::start().await;
    let answered = Arc::new(AtomicUsize::new(0));
    let mut callers = tokio::task::JoinSet::new();
    // 16 callers, below the per-principal in-flight cap, so every answer is
    // a decision; each dispatches until Orbit is gone.
    for caller in 0..16 {
        // dev may not run the experimental `triage`; bea (beta) may.
        let client = if caller % 3 == 0 {
            stack.bea.clone()
        } else {
            stack.dev.clone()
        };
        let answered = answered.clone();
        callers.spawn(async move {
            let mut seen = Vec::new();
            for i in 0.. {
                let body = if (caller + i) % 2 == 0 {
                    json!({ "plugin": "echo", "intent": "echo", "input": i })
                } else {
                    json!({ "plugin": "triage", "intent": "classify", "input": { "subject": "refund please" } })
                };
                let Ok(reply) = client.dispatch(&body).await else {
                    return seen; // Orbit stopped
                };
                assert!(
                    matches!(reply.status, StatusCode::OK | StatusCode::FORBIDDEN),
                    "{} {}",
                    reply.status,
                    reply.body
                );
                let correlation_id = reply.headers["x-correlation-id"].to_str().unwrap();
                seen.push((correlation_id.to_owned(), reply.status == StatusCode::OK));
                answered.fetch_add(1, Ordering::Relaxed);
            }
            seen
        });
    }
    assert!(
        eventually(Duration::from_secs(60), || async {
            answered.load(Ordering::Relaxed) >= 100
        })
        .await
    );
    stack.orbit.take().unwrap().stop().await;

    let mut seen: Vec<(String, bool)> = callers.join_all().await.concat();
    let mut recorded: Vec<(String, bool)> = stack
        .audit_records()
        .into_iter()
        .map(|r| (r.correlation_id, r.decision.allowed))
        .collect();
    seen.sort();
    recorded.sort();
    assert!(seen.iter().any(|(_, allowed)| !allowed) && seen.iter().any(|(_, allowed)| *allowed));
    assert_eq!(recorded, seen);
}

#[tokio::test]
async fn a_record_says_who_asked_for_what_and_what_decided() {
    let stack = Stack::start().await;
    let reply = stack
        .dispatch(json!({ "plugin": "triage", "intent": "classify", "input": {} }))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    let records = stack.audit_records();
    let [record] = records.as_slice() else {
        panic!("{records:?}")
    };
    assert_eq!(
        record.correlation_id,
        reply.headers["x-correlation-id"].to_str().unwrap()
    );
    assert_eq!(record.action, "dispatch");
    assert_eq!(record.principal.id, "dev");
    assert_eq!(record.principal.groups, ["developers"]);
    assert_eq!(record.plugin.info.name, "triage");
    assert_eq!(
        record.plugin.digest,
        reply.body["plugin"]["digest"].as_str().unwrap()
    );
    assert_eq!(record.intent, "classify");
    assert!(!record.decision.allowed);
    // The reply's governance is the recorded decision, plus the earlier
    // system's rounded `decision_time_ms`.
    let mut answered = reply.body["governance"].clone();
    let ms = answered.as_object_mut().unwrap().remove("decision_time_ms");
    assert_eq!(
        ms,
        Some(json!((record.decision.decision_time_us + 500) / 1000))
    );
    assert_eq!(serde_json::to_value(&record.decision).unwrap(), answered);
}

#[tokio::test]
async fn a_dispatch_whose_decision_cannot_be_recorded_is_refused_and_never_runs() {
    // Every write to /dev/full fails: "no space left on device".
    let stack = Stack::start_with(|config| config.audit_file = Some("/dev/full".into())).await;
    for plugin in ["echo", "triage"] {
        let reply = stack
            .dispatch(json!({ "plugin": plugin, "intent": "i", "input": {} }))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.body
        );
        assert_eq!(crate::support::code(&reply), "SERVICE_UNAVAILABLE");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("audit log") && !message.contains("/dev"),
            "{message}"
        );
        assert!(reply.body.get("output").is_none());
    }
    let ready = reqwest::get(format!("{}/ready", stack.orbit_url))
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.text().await.unwrap().contains("audit failing"));
    let metrics = stack.metrics().await;
    assert!(
        metrics.contains("orbit_audit_failures_total 2"),
        "{metrics}"
    );
    assert!(metrics.contains("orbit_audit_records_total 0"), "{metrics}");
    // Nothing reached Axon.
    let axon = reqwest::get(format!("{}/metrics", stack.axon_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ran: Vec<&str> = axon
        .lines()
        .filter(|l| l.starts_with("axon_reason_requests_total{") && !l.ends_with(" 0"))
        .collect();
    assert!(ran.is_empty(), "{ran:?}");
}
