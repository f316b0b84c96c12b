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
    let metrics = stack.metrics().await;
    assert!(
        metrics.contains(r#"orbit_axon_breaker_state{pool="cpu"} 2"#),
        "{metrics}"
    );
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
    // Dispatches every 5 ms, reporting each status, until told to stop.
    let client = stack.dev.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (statuses, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let load = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let reply = client
                    .dispatch(&json!({ "plugin": "echo", "intent": "x", "input": { "n": i } }))
                    .await
                    .unwrap();
                match reply.status {
                    StatusCode::OK => {
                        assert_eq!(reply.body["output"], json!({ "n": i }), "a wrong answer");
                    }
                    StatusCode::SERVICE_UNAVAILABLE => {
                        assert!(reply.headers.contains_key("retry-after"));
                    }
                    other => panic!("unexpected {other}: {}", reply.body),
                }
                let _ = statuses.send(reply.status);
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    /// Waits for the load to report `status`; a hang guard, not a timing
    /// assertion.
    async fn wait_for(
        seen: &mut tokio::sync::mpsc::UnboundedReceiver<StatusCode>,
        status: StatusCode,
    ) {
        tokio::time::timeout(Duration::from_secs(60), async {
            while seen.recv().await.unwrap() != status {}
        })
        .await
        .unwrap_or_else(|_| panic!("the load never saw {status}"));
    }
    wait_for(&mut seen, StatusCode::OK).await;
    stack.axon.take().unwrap().stop().await;
    wait_for(&mut seen, StatusCode::SERVICE_UNAVAILABLE).await;
    let (axon, _) = start_axon(&stack.data_dir, &stack.source, stack.axon_addr).await;
    stack.axon = Some(axon);
    wait_for(&mut seen, StatusCode::OK).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    // The last requests, after the restart, succeed again.
    let reply = stack
        .dispatch(json!({ "plugin": "echo", "intent": "x", "input": "after" }))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}
