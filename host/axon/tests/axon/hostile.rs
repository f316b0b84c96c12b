//! Every limit, obeyed and violated; hostile plugins fail only their own
//! request, with their own code, within their deadline.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{
    BOMB_MEMORY_MIB, OUTPUT_LIMIT_KIB, SPIN_CONCURRENCY, SPIN_DEADLINE_MS, TestAxon,
};

/// Slack on top of a deadline for a debug build on a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(5);

#[tokio::test]
async fn memory_within_the_limit_succeeds_and_beyond_it_fails() {
    let axon = TestAxon::start().await;
    let reply = axon.reason("memory-bomb", json!({ "mib": 4 })).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["output"]["allocated_mib"], 4);
    let peak = reply.body["stats"]["memory_peak_bytes"].as_u64().unwrap();
    assert!((4 << 20..=BOMB_MEMORY_MIB << 20).contains(&peak), "{peak}");

    let reply = axon.reason("memory-bomb", json!({})).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_GATEWAY, "PLUGIN_MEMORY_LIMIT"),
        "{}",
        reply.body
    );
    assert!(
        reply.message().contains(&format!("{BOMB_MEMORY_MIB} MiB")),
        "{}",
        reply.message()
    );
}

#[tokio::test]
async fn a_loop_within_the_deadline_succeeds_and_an_endless_one_times_out() {
    let axon = TestAxon::start().await;
    let reply = axon
        .reason("spin-loop", json!({ "iterations": 1000 }))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["output"]["iterations"], 1000);

    let started = Instant::now();
    let reply = axon.reason("spin-loop", json!({})).await;
    let elapsed = started.elapsed();
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::GATEWAY_TIMEOUT, "PLUGIN_TIMEOUT"),
        "{}",
        reply.body
    );
    assert!(
        elapsed >= Duration::from_millis(SPIN_DEADLINE_MS),
        "{elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(SPIN_DEADLINE_MS) + SLACK,
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn blocking_in_the_host_is_cut_off_at_the_deadline_too() {
    let axon = TestAxon::start().await;
    let reply = axon.reason("spin-loop", json!({ "sleep_ms": 10 })).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    let started = Instant::now();
    let reply = axon
        .reason("spin-loop", json!({ "sleep_ms": 600_000 }))
        .await;
    assert_eq!(reply.code(), "PLUGIN_TIMEOUT", "{}", reply.body);
    assert!(started.elapsed() < Duration::from_millis(SPIN_DEADLINE_MS) + SLACK);
}

#[tokio::test]
async fn output_within_the_limit_succeeds_and_beyond_it_fails() {
    let axon = TestAxon::start().await;
    let reply = axon
        .reason("huge-output", json!({ "output_kib": OUTPUT_LIMIT_KIB / 2 }))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body["output"].as_str().unwrap().len(),
        (OUTPUT_LIMIT_KIB / 2 * 1024) as usize
    );

    let reply = axon
        .reason("huge-output", json!({ "output_kib": OUTPUT_LIMIT_KIB * 4 }))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_GATEWAY, "PLUGIN_OUTPUT_LIMIT"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn notes_and_error_messages_count_against_the_reply_budget() {
    let axon = TestAxon::start().await;
    let limit = (OUTPUT_LIMIT_KIB * 1024) as usize;
    // Notes count as the reply carries them: within the count and the
    // budget they arrive whole...
    let reply = axon
        .reason(
            "huge-output",
            json!({ "notes": 64, "note": "\u{1}".repeat(100) }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["notes"].as_array().unwrap().len(), 64);
    // ...too many, even empty, are refused...
    let reply = axon
        .reason("huge-output", json!({ "notes": 100_000, "note": "" }))
        .await;
    assert_eq!(reply.code(), "PLUGIN_ERROR", "{}", reply.body);
    assert!(reply.message().contains("notes"), "{}", reply.message());
    // ...and control characters count six bytes each, as escaped: 50 notes
    // of 1,200 pass a count of raw bytes, not one of the bytes sent.
    let raw = 50 * 1_200;
    assert!(raw < limit && 6 * raw > limit);
    let reply = axon
        .reason(
            "huge-output",
            json!({ "notes": 50, "note": "\u{1}".repeat(1_200) }),
        )
        .await;
    assert_eq!(reply.code(), "PLUGIN_OUTPUT_LIMIT", "{}", reply.body);

    // A huge error message of control characters is cut, with a marker.
    let reply = axon
        .reason(
            "huge-output",
            json!({ "error_kib": 6 * 1024, "error_unit": "\u{1}" }),
        )
        .await;
    assert_eq!(reply.code(), "PLUGIN_ERROR", "{}", reply.body);
    assert!(
        reply.message().contains("more bytes]"),
        "{}",
        reply.message()
    );
    let size = reply.body.to_string().len();
    assert!(size < 6 * 1024, "the reply is {size} bytes");
}

#[tokio::test]
async fn logs_and_stdio_are_bounded_without_failing_the_request() {
    let axon = TestAxon::start().await;
    let reply = axon
        .reason(
            "huge-output",
            json!({ "log_records": 500, "stdout_kib": 256 }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let stats = &reply.body["stats"];
    assert_eq!(stats["log_records"], 100);
    assert_eq!(stats["logs_dropped"], 400);
    // Every byte written is counted, far beyond what is kept.
    assert_eq!(stats["stdout_bytes"], 256 * 1024);
    assert_eq!(stats["stderr_bytes"], 256 * 1024);
}

#[tokio::test]
async fn recursion_within_the_stack_succeeds_and_overflow_traps() {
    let axon = TestAxon::start().await;
    let reply = axon.reason("deep-recursion", json!({ "depth": 200 })).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["output"]["reached"], 200);

    let reply = axon
        .reason("deep-recursion", json!({ "depth": 200, "shadow": true }))
        .await;
    assert_eq!(reply.body["output"]["reached"], 200, "{}", reply.body);

    // Overflowing the wasm stack (the host's limit)...
    let reply = axon.reason("deep-recursion", json!({})).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_GATEWAY, "PLUGIN_TRAPPED"),
        "{}",
        reply.body
    );
    assert!(
        reply.message().contains("stack overflow"),
        "{}",
        reply.message()
    );
    // ...or the guest's own stack in linear memory: a trap either way, never corruption.
    let reply = axon
        .reason("deep-recursion", json!({ "shadow": true }))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_GATEWAY, "PLUGIN_TRAPPED"),
        "{}",
        reply.body
    );
    assert!(
        reply.message().contains("out of bounds"),
        "{}",
        reply.message()
    );
}

#[tokio::test]
async fn a_panic_is_a_trap_of_its_own_request() {
    let axon = TestAxon::start().await;
    let reply = axon.reason("panic", json!({})).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_GATEWAY, "PLUGIN_TRAPPED"),
        "{}",
        reply.body
    );
    assert!(reply.message().contains("panicked"), "{}", reply.message());
    // The next request of the same plugin gets a fresh instance, and fails the same way.
    assert_eq!(
        axon.reason("panic", json!({})).await.code(),
        "PLUGIN_TRAPPED"
    );
    assert_eq!(
        axon.reason("echo", json!("fine")).await.body["output"],
        "fine"
    );
}

#[tokio::test]
async fn plugin_errors_and_invalid_input_have_their_own_codes() {
    let axon = TestAxon::start().await;
    let reply = axon
        .reason("keywords", json!({ "text": "a b", "top": 0 }))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "PLUGIN_INVALID_INPUT"),
        "{}",
        reply.body
    );
    assert!(
        reply.message().contains("`top` must be between 1 and 100"),
        "{}",
        reply.message()
    );

    let reply = axon.reason("keywords", json!({ "words": "a b" })).await;
    assert_eq!(reply.code(), "PLUGIN_INVALID_INPUT");
    assert!(
        reply.message().contains("unknown field `words`"),
        "{}",
        reply.message()
    );

    // A triage version published with broken config fails as the plugin's error.
    let spec = plugin_store::PublishSpec::from_toml(
        "name = \"triage\"\nversion = \"1.0.1\"\n[config]\nrules = \"not json\"",
    )
    .unwrap();
    axon.publish(&plugin_artifacts::TRIAGE.bytes().unwrap(), spec)
        .await;
    let reply = axon
        .post(json!({"plugin": "triage", "version": "1.0.1", "request": {"intent": "x", "input": {"body": "refund"}}}))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_GATEWAY, "PLUGIN_ERROR"),
        "{}",
        reply.body
    );
    assert!(
        reply
            .message()
            .contains("plugin config `rules` is not valid"),
        "{}",
        reply.message()
    );
}

#[tokio::test]
async fn past_a_plugins_concurrency_limit_requests_are_overloaded() {
    let axon = std::sync::Arc::new(TestAxon::start().await);
    let sleepers: Vec<_> = (0..SPIN_CONCURRENCY)
        .map(|_| {
            let axon = axon.clone();
            tokio::spawn(async move { axon.reason("spin-loop", json!({ "sleep_ms": 700 })).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = axon.reason("spin-loop", json!({ "iterations": 1 })).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "OVERLOADED"),
        "{}",
        reply.body
    );
    assert_eq!(reply.headers["retry-after"], "1");
    // Other plugins are not affected by one plugin's limit.
    assert_eq!(axon.reason("echo", json!(7)).await.body["output"], 7);
    for sleeper in sleepers {
        assert_eq!(sleeper.await.unwrap().status, StatusCode::OK);
    }
    // Once they finish, the plugin takes requests again.
    assert_eq!(
        axon.reason("spin-loop", json!({ "iterations": 1 }))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn past_the_host_pool_requests_are_overloaded() {
    let axon = std::sync::Arc::new(TestAxon::start_with(|c| c.pool_size = 2).await);
    let sleepers: Vec<_> = (0..2)
        .map(|_| {
            let axon = axon.clone();
            tokio::spawn(async move { axon.reason("spin-loop", json!({ "sleep_ms": 700 })).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = axon.reason("echo", json!(1)).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "OVERLOADED"),
        "{}",
        reply.body
    );
    assert!(
        reply.message().contains("all host sandbox slots are busy"),
        "{}",
        reply.message()
    );
    for sleeper in sleepers {
        sleeper.await.unwrap();
    }
    assert_eq!(axon.reason("echo", json!(1)).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_plugins_loop_other_requests_are_answered() {
    let axon = std::sync::Arc::new(TestAxon::start().await);
    // A version with a long deadline, so the loops outlast a slow debug build.
    let spec = plugin_store::PublishSpec::from_toml(
        "name = \"spin-loop\"\nversion = \"2.0.0\"\n[limits]\ndeadline_ms = 5000",
    )
    .unwrap();
    axon.publish(&plugin_artifacts::SPIN_LOOP.bytes().unwrap(), spec)
        .await;
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let axon = axon.clone();
            tokio::spawn(async move {
                axon.post(json!({"plugin": "spin-loop", "version": "2.0.0", "request": {"intent": "x", "input": {}}}))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    for i in 0..10 {
        let reply = axon
            .reason(
                "keywords",
                json!({ "text": format!("alpha beta beta gamma {i}") , "top": 1 }),
            )
            .await;
        assert_eq!(
            reply.body["output"],
            json!({ "keywords": ["beta"] }),
            "{}",
            reply.body
        );
    }
    // The loops were still running while those were answered.
    assert!(
        loops.iter().all(|l| !l.is_finished()),
        "the loops ended before the other requests were served ({:?})",
        started.elapsed()
    );
    for l in loops {
        assert_eq!(l.await.unwrap().code(), "PLUGIN_TIMEOUT");
    }
}

/// Resident memory of this process (the test holds Axon in-process), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_stays_bounded_over_ten_thousand_hostile_requests() {
    const TOTAL: usize = 10_000;
    const WARM_UP: usize = 1_000;
    const CLIENTS: usize = 4;
    const MAX_GROWTH: u64 = 48 << 20;

    let axon = std::sync::Arc::new(TestAxon::start().await);
    let attacks = [
        ("panic", json!({})),
        ("memory-bomb", json!({})),
        (
            "huge-output",
            json!({ "output_kib": OUTPUT_LIMIT_KIB * 2, "log_records": 200, "stdout_kib": 32 }),
        ),
        ("deep-recursion", json!({})),
        ("counter", json!({})),
    ];
    let run = |count: usize| {
        let axon = axon.clone();
        let attacks = attacks.clone();
        async move {
            let tasks: Vec<_> = (0..CLIENTS)
                .map(|client| {
                    let axon = axon.clone();
                    let attacks = attacks.clone();
                    tokio::spawn(async move {
                        for i in (client..count).step_by(CLIENTS) {
                            let (plugin, input) = &attacks[i % attacks.len()];
                            let reply = axon.reason(plugin, input.clone()).await;
                            let expected_ok = *plugin == "counter";
                            assert_eq!(
                                reply.status.is_success(),
                                expected_ok,
                                "{plugin}: {}",
                                reply.body
                            );
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        }
    };
    run(WARM_UP).await;
    let before = rss_bytes();
    run(TOTAL).await;
    let after = rss_bytes();
    assert!(
        after < before + MAX_GROWTH,
        "RSS grew from {} MiB to {} MiB over {TOTAL} hostile requests",
        before >> 20,
        after >> 20
    );
    let metrics = axon.metrics().await;
    assert!(metrics.contains("axon_instances_in_flight 0"), "{metrics}");
}
