//! What loading a plugin version costs Axon: paid once per version (and
//! again after a restart), never per request.
//!
//! ```text
//! cargo bench -p axon --bench load
//! ```
//!
//! For `keywords` (a Rust plugin, about 210 KiB) and `contacts` (a Python
//! plugin built with componentize-py, about 18 MiB; the bench builds it, so
//! it needs `componentize-py`: run `./scripts/test.sh` once, then
//! `AGENT_RUNTIME_PYTHON=.venv/bin/python cargo bench ...`), side by side:
//!
//! - compile alone: `Sandbox::compile` with no disk cache;
//! - first load: `PluginHost::get` on a fresh host, the whole path (registry
//!   entry, manifest verification, fetch with the digest check, compile,
//!   link);
//! - first load from the sealed disk cache (a restarted Axon);
//! - manifest verification alone (ed25519 over the DSSE envelope, the trust
//!   list's checks);
//!
//! and the ratio of the first load to compiling alone. Medians of a few
//! runs; the machine is shared, so read the ratios, not the times.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark fails loudly

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axon::metrics::AxonMetrics;
use axon::plugins::PluginHost;
use axon::sandbox::{Sandbox, SandboxConfig};
use plugin_store::{PluginManifest, PluginSource, PublishSpec, Watcher, verify_entry};

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort_unstable();
    runs[runs.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

struct Case {
    label: &'static str,
    module: Vec<u8>,
    toml: String,
    runs: usize,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut cases = vec![Case {
        label: "keywords (Rust)",
        module: plugin_artifacts::KEYWORDS.bytes().unwrap(),
        toml: plugin_artifacts::KEYWORDS.manifest_text().unwrap().unwrap(),
        runs: 21,
    }];
    match plugin_artifacts::CONTACTS.bytes() {
        Ok(module) => cases.push(Case {
            label: "contacts (Python)",
            module,
            toml: plugin_artifacts::CONTACTS.manifest_text().unwrap(),
            runs: 3,
        }),
        Err(error) => println!("contacts (Python) left out: {error}\n"),
    }
    runtime.block_on(run(cases));
}

async fn run(cases: Vec<Case>) {
    let dir = tempfile::tempdir().unwrap();
    let source = PluginSource::local(&dir.path().join("plugins"))
        .await
        .unwrap();
    let trust =
        plugin_store::admin::ensure_dev_trust(&dir.path().join("trust"), &**source.registry())
            .await
            .unwrap();
    let mut manifests: Vec<PluginManifest> = Vec::new();
    for case in &cases {
        let spec = PublishSpec::from_toml(&case.toml).unwrap();
        let published = source
            .publish(&case.module, spec, &trust.publisher, "bench")
            .await
            .unwrap();
        manifests.push(published.manifest);
    }
    let watcher = Arc::new(
        Watcher::trusting_root_file(
            source.registry().clone(),
            &dir.path().join("trust/root.pub"),
        )
        .await
        .unwrap(),
    );
    let uncached = Arc::new(Sandbox::new(&SandboxConfig::default()).unwrap());
    let cached = Arc::new(
        Sandbox::new(&SandboxConfig {
            cache_dir: Some(dir.path().join("cache")),
            ..SandboxConfig::default()
        })
        .unwrap(),
    );
    let host = |sandbox: &Arc<Sandbox>| {
        let mut registry = prometheus_client::registry::Registry::default();
        PluginHost::new(
            sandbox.clone(),
            source.clone(),
            watcher.clone(),
            AxonMetrics::register(&mut registry),
        )
    };

    println!(
        "{:<20} {:>10} {:>14} {:>14} {:>10} {:>16} {:>12}",
        "plugin", "size", "compile alone", "first load", "ratio", "from disk cache", "verify"
    );
    for (case, manifest) in cases.iter().zip(&manifests) {
        let (name, version) = (&manifest.name, &manifest.version);
        let compile = median(
            (0..case.runs)
                .map(|_| {
                    let started = Instant::now();
                    uncached.compile(&manifest.digest, &case.module).unwrap();
                    started.elapsed()
                })
                .collect(),
        );
        let mut loads = Vec::new();
        for _ in 0..case.runs {
            let host = host(&uncached);
            let started = Instant::now();
            host.get(name, version, Some(&manifest.digest))
                .await
                .unwrap();
            loads.push(started.elapsed());
        }
        let first_load = median(loads);
        // Warm the disk cache once, then load as a restarted Axon would.
        host(&cached).get(name, version, None).await.unwrap();
        let mut from_disk = Vec::new();
        for _ in 0..case.runs {
            let host = host(&cached);
            let started = Instant::now();
            host.get(name, version, None).await.unwrap();
            from_disk.push(started.elapsed());
        }
        let entry = source.entry(name, version).await.unwrap();
        const VERIFY_RUNS: u32 = 2_000;
        let started = Instant::now();
        for _ in 0..VERIFY_RUNS {
            verify_entry(watcher.trust(), &entry, SystemTime::now()).unwrap();
        }
        let verify = started.elapsed() / VERIFY_RUNS;
        println!(
            "{:<20} {:>7} KiB {:>14} {:>14} {:>9.3}x {:>16} {:>9.1} us",
            case.label,
            case.module.len() / 1024,
            ms(compile),
            ms(first_load),
            first_load.as_secs_f64() / compile.as_secs_f64(),
            ms(median(from_disk)),
            verify.as_secs_f64() * 1e6,
        );
    }
}
