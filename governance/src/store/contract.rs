//! The contract every [`PolicyStore`] keeps, as one suite run against each
//! (the SQLite file here, DynamoDB on the emulator in `aws-stores`). Built
//! with the `contract-tests` feature; panics on a breach.
//!
//! `open(name)` opens a handle to the store called `name`, creating it empty
//! on first use: each case uses its own store, and a second handle to the
//! same name is as independent as another process.
#![expect(
    clippy::panic,
    reason = "a test suite: a breach of the contract fails the test"
)]

use std::future::Future;
use std::sync::Arc;

use super::{Activate, ActivationKind, NewPolicySet, PolicyStore, PolicyStoreError, seed_if_new};
use crate::policies::PolicyDocument;

/// Writers racing in the concurrency cases.
const WRITERS: usize = 8;

fn set(text: &str, message: &str) -> NewPolicySet {
    NewPolicySet {
        documents: vec![PolicyDocument {
            name: "p.cedar".into(),
            text: text.into(),
        }],
        schema: crate::SCHEMA.into(),
        author: "contract".into(),
        message: message.into(),
    }
}

fn activate(version: u64, expected_revision: u64) -> Activate<'static> {
    Activate {
        version,
        expected_revision,
        kind: ActivationKind::Activate,
        actor: "contract",
    }
}

fn ok<T>(result: Result<T, PolicyStoreError>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// Runs every case, each in its own store.
pub async fn run<F, Fut>(open: F)
where
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = Arc<dyn PolicyStore>>,
{
    versions_are_numbered_and_immutable(open("versions").await).await;
    out_of_bounds_sets_are_refused(open("bounds").await).await;
    the_head_moves_only_from_the_revision_read(open("head").await).await;
    a_shadow_moves_beside_the_set_in_force(open("shadow").await).await;
    concurrent_activations_exactly_one_wins(&open).await;
    concurrent_puts_get_distinct_versions(&open).await;
    seeding_happens_once_and_an_emptied_set_stays_empty(open("seed").await).await;
}

async fn versions_are_numbered_and_immutable(store: Arc<dyn PolicyStore>) {
    assert_eq!(ok(store.list().await), vec![]);
    assert_eq!(ok(store.head().await), None);
    let first = ok(store
        .put(&set("permit(principal, action, resource);", "one"))
        .await);
    let second = ok(store
        .put(&set("permit(principal, action, resource);", "again"))
        .await);
    assert_eq!((first.version, second.version), (1, 2));
    assert_eq!(first.hash, second.hash, "the hash covers documents only");
    let read = ok(store.get(1).await);
    assert_eq!(read, first);
    ok(read.check_hash());
    assert_eq!(read.message, "one");
    assert_eq!(read.author, "contract");
    assert_eq!(read.schema, crate::SCHEMA);
    let listed = ok(store.list().await);
    assert_eq!(listed, vec![first.info(), second.info()]);
    assert_eq!(listed[0].documents, 1);
    assert_eq!(store.get(3).await, Err(PolicyStoreError::NotFound(3)));
    // A put never activates.
    assert_eq!(ok(store.head().await), None);
}

async fn out_of_bounds_sets_are_refused(store: Arc<dyn PolicyStore>) {
    let mut bad_name = set("", "x");
    bad_name.documents[0].name = "../p.cedar".into();
    let mut too_big = set("", "x");
    too_big.documents[0].text = "x".repeat(super::MAX_POLICY_SET_BYTES + 1);
    let mut twice = set("", "x");
    twice.documents.push(twice.documents[0].clone());
    let mut no_author = set("", "x");
    no_author.author = " ".into();
    for refused in [bad_name, too_big, twice, no_author] {
        match store.put(&refused).await {
            Err(PolicyStoreError::Invalid(_)) => {}
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
    assert_eq!(ok(store.list().await), vec![], "nothing was stored");
}

async fn the_head_moves_only_from_the_revision_read(store: Arc<dyn PolicyStore>) {
    let one = ok(store.put(&set("", "empty")).await);
    let two = ok(store
        .put(&set("permit(principal, action, resource);", "all"))
        .await);
    assert_eq!(
        store.activate(&activate(9, 0)).await,
        Err(PolicyStoreError::NotFound(9))
    );
    assert_eq!(
        ok(store.head().await),
        None,
        "a failed activation changes nothing"
    );
    let head = ok(store.activate(&activate(one.version, 0)).await);
    assert_eq!((head.version, head.revision, head.previous), (1, 1, None));
    assert_eq!(head.hash, one.hash);
    assert_eq!(
        store.activate(&activate(two.version, 0)).await,
        Err(PolicyStoreError::Conflict {
            expected: 0,
            actual: 1
        })
    );
    let head = ok(store
        .activate(&Activate {
            kind: ActivationKind::Rollback,
            actor: "someone",
            ..activate(two.version, 1)
        })
        .await);
    assert_eq!(
        (head.version, head.revision, head.previous),
        (2, 2, Some(1))
    );
    assert_eq!(head.activated_by, "someone");
    assert_eq!(ok(store.head().await), Some(head));
    let history = ok(store.history().await);
    let moves: Vec<_> = history
        .iter()
        .map(|a| (a.revision, a.version, a.from, a.kind, a.by.as_str()))
        .collect();
    assert_eq!(
        moves,
        vec![
            (1, 1, None, ActivationKind::Activate, "contract"),
            (2, 2, Some(1), ActivationKind::Rollback, "someone"),
        ]
    );
}

fn move_of(kind: ActivationKind, version: u64, expected_revision: u64) -> Activate<'static> {
    Activate {
        kind,
        ..activate(version, expected_revision)
    }
}

async fn a_shadow_moves_beside_the_set_in_force(store: Arc<dyn PolicyStore>) {
    use ActivationKind::{EndShadow, Shadow};
    let one = ok(store.put(&set("", "empty")).await);
    let two = ok(store
        .put(&set("permit(principal, action, resource);", "all"))
        .await);
    let three = ok(store
        .put(&set("forbid(principal, action, resource);", "none"))
        .await);
    assert!(
        matches!(
            store.activate(&move_of(Shadow, two.version, 0)).await,
            Err(PolicyStoreError::Invalid(_))
        ),
        "no shadow before a set is in force"
    );
    ok(store.activate(&activate(one.version, 0)).await);
    assert!(matches!(
        store.activate(&move_of(Shadow, one.version, 1)).await,
        Err(PolicyStoreError::Invalid(_))
    ));
    assert_eq!(
        store.activate(&move_of(Shadow, two.version, 0)).await,
        Err(PolicyStoreError::Conflict {
            expected: 0,
            actual: 1
        })
    );

    // In shadow: the set in force and `previous` stay; the revision moves.
    let head = ok(store.activate(&move_of(Shadow, two.version, 1)).await);
    assert_eq!((head.version, head.revision, head.previous), (1, 2, None));
    assert_eq!(head.hash, one.hash);
    let shadow = head.shadow.clone().map(|s| (s.version, s.hash));
    assert_eq!(shadow, Some((two.version, two.hash.clone())));
    assert_eq!(ok(store.head().await), Some(head));
    // Another candidate replaces it; ending a shadow names the one in shadow.
    let head = ok(store.activate(&move_of(Shadow, three.version, 2)).await);
    assert_eq!(head.shadow.as_ref().map(|s| s.version), Some(3));
    assert!(matches!(
        store.activate(&move_of(EndShadow, two.version, 3)).await,
        Err(PolicyStoreError::Invalid(_))
    ));
    // Activating the candidate ends its shadow.
    let head = ok(store.activate(&activate(three.version, 3)).await);
    assert_eq!(
        (head.version, head.previous, head.shadow),
        (3, Some(1), None)
    );
    // Activating another version keeps a shadow going; ending it stops it.
    ok(store.activate(&move_of(Shadow, two.version, 4)).await);
    let head = ok(store.activate(&activate(one.version, 5)).await);
    assert_eq!(head.shadow.as_ref().map(|s| s.version), Some(2));
    let head = ok(store.activate(&move_of(EndShadow, two.version, 6)).await);
    assert_eq!((head.version, head.revision, &head.shadow), (1, 7, &None));
    assert_eq!(ok(store.head().await), Some(head));

    let moves: Vec<_> = ok(store.history().await)
        .iter()
        .map(|a| (a.revision, a.version, a.from, a.kind))
        .collect();
    assert_eq!(
        moves,
        vec![
            (1, 1, None, ActivationKind::Activate),
            (2, 2, None, Shadow),
            (3, 3, Some(2), Shadow),
            (4, 3, Some(1), ActivationKind::Activate),
            (5, 2, None, Shadow),
            (6, 1, Some(3), ActivationKind::Activate),
            (7, 2, Some(2), EndShadow),
        ]
    );
}

async fn concurrent_activations_exactly_one_wins<F, Fut>(open: &F)
where
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = Arc<dyn PolicyStore>>,
{
    let store = open("race").await;
    let mut versions = Vec::new();
    for i in 0..WRITERS {
        versions.push(ok(store.put(&set("", &format!("writer {i}"))).await).version);
    }
    ok(store.activate(&activate(versions[0], 0)).await);
    let mut writers = Vec::new();
    for &version in &versions {
        let handle = open("race").await;
        writers.push(tokio::spawn(async move {
            handle.activate(&activate(version, 1)).await
        }));
    }
    let mut won = Vec::new();
    for writer in writers {
        match writer.await.unwrap_or_else(|e| panic!("{e}")) {
            Ok(head) => won.push(head.version),
            Err(PolicyStoreError::Conflict {
                expected: 1,
                actual: 2,
            }) => {}
            Err(other) => panic!("a losing activation must be a conflict, got {other}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one activation wins: {won:?}");
    let head = ok(store.head().await).unwrap_or_else(|| panic!("no head"));
    assert_eq!((head.version, head.revision), (won[0], 2));
    assert_eq!(ok(store.history().await).len(), 2, "one move each");
}

async fn concurrent_puts_get_distinct_versions<F, Fut>(open: &F)
where
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = Arc<dyn PolicyStore>>,
{
    let mut writers = Vec::new();
    for i in 0..WRITERS {
        let handle = open("puts").await;
        writers.push(tokio::spawn(async move {
            handle.put(&set("", &format!("writer {i}"))).await
        }));
    }
    let mut versions = Vec::new();
    for writer in writers {
        versions.push(ok(writer.await.unwrap_or_else(|e| panic!("{e}"))).version);
    }
    versions.sort_unstable();
    let expected: Vec<u64> = (1..=WRITERS as u64).collect();
    assert_eq!(
        versions, expected,
        "every put lands, each as its own version"
    );
}

async fn seeding_happens_once_and_an_emptied_set_stays_empty(store: Arc<dyn PolicyStore>) {
    let defaults = set("permit(principal, action, resource);", "defaults");
    assert_eq!(ok(seed_if_new(store.as_ref(), &defaults).await), Some(1));
    let emptied = ok(store.put(&set("", "lock everything down")).await);
    ok(store.activate(&activate(emptied.version, 1)).await);
    assert_eq!(ok(seed_if_new(store.as_ref(), &defaults).await), None);
    let head = ok(store.head().await).unwrap_or_else(|| panic!("no head"));
    assert_eq!(
        head.version, emptied.version,
        "the emptied set stays in force"
    );
    assert_eq!(ok(store.list().await).len(), 2, "nothing was seeded again");
    assert_eq!(ok(store.history().await)[0].kind, ActivationKind::Seed);
}
