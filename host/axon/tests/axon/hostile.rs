//! Every limit, obeyed and violated; hostile plugins fail only their own
//! request, with their own code, within their deadline.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{
    BOMB_MEMORY_MIB, OUTPUT_LIMIT_KIB, SPIN_CONCURRENCY, SPIN_DEADLINE_MS, TestAxon,
};

/// How long a request that the deadline should cut off may take before the
/// test calls it hung: a liveness guard, far above any deadline here, not a
/// timing assertion (the answer's code is what shows the cut-off).
const HANG_GUARD: Duration = Duration::from_secs(120);

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
    let reply = tokio::time::timeout(HANG_GUARD, axon.reason("spin-loop", json!({})))
        .await
        .expect("the deadline did not cut the endless loop off");
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
}

#[tokio::test]
async fn blocking_in_the_host_is_cut_off_at_the_deadline_too() {
    let axon = TestAxon::start().await;
    let reply = axon.reason("spin-loop", json!({ "sleep_ms": 10 })).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    // Sleeping ten minutes in the host: the deadline must cut it off, as the
    // hang guard (far shorter than the sleep) checks.
    let reply = tokio::time::timeout(
        HANG_GUARD,
        axon.reason("spin-loop", json!({ "sleep_ms": 600_000 })),
    )
    .await
    .expect("the deadline did not cut the blocking sleep off");
    assert_eq!(reply.code(), "PLUGIN_TIMEOUT", "{}", reply.body);
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

/// Starts `n` requests to spin-loop `version` that sleep `ms` (far longer
/// than a test needs them to hold their slots) and waits until all run.
async fn hold_slots(
    axon: &std::sync::Arc<TestAxon>,
    version: &str,
    n: u32,
    ms: u64,
) -> Vec<tokio::task::JoinHandle<crate::support::Reply>> {
    let sleepers = (0..n)
        .map(|_| {
            let axon = axon.clone();
            let version = version.to_owned();
            tokio::spawn(async move {
                axon.post(json!({"plugin": "spin-loop", "version": version, "request": {"intent": "x", "input": { "sleep_ms": ms }}}))
                    .await
            })
        })
        .collect();
    axon.wait_in_flight(n as usize).await;
    sleepers
}

#[tokio::test]
async fn past_a_plugins_concurrency_limit_requests_are_overloaded() {
    let axon = std::sync::Arc::new(TestAxon::start().await);
    axon.publish_long_spin_loop("2.0.0").await;
    axon.publish_long_spin_loop("3.0.0").await;
    let sleepers = hold_slots(&axon, "2.0.0", SPIN_CONCURRENCY, 15_000).await;
    let reply = axon
        .post(json!({"plugin": "spin-loop", "version": "2.0.0", "request": {"intent": "x", "input": { "iterations": 1 }}}))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "OVERLOADED"),
        "{}",
        reply.body
    );
    assert_eq!(reply.headers["retry-after"], "1");
    // The limit is the plugin's, not each version's: another version of it
    // cannot add slots.
    let other_version = axon
        .post(json!({"plugin": "spin-loop", "version": "3.0.0", "request": {"intent": "x", "input": { "iterations": 1 }}}))
        .await;
    assert_eq!(
        (other_version.status, other_version.code()),
        (StatusCode::SERVICE_UNAVAILABLE, "OVERLOADED"),
        "{}",
        other_version.body
    );
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
    axon.publish_long_spin_loop("2.0.0").await;
    let sleepers = hold_slots(&axon, "2.0.0", 2, 15_000).await;
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
    axon.wait_in_flight(2).await;
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
    let spec = plugin_store::PublishSpec::from_toml(
        "name = \"two-memories\"\nversion = \"1.0.0\"\n[limits]\nmemory_mib = 16",
    )
    .unwrap();
    axon.publish(&several_memories(160, &[160]), spec).await;
    // Each attack with the code it must get; `echo` and `counter` are the
    // good requests served meanwhile, and must answer correctly.
    let control = "\u{1}".repeat(1024);
    let attacks = [
        ("panic", json!({}), "PLUGIN_TRAPPED"),
        ("memory-bomb", json!({}), "PLUGIN_MEMORY_LIMIT"),
        (
            "huge-output",
            json!({ "output_kib": OUTPUT_LIMIT_KIB * 2, "log_records": 200, "stdout_kib": 32 }),
            "PLUGIN_OUTPUT_LIMIT",
        ),
        ("huge-output", json!({ "notes": 1000 }), "PLUGIN_ERROR"),
        (
            "huge-output",
            json!({ "notes": 60, "note": control }),
            "PLUGIN_OUTPUT_LIMIT",
        ),
        (
            "huge-output",
            json!({ "error_kib": 256, "error_unit": "\u{1}" }),
            "PLUGIN_ERROR",
        ),
        (
            "resource-flood",
            json!({ "pollables": 1_000_000 }),
            "PLUGIN_RESOURCE_LIMIT",
        ),
        ("two-memories", json!({}), "PLUGIN_MEMORY_LIMIT"),
        ("deep-recursion", json!({}), "PLUGIN_TRAPPED"),
        ("counter", json!({}), "ok"),
        ("echo", json!(null), "ok"),
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
                            let (plugin, input, expected) = &attacks[i % attacks.len()];
                            let input = if *plugin == "echo" {
                                json!(i)
                            } else {
                                input.clone()
                            };
                            let reply = axon.reason(plugin, input.clone()).await;
                            if *expected == "ok" {
                                assert!(reply.status.is_success(), "{plugin}: {}", reply.body);
                                if *plugin == "echo" {
                                    assert_eq!(reply.body["output"], input, "a wrong answer");
                                }
                                continue;
                            }
                            assert_eq!(reply.code(), *expected, "{plugin}: {}", reply.body);
                            // Every failure fits the reply budget: a 4 KiB
                            // message plus the envelope.
                            let size = reply.body.to_string().len();
                            assert!(size < 8 * 1024, "{plugin}: a reply of {size} bytes");
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

#[tokio::test]
async fn host_resources_a_plugin_holds_are_capped_per_request() {
    let axon = TestAxon::start().await;
    let reply = axon
        .reason("resource-flood", json!({ "pollables": 100 }))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["output"]["held"], 100);

    let reply = axon
        .reason("resource-flood", json!({ "pollables": 1_000_000 }))
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_GATEWAY, "PLUGIN_RESOURCE_LIMIT"),
        "{}",
        reply.body
    );
    assert!(
        reply.message().contains("more than 4096 host resources"),
        "{}",
        reply.message()
    );
    // The next request starts from an empty table.
    let reply = axon
        .reason("resource-flood", json!({ "pollables": 1000 }))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

/// A component that exports the contract (its `reason` traps) and whose
/// instantiation creates a memory of `main_pages` 64 KiB pages, plus one
/// more core module per entry of `extra_pages`, each with a memory of that
/// many pages: what a toolchain that links several modules could emit.
fn several_memories(main_pages: u32, extra_pages: &[u32]) -> Vec<u8> {
    let core = wat::parse_str(format!(
        r#"(module
            (memory (export "memory") {main_pages})
            (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 8)
            (func (export "agent:reasoning/reasoner@1.1.0#reason")
                (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
                unreachable))"#
    ))
    .unwrap();
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../wit"))
        .unwrap();
    let world = resolve
        .select_world(&[package], Some("reasoning-plugin"))
        .unwrap();
    let mut core = core;
    wit_component::embed_component_metadata(
        &mut core,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    let mut component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&core)
        .unwrap()
        .encode()
        .unwrap();

    // Append, per extra memory, a core module defining it and a core
    // instance of that module (instantiated with the component).
    let modules = wasmparser::Parser::new(0)
        .parse_all(&component)
        .filter(|p| matches!(p, Ok(wasmparser::Payload::ModuleSection { .. })))
        .count() as u32;
    fn leb(mut n: u32, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, content: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(content.len() as u32, out);
        out.extend_from_slice(content);
    }
    for (index, pages) in (modules..).zip(extra_pages) {
        let module = wat::parse_str(format!("(module (memory {pages}))")).unwrap();
        section(1, &module, &mut component);
        let mut instance = vec![1, 0x00];
        leb(index, &mut instance);
        instance.push(0);
        section(2, &instance, &mut component);
    }
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(&component)
        .unwrap();
    component
}

#[tokio::test]
async fn a_component_of_several_memories_gets_one_memory_budget() {
    let axon = TestAxon::start().await;
    let publish = |name: &str, main_pages: u32, extra: &[u32]| {
        let spec = plugin_store::PublishSpec::from_toml(&format!(
            "name = \"{name}\"\nversion = \"1.0.0\"\n[limits]\nmemory_mib = 16"
        ))
        .unwrap();
        let bytes = several_memories(main_pages, extra);
        let axon = &axon;
        async move { axon.publish(&bytes, spec).await }
    };
    let call = |name: &'static str| {
        let axon = &axon;
        async move { axon.reason(name, json!({})).await }
    };

    // One 10 MiB memory fits the 16 MiB limit: the request gets as far as
    // the call, which traps by design.
    publish("one-memory", 160, &[]).await;
    let reply = call("one-memory").await;
    assert_eq!(reply.code(), "PLUGIN_TRAPPED", "{}", reply.body);

    // Two of 10 MiB each do not: the limit is the request's, all memories
    // together, not each memory's.
    publish("two-memories", 160, &[160]).await;
    let reply = call("two-memories").await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_GATEWAY, "PLUGIN_MEMORY_LIMIT"),
        "{}",
        reply.body
    );

    // More memories than a component may have never load, so they cannot
    // take pool slots that other plugins' requests need.
    publish("three-memories", 1, &[1, 1]).await;
    let reply = call("three-memories").await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_GATEWAY, "PLUGIN_ERROR"),
        "{}",
        reply.body
    );
    assert!(reply.message().contains("memor"), "{}", reply.message());

    // Other plugins are served throughout.
    assert_eq!(axon.reason("echo", json!(5)).await.body["output"], 5);
}
