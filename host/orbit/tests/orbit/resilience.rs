//! Axon going away and coming back, under Orbit.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Stack, code, eventually, start_axon};

#[tokio::test]
async fn while_axon_is_down_orbit_answers_503_then_recovers_by_itself() {
    let mut stack = Stack::start_with(|c| {
        c.breaker_failures = 2;
        c.breaker_open_ms = 300;
        c.axon_retries = 1;
    })
    .await;
    let echo = json!({ "plugin": "echo", "intent": "x", "input": "ping" });
    assert_eq!(stack.dispatch(echo.clone()).await.status, StatusCode::OK);

    stack.axon.take().unwrap().stop().await;
    // Unreachable: clear 503s with Retry-After, never a wrong answer.
    for _ in 0..4 {
        let reply = stack.dispatch(echo.clone()).await;
        assert_eq!(
            (reply.status, code(&reply)),
            (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE"),
            "{}",
            reply.body
        );
        assert!(reply.headers.contains_key("retry-after"));
    }
    // The breaker is open now: Orbit stops trying and says so.
    let reply = stack.dispatch(echo.clone()).await;
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("circuit open"),
        "{}",
        reply.body
    );
    let metrics = reqwest::get(format!("{}/metrics", stack.orbit_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("orbit_axon_breaker_state 2"), "{metrics}");
    let ready = reqwest::get(format!("{}/ready", stack.orbit_url))
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Axon comes back on the same address; Orbit recovers without a restart.
    let (axon, _) = start_axon(&stack.data_dir, &stack.source, stack.axon_addr).await;
    stack.axon = Some(axon);
    let recovered = eventually(Duration::from_secs(10), || async {
        stack.dispatch(echo.clone()).await.status == StatusCode::OK
    })
    .await;
    assert!(recovered, "orbit did not recover once axon was back");
    let reply = stack.dispatch(echo.clone()).await;
    assert_eq!(reply.body["output"], "ping");
}

#[tokio::test]
async fn load_through_an_axon_restart_never_gets_a_wrong_answer() {
    let mut stack = Stack::start_with(|c| {
        c.breaker_failures = 3;
        c.breaker_open_ms = 200;
    })
    .await;
    let stack_ref = std::sync::Arc::new(stack.dev.clone());
    let load = tokio::spawn(async move {
        let mut outcomes = (0usize, 0usize);
        for i in 0..300u32 {
            let reply = stack_ref
                .dispatch(&json!({ "plugin": "echo", "intent": "x", "input": { "n": i } }))
                .await
                .unwrap();
            match reply.status {
                StatusCode::OK => {
                    assert_eq!(reply.body["output"], json!({ "n": i }), "a wrong answer");
                    outcomes.0 += 1;
                }
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(reply.headers.contains_key("retry-after"));
                    outcomes.1 += 1;
                }
                other => panic!("unexpected {other}: {}", reply.body),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        outcomes
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.axon.take().unwrap().stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (axon, _) = start_axon(&stack.data_dir, &stack.source, stack.axon_addr).await;
    stack.axon = Some(axon);
    let (ok, unavailable) = load.await.unwrap();
    assert!(
        ok > 0 && unavailable > 0,
        "ok {ok}, unavailable {unavailable}"
    );
    // The last requests, after the restart, succeed again.
    let reply = stack
        .dispatch(json!({ "plugin": "echo", "intent": "x", "input": "after" }))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}
