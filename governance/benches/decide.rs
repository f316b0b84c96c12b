//! Governance decision cost at 10, 100 and 1,000 policies, with slicing (the
//! default) and without, to show that unrelated policies cost nothing.
//!
//! ```text
//! cargo bench -p governance --bench decide
//! ```
//!
//! Each set holds one permit that matches the request plus N-1 policies
//! scoped to other plugins and tenants: what a busy multi-tenant set looks
//! like from one request's point of view.

#![allow(clippy::expect_used)] // a benchmark fails loudly

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::SystemTime;

use divan::Bencher;
use governance::{
    DecisionRequest, Governance, GovernanceConfig, PluginInfo, PolicyDocument, Principal,
    PrincipalKind,
};

fn main() {
    divan::main();
}

fn governance(policies: usize, slice: bool) -> Governance {
    let mut text = String::from(
        "@id(\"developers-may-dispatch-examples\") permit(principal in AgentRuntime::Group::\"developers\", action, resource) when { resource.tags.contains(\"example\") };\n",
    );
    for i in 1..policies {
        let line = if i % 2 == 0 {
            format!(
                "permit(principal, action, resource == AgentRuntime::Plugin::\"plugin-{i}\") when {{ context.intent == \"run\" }};\n"
            )
        } else {
            format!(
                "forbid(principal in AgentRuntime::Tenant::\"tenant-{i}\", action, resource) when {{ resource.tags.contains(\"restricted\") }};\n"
            )
        };
        text.push_str(&line);
    }
    let config = GovernanceConfig {
        slice,
        ..GovernanceConfig::default()
    };
    let documents = [PolicyDocument {
        name: "bench.cedar".into(),
        text,
    }];
    Governance::of_documents(&documents, config).expect("load")
}

#[divan::bench(args = [10, 100, 1000], sample_count = 1000)]
fn sliced(bencher: Bencher, policies: usize) {
    run(bencher, policies, true);
}

#[divan::bench(args = [10, 100, 1000], sample_count = 300)]
fn unsliced(bencher: Bencher, policies: usize) {
    run(bencher, policies, false);
}

fn run(bencher: Bencher, policies: usize, slice: bool) {
    let governance = governance(policies, slice);
    let principal = Principal {
        id: "dev".into(),
        kind: PrincipalKind::User,
        groups: vec!["developers".into()],
        tenant: "local".into(),
    };
    let plugin = PluginInfo {
        name: "keywords".into(),
        version: semver::Version::new(1, 0, 0),
        publisher: "agent-runtime".into(),
        tags: BTreeSet::from(["example".to_owned()]),
        labels: BTreeSet::new(),
        needs: Default::default(),
    };
    bencher.bench_local(|| {
        let decision = governance.decide_now(&DecisionRequest {
            principal: &principal,
            plugin: &plugin,
            intent: "extract",
            source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            time: SystemTime::now(),
            input: None,
        });
        assert!(decision.allowed);
        decision
    });
}
