//! Per-request sandbox cost: `Sandbox::run` (fresh Store with its WASI
//! context, instantiate, call, checks, drop) on one thread, the way a
//! request pays it.
//!
//! ```text
//! cargo bench -p axon --bench sandbox
//! ```
//!
//! - `echo`: the trivial plugin (returns its input), pooled and not;
//! - `keywords`: a real plugin on a paragraph of text.
//!
//! Before divan's table it prints where the time goes: the median of each
//! phase `Sandbox::run` records (setup, instantiate, call, teardown) over
//! 20,000 requests.

#![allow(clippy::expect_used)] // a benchmark fails loudly

use std::sync::{Arc, LazyLock};

use axon::sandbox::{Invocation, PreparedPlugin, Sandbox, SandboxConfig};
use divan::Bencher;
use plugin_artifacts::Artifact;
use plugin_store::{PluginManifest, PublishSpec};

fn main() {
    phase_breakdown("echo, pooled", &POOLED, &POOLED.echo, r#"{"x":1}"#);
    phase_breakdown(
        "keywords, pooled",
        &POOLED,
        &POOLED.keywords,
        KEYWORDS_INPUT.as_str(),
    );
    divan::main();
}

/// Prints the median of each phase and percentiles of the total.
fn phase_breakdown(label: &str, fixture: &Fixture, plugin: &PreparedPlugin, input: &str) {
    const RUNS: usize = 20_000;
    let mut stats = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let answer = fixture
            .runtime
            .block_on(fixture.sandbox.run(plugin, invocation(input)))
            .expect("plugin answers");
        stats.push(answer.stats.timing_ns);
    }
    let median = |f: fn(&axon::sandbox::Timing) -> u64| {
        let mut v: Vec<u64> = stats.iter().map(f).collect();
        v.sort_unstable();
        v[v.len() / 2] as f64 / 1000.0
    };
    let mut totals: Vec<u64> = stats
        .iter()
        .map(|t| t.setup + t.instantiate + t.call + t.teardown)
        .collect();
    totals.sort_unstable();
    let pct =
        |p: f64| totals[((totals.len() as f64 * p) as usize).min(totals.len() - 1)] as f64 / 1000.0;
    println!(
        "{label}: setup {:.1} us, instantiate {:.1} us, call {:.1} us, teardown {:.1} us (medians); \
         total p50 {:.1} us, p90 {:.1} us, p99 {:.1} us over {RUNS} requests",
        median(|t| t.setup),
        median(|t| t.instantiate),
        median(|t| t.call),
        median(|t| t.teardown),
        pct(0.50),
        pct(0.90),
        pct(0.99),
    );
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    sandbox: Sandbox,
    echo: PreparedPlugin,
    keywords: PreparedPlugin,
}

fn prepare(sandbox: &Sandbox, artifact: Artifact) -> PreparedPlugin {
    let module = artifact.bytes().expect("plugin artifact");
    let spec = PublishSpec::from_toml(&format!(
        "name = \"{}\"\nversion = \"1.0.0\"",
        artifact.name
    ))
    .expect("spec");
    let world = plugin_store::component::reasoning_world(&module).expect("a reasoning plugin");
    let manifest = PluginManifest::new(spec, &module, world, plugin_store::KeyId::from("bench"));
    let (component, _) = sandbox.compile(&manifest.digest, &module).expect("compile");
    sandbox
        .prepare(&manifest, &component, None)
        .expect("prepare")
}

fn fixture(pooling: bool) -> Fixture {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sandbox = Sandbox::new(&SandboxConfig {
        pooling,
        pool_size: 16,
        ..SandboxConfig::default()
    })
    .expect("sandbox");
    let echo = prepare(&sandbox, plugin_artifacts::ECHO);
    let keywords = prepare(&sandbox, plugin_artifacts::KEYWORDS);
    Fixture {
        runtime,
        sandbox,
        echo,
        keywords,
    }
}

static POOLED: LazyLock<Fixture> = LazyLock::new(|| fixture(true));
static UNPOOLED: LazyLock<Fixture> = LazyLock::new(|| fixture(false));

const PARAGRAPH: &str = "WebAssembly components give each plugin its own memory and its own \
    imports. A fresh instance per request means a plugin cannot keep state between requests, \
    cannot read another plugin's memory, and cannot outlive its deadline. The host decides \
    what the plugin may import: here, logging and configuration, and nothing else.";

fn invocation(input: &str) -> Invocation {
    Invocation {
        correlation_id: Arc::from("bench"),
        intent: "bench".to_owned(),
        input: input.to_owned(),
        context: Vec::new(),
    }
}

fn run(
    bencher: Bencher,
    fixture: &'static Fixture,
    plugin: &'static PreparedPlugin,
    input: &'static str,
) {
    bencher.bench_local(|| {
        fixture
            .runtime
            .block_on(fixture.sandbox.run(plugin, invocation(input)))
            .expect("plugin answers")
    });
}

#[divan::bench(sample_count = 2000, sample_size = 1)]
fn echo_pooled(bencher: Bencher) {
    run(bencher, &POOLED, &POOLED.echo, r#"{"x":1}"#);
}

#[divan::bench(sample_count = 2000, sample_size = 1)]
fn echo_unpooled(bencher: Bencher) {
    run(bencher, &UNPOOLED, &UNPOOLED.echo, r#"{"x":1}"#);
}

static KEYWORDS_INPUT: LazyLock<String> =
    LazyLock::new(|| serde_json::json!({ "text": PARAGRAPH, "top": 5 }).to_string());

#[divan::bench(sample_count = 2000, sample_size = 1)]
fn keywords_pooled(bencher: Bencher) {
    run(bencher, &POOLED, &POOLED.keywords, KEYWORDS_INPUT.as_str());
}
