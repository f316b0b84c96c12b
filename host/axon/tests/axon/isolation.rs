//! What a plugin cannot reach, and what it cannot keep.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::TestAxon;

#[tokio::test]
async fn the_escape_plugin_gets_no_files_environment_network_or_time() {
    let axon = TestAxon::start().await;
    // A listener the plugin is told to connect to: it must never see a connection.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let secret = std::fs::canonicalize("Cargo.toml").unwrap();

    let reply = axon
        .reason(
            "escape",
            json!({ "path": secret.display().to_string(), "connect": target }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let seen = &reply.body["output"];
    assert!(seen["file"]["err"].is_string(), "read a host file: {seen}");
    assert!(
        seen["dir"]["err"].is_string(),
        "listed a host directory: {seen}"
    );
    assert_eq!(seen["env"], json!([]), "saw environment variables");
    assert_eq!(seen["args"], json!([]), "saw arguments");
    assert!(
        seen["connect"]["err"].is_string(),
        "opened a connection: {seen}"
    );
    assert!(seen["lookup"]["err"].is_string(), "resolved a name: {seen}");
    assert_eq!(seen["wall_clock_secs"], 0, "read the host clock");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the listener received a connection"
    );

    // The insecure seed (what std's `HashMap` uses) is fixed per plugin
    // version, so answers do not vary with it; secure randomness is fresh
    // for every request, so callers cannot predict it.
    let again = axon.reason("escape", json!({})).await;
    assert_eq!(
        again.body["output"]["hash_seed_probe"],
        seen["hash_seed_probe"]
    );
    assert!(seen["secure_random_probe"].is_u64(), "{seen}");
    assert_ne!(
        again.body["output"]["secure_random_probe"], seen["secure_random_probe"],
        "secure randomness repeated across requests"
    );
}

#[tokio::test]
async fn every_request_gets_a_fresh_instance() {
    let axon = std::sync::Arc::new(TestAxon::start().await);
    for _ in 0..5 {
        assert_eq!(
            axon.reason("counter", json!({})).await.body["output"],
            json!({ "count": 1 })
        );
    }
    let concurrent: Vec<_> = (0..8)
        .map(|_| {
            let axon = axon.clone();
            tokio::spawn(async move { axon.reason("counter", json!({})).await })
        })
        .collect();
    for reply in concurrent {
        assert_eq!(reply.await.unwrap().body["output"], json!({ "count": 1 }));
    }
}
