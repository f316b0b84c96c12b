//! Decision latency, Cedar (this crate) against Rego (`regorus`, a Rust
//! Rego interpreter), on equivalent policies of 10, 100 and 1,000 rules, as
//! percentiles of single decisions, side by side in one run:
//!
//! ```text
//! cargo bench -p governance --bench engines
//! ```
//!
//! - `cedar warm`: the same request again and again; entities, context and
//!   the (plugin, tenant) slice come from the engine's caches.
//! - `cedar cold`: a principal and a time never seen before on every
//!   request, so entities and context are built each time (the slice stays
//!   cached: it depends on the plugin and tenant only).
//! - `cedar input`: warm, for a plugin with an input schema: decided with
//!   its own action, the first rule a condition on `context.input` (the
//!   input converted for every request).
//! - `rego`: the same question as Rego input; the interpreter has no
//!   request cache to warm.
//!
//! Each set holds one rule that matches plus N-1 scoped to other plugins
//! and tenants (as `benches/decide.rs`).

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark fails loudly

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime};

use governance::{
    DecisionRequest, Governance, GovernanceConfig, PluginInfo, PolicyDocument, Principal,
    PrincipalKind,
};

const SIZES: [usize; 3] = [10, 100, 1000];
const WARM_UP: usize = 2_000;
const SAMPLES: usize = 20_000;

fn cedar(policies: usize) -> Governance {
    cedar_with(
        policies,
        "permit(principal in AgentRuntime::Group::\"developers\", action, resource) when { resource.tags.contains(\"example\") };\n",
        &governance::PolicySchema::base().expect("the schema"),
    )
}

/// The same set, its first rule on the input of `keywords`, which has an
/// action of its own.
fn cedar_with_input(policies: usize) -> Governance {
    let input = governance::InputType::of_schema(&serde_json::json!({
        "type": "object", "required": ["top"], "properties": {"top": {"type": "integer"}}
    }))
    .expect("the input type");
    let plugins = std::collections::BTreeMap::from([("keywords".to_owned(), input)]);
    let schema = governance::PolicySchema::with_plugin_actions(
        &governance::inputs::plugin_actions_fragment(&plugins),
    )
    .expect("the schema");
    cedar_with(
        policies,
        "permit(principal in AgentRuntime::Group::\"developers\", action == AgentRuntime::Action::\"keywords\", resource) when { context.input.top < 10 };\n",
        &schema,
    )
}

fn cedar_with(policies: usize, first: &str, schema: &governance::PolicySchema) -> Governance {
    let mut text = String::from(first);
    for i in 1..policies {
        text.push_str(&if i % 2 == 0 {
            format!("permit(principal, action, resource == AgentRuntime::Plugin::\"plugin-{i}\") when {{ context.intent == \"run\" }};\n")
        } else {
            format!("forbid(principal in AgentRuntime::Tenant::\"tenant-{i}\", action, resource) when {{ resource.tags.contains(\"restricted\") }};\n")
        });
    }
    let documents = [PolicyDocument {
        name: "bench.cedar".into(),
        text,
    }];
    Governance::of_set(&documents, schema, GovernanceConfig::default()).expect("load")
}

/// The same rules in Rego: allowed when a permit matches and no forbid does.
fn rego(policies: usize) -> regorus::Engine {
    let mut text = String::from(
        "package agent_runtime\n\nimport rego.v1\n\ndefault allow := false\n\nallow if {\n\tpermitted\n\tnot forbidden\n}\n\n\
         permitted if {\n\t\"developers\" in input.principal.groups\n\t\"example\" in input.resource.tags\n}\n",
    );
    for i in 1..policies {
        text.push_str(&if i % 2 == 0 {
            format!("\npermitted if {{\n\tinput.resource.name == \"plugin-{i}\"\n\tinput.context.intent == \"run\"\n}}\n")
        } else {
            format!("\nforbidden if {{\n\tinput.principal.tenant == \"tenant-{i}\"\n\t\"restricted\" in input.resource.tags\n}}\n")
        });
    }
    let mut engine = regorus::Engine::new();
    engine
        .add_policy("bench.rego".into(), text)
        .expect("the Rego policy");
    engine
}

fn principal(id: String) -> Principal {
    Principal {
        id,
        kind: PrincipalKind::User,
        groups: vec!["developers".into()],
        tenant: "local".into(),
    }
}

fn plugin() -> PluginInfo {
    PluginInfo {
        name: "keywords".into(),
        version: semver::Version::new(1, 0, 0),
        publisher: "agent-runtime".into(),
        tags: BTreeSet::from(["example".to_owned()]),
        labels: BTreeSet::new(),
        needs: Default::default(),
    }
}

/// p50 and p99 of `samples` timed calls of `decide` (after a warm-up), in
/// microseconds.
fn measure(mut decide: impl FnMut(usize) -> bool) -> (f64, f64) {
    for i in 0..WARM_UP {
        assert!(decide(i));
    }
    let mut times: Vec<Duration> = (WARM_UP..WARM_UP + SAMPLES)
        .map(|i| {
            let started = Instant::now();
            assert!(decide(i));
            started.elapsed()
        })
        .collect();
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.99))
}

fn main() {
    println!("{SAMPLES} decisions each after {WARM_UP} to warm up; microseconds\n");
    println!(
        "| policies | cedar warm p50 | p99 | cedar cold p50 | p99 | cedar input p50 | p99 | rego p50 | p99 | rego / cedar warm, p99 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for size in SIZES {
        let governance = cedar(size);
        let plugin = plugin();
        let dev = principal("dev".into());
        let now = SystemTime::now();
        let warm = measure(|_| {
            governance
                .decide_now(&DecisionRequest {
                    principal: &dev,
                    plugin: &plugin,
                    intent: "extract",
                    source_ip: ip,
                    time: now,
                    input: None,
                })
                .allowed
        });
        let principals: Vec<Principal> = (0..WARM_UP + SAMPLES)
            .map(|i| principal(format!("user-{i}")))
            .collect();
        let cold = measure(|i| {
            governance
                .decide_now(&DecisionRequest {
                    principal: &principals[i],
                    plugin: &plugin,
                    intent: "extract",
                    source_ip: ip,
                    // A new second every call: the context cache misses too.
                    time: now + Duration::from_secs(i as u64),
                    input: None,
                })
                .allowed
        });
        let with_input = cedar_with_input(size);
        let top = serde_json::json!({"top": 3});
        let input_decided = measure(|_| {
            with_input
                .decide_now(&DecisionRequest {
                    principal: &dev,
                    plugin: &plugin,
                    intent: "extract",
                    source_ip: ip,
                    time: now,
                    input: Some(&top),
                })
                .allowed
        });
        let mut engine = rego(size);
        let input = regorus::Value::from_json_str(
            r#"{"principal": {"id": "dev", "groups": ["developers"], "tenant": "local"},
                "resource": {"name": "keywords", "tags": ["example"], "labels": []},
                "context": {"intent": "extract", "source_ip": "127.0.0.1"}}"#,
        )
        .expect("the Rego input");
        let rule = "data.agent_runtime.allow".to_owned();
        let rego = measure(|_| {
            engine.set_input(input.clone());
            engine.eval_rule(rule.clone()).expect("evaluates") == regorus::Value::from(true)
        });
        println!(
            "| {size} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1}x |",
            warm.0,
            warm.1,
            cold.0,
            cold.1,
            input_decided.0,
            input_decided.1,
            rego.0,
            rego.1,
            rego.1 / warm.1
        );
    }
}
