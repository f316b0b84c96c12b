//! Routing between Axon's pools by what a version's signed manifest asks
//! for. The GPU pool here is an Axon started with `--accelerator
//! simulated-cuda`: the routing is real, the GPU is not (models run on the
//! CPU), so that it is tested on every machine.

use std::time::{Duration, SystemTime};

use plugin_artifacts::SUPPORT_INTENT;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Stack, code, eventually, start_gpu_axon};

/// `orbit_axon_calls_total` answered by `pool`.
async fn answered_by(stack: &Stack, pool: &str) -> u64 {
    calls(stack, pool, "answered").await
}

/// `orbit_axon_calls_total` of `pool` with `outcome`.
async fn calls(stack: &Stack, pool: &str, outcome: &str) -> u64 {
    let metrics = stack.metrics().await;
    let series = format!(r#"orbit_axon_calls_total{{pool="{pool}",outcome="{outcome}"}} "#);
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |n| n.parse().unwrap())
}

async fn gpu_pool_state(stack: &Stack) -> serde_json::Value {
    let ready = reqwest::get(format!("{}/ready", stack.orbit_url))
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    ready.json::<serde_json::Value>().await.unwrap()["gpu_pool"].clone()
}

// Multi-threaded, as Orbit and Axon serve: inference runs in `block_in_place`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_plugin_runs_on_the_gpu_pool_falls_back_to_the_cpu_or_gets_503() {
    let (stack, gpu_addr) = Stack::start_with_gpu_pool(1000, false).await;
    let toml = SUPPORT_INTENT.manifest_text().unwrap().unwrap();
    // 1.0.0 as published; 1.1.0 requires a GPU, 1.2.0 prefers one.
    let needing = |version: &str, gpu: &str| {
        let toml = toml
            .replace(
                "version = \"1.0.0\"\ndescription",
                &format!("version = \"{version}\"\ndescription"),
            )
            .replace("[inference]\n", &format!("[inference]\ngpu = \"{gpu}\"\n"));
        assert!(toml.contains(&format!("gpu = \"{gpu}\"")), "{toml}");
        toml
    };
    for toml in [
        toml.clone(),
        needing("1.1.0", "required"),
        needing("1.2.0", "preferred"),
    ] {
        stack.publish_approved(SUPPORT_INTENT, &toml).await;
    }
    let dispatch = |version: &str| {
        let body = json!({ "plugin": "support-intent", "version": version, "intent": "classify", "input": { "message": "I was charged twice, refund please" } });
        let stack = &stack;
        async move { stack.dispatch(body).await }
    };
    let answers = |reply: &orbit::client::Reply| {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["output"]["intent"], "billing", "{}", reply.body);
    };

    // No GPU pool runs: what requires one is refused, to be retried; what
    // prefers one runs on the CPU pool, as does everything else.
    let reply = dispatch("1.1.0").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert_eq!(code(&reply), "GPU_UNAVAILABLE", "{}", reply.body);
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`support-intent@1.1.0` requires a GPU and the GPU pool is down"),
        "{message}"
    );
    assert!(
        reply.headers.contains_key("retry-after"),
        "{:?}",
        reply.headers
    );
    answers(&dispatch("1.2.0").await);
    answers(&dispatch("1.0.0").await);
    assert_eq!(answered_by(&stack, "cpu").await, 2);
    assert_eq!(answered_by(&stack, "gpu").await, 0);
    assert_eq!(gpu_pool_state(&stack).await, "down");

    // The GPU pool comes up: both GPU versions run there, the rest does not.
    let gpu = start_gpu_axon(&stack, gpu_addr).await;
    let up = eventually(Duration::from_secs(10), || async {
        dispatch("1.1.0").await.status == StatusCode::OK
    })
    .await;
    assert!(up, "the GPU pool was never used");
    answers(&dispatch("1.1.0").await);
    answers(&dispatch("1.2.0").await);
    answers(&dispatch("1.0.0").await);
    assert_eq!(answered_by(&stack, "gpu").await, 3);
    assert_eq!(answered_by(&stack, "cpu").await, 3);
    assert_eq!(gpu_pool_state(&stack).await, "up");

    // It goes away: back to the fallback and the 503 (whether the probe
    // or a call finds it gone first; the next test takes the second way).
    gpu.stop().await;
    answers(&dispatch("1.2.0").await);
    let reply = dispatch("1.1.0").await;
    assert_eq!(code(&reply), "GPU_UNAVAILABLE", "{}", reply.body);
    assert_eq!(answered_by(&stack, "cpu").await, 4);
    assert_eq!(answered_by(&stack, "gpu").await, 3);
    assert_eq!(gpu_pool_state(&stack).await, "down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_gpu_pool_never_received_runs_on_the_cpu_pool_once() {
    // The GPU pool runs from the start, and the probe does not look again
    // within the test: only the failed call can find the pool gone.
    let (mut stack, _) = Stack::start_with_gpu_pool(3_600_000, true).await;
    let toml = SUPPORT_INTENT.manifest_text().unwrap().unwrap();
    for (version, gpu) in [("1.2.0", "preferred"), ("1.1.0", "required")] {
        let toml = toml
            .replace(
                "version = \"1.0.0\"\ndescription",
                &format!("version = \"{version}\"\ndescription"),
            )
            .replace("[inference]\n", &format!("[inference]\ngpu = \"{gpu}\"\n"));
        stack.publish_approved(SUPPORT_INTENT, &toml).await;
    }
    let gpu = stack.gpu_axon.take().unwrap();
    let dispatch = |version: &str| {
        let body = json!({ "plugin": "support-intent", "version": version, "intent": "classify", "input": { "message": "where is my parcel" } });
        let stack = &stack;
        async move { stack.dispatch(body).await }
    };
    let up = eventually(Duration::from_secs(10), || async {
        gpu_pool_state(&stack).await == "up"
    })
    .await;
    assert!(up, "the first probe did not find the GPU pool up");
    let reply = dispatch("1.2.0").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(answered_by(&stack, "gpu").await, 1);

    gpu.stop().await;
    // Refused at the GPU pool's address, then answered by the CPU pool:
    // once, and not retried on the GPU pool first.
    let reply = dispatch("1.2.0").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["output"]["intent"], "shipping", "{}", reply.body);
    assert_eq!(calls(&stack, "gpu", "unreachable").await, 1);
    assert_eq!(answered_by(&stack, "gpu").await, 1);
    assert_eq!(answered_by(&stack, "cpu").await, 1);
    // That call marked the pool down: what requires it is refused at once.
    assert_eq!(gpu_pool_state(&stack).await, "down");
    let reply = dispatch("1.1.0").await;
    assert_eq!(code(&reply), "GPU_UNAVAILABLE", "{}", reply.body);
    assert_eq!(calls(&stack, "gpu", "unreachable").await, 1);
}

#[tokio::test]
async fn the_cpu_pool_refuses_a_version_that_requires_a_gpu() {
    // Axon itself, called directly (not through Orbit's routing).
    let (stack, _) = Stack::start_with_gpu_pool(1000, false).await;
    let toml = SUPPORT_INTENT
        .manifest_text()
        .unwrap()
        .unwrap()
        .replace("[inference]\n", "[inference]\ngpu = \"required\"\n");
    stack.publish_approved(SUPPORT_INTENT, &toml).await;
    let digest = plugin_store::Digest::of(&SUPPORT_INTENT.bytes().unwrap());
    let body = json!({ "plugin": "support-intent", "version": "1.0.0", "digest": digest.to_string(), "request": { "intent": "classify", "input": { "message": "refund" } } });
    let url = format!("{}/v1/reason", stack.axon_url);
    let body = serde_json::to_vec(&body).unwrap();
    let reply = Stack::send_signed(&url, &stack.orbit_key, &body, SystemTime::now(), |_| {}).await;
    assert_eq!(code(&reply), "PLUGIN_ERROR", "{}", reply.body);
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("requires a GPU, and this Axon is the CPU pool"),
        "{message}"
    );
}
