//! Loading plugins: unusable modules, tampered blobs, the compile cache.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{PUBLISHED_PLUGINS, TestAxon};

fn spec(name: &str) -> plugin_store::PublishSpec {
    plugin_store::PublishSpec::from_toml(&format!("name = \"{name}\"\nversion = \"1.0.0\""))
        .unwrap()
}

/// A signed record of `module` under `spec`, as publish would make it but
/// without publish's checks of the module.
fn signed_record(
    axon: &TestAxon,
    module: &[u8],
    spec: plugin_store::PublishSpec,
) -> plugin_store::VersionRecord {
    let key = &axon.trust.publisher;
    let manifest = plugin_store::PluginManifest::new(
        spec,
        module,
        "agent:reasoning/reasoning-plugin@1.0.0".into(),
        key.id().clone(),
    );
    plugin_store::VersionRecord::signed(&manifest, key, "test")
}

#[tokio::test]
async fn publish_refuses_what_is_not_a_reasoning_component_and_says_why() {
    let axon = TestAxon::start_with(|c| c.lazy_load = true).await;
    let key = &axon.trust.publisher;
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let err = axon
        .source
        .publish(&core_module, spec("core"), key, "test")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a component"), "{err}");
    // Every plugin built from `plugins/` reads as the reasoning world.
    for artifact in plugin_artifacts::EXAMPLES
        .iter()
        .chain(plugin_artifacts::HOSTILE)
    {
        let world = plugin_store::component::reasoning_world(&artifact.bytes().unwrap());
        assert_eq!(
            world.as_deref(),
            Ok("agent:reasoning/reasoning-plugin@1.1.0"),
            "{}",
            artifact.name
        );
    }
}

#[tokio::test]
async fn a_module_that_is_not_a_component_fails_once_and_is_remembered() {
    let axon = TestAxon::start_with(|c| c.lazy_load = true).await;
    // A valid core module, but not a component, registered past publish.
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let record = signed_record(&axon, &core_module, spec("not-a-component"));
    axon.register_raw(&core_module, record).await;
    for _ in 0..3 {
        let reply = axon.reason("not-a-component", json!({})).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::BAD_GATEWAY, "PLUGIN_ERROR"),
            "{}",
            reply.body
        );
        assert!(
            reply.message().contains("cannot be loaded"),
            "{}",
            reply.message()
        );
    }
    let metrics = axon.metrics().await;
    assert!(
        metrics.contains(r#"axon_plugin_loads_total{result="failed"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_plugin_that_asks_for_more_than_the_host_allows_is_refused() {
    let axon = TestAxon::start_with(|c| c.lazy_load = true).await;
    let spec = plugin_store::PublishSpec::from_toml(
        "name = \"greedy\"\nversion = \"1.0.0\"\n[limits]\nmemory_mib = 4096",
    )
    .unwrap();
    let _ = axon
        .publish(&plugin_artifacts::ECHO.bytes().unwrap(), spec)
        .await;
    let reply = axon.reason("greedy", json!({})).await;
    assert_eq!(reply.code(), "PLUGIN_ERROR");
    assert!(
        reply.message().contains("asks for 4096 MiB of memory"),
        "{}",
        reply.message()
    );
}

#[tokio::test]
async fn a_tampered_module_never_runs() {
    let axon = TestAxon::start_with(|c| c.lazy_load = true).await;
    let entry = axon
        .source
        .entry(
            &"echo".parse().unwrap(),
            &plugin_store::Version::new(1, 0, 0),
        )
        .await
        .unwrap();
    // Swap in another valid component: it would run, were it not checked.
    axon.tamper_with_blob(&entry.record.digest, |bytes| {
        *bytes = plugin_artifacts::COUNTER.bytes().unwrap();
    })
    .await;
    let reply = axon.reason("echo", json!("hello")).await;
    // Another size than the manifest's: refused before its digest is taken.
    assert_eq!(reply.code(), "PLUGIN_DIGEST_MISMATCH", "{}", reply.body);
    assert!(
        reply.message().contains("size mismatch"),
        "{}",
        reply.message()
    );
}

#[tokio::test]
async fn compiled_components_are_reused_across_restarts_but_never_trusted_blindly() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestAxon::start_in(dir.path(), |_| {}, true).await;
    assert_eq!(first.reason("echo", json!(1)).await.status, StatusCode::OK);
    let metrics = first.metrics().await;
    assert!(
        !metrics.contains(r#"axon_plugin_loads_total{result="disk_cache"}"#),
        "{metrics}"
    );
    first.stop().await;

    let second = TestAxon::start_in(dir.path(), |_| {}, false).await;
    assert_eq!(second.reason("echo", json!(2)).await.body["output"], 2);
    let metrics = second.metrics().await;
    assert!(
        metrics.contains(&format!(
            r#"axon_plugin_loads_total{{result="disk_cache"}} {PUBLISHED_PLUGINS}"#
        )),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"axon_plugin_loads_total{result="compiled"}"#),
        "{metrics}"
    );
    second.stop().await;

    // The key that seals them is not among them.
    let cache = dir.path().join("axon-cache");
    assert!(dir.path().join("axon-cache.key").is_file());
    assert!(!cache.join("key").exists());

    // Plant artifacts that were not sealed by this cache's key: all ignored.
    let engine_dir = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    for entry in std::fs::read_dir(&engine_dir).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let third = TestAxon::start_in(dir.path(), |_| {}, false).await;
    assert_eq!(third.reason("echo", json!(3)).await.body["output"], 3);
    let metrics = third.metrics().await;
    assert!(
        metrics.contains(&format!(
            r#"axon_plugin_loads_total{{result="compiled"}} {PUBLISHED_PLUGINS}"#
        )),
        "{metrics}"
    );
    third.stop().await;
}

/// The directory under `data_dir`'s compile cache that holds the artifacts
/// (one per engine configuration).
fn artifact_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(data_dir.join("axon-cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap()
}

#[tokio::test]
async fn a_valid_artifact_under_another_digest_or_key_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestAxon::start_in(dir.path(), |_| {}, true).await;
    let hex = |digest: Option<String>| digest.unwrap().trim_start_matches("sha256:").to_owned();
    let echo = hex(first.digest_of("echo", "1.0.0").await);
    let counter = hex(first.digest_of("counter", "1.0.0").await);
    let keywords = hex(first.digest_of("keywords", "1.0.0").await);
    first.stop().await;
    let ours = artifact_dir(dir.path());

    // Counter's artifact, sealed by this cache, planted as echo's: the seal
    // covers the digest, so it is not echo's.
    std::fs::copy(
        ours.join(format!("{counter}.cwasm")),
        ours.join(format!("{echo}.cwasm")),
    )
    .unwrap();
    // Keywords' own artifact, compiled and sealed by another Axon (another
    // key), planted as keywords': the key is this cache's alone.
    let other = tempfile::tempdir().unwrap();
    TestAxon::start_in(other.path(), |_| {}, true)
        .await
        .stop()
        .await;
    std::fs::copy(
        artifact_dir(other.path()).join(format!("{keywords}.cwasm")),
        ours.join(format!("{keywords}.cwasm")),
    )
    .unwrap();

    let second = TestAxon::start_in(dir.path(), |_| {}, false).await;
    assert_eq!(
        second.reason("echo", json!("still echo")).await.body["output"],
        "still echo"
    );
    let reply = second
        .reason("keywords", json!({ "text": "b a b", "top": 1 }))
        .await;
    assert_eq!(reply.body["output"], json!({ "keywords": ["b"] }));
    let metrics = second.metrics().await;
    for line in [
        r#"axon_plugin_loads_total{result="compiled"} 2"#.to_owned(),
        format!(
            r#"axon_plugin_loads_total{{result="disk_cache"}} {}"#,
            PUBLISHED_PLUGINS - 2
        ),
    ] {
        assert!(metrics.contains(&line), "missing `{line}`:\n{metrics}");
    }
    second.stop().await;
}

#[tokio::test]
async fn versions_that_share_a_module_compile_it_once() {
    let axon = TestAxon::start().await;
    axon.publish(&plugin_artifacts::ECHO.bytes().unwrap(), spec("echo-copy"))
        .await;
    assert_eq!(
        axon.reason("echo-copy", json!("same code")).await.body["output"],
        "same code"
    );
    let metrics = axon.metrics().await;
    assert!(
        metrics.contains(r#"axon_plugin_loads_total{result="memory"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_plugin_built_for_contract_1_0_0_runs_unchanged_on_the_1_1_0_host() {
    let module = plugin_artifacts::ECHO_1_0.bytes().unwrap();
    // It was built against the frozen 1.0.0 contract, and reads as such.
    assert_eq!(
        plugin_store::component::reasoning_world(&module).as_deref(),
        Ok("agent:reasoning/reasoning-plugin@1.0.0")
    );
    // One that runs models, built for 1.1.0, names the world that says so.
    let support_intent = plugin_artifacts::SUPPORT_INTENT.bytes().unwrap();
    assert_eq!(
        plugin_store::component::reasoning_world(&support_intent).as_deref(),
        Ok("agent:reasoning/reasoning-plugin-with-inference@1.1.0")
    );
    let axon = TestAxon::start().await;
    let spec = plugin_store::PublishSpec::from_toml(
        "name = \"echo-1-0\"\nversion = \"1.0.0\"\n[config]\ngreeting = \"hello\"",
    )
    .unwrap();
    let manifest = axon.publish(&module, spec).await;
    assert_eq!(manifest.world, "agent:reasoning/reasoning-plugin@1.0.0");
    // Its 1.0.0 imports (`log`, `config`) and export link against the host's 1.1.0.
    let reply = axon.reason("echo-1-0", json!({ "kept": [1, 2] })).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["output"], json!({ "kept": [1, 2] }));
    assert_eq!(reply.body["notes"], json!(["greeting: hello"]));
    assert_eq!(reply.body["stats"]["log_records"], 1, "{}", reply.body);
    axon.stop().await;
}
