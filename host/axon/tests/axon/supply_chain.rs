//! The signed supply chain at Axon: every attack on the stores is refused
//! with its code, and what was loaded stops running when it is revoked.

use std::time::{Duration, SystemTime};

use plugin_store::admin::{edit_trust_list, trusted_key};
use plugin_store::{KeyPair, PluginManifest, PublishSpec, VersionRecord};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::TestAxon;

fn spec(name: &str, version: &str) -> PublishSpec {
    PublishSpec::from_toml(&format!("name = \"{name}\"\nversion = \"{version}\"")).unwrap()
}

/// A record of the echo module as `name@version`, signed by `key`.
fn record(name: &str, version: &str, key: &KeyPair) -> (Vec<u8>, VersionRecord) {
    let module = plugin_artifacts::ECHO.bytes().unwrap();
    let manifest = PluginManifest::new(
        spec(name, version),
        &module,
        "agent:reasoning/reasoning-plugin@1.0.0".into(),
        key.id().clone(),
    );
    (module, VersionRecord::signed(&manifest, key, "attacker"))
}

async fn call(axon: &TestAxon, name: &str, version: &str) -> crate::support::Reply {
    axon.post(
        json!({"plugin": name, "version": version, "request": {"intent": "t", "input": "hi"}}),
    )
    .await
}

async fn assert_refused(axon: &TestAxon, name: &str, version: &str, code: &str, says: &str) {
    let reply = call(axon, name, version).await;
    assert_eq!(reply.code(), code, "{name}@{version}: {}", reply.body);
    assert!(
        reply.message().contains(says),
        "{name}@{version}: {}",
        reply.message()
    );
}

/// Waits (bounded) until `name@version` answers with `code`: Axon applies
/// registry changes on its next refresh.
async fn eventually_refused(axon: &TestAxon, name: &str, version: &str, code: &str) {
    for _ in 0..100 {
        let reply = call(axon, name, version).await;
        if reply.status != StatusCode::OK && reply.code() == code {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name}@{version} was never refused with {code}");
}

#[tokio::test]
async fn modules_that_fail_verification_never_run_on_the_embedded_stores() {
    every_attack_is_refused(TestAxon::start_with(|c| c.lazy_load = true).await).await;
}

#[tokio::test]
async fn modules_that_fail_verification_never_run_on_s3_and_dynamodb() {
    every_attack_is_refused(TestAxon::start_on_aws(|c| c.lazy_load = true).await).await;
}

async fn every_attack_is_refused(axon: TestAxon) {
    let publisher = axon.trust.publisher.clone();

    // Unsigned: the envelope carries no signature.
    let (module, mut unsigned) = record("unsigned", "1.0.0", &publisher);
    unsigned.envelope.signatures.clear();
    axon.register_raw(&module, unsigned).await;
    assert_refused(
        &axon,
        "unsigned",
        "1.0.0",
        "PLUGIN_UNTRUSTED",
        "not signed by any key",
    )
    .await;

    // Signed by a key the trust list does not name.
    let stranger = KeyPair::generate().unwrap();
    let (module, wrong_key) = record("wrong-key", "1.0.0", &stranger);
    axon.register_raw(&module, wrong_key).await;
    assert_refused(
        &axon,
        "wrong-key",
        "1.0.0",
        "PLUGIN_UNTRUSTED",
        "not signed by any key",
    )
    .await;

    // A validly signed manifest of plugin A, registered as plugin B.
    let (module, mut as_other) = record("echo-a", "1.0.0", &publisher);
    as_other.name = "echo-b".parse().unwrap();
    axon.register_raw(&module, as_other).await;
    assert_refused(
        &axon,
        "echo-b",
        "1.0.0",
        "PLUGIN_UNTRUSTED",
        "is for `echo-a@1.0.0`",
    )
    .await;

    // The manifest of one version swapped into another.
    let (module, mut swapped) = record("echo", "1.0.0", &publisher);
    swapped.version = "1.0.1".parse().unwrap();
    axon.register_raw(&module, swapped).await;
    assert_refused(
        &axon,
        "echo",
        "1.0.1",
        "PLUGIN_UNTRUSTED",
        "registered as `echo@1.0.1`",
    )
    .await;

    // A registry digest that is not the signed one.
    let (_, mut relabelled) = record("relabelled", "1.0.0", &publisher);
    let counter = plugin_artifacts::COUNTER.bytes().unwrap();
    relabelled.digest = plugin_store::Digest::of(&counter);
    axon.register_raw(&counter, relabelled).await;
    assert_refused(
        &axon,
        "relabelled",
        "1.0.0",
        "PLUGIN_DIGEST_MISMATCH",
        "differs from its signed manifest",
    )
    .await;

    // One flipped byte in the stored module.
    let keywords = plugin_store::Digest::of(&plugin_artifacts::KEYWORDS.bytes().unwrap());
    axon.tamper_with_blob(&keywords, |bytes| bytes[100] ^= 0x01)
        .await;
    assert_refused(
        &axon,
        "keywords",
        "1.0.0",
        "PLUGIN_DIGEST_MISMATCH",
        "digest mismatch",
    )
    .await;

    // Another digest than the one Orbit governed.
    let reply = axon
        .post(json!({"plugin": "echo", "version": "1.0.0", "digest": plugin_store::Digest::of(b"other").to_string(), "request": {"intent": "t", "input": 1}}))
        .await;
    assert_eq!(reply.code(), "PLUGIN_DIGEST_MISMATCH", "{}", reply.body);
    assert!(
        reply.message().contains("that was governed"),
        "{}",
        reply.message()
    );
    // Without any digest the request is malformed.
    let reply = axon
        .post_raw(
            json!({"plugin": "echo", "version": "1.0.0", "request": {"intent": "t", "input": 1}})
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(reply.code(), "INVALID_REQUEST", "{}", reply.body);

    // The genuine article still runs.
    assert_eq!(call(&axon, "echo", "1.0.0").await.body["output"], "hi");
}

#[tokio::test]
async fn keys_are_held_to_their_names_windows_and_revocation() {
    let axon = TestAxon::start_with(|c| c.lazy_load = true).await;
    let registry = axon.source.registry().clone();
    let root = axon.trust.root.clone();

    // A key trusted only for `acme-*`, one already expired, one to revoke.
    let acme = KeyPair::generate().unwrap();
    let expired = KeyPair::generate().unwrap();
    let doomed = KeyPair::generate().unwrap();
    let year = Duration::from_secs(365 * 86_400);
    let acme_entry = trusted_key(&acme.public(), "acme", vec!["acme-*".into()], year).unwrap();
    let mut expired_entry = trusted_key(&expired.public(), "old", vec!["*".into()], year).unwrap();
    let past = SystemTime::now() - Duration::from_secs(3600);
    expired_entry.not_before = humantime::format_rfc3339_seconds(past - year).to_string();
    expired_entry.not_after = humantime::format_rfc3339_seconds(past).to_string();
    let doomed_entry = trusted_key(&doomed.public(), "doomed", vec!["*".into()], year).unwrap();
    edit_trust_list(&*registry, &root, |keys| {
        keys.extend([
            acme_entry.clone(),
            expired_entry.clone(),
            doomed_entry.clone(),
        ]);
        Ok(())
    })
    .await
    .unwrap();

    for (name, key) in [
        ("acme-ok", &acme),
        ("not-acme", &acme),
        ("stale", &expired),
        ("doomed", &doomed),
    ] {
        let (module, record) = record(name, "1.0.0", key);
        axon.register_raw(&module, record).await;
    }
    // Axon picks the new list up on its next refresh.
    for _ in 0..100 {
        if call(&axon, "acme-ok", "1.0.0").await.status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(call(&axon, "acme-ok", "1.0.0").await.body["output"], "hi");
    assert_refused(
        &axon,
        "not-acme",
        "1.0.0",
        "PLUGIN_UNTRUSTED",
        "may not sign `not-acme`",
    )
    .await;
    assert_refused(
        &axon,
        "stale",
        "1.0.0",
        "PLUGIN_UNTRUSTED",
        "is not valid at",
    )
    .await;
    assert_eq!(call(&axon, "doomed", "1.0.0").await.body["output"], "hi");
    let before_revocation = registry.snapshot().await.unwrap().trust_list.unwrap();

    // Revoking the key evicts what it signed, though it was loaded.
    edit_trust_list(&*registry, &root, |keys| {
        keys.iter_mut()
            .filter(|k| k.key_id == doomed_entry.key_id)
            .for_each(|k| k.revoked = true);
        Ok(())
    })
    .await
    .unwrap();
    eventually_refused(&axon, "doomed", "1.0.0", "PLUGIN_UNTRUSTED").await;
    assert_refused(&axon, "doomed", "1.0.0", "PLUGIN_UNTRUSTED", "is revoked").await;

    // Someone with write access to the store puts the older list back: Axon
    // keeps the newer one it already holds, and the key stays revoked.
    let db = rusqlite::Connection::open(axon.data_dir.join("plugins/registry.db")).unwrap();
    db.execute(
        "UPDATE trust SET serial = 1, envelope = ?1",
        [before_revocation.to_json()],
    )
    .unwrap();
    db.execute("UPDATE meta SET generation = generation + 1", [])
        .unwrap();
    let generation: i64 = db
        .query_row("SELECT generation FROM meta", [], |r| r.get(0))
        .unwrap();
    let mut seen = serde_json::Value::Null;
    for _ in 0..100 {
        seen = axon.get("/v1/plugins").await.body;
        if seen["registry_generation"].as_i64() >= Some(generation) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen["registry_generation"].as_i64(),
        Some(generation),
        "{seen}"
    );
    assert_eq!(
        seen["trust_serial"].as_u64(),
        Some(3),
        "the downgrade was taken: {seen}"
    );
    assert_refused(&axon, "doomed", "1.0.0", "PLUGIN_UNTRUSTED", "is revoked").await;
}

#[tokio::test]
async fn a_revoked_version_is_evicted_and_never_runs_again() {
    let axon = TestAxon::start().await;
    assert_eq!(call(&axon, "echo", "1.0.0").await.status, StatusCode::OK);
    axon.source
        .registry()
        .revoke(
            &"echo".parse().unwrap(),
            &"1.0.0".parse().unwrap(),
            "ops",
            "bad build",
        )
        .await
        .unwrap();
    eventually_refused(&axon, "echo", "1.0.0", "PLUGIN_REVOKED").await;
    let reply = call(&axon, "echo", "1.0.0").await;
    assert_eq!(reply.status, StatusCode::GONE);
    let listing = axon.get("/v1/plugins").await;
    let echo = listing.body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "echo")
        .unwrap()
        .clone();
    assert_eq!(echo["status"], "revoked", "{echo}");
}
