//! The signed supply chain through `/dispatch`: aliases, canaries, pins,
//! rollback, revocation, and attacks on the stores refused with their codes.

use std::collections::BTreeSet;
use std::time::Duration;

use plugin_store::admin::{self, DevTrust};
use plugin_store::{
    AliasTarget, Canary, KeyPair, PluginManifest, PluginSource, PublishSpec, VersionRecord,
};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Stack, code, eventually};

async fn stores(stack: &Stack) -> (PluginSource, DevTrust) {
    let source = stack.source.clone();
    let trust = admin::ensure_dev_trust(&stack.data_dir.join("trust"), &**source.registry())
        .await
        .unwrap();
    (source, trust)
}

async fn publish(
    source: &PluginSource,
    key: &KeyPair,
    toml: &str,
    labels: &[&str],
) -> PluginManifest {
    let spec = PublishSpec::from_toml(toml).unwrap();
    let m = source
        .publish(&plugin_artifacts::ECHO.bytes().unwrap(), spec, key, "test")
        .await
        .unwrap()
        .manifest;
    let labels: BTreeSet<String> = labels.iter().map(|l| (*l).to_owned()).collect();
    admin::set_labels(&**source.registry(), &m.name, &m.version, &labels, "test")
        .await
        .unwrap();
    m
}

fn echo(extra: serde_json::Value) -> serde_json::Value {
    let mut body = json!({"plugin": "echo", "intent": "t", "input": "hi"});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

async fn version_of(stack: &Stack, body: serde_json::Value) -> String {
    let reply = stack.dispatch(body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["plugin"]["version"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_route_canary_and_roll_back_without_a_restart() {
    let stack = Stack::start().await;
    let (source, trust) = stores(&stack).await;
    let registry = &**source.registry();
    let v2 = publish(
        &source,
        &trust.publisher,
        "name = \"echo\"\nversion = \"1.0.1\"",
        &["approved"],
    )
    .await;
    let name = v2.name.clone();

    // `live` still says 1.0.0; a pin reaches 1.0.1 (once Orbit has seen it),
    // governed like any dispatch.
    assert!(
        eventually(Duration::from_secs(10), || async {
            stack
                .dispatch(echo(json!({"version": "1.0.1"})))
                .await
                .status
                == StatusCode::OK
        })
        .await
    );
    assert_eq!(version_of(&stack, echo(json!({}))).await, "1.0.0");
    assert_eq!(
        version_of(&stack, echo(json!({"version": "1.0.1"}))).await,
        "1.0.1"
    );
    let reply = stack.dispatch(echo(json!({"version": "1.0.1"}))).await;
    assert_eq!(reply.body["plugin"]["digest"], v2.digest.to_string());

    // Move `live`: within Orbit's refresh every answer reports the new version.
    let target = |v: &str| AliasTarget {
        version: v.parse().unwrap(),
        canary: None,
    };
    admin::set_alias(registry, &name, "live", target("1.0.1"), "ops")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            version_of(&stack, echo(json!({}))).await == "1.0.1"
        })
        .await
    );
    for _ in 0..10 {
        assert_eq!(version_of(&stack, echo(json!({}))).await, "1.0.1");
    }

    // Roll back: the previous target again, and history shows both moves.
    admin::rollback_alias(registry, &name, "live", "ops")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            version_of(&stack, echo(json!({}))).await == "1.0.0"
        })
        .await
    );
    let moves: Vec<_> = registry
        .history(&name)
        .await
        .unwrap()
        .into_iter()
        .filter(|h| h.action == "alias live")
        .map(|h| (h.from, h.to))
        .collect();
    assert_eq!(
        moves[moves.len() - 2..],
        [
            (Some("1.0.0".into()), Some("1.0.1".into())),
            (Some("1.0.1".into()), Some("1.0.0".into())),
        ]
    );

    // A 50 % canary: one routing key stays on one version; many keys see both.
    let canary = AliasTarget {
        version: "1.0.0".parse().unwrap(),
        canary: Some(Canary {
            version: "1.0.1".parse().unwrap(),
            weight: 50,
        }),
    };
    admin::set_alias(registry, &name, "live", canary, "ops")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            let mut seen = BTreeSet::new();
            for i in 0..20 {
                let session = json!({"context": {"session_id": format!("s-{i}")}});
                seen.insert(version_of(&stack, echo(session)).await);
            }
            seen.len() == 2
        })
        .await,
        "the canary never took traffic"
    );
    let sticky = version_of(
        &stack,
        echo(json!({"context": {"session_id": "one-caller"}})),
    )
    .await;
    for _ in 0..20 {
        let again = version_of(
            &stack,
            echo(json!({"context": {"session_id": "one-caller"}})),
        )
        .await;
        assert_eq!(again, sticky);
    }

    // An unknown alias, and `version` with `alias`, are clear 4xx.
    let reply = stack.dispatch(echo(json!({"alias": "nope"}))).await;
    assert_eq!(
        (reply.status, code(&reply)),
        (StatusCode::NOT_FOUND, "PLUGIN_NOT_FOUND")
    );
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("agentctl plugin alias set")
    );
    let reply = stack
        .dispatch(echo(json!({"alias": "live", "version": "1.0.0"})))
        .await;
    assert_eq!(code(&reply), "INVALID_REQUEST");

    // Revoking a version: Orbit stops routing to it within its refresh.
    registry
        .revoke(&name, &"1.0.1".parse().unwrap(), "ops", "bad")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            let reply = stack.dispatch(echo(json!({"version": "1.0.1"}))).await;
            reply.status == StatusCode::GONE && code(&reply) == "PLUGIN_REVOKED"
        })
        .await
    );
}

#[tokio::test]
async fn attacks_on_the_embedded_stores_are_refused_through_dispatch() {
    attacks_are_refused_through_dispatch(Stack::start().await).await;
}

#[tokio::test]
async fn attacks_on_s3_and_dynamodb_are_refused_through_dispatch() {
    attacks_are_refused_through_dispatch(Stack::start_on_aws().await).await;
}

async fn attacks_are_refused_through_dispatch(stack: Stack) {
    let (source, trust) = stores(&stack).await;
    let registry = source.registry().clone();
    let live = |name: &str, version: &str| {
        let registry = registry.clone();
        let (name, version) = (name.parse().unwrap(), version.parse().unwrap());
        async move {
            let target = AliasTarget {
                version,
                canary: None,
            };
            admin::set_alias(&*registry, &name, "live", target, "ops")
                .await
                .unwrap();
        }
    };

    // Tags are the publisher's claims: without an operator label, denied.
    publish(
        &source,
        &trust.publisher,
        "name = \"sneaky\"\nversion = \"1.0.0\"\ntags = [\"example\", \"approved\"]",
        &[],
    )
    .await;
    live("sneaky", "1.0.0").await;

    // Signed by a key the trust list does not name.
    let module = plugin_artifacts::ECHO.bytes().unwrap();
    let stranger = KeyPair::generate().unwrap();
    let record = |name: &str, key: &KeyPair, module: &[u8]| {
        let manifest = PluginManifest::new(
            PublishSpec::from_toml(&format!("name = \"{name}\"\nversion = \"1.0.0\"")).unwrap(),
            module,
            "agent:reasoning/reasoning-plugin@1.0.0".into(),
            key.id().clone(),
        );
        VersionRecord::signed(&manifest, key, "attacker")
    };
    let untrusted = record("untrusted", &stranger, &module);
    source
        .blobs()
        .put(&untrusted.digest, &module)
        .await
        .unwrap();
    registry.register(&untrusted).await.unwrap();
    live("untrusted", "1.0.0").await;

    // Validly signed, but the stored bytes are not the signed ones.
    let tampered = record(
        "tampered",
        &trust.publisher,
        &plugin_artifacts::PANIC.bytes().unwrap(),
    );
    source
        .blobs()
        .put(
            &tampered.digest,
            &plugin_artifacts::COUNTER.bytes().unwrap(),
        )
        .await
        .unwrap();
    registry.register(&tampered).await.unwrap();
    admin::set_labels(
        &*registry,
        &tampered.name,
        &tampered.version,
        &BTreeSet::from(["approved".to_owned()]),
        "ops",
    )
    .await
    .unwrap();
    live("tampered", "1.0.0").await;

    let expect = |plugin: &'static str, status: StatusCode, wanted: &'static str| {
        let stack = &stack;
        async move {
            eventually(Duration::from_secs(10), || async {
                let reply = stack
                    .dispatch(json!({"plugin": plugin, "intent": "t", "input": {"subject": "x"}}))
                    .await;
                reply.status == status && code(&reply) == wanted
            })
            .await
        }
    };
    assert!(expect("sneaky", StatusCode::FORBIDDEN, "GOVERNANCE_DENIED").await);
    assert!(expect("untrusted", StatusCode::BAD_GATEWAY, "PLUGIN_UNTRUSTED").await);
    assert!(
        expect(
            "tampered",
            StatusCode::BAD_GATEWAY,
            "PLUGIN_DIGEST_MISMATCH"
        )
        .await
    );
    // The genuine plugins are untouched.
    assert_eq!(version_of(&stack, echo(json!({}))).await, "1.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_alias_moves_under_load_and_no_request_fails() {
    let stack = Stack::start().await;
    let (source, trust) = stores(&stack).await;
    // 2.0.0 is another module (keywords), so the move needs a compile: Axon
    // preloads it when it appears, before the alias sends it traffic.
    let spec = PublishSpec::from_toml("name = \"echo\"\nversion = \"2.0.0\"").unwrap();
    let v2 = source
        .publish(
            &plugin_artifacts::KEYWORDS.bytes().unwrap(),
            spec,
            &trust.publisher,
            "test",
        )
        .await
        .unwrap()
        .manifest;
    admin::set_labels(
        &**source.registry(),
        &v2.name,
        &v2.version,
        &BTreeSet::from(["approved".to_owned()]),
        "ops",
    )
    .await
    .unwrap();

    // Clients dispatch to `live` in a closed loop, each for a bounded count,
    // and keep their own answers in order.
    const CLIENTS: usize = 4;
    const MOVE_AFTER: usize = 40;
    const AFTER_FIRST_NEW: usize = 40;
    const MOST: usize = 2_000;
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (client, answered) = (stack.dev.clone(), answered.clone());
        clients.push(tokio::spawn(async move {
            let body = json!({"plugin": "echo", "intent": "t", "input": {"text": "fox fox hen"}});
            let mut answers = Vec::new();
            let mut new_seen = 0;
            for _ in 0..MOST {
                let reply = client.dispatch(&body).await.unwrap();
                let version = reply.body["plugin"]["version"].as_str().map(str::to_owned);
                if version.as_deref() == Some("2.0.0") {
                    new_seen += 1;
                }
                answers.push((reply.status, version));
                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if new_seen == AFTER_FIRST_NEW {
                    break;
                }
            }
            answers
        }));
    }
    assert!(
        eventually(Duration::from_secs(60), || async {
            answered.load(std::sync::atomic::Ordering::Relaxed) >= MOVE_AFTER
        })
        .await
    );
    let target = AliasTarget {
        version: v2.version.clone(),
        canary: None,
    };
    admin::set_alias(&**source.registry(), &v2.name, "live", target, "ops")
        .await
        .unwrap();

    for client in clients {
        let answers = client.await.unwrap();
        let failed: Vec<_> = answers
            .iter()
            .filter(|(status, _)| *status != StatusCode::OK)
            .collect();
        assert!(failed.is_empty(), "requests failed: {failed:?}");
        // Each client switches once and never goes back: once Orbit's view
        // has the move, every request it resolves gets the new version.
        let versions: Vec<&str> = answers.iter().filter_map(|(_, v)| v.as_deref()).collect();
        let first_new = versions.iter().position(|v| *v == "2.0.0").unwrap();
        assert!(
            versions[..first_new].iter().all(|v| *v == "1.0.0")
                && versions[first_new..].iter().all(|v| *v == "2.0.0"),
            "{versions:?}"
        );
        assert_eq!(versions.len(), answers.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_plugin_is_published_aliased_and_dispatched_like_the_rust_ones() {
    // The 18 MiB component takes Axon tens of seconds to compile in a debug
    // build: the first dispatch waits for that load instead of failing.
    let stack = Stack::start_with(|c| c.axon_load_wait_ms = 300_000).await;
    let (source, trust) = stores(&stack).await;
    let module = plugin_artifacts::CONTACTS.bytes().unwrap();
    let spec =
        PublishSpec::from_toml(&plugin_artifacts::CONTACTS.manifest_text().unwrap()).unwrap();
    let m = source
        .publish(&module, spec, &trust.publisher, "test")
        .await
        .unwrap()
        .manifest;
    assert_eq!(m.world, "agent:reasoning/reasoning-plugin@1.1.0");
    let registry = &**source.registry();
    admin::set_labels(
        registry,
        &m.name,
        &m.version,
        &BTreeSet::from(["approved".to_owned()]),
        "ops",
    )
    .await
    .unwrap();
    let target = AliasTarget {
        version: m.version.clone(),
        canary: None,
    };
    admin::set_alias(registry, &m.name, "live", target, "ops")
        .await
        .unwrap();

    // Once Orbit lists it, the very first dispatch succeeds.
    assert!(
        eventually(Duration::from_secs(30), || async {
            let listed = stack
                .dev
                .send(reqwest::Method::GET, "/v1/plugins", Vec::new())
                .await
                .unwrap();
            listed.body.to_string().contains("\"contacts\"")
        })
        .await
    );
    let reply = stack
        .dispatch(json!({
            "plugin": "contacts",
            "intent": "extract",
            "input": {"text": "Write to ada@example.org or see https://example.org/docs, ada@example.org."}
        }))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body["output"],
        json!({"emails": ["ada@example.org"], "links": ["https://example.org/docs"]})
    );
    assert_eq!(reply.body["plugin"]["version"], "1.0.0");
    assert_eq!(reply.body["plugin"]["digest"], m.digest.to_string());
    // Its own errors reach the caller as the plugin said them.
    let reply = stack
        .dispatch(json!({"plugin": "contacts", "intent": "extract", "input": 7}))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
}
