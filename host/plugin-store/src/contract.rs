//! The contract every [`Registry`] and [`BlobStore`] implementation must
//! keep, as one suite run against each (the embedded SQLite file and
//! directory here, DynamoDB and S3 on the emulator in the AWS crate). Built
//! with the `contract-tests` feature; panics on a breach.
//!
//! `open` returns a new handle to the same store each call (a new connection
//! or client), so concurrent writers are as independent as separate processes.
#![expect(
    clippy::panic,
    reason = "a test suite: a breach of the contract fails the test"
)]

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use semver::Version;

use crate::error::StoreError;
use crate::manifest::{Digest, PluginName};
use crate::registry::{
    AliasMove, AliasTarget, Canary, Registered, Registry, RouteChange, RouteTarget, VersionRecord,
};
use crate::signing::KeyPair;
use crate::source::BlobStore;

/// Writers racing in the concurrency cases.
const WRITERS: usize = 8;

fn record(name: &str, version: &str, module: &[u8]) -> VersionRecord {
    let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    VersionRecord {
        name: name.parse().unwrap_or_else(|e| panic!("{e}")),
        version: Version::parse(version).unwrap_or_else(|e| panic!("{e}")),
        digest: Digest::of(module),
        envelope: key.sign("application/test", module),
        published_at: "2026-01-01T00:00:00Z".into(),
        published_by: "contract".into(),
    }
}

fn name(text: &str) -> PluginName {
    text.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// Runs every case. Each uses its own plugin names, so one store serves all.
pub async fn run<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Registry>>,
{
    versions_are_immutable(open().await).await;
    models_are_immutable_and_apart_from_plugins(open().await).await;
    concurrent_publishers_of_one_version_cannot_both_win(&open).await;
    alias_moves_are_compare_and_set_and_none_is_lost(&open).await;
    labels_revocations_and_history(open().await).await;
    routes_are_compare_and_set_with_history(&open).await;
    trust_lists_only_move_forward(open().await).await;
}

fn route(intent: &str, target: Option<&str>, expected_revision: u64, actor: &str) -> RouteChange {
    RouteChange {
        intent: intent.into(),
        target: target.map(|t| t.parse().unwrap_or_else(|e| panic!("{e}"))),
        expected_revision,
        actor: actor.into(),
    }
}

async fn routes_are_compare_and_set_with_history<F, Fut>(open: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Registry>>,
{
    let registry = open().await;
    let intent = "contract_route";
    let set = registry
        .change_route(&route(intent, Some("alpha"), 0, "ops"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("a set route is returned"));
    assert_eq!(set.revision, 1);
    assert_eq!(set.target.to_string(), "alpha@live");
    // From a stale revision: refused, nothing changes.
    let stale = registry
        .change_route(&route(intent, Some("beta@canary"), 0, "ops"))
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    let listed = |snapshot: crate::registry::Snapshot| {
        snapshot
            .routes
            .into_iter()
            .find(|r| r.intent == intent)
            .map(|r| (r.target, r.revision))
    };
    let snapshot = registry.snapshot().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        listed(snapshot),
        Some((
            RouteTarget {
                plugin: name("alpha"),
                alias: "live".into()
            },
            1
        ))
    );

    // Writers race from the same revision: exactly one wins each round.
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let registry = open().await;
        tasks.push(tokio::spawn(async move {
            loop {
                let snapshot = registry.snapshot().await.unwrap_or_else(|e| panic!("{e}"));
                let revision = snapshot
                    .routes
                    .iter()
                    .find(|r| r.intent == intent)
                    .map_or(0, |r| r.revision);
                let target = format!("writer-{i}@live");
                match registry
                    .change_route(&route(intent, Some(&target), revision, "ops"))
                    .await
                {
                    Ok(_) => return,
                    Err(StoreError::Conflict(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap_or_else(|e| panic!("{e}"));
    }
    let revision = WRITERS as u64 + 1;
    let snapshot = registry.snapshot().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed(snapshot).map(|(_, r)| r), Some(revision));

    // Removed: gone from the snapshot; removing it again is not found.
    let removed = registry
        .change_route(&route(intent, None, revision, "ops"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(removed, None);
    let snapshot = registry.snapshot().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed(snapshot), None);
    let again = registry.change_route(&route(intent, None, 0, "ops")).await;
    assert!(matches!(again, Err(StoreError::NotFound(_))), "{again:?}");
    let bad = registry
        .change_route(&route("not an intent", Some("alpha"), 0, "ops"))
        .await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");

    // Every change recorded once, chained from where the one before ended.
    let history = registry
        .route_history()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let changes: Vec<_> = history
        .iter()
        .filter(|h| h.action == format!("route {intent}"))
        .collect();
    assert_eq!(changes.len(), WRITERS + 2, "{history:?}");
    assert_eq!(changes[0].from, None);
    assert_eq!(changes[0].to.as_deref(), Some("alpha@live"));
    for pair in changes.windows(2) {
        assert_eq!(pair[1].from, pair[0].to, "{history:?}");
    }
    assert_eq!(changes.last().and_then(|h| h.to.as_ref()), None);
}

async fn versions_are_immutable(registry: Arc<dyn Registry>) {
    let before = registry
        .generation()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = record("contract-immutable", "1.0.0", b"one");
    assert_eq!(registry.register(&first).await.ok(), Some(Registered::New));
    assert!(
        registry.generation().await.unwrap_or(0) > before,
        "a write moves the generation"
    );

    // The same bytes again (even signed anew) is a no-op that keeps the original.
    let again = record("contract-immutable", "1.0.0", b"one");
    match registry.register(&again).await {
        Ok(Registered::Unchanged(kept)) => assert_eq!(*kept, first),
        other => panic!("re-registering the same module: {other:?}"),
    }
    let other = record("contract-immutable", "1.0.0", b"two");
    assert!(matches!(
        registry.register(&other).await,
        Err(StoreError::AlreadyPublished { .. })
    ));
    let entry = registry
        .version(&first.name, &first.version)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(entry.record, first);
    assert!(!entry.revoked && entry.labels.is_empty());
    let missing = registry.version(&first.name, &Version::new(9, 0, 0)).await;
    assert!(
        matches!(missing, Err(ref e) if e.is_not_found()),
        "{missing:?}"
    );
}

async fn models_are_immutable_and_apart_from_plugins(registry: Arc<dyn Registry>) {
    let model = record("contract-model", "1.0.0", b"weights");
    assert_eq!(
        registry.register_model(&model).await.ok(),
        Some(Registered::New)
    );
    match registry
        .register_model(&record("contract-model", "1.0.0", b"weights"))
        .await
    {
        Ok(Registered::Unchanged(kept)) => assert_eq!(*kept, model),
        other => panic!("re-registering the same model: {other:?}"),
    }
    let refused = registry
        .register_model(&record("contract-model", "1.0.0", b"other weights"))
        .await;
    match refused {
        Err(e @ StoreError::AlreadyPublished { .. }) => {
            assert!(e.to_string().starts_with("model `contract-model`"), "{e}")
        }
        other => panic!("other bytes under a published model version: {other:?}"),
    }
    let read = registry.model(&model.name, &model.version).await;
    assert_eq!(read.ok(), Some(model.clone()));

    // A plugin of the same name is another thing: neither sees the other.
    let missing = registry.version(&model.name, &model.version).await;
    assert!(
        matches!(missing, Err(ref e) if e.is_not_found()),
        "{missing:?}"
    );
    let plugin = record("contract-model", "1.0.0", b"a module");
    assert_eq!(registry.register(&plugin).await.ok(), Some(Registered::New));
    assert_eq!(
        registry.model(&model.name, &model.version).await.ok(),
        Some(model.clone())
    );
    let missing = registry.model(&model.name, &Version::new(2, 0, 0)).await;
    match missing {
        Err(e) if e.is_not_found() => {
            let says = "model `contract-model` version `2.0.0` not found";
            assert_eq!(e.to_string(), says)
        }
        other => panic!("a model never published: {other:?}"),
    }

    // Listed by name, then version (10.0.0 after 9.0.0), plugins not among them.
    let later = [
        record("contract-model", "10.0.0", b"weights 10"),
        record("contract-model", "9.0.0", b"weights 9"),
        record("another-model", "1.0.0", b"weights"),
    ];
    for record in &later {
        if let Err(e) = registry.register_model(record).await {
            panic!("registering {}@{}: {e}", record.name, record.version);
        }
    }
    let listed: Vec<String> = registry
        .models()
        .await
        .unwrap_or_else(|e| panic!("listing models: {e}"))
        .iter()
        .map(|r| format!("{}@{}", r.name, r.version))
        .collect();
    let expected = [
        "another-model@1.0.0",
        "contract-model@1.0.0",
        "contract-model@9.0.0",
        "contract-model@10.0.0",
    ];
    assert_eq!(listed, expected);

    // Each publication on record, under the model's own subject: the
    // unchanged and refused ones, and the plugin of that name, not.
    let history = registry
        .model_history(&model.name)
        .await
        .unwrap_or_else(|e| panic!("a model's history: {e}"));
    let published: Vec<(&str, Option<&str>)> = history
        .iter()
        .map(|h| {
            let version = h.to.as_deref().and_then(|to| to.split(' ').next());
            (h.action.as_str(), version)
        })
        .collect();
    assert_eq!(
        published,
        [
            ("publish", Some("1.0.0")),
            ("publish", Some("10.0.0")),
            ("publish", Some("9.0.0"))
        ]
    );
    assert!(history.iter().all(|h| h.subject == "model#contract-model"));
    let plugin_history = registry
        .history(&model.name)
        .await
        .unwrap_or_else(|e| panic!("a plugin's history: {e}"));
    assert_eq!(plugin_history.len(), 1, "{plugin_history:?}");
}

async fn concurrent_publishers_of_one_version_cannot_both_win<F, Fut>(open: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Registry>>,
{
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let registry = open().await;
        tasks.push(tokio::spawn(async move {
            let r = record("contract-race", "1.0.0", format!("module {i}").as_bytes());
            (r.digest, registry.register(&r).await)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (digest, result) = task.await.unwrap_or_else(|e| panic!("{e}"));
        match result {
            Ok(Registered::New) => winners.push(digest),
            Err(StoreError::AlreadyPublished { .. }) => {}
            other => panic!("racing publishers: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one publisher wins");
    let stored = open()
        .await
        .version(&name("contract-race"), &Version::new(1, 0, 0))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored.record.digest, winners[0]);
}

async fn alias_moves_are_compare_and_set_and_none_is_lost<F, Fut>(open: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Registry>>,
{
    let plugin = name("contract-alias");
    let target = |minor: u64| AliasTarget {
        version: Version::new(1, minor, 0),
        canary: None,
    };
    let registry = open().await;
    let created = registry
        .move_alias(&AliasMove {
            plugin: plugin.clone(),
            name: "live".into(),
            target: target(0),
            previous: None,
            expected_revision: 0,
            actor: "ops".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(created.revision, 1);
    // Creating it again from revision 0 loses: it exists.
    let stale = registry
        .move_alias(&AliasMove {
            plugin: plugin.clone(),
            name: "live".into(),
            target: target(9),
            previous: None,
            expected_revision: 0,
            actor: "ops".into(),
        })
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");

    // Writers race from the same revision: exactly one wins each round; each
    // loser reads again and retries, so every move lands exactly once.
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let registry = open().await;
        let plugin = plugin.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            loop {
                let snapshot = registry.snapshot().await.unwrap_or_else(|e| panic!("{e}"));
                let current = snapshot
                    .aliases
                    .iter()
                    .find(|a| a.plugin == plugin && a.name == "live")
                    .cloned()
                    .unwrap_or_else(|| panic!("alias vanished"));
                let result = registry
                    .move_alias(&AliasMove {
                        plugin: plugin.clone(),
                        name: "live".into(),
                        target: target(i as u64 + 1),
                        previous: Some(current.target.clone()),
                        expected_revision: current.revision,
                        actor: format!("writer-{i}"),
                    })
                    .await;
                match result {
                    Ok(_) => return conflicts,
                    Err(StoreError::Conflict(_)) => conflicts += 1,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap_or_else(|e| panic!("{e}"));
    }
    let history = registry
        .history(&plugin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let moves: Vec<_> = history
        .iter()
        .filter(|h| h.action == "alias live")
        .collect();
    assert_eq!(
        moves.len(),
        WRITERS + 1,
        "every move recorded once: {history:?}"
    );
    // The history chains: each move starts where the one before ended.
    for pair in moves.windows(2) {
        assert_eq!(pair[1].from, pair[0].to, "{history:?}");
    }
    let snapshot = registry.snapshot().await.unwrap_or_else(|e| panic!("{e}"));
    let alias = snapshot
        .aliases
        .iter()
        .find(|a| a.plugin == plugin)
        .unwrap_or_else(|| panic!("alias missing"));
    assert_eq!(alias.revision, WRITERS as u64 + 1);

    // A bad canary weight is refused before anything is written.
    let bad = registry
        .move_alias(&AliasMove {
            plugin: plugin.clone(),
            name: "live".into(),
            target: AliasTarget {
                version: Version::new(1, 0, 0),
                canary: Some(Canary {
                    version: Version::new(2, 0, 0),
                    weight: 100,
                }),
            },
            previous: None,
            expected_revision: alias.revision,
            actor: "ops".into(),
        })
        .await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");
}

async fn labels_revocations_and_history(registry: Arc<dyn Registry>) {
    let r = record("contract-labels", "1.0.0", b"labels");
    registry
        .register(&r)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let labels = BTreeSet::from(["approved".to_owned(), "experimental".to_owned()]);
    registry
        .set_labels(&r.name, &r.version, &labels, "ops")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    registry
        .revoke(&r.name, &r.version, "ops", "leaked key")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let entry = registry
        .version(&r.name, &r.version)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(entry.labels, labels);
    assert!(entry.revoked);
    let missing = registry
        .revoke(&r.name, &Version::new(7, 0, 0), "ops", "x")
        .await;
    assert!(
        matches!(missing, Err(ref e) if e.is_not_found()),
        "{missing:?}"
    );
    let actions: Vec<String> = registry
        .history(&r.name)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|h| h.action)
        .collect();
    assert_eq!(actions, ["publish", "labels 1.0.0", "revoke"]);
    let snapshot = registry.snapshot().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        snapshot
            .versions
            .iter()
            .any(|v| v.record.name == r.name && v.revoked && v.labels == labels)
    );
}

async fn trust_lists_only_move_forward(registry: Arc<dyn Registry>) {
    let root = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let list = |serial: u64| root.sign("application/test-trust", &serial.to_le_bytes());
    let base = registry
        .snapshot()
        .await
        .ok()
        .and_then(|s| s.trust_list)
        .map_or(0, |_| 1_000_000);
    registry
        .put_trust_list(base + 5, &list(base + 5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for stale in [base + 5, base + 4] {
        let refused = registry.put_trust_list(stale, &list(stale)).await;
        assert!(
            matches!(refused, Err(StoreError::Conflict(_))),
            "{refused:?}"
        );
    }
    registry
        .put_trust_list(base + 6, &list(base + 6))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stored = registry
        .snapshot()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .trust_list;
    assert_eq!(stored, Some(list(base + 6)));
}

/// The blob store contract: content-addressed round trips, idempotent puts,
/// progress that adds up, missing blobs not found, no blob read far past the
/// size its manifest names, damaged blobs replaced by a new put. `large` is
/// a module of realistic size (megabytes).
pub async fn blob_store(store: Arc<dyn BlobStore>, large: usize) {
    let small = b"a small module".to_vec();
    let digest = Digest::of(&small);
    let missing = store.get(&digest, small.len() as u64).await;
    assert!(
        matches!(missing, Err(ref e) if e.is_not_found()),
        "{missing:?}"
    );
    for _ in 0..2 {
        store
            .put(&digest, &small)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let fetched = store
        .get(&digest, small.len() as u64)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fetched, small);
    // Damaged bytes under a digest are repaired by putting the right ones.
    let other = Digest::of(b"other module");
    store
        .put(&other, b"damaged")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .put(&other, b"other module")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let repaired = store
        .get(&other, 12)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(repaired, b"other module", "a damaged blob is replaced");
    let short = store.get(&digest, small.len() as u64 - 1).await;
    assert!(
        matches!(short, Err(StoreError::SizeMismatch { actual, .. }) if actual == small.len() as u64),
        "a blob larger than its manifest says is refused: {short:?}"
    );

    let big: Vec<u8> = (0..large).map(|i| (i % 251) as u8).collect();
    let digest = Digest::of(&big);
    let reported = std::sync::atomic::AtomicU64::new(0);
    let calls = std::sync::atomic::AtomicU64::new(0);
    store
        .put_with_progress(&digest, &big, &|n| {
            reported.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reported.into_inner(), big.len() as u64, "progress adds up");
    assert!(calls.into_inner() >= 1);
    let fetched = store
        .get(&digest, big.len() as u64)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(fetched == big, "the large blob round-trips");
}
