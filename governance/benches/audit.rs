//! What recording one decision costs: building the record, serializing and
//! chaining it, and appending it to a file; side by side with the parts.
//!
//! ```text
//! cargo bench -p governance --bench audit
//! ```
//!
//! No log subscriber is installed, so the `audit` log line is not written:
//! its cost is the logging pipeline's (see docs/performance.md).

#![allow(clippy::expect_used)] // a benchmark fails loudly

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::SystemTime;

use divan::Bencher;
use governance::audit::chain::{Link, Serialized, encode};
use governance::{
    AuditLog, AuditRecord, Decision, DecisionRequest, Outcome, PluginInfo, Principal, PrincipalKind,
};

fn main() {
    divan::main();
}

fn record() -> AuditRecord {
    let principal = Principal {
        id: "dev".into(),
        kind: PrincipalKind::User,
        groups: vec!["developers".into()],
        tenant: "default".into(),
    };
    let plugin = PluginInfo {
        name: "echo".into(),
        version: "1.0.0".parse().expect("a version"),
        publisher: "agent-runtime".into(),
        tags: BTreeSet::from(["example".to_owned()]),
        labels: BTreeSet::from(["approved".to_owned()]),
        needs: Default::default(),
    };
    let decision = Decision {
        allowed: true,
        reason: Outcome::Allowed,
        policies: vec!["developers-may-dispatch-approved".into()],
        errors: vec![],
        policy_version: 1,
        policy_set: format!("sha256:{}", "ab".repeat(32)),
        decision_time_us: 12,
        shadow: None,
    };
    let request = DecisionRequest {
        principal: &principal,
        plugin: &plugin,
        intent: "bench",
        source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        time: SystemTime::now(),
        input: None,
    };
    AuditRecord::new(
        "0b7c4c1e-8d47-4a1f-9a59-0d2b8c7e1f00",
        &request,
        &format!("sha256:{}", "cd".repeat(32)),
        &decision,
    )
}

/// `AuditRecord::new`: the clones, a UUID, the time.
#[divan::bench]
fn build() -> AuditRecord {
    record()
}

/// Serialized, chained and hashed: the line, without writing it.
#[divan::bench]
fn serialize_and_chain(bencher: Bencher) {
    let record = record();
    let last = Link::genesis();
    bencher.bench_local(|| encode(&last, &Serialized::new(&record).expect("serializes")));
}

/// All of it, appended to a file, one decision at a time.
#[divan::bench]
fn record_to_a_file(bencher: Bencher) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = AuditLog::open(Some(&dir.path().join("decisions.jsonl"))).expect("opens");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let record = record();
    bencher.bench_local(|| runtime.block_on(log.record(&record)).expect("written"));
}
