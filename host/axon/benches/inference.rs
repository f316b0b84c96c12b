//! Inference inside the sandbox against native ONNX Runtime, on the same
//! model, the same input and the same library, side by side in one run.
//!
//! ```text
//! cargo bench -p axon --bench inference
//! ```
//!
//! Needs the test Python (`./scripts/test.sh` sets up `.venv`; run with
//! `AGENT_RUNTIME_PYTHON=$PWD/.venv/bin/python`): its `onnxruntime` wheel is
//! the library both sides load, and it builds the models.
//!
//! - native: an `ort` session on the model, `run` on a [1, 1024] tensor;
//! - sandbox: a whole `Sandbox::run` of the `inference-abuse` plugin making
//!   one call on the same tensor (a fresh Store, instantiate, the `wasi:nn`
//!   call through Axon's checks, the answer), on a multi-threaded runtime
//!   as Axon serves, run from the benchmark's own thread (`block_on`);
//! - native after a request: native again, each call right after a
//!   sandbox request that does all but the call (what the request's other
//!   work costs the run that follows, in caches);
//! - sandbox on a worker thread: the same, as a task on one of the
//!   runtime's workers, as Axon serves a request (a call that may take
//!   longer than 1 ms runs in `block_in_place` there, which it does not on
//!   the benchmark's thread);
//! - native on a worker thread: the native call the same way, a task
//!   spawned from the benchmark's thread and awaited there, so that the
//!   two sides on a worker pay the same hand-over (printed too: an empty
//!   task's).
//!
//! The sides alternate in blocks of 50 calls, so that drift hits all;
//! the first 10 calls of each block are not counted (caches warm again).
//! Both sides' sessions use the one ONNX Runtime thread pool Axon sets up
//! (threads that sleep when idle), so neither side's threads take the
//! cores from the other's next call. It prints each side's median and p99
//! per call and their ratio, for `bench-medium` (about 8 million
//! multiply-adds) and for the small support-intent model, where the host's
//! fixed cost shows; and where the sandbox's time goes, by phase
//! (`RunStats::timing_ns`), with the call and without it.
//!
//! With `AGENT_RUNTIME_ACCELERATOR=cuda` (scripts/gpu-check.sh, on a machine
//! with a GPU) both sides run on CUDA, and a third, native on the CPU with
//! the same library, alternates with them: it prints GPU against CPU too.
//!
//! Then `bench-medium` under concurrency (1, 4 and 16 requests in flight,
//! through the sandbox: requests per second and latency, with calls run
//! alone and merged into batches; on a GPU, the GPU and the CPU in one
//! run), and native batching (time per row at batch 1 to 64).

#![allow(clippy::expect_used)] // a benchmark fails loudly

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axon::inference::{Accelerator, InferenceConfig, InferenceLimits, fetch_model};
use axon::sandbox::{Invocation, PreparedPlugin, Sandbox, SandboxConfig, Timing};
use clap::ValueEnum as _;
use ort::execution_providers::{CPUExecutionProvider, CUDAExecutionProvider};
use ort::session::Session;
use ort::value::Tensor;
use plugin_artifacts::{BENCH_MEDIUM_MODEL, INFERENCE_ABUSE, SUPPORT_INTENT_MODEL, TrainedModel};
use plugin_store::model::ModelSpec;
use plugin_store::{KeyPair, PluginManifest, PluginSource, PublishSpec, Trust, TrustList, admin};

const WIDTH: usize = 1024;
/// Blocks of calls each side makes, alternating; the first calls of each
/// block are not counted.
const BLOCKS: usize = 10;
const BLOCK: usize = 50;
const WARM_UP: usize = 10;

fn main() {
    let store = tempfile::tempdir().expect("temporary directory");
    let root = KeyPair::generate().expect("root key");
    let publisher = KeyPair::generate().expect("publisher key");
    let trust = Trust::new(root.public());
    let list = TrustList {
        serial: 1,
        issued_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        keys: vec![
            admin::trusted_key(
                &publisher.public(),
                "bench",
                vec!["*".into()],
                Duration::from_secs(3600),
            )
            .expect("trusted key"),
        ],
    };
    trust.install(&list.sign(&root)).expect("trust list");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let source = runtime
        .block_on(PluginSource::local(store.path()))
        .expect("plugin store");
    let library = plugin_artifacts::onnxruntime_library().expect("the onnxruntime wheel");
    let accelerator = std::env::var("AGENT_RUNTIME_ACCELERATOR")
        .map(|name| Accelerator::from_str(&name, true).expect("cpu or cuda"))
        .unwrap_or_default();
    let sandbox = Sandbox::new(&SandboxConfig {
        pool_size: 16,
        inference: Some(InferenceConfig {
            onnxruntime: library.clone(),
            limits: InferenceLimits::default(),
            accelerator,
            threads: threads(),
        }),
        ..SandboxConfig::default()
    })
    .expect("sandbox");
    let sandbox = Arc::new(sandbox);

    println!(
        "inference on {}: sandbox (a whole request, one call) vs native ort `run`, per call",
        accelerator.as_str()
    );
    for model in [BENCH_MEDIUM_MODEL, SUPPORT_INTENT_MODEL] {
        let bytes = publish_model(&runtime, &source, &model, &publisher);
        let plugin = Arc::new(prepare(&runtime, &sandbox, &source, &trust, model.name));
        let mut worker_ns = Vec::new();
        let cuda = accelerator == Accelerator::Cuda;
        let mut native = native_session(&bytes, cuda);
        // Native the same way: the hand-over and the worker, without the sandbox.
        let native_on_worker = Arc::new(Mutex::new(native_session(&bytes, cuda)));
        let (mut native_worker_ns, mut hand_over_ns) = (Vec::new(), Vec::new());
        // On a GPU, native on the CPU too: GPU against CPU in the same run.
        let mut native_cpu = cuda.then(|| native_session(&bytes, false));
        let input = format!(r#"{{"model":"{}","rows":1,"calls":1}}"#, model.name);
        // All of the request but its call.
        let no_call = format!(r#"{{"model":"{}","rows":1,"calls":0}}"#, model.name);
        let values = vec![0.01f32; WIDTH];
        let mut after_ns = Vec::new();
        let (mut phases, mut phases_no_call) = (Phases::default(), Phases::default());

        let (mut native_ns, mut sandbox_ns, mut cpu_ns) = (Vec::new(), Vec::new(), Vec::new());
        // One extra block of each to warm up, not counted.
        for block in 0..=BLOCKS {
            for call in 0..BLOCK {
                let elapsed = native_call(&mut native, &values);
                if block > 0 && call >= WARM_UP {
                    native_ns.push(elapsed);
                }
            }
            for call in 0..BLOCK {
                let Some(native_cpu) = native_cpu.as_mut() else {
                    break;
                };
                let elapsed = native_call(native_cpu, &values);
                if block > 0 && call >= WARM_UP {
                    cpu_ns.push(elapsed);
                }
            }
            for call in 0..BLOCK {
                let started = Instant::now();
                let answer = runtime
                    .block_on(sandbox.run(&plugin, invocation(&input)))
                    .expect("the plugin answers");
                let elapsed = started.elapsed().as_nanos() as u64;
                assert_eq!(answer.stats.inference_calls, 1);
                if block > 0 && call >= WARM_UP {
                    sandbox_ns.push(elapsed);
                    phases.push(answer.stats.timing_ns);
                }
            }
            // Native again, each call right after a request that does all
            // but the call: what the request's other work (a fresh
            // instance, the plugin's memory, the answer) costs the run
            // that follows it, in caches, whoever makes the run.
            for call in 0..BLOCK {
                let answer = runtime
                    .block_on(sandbox.run(&plugin, invocation(&no_call)))
                    .expect("the plugin answers");
                assert_eq!(answer.stats.inference_calls, 0);
                let elapsed = native_call(&mut native, &values);
                if block > 0 && call >= WARM_UP {
                    after_ns.push(elapsed);
                    phases_no_call.push(answer.stats.timing_ns);
                }
            }
            // As Axon serves: the request a task on a worker thread.
            for call in 0..BLOCK {
                let (sandbox, plugin) = (Arc::clone(&sandbox), Arc::clone(&plugin));
                let input = input.clone();
                let started = Instant::now();
                let answer = runtime
                    .block_on(
                        runtime
                            .spawn(async move { sandbox.run(&plugin, invocation(&input)).await }),
                    )
                    .expect("a request task")
                    .expect("the plugin answers");
                let elapsed = started.elapsed().as_nanos() as u64;
                assert_eq!(answer.stats.inference_calls, 1);
                if block > 0 && call >= WARM_UP {
                    worker_ns.push(elapsed);
                }
            }
            for call in 0..BLOCK {
                let (session, values) = (Arc::clone(&native_on_worker), values.clone());
                let started = Instant::now();
                runtime
                    .block_on(runtime.spawn(async move {
                        let mut session = session.lock().expect("the native session");
                        native_call(&mut session, &values)
                    }))
                    .expect("a native task");
                let elapsed = started.elapsed().as_nanos() as u64;
                if block > 0 && call >= WARM_UP {
                    native_worker_ns.push(elapsed);
                }
            }
            // The hand-over alone: a task that does nothing.
            for call in 0..BLOCK {
                let started = Instant::now();
                runtime
                    .block_on(runtime.spawn(async {}))
                    .expect("an empty task");
                let elapsed = started.elapsed().as_nanos() as u64;
                if block > 0 && call >= WARM_UP {
                    hand_over_ns.push(elapsed);
                }
            }
        }
        let (n50, n99) = percentiles(&mut native_ns);
        let (s50, s99) = percentiles(&mut sandbox_ns);
        println!(
            "  {:<15} native p50 {:>8.1} us  p99 {:>8.1} us | sandbox p50 {:>8.1} us  p99 {:>8.1} us | sandbox/native {:.3}x (p50), {:.3}x (p99); {} calls each",
            model.name,
            n50 / 1e3,
            n99 / 1e3,
            s50 / 1e3,
            s99 / 1e3,
            s50 / n50,
            s99 / n99,
            native_ns.len()
        );
        let (a50, a99) = percentiles(&mut after_ns);
        println!(
            "  {:<15} native after a request (all but its call) p50 {:>8.1} us  p99 {:>8.1} us | after/native {:.3}x (p50); sandbox/after {:.3}x (p50)",
            model.name,
            a50 / 1e3,
            a99 / 1e3,
            a50 / n50,
            s50 / a50
        );
        println!(
            "  {:<15} sandbox by phase (p50): {} | without its call: {}",
            model.name,
            phases.medians(),
            phases_no_call.medians()
        );
        let (w50, w99) = percentiles(&mut worker_ns);
        println!(
            "  {:<15} sandbox on a worker thread p50 {:>8.1} us  p99 {:>8.1} us | on a worker/native {:.3}x (p50), {:.3}x (p99)",
            model.name,
            w50 / 1e3,
            w99 / 1e3,
            w50 / n50,
            w99 / n99
        );
        let (nw50, nw99) = percentiles(&mut native_worker_ns);
        let (h50, _) = percentiles(&mut hand_over_ns);
        println!(
            "  {:<15} native on a worker thread p50 {:>8.1} us  p99 {:>8.1} us | on a worker: sandbox/native {:.3}x (p50), {:.3}x (p99); an empty task's hand-over p50 {:.1} us",
            model.name,
            nw50 / 1e3,
            nw99 / 1e3,
            w50 / nw50,
            w99 / nw99,
            h50 / 1e3
        );
        if !cpu_ns.is_empty() {
            let (c50, c99) = percentiles(&mut cpu_ns);
            println!(
                "  {:<15} native on the CPU p50 {:>8.1} us  p99 {:>8.1} us | GPU/CPU native {:.3}x (p50), sandbox on GPU / native on CPU {:.3}x (p50)",
                model.name,
                c50 / 1e3,
                c99 / 1e3,
                n50 / c50,
                s50 / c50
            );
        }
    }
    let mut accelerators = vec![accelerator];
    if accelerator.is_gpu() {
        accelerators.push(Accelerator::Cpu);
    }
    concurrency(&library, &source, &trust, &accelerators);
    batching(&BENCH_MEDIUM_MODEL, accelerator == Accelerator::Cuda);
}

/// Requests in flight at once, each one `bench-medium` call through the
/// sandbox: throughput and latency per request, on each accelerator of the
/// run (on a GPU, the GPU and the CPU), each with calls merged into batches
/// and not (`max_batch_rows` 64 and 1). The sides take turns, a round each,
/// in the other order each round, four rounds (after one to warm up). The runtime has a worker per core,
/// as Axon's does.
fn concurrency(library: &Path, source: &PluginSource, trust: &Trust, accelerators: &[Accelerator]) {
    const IN_FLIGHT: [usize; 3] = [1, 4, 16];
    const REQUESTS: usize = 320;
    const ROUNDS: usize = 4;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    let sides: Vec<_> = accelerators
        .iter()
        .flat_map(|&accelerator| [(accelerator, 1), (accelerator, 64)])
        .map(|(accelerator, max_batch_rows)| {
            let sandbox = Sandbox::new(&SandboxConfig {
                pool_size: 64,
                inference: Some(InferenceConfig {
                    onnxruntime: library.to_owned(),
                    limits: InferenceLimits {
                        // Every request in flight may call at once.
                        max_concurrent_per_model: 16,
                        max_batch_rows,
                        ..InferenceLimits::default()
                    },
                    accelerator,
                    threads: threads(),
                }),
                ..SandboxConfig::default()
            })
            .expect("sandbox");
            let plugin = prepare(&runtime, &sandbox, source, trust, BENCH_MEDIUM_MODEL.name);
            let label = format!(
                "{}, {}",
                accelerator.as_str(),
                if max_batch_rows > 1 {
                    "merged"
                } else {
                    "alone"
                }
            );
            (label, Arc::new(sandbox), Arc::new(plugin))
        })
        .collect();
    let input: Arc<str> = Arc::from(format!(
        r#"{{"model":"{}","rows":1,"calls":1}}"#,
        BENCH_MEDIUM_MODEL.name
    ));
    println!(
        "concurrency: {} through the sandbox, {REQUESTS} requests per round, {ROUNDS} rounds, {workers} worker threads; calls alone or merged into batches",
        BENCH_MEDIUM_MODEL.name
    );
    for in_flight in IN_FLIGHT {
        let mut latencies = vec![Vec::new(); sides.len()];
        let mut rates = vec![Vec::new(); sides.len()];
        // One round more, first, to warm up; not counted.
        for round in 0..=ROUNDS {
            // Each round in the other order (A B, B A, ...), so that no side
            // always follows another.
            let mut order: Vec<usize> = (0..sides.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for side in order {
                let (_, sandbox, plugin) = &sides[side];
                let started = Instant::now();
                let tasks: Vec<_> = (0..in_flight)
                    .map(|_| {
                        let (sandbox, plugin, input) =
                            (Arc::clone(sandbox), Arc::clone(plugin), Arc::clone(&input));
                        runtime.spawn(async move {
                            let mut took = Vec::with_capacity(REQUESTS / in_flight);
                            for _ in 0..REQUESTS / in_flight {
                                let started = Instant::now();
                                let answer = sandbox
                                    .run(&plugin, invocation(&input))
                                    .await
                                    .expect("the plugin answers");
                                assert_eq!(answer.stats.inference_calls, 1);
                                took.push(started.elapsed().as_nanos() as u64);
                            }
                            took
                        })
                    })
                    .collect();
                let took: Vec<u64> = runtime.block_on(async {
                    let mut all = Vec::new();
                    for task in tasks {
                        all.extend(task.await.expect("a request task"));
                    }
                    all
                });
                let rate = took.len() as f64 / started.elapsed().as_secs_f64();
                if round > 0 {
                    latencies[side].extend(took);
                    rates[side].push(rate);
                }
            }
        }
        let mut medians = Vec::new();
        for (side, (label, _, _)) in sides.iter().enumerate() {
            rates[side].sort_by(f64::total_cmp);
            let (p50, p99) = percentiles(&mut latencies[side]);
            // The median round: with an even count, the mean of the middle two.
            let n = rates[side].len();
            let rate = (rates[side][(n - 1) / 2] + rates[side][n / 2]) / 2.0;
            println!(
                "  {in_flight:>2} in flight on {label:<12}: {rate:>8.0} requests/s (median round) | p50 {:>8.1} us  p99 {:>8.1} us",
                p50 / 1e3,
                p99 / 1e3
            );
            medians.push(rate);
        }
        // Sides come in pairs per accelerator: alone, then merged.
        for (pair, accelerator) in medians.chunks(2).zip(accelerators) {
            if let [alone, merged] = pair {
                println!(
                    "  {in_flight:>2} in flight on {}: merged/alone throughput {:.2}x",
                    accelerator.as_str(),
                    merged / alone
                );
            }
        }
        if let [gpu_alone, gpu_merged, cpu_alone, cpu_merged] = medians[..] {
            println!(
                "  {in_flight:>2} in flight: GPU/CPU throughput {:.2}x alone, {:.2}x merged",
                gpu_alone / cpu_alone,
                gpu_merged / cpu_merged
            );
        }
    }
}

/// Whether batching would pay: native time per row of `model` at batch 1,
/// 4, 16 and 64, the sizes alternating in blocks. Batching concurrent
/// requests' calls into one could save at most the difference.
fn batching(model: &TrainedModel, cuda: bool) {
    const BATCHES: [usize; 4] = [1, 4, 16, 64];
    let bytes = model.bytes().expect("the model builds");
    let mut session = native_session(&bytes, cuda);
    let mut per_row: Vec<Vec<u64>> = vec![Vec::new(); BATCHES.len()];
    for block in 0..=BLOCKS {
        for (i, &batch) in BATCHES.iter().enumerate() {
            let values = vec![0.01f32; batch * WIDTH];
            for call in 0..BLOCK / 2 {
                let tensor = Tensor::from_array((vec![batch as i64, WIDTH as i64], values.clone()))
                    .expect("tensor");
                let started = Instant::now();
                let outputs = session.run(ort::inputs![tensor]).expect("native run");
                let elapsed = started.elapsed().as_nanos() as u64;
                drop(outputs);
                if block > 0 && call >= WARM_UP {
                    per_row[i].push(elapsed / batch as u64);
                }
            }
        }
    }
    println!("batching, native: {} per row, by batch size", model.name);
    let (one, _) = percentiles(&mut per_row[0]);
    for (i, batch) in BATCHES.iter().enumerate() {
        let (p50, _) = percentiles(&mut per_row[i]);
        println!(
            "  batch {batch:>2}: p50 {:>8.1} us per row | {:.3}x batch 1",
            p50 / 1e3,
            p50 / one
        );
    }
}

/// Threads per call, as `--inference-threads` says:
/// `$AGENT_RUNTIME_INFERENCE_THREADS`, else 0 (one per core).
fn threads() -> usize {
    std::env::var("AGENT_RUNTIME_INFERENCE_THREADS").map_or(0, |n| n.parse().expect("a number"))
}

/// One native `run` of `session` on a [1, WIDTH] tensor of `values`: how
/// long it took, in nanoseconds.
fn native_call(session: &mut Session, values: &[f32]) -> u64 {
    let tensor = Tensor::from_array((vec![1i64, WIDTH as i64], values.to_vec())).expect("tensor");
    let started = Instant::now();
    let outputs = session.run(ort::inputs![tensor]).expect("native run");
    let elapsed = started.elapsed().as_nanos() as u64;
    drop(outputs);
    elapsed
}

/// A native session on `bytes`, on CUDA (failing if it cannot) or the CPU.
fn native_session(bytes: &[u8], cuda: bool) -> Session {
    let provider = if cuda {
        CUDAExecutionProvider::default().build().error_on_failure()
    } else {
        CPUExecutionProvider::default().build()
    };
    Session::builder()
        .and_then(|b| b.with_execution_providers([provider]))
        .and_then(|b| {
            b.with_optimization_level(ort::session::builder::GraphOptimizationLevel::Level3)
        })
        .and_then(|b| b.commit_from_memory(bytes))
        .expect("native session")
}

/// Builds `model` and publishes it to `source`, signed by `key`; its bytes.
fn publish_model(
    runtime: &tokio::runtime::Runtime,
    source: &PluginSource,
    model: &TrainedModel,
    key: &KeyPair,
) -> Vec<u8> {
    let bytes = model.bytes().expect("the model builds");
    let spec = ModelSpec::from_toml(&model.spec_text().expect("model.toml")).expect("model spec");
    runtime
        .block_on(source.publish_model(&bytes, spec, key, "bench", &|_| {}))
        .expect("model published");
    bytes
}

/// The `inference-abuse` plugin, granted `model` (named after it, so that
/// each model's plugin is its own version), fetched from `source` as Axon
/// fetches it.
fn prepare(
    runtime: &tokio::runtime::Runtime,
    sandbox: &Sandbox,
    source: &PluginSource,
    trust: &Trust,
    model: &str,
) -> PreparedPlugin {
    let module = INFERENCE_ABUSE.bytes().expect("plugin artifact");
    let spec = PublishSpec::from_toml(&format!(
        "name = \"bench-{model}\"\nversion = \"1.0.0\"\ncapabilities = [\"inference\"]\n[inference]\nmodels = {{ {model} = \"1.0.0\" }}\n[limits]\ndeadline_ms = 10000"
    ))
    .expect("spec");
    let world = plugin_store::component::reasoning_world(&module).expect("a reasoning plugin");
    let manifest = PluginManifest::new(spec, &module, world, plugin_store::KeyId::from("bench"));
    let (component, _) = sandbox.compile(&manifest.digest, &module).expect("compile");
    let to_load = sandbox.models_to_load(&manifest);
    let fetched = to_load
        .to_fetch
        .iter()
        .map(|pin| {
            runtime
                .block_on(fetch_model(source, pin, trust))
                .expect("the model fetches")
        })
        .collect();
    let grant = sandbox
        .grant(&manifest, trust, to_load, fetched)
        .expect("the model loads");
    sandbox
        .prepare(&manifest, &component, grant)
        .expect("prepare")
}

fn invocation(input: &str) -> Invocation {
    Invocation {
        correlation_id: Arc::from("bench"),
        intent: "bench".to_owned(),
        input: input.to_owned(),
        context: Vec::new(),
    }
}

/// A request's phases in the sandbox (`RunStats::timing_ns`), each phase's
/// samples apart.
#[derive(Default)]
struct Phases([Vec<u64>; 4]);

impl Phases {
    fn push(&mut self, timing: Timing) {
        let Timing {
            setup,
            instantiate,
            call,
            teardown,
        } = timing;
        for (samples, ns) in self.0.iter_mut().zip([setup, instantiate, call, teardown]) {
            samples.push(ns);
        }
    }

    /// Each phase's median, in microseconds.
    fn medians(&mut self) -> String {
        let [setup, instantiate, call, teardown] =
            self.0.each_mut().map(|s| percentiles(s).0 / 1e3);
        format!(
            "setup {setup:.1}, instantiate {instantiate:.1}, call {call:.1}, teardown {teardown:.1} us"
        )
    }
}

/// The median and the 99th percentile, in nanoseconds.
fn percentiles(samples: &mut [u64]) -> (f64, f64) {
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)] as f64;
    (at(0.50), at(0.99))
}
