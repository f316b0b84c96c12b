//! The HTTP API: answers, the error envelope, and bad input.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::TestAxon;

#[tokio::test]
async fn keywords_returns_the_most_frequent_non_stop_words() {
    let axon = TestAxon::start().await;
    let text = "The cat sat on the mat. The cat ate the rat. A rat and a cat! Mats, mats, mats.";
    let reply = axon
        .reason("keywords", json!({ "text": text, "top": 3 }))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body["output"],
        json!({ "keywords": ["cat", "mats", "rat"] })
    );
    assert_eq!(reply.body["plugin"]["name"], "keywords");
    assert_eq!(reply.body["plugin"]["version"], "1.0.0");
    let digest = plugin_store::Digest::of(&plugin_artifacts::KEYWORDS.bytes().unwrap());
    assert_eq!(reply.body["plugin"]["digest"], digest.to_string());
    assert!(reply.body["stats"]["duration_us"].as_u64().unwrap() > 0);
    assert!(
        reply.body["notes"][0]
            .as_str()
            .unwrap()
            .contains("distinct words")
    );

    // Same version, same input: same answer.
    let again = axon
        .reason("keywords", json!({ "text": text, "top": 3 }))
        .await;
    assert_eq!(again.body["output"], reply.body["output"]);
}

#[tokio::test]
async fn triage_reads_its_plugin_config() {
    let axon = TestAxon::start().await;
    let reply = axon
        .reason(
            "triage",
            json!({ "subject": "URGENT: site down", "body": "The API returns errors and is down for everyone." }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["output"]["category"], "outage");
    assert_eq!(reply.body["output"]["priority"], "high");
    assert_eq!(reply.body["output"]["matched"], json!(["down", "errors"]));
    assert!(reply.body["confidence"].as_f64().unwrap() > 0.99);
}

#[tokio::test]
async fn echo_passes_input_through_and_the_correlation_id_is_echoed() {
    let axon = TestAxon::start().await;
    let digest = axon.digest_of("echo", "1.0.0").await.unwrap();
    let response = axon
        .client
        .post(format!("{}/v1/reason", axon.url))
        .header("x-correlation-id", "test-corr-42")
        .json(&json!({
            "plugin": "echo",
            "version": "1.0.0",
            "digest": digest,
            "request": { "intent": "echo", "input": {"nested": [1, 2.5, "three", null]}, "context": {"a": "b"} },
        }))
        .send()
        .await
        .unwrap();
    let reply = TestAxon::reply(response).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body["output"],
        json!({"nested": [1, 2.5, "three", null]})
    );
    assert_eq!(reply.body["correlation_id"], "test-corr-42");
    assert_eq!(reply.headers["x-correlation-id"], "test-corr-42");

    // Without one, an id is generated and echoed.
    let reply = axon.reason("echo", json!(1)).await;
    let generated = reply.headers["x-correlation-id"].to_str().unwrap();
    assert_eq!(reply.body["correlation_id"], generated);
    assert_eq!(generated.len(), 36);
}

#[tokio::test]
async fn bad_requests_get_a_4xx_with_a_stable_code() {
    let axon = TestAxon::start().await;
    let digest = axon.digest_of("echo", "1.0.0").await.unwrap();
    let cases: Vec<(Vec<u8>, StatusCode, &str, &str)> = vec![
        (b"{not json".to_vec(), StatusCode::BAD_REQUEST, "INVALID_REQUEST", "invalid request body"),
        (b"".to_vec(), StatusCode::BAD_REQUEST, "INVALID_REQUEST", "invalid request body"),
        (
            json!({"plugin": "echo", "version": "1.0.0", "digest": digest}).to_string().into_bytes(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "missing field `request`",
        ),
        (
            json!({"plugin": "echo", "version": "1.0.0", "digest": digest, "request": {"intent": "x", "input": 1}, "extra": 1})
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "unknown field `extra`",
        ),
        (
            json!({"plugin": "Bad Name", "version": "1.0.0", "digest": digest, "request": {"intent": "x", "input": 1}})
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "plugin name `Bad Name` is invalid",
        ),
        (
            json!({"plugin": "echo", "version": "latest", "digest": digest, "request": {"intent": "x", "input": 1}})
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "`version` must be a semantic version",
        ),
        (
            json!({"plugin": "nope", "version": "1.0.0", "digest": digest, "request": {"intent": "x", "input": 1}})
                .to_string()
                .into_bytes(),
            StatusCode::NOT_FOUND,
            "PLUGIN_NOT_FOUND",
            "plugin `nope` has no published version `1.0.0`",
        ),
        (
            json!({"plugin": "echo", "version": "9.9.9", "digest": digest, "request": {"intent": "x", "input": 1}})
                .to_string()
                .into_bytes(),
            StatusCode::NOT_FOUND,
            "PLUGIN_NOT_FOUND",
            "version `9.9.9`",
        ),
        (
            json!({"plugin": "echo", "version": "1.0.0", "digest": digest, "request": {"intent": "x", "input": 1, "context": {"k": 5}}})
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "expected a string",
        ),
        (
            json!({"plugin": "echo", "version": "1.0.0", "digest": digest, "request": {"intent": "x", "input": 1, "context": {"k": "v".repeat(5000)}}})
                .to_string()
                .into_bytes(),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "`request.context.k` is longer than 4096 characters",
        ),
        (
            json!({"plugin": "echo", "version": "1.0.0", "digest": digest, "request": {"intent": "x", "input": "x".repeat(2 << 20)}})
                .to_string()
                .into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "larger than this endpoint accepts",
        ),
    ];
    for (body, status, code, message) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
        let reply = axon.post_raw(body).await;
        assert_eq!(reply.status, status, "{shown}: {}", reply.body);
        assert_eq!(reply.code(), code, "{shown}");
        assert!(
            reply.message().contains(message),
            "{shown}: {}",
            reply.message()
        );
        assert!(
            reply.body["correlation_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty())
        );
        assert!(
            reply.body["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
    }
}

#[tokio::test]
async fn unknown_routes_methods_and_bad_correlation_ids_use_the_envelope() {
    let axon = TestAxon::start().await;
    let reply = axon.get("/v2/nothing").await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );

    let reply = axon.get("/v1/reason").await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
    );

    let response = axon
        .client
        .post(format!("{}/v1/reason", axon.url))
        .header("x-correlation-id", "has spaces in it")
        .body("{}")
        .send()
        .await
        .unwrap();
    let reply = TestAxon::reply(response).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_REQUEST, "INVALID_REQUEST")
    );
    assert!(reply.message().contains("x-correlation-id"));
}

#[tokio::test]
async fn health_ready_plugins_and_metrics() {
    let axon = TestAxon::start().await;
    assert_eq!(axon.get("/health").await.body["status"], "healthy");
    assert_eq!(axon.get("/health").await.body["service"], "axon");
    let ready = axon.get("/ready").await;
    assert_eq!(
        (ready.status, ready.body["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );

    let listed = axon.get("/v1/plugins").await;
    let names: Vec<&str> = listed.body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"keywords") && names.contains(&"spin-loop"),
        "{names:?}"
    );

    axon.reason("echo", json!(1)).await;
    axon.reason("panic", json!(1)).await;
    let metrics = axon.metrics().await;
    for line in [
        r#"axon_reason_requests_total{plugin="echo",outcome="ok"} 1"#,
        r#"axon_reason_requests_total{plugin="panic",outcome="trapped"} 1"#,
        r#"http_requests_total{route="/v1/reason",status="200"} 1"#,
        r#"axon_instances_in_flight 0"#,
        r#"axon_plugin_cache_total{result="hit"} 2"#,
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
    assert!(
        metrics.contains("axon_reason_duration_seconds_bucket{"),
        "{metrics}"
    );
}
