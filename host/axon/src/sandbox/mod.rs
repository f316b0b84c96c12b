//! The sandbox: wasmtime set up once with this project's policy, and one
//! fresh Store per request.
//!
//! - Once per process: the [`Engine`] (pooling allocator, copy-on-write memory
//!   images, epoch interruption driven by one ticker thread) and the
//!   [`Linker`] (WASI p2 built to deny, plus the contract's imports), with a
//!   second one that adds `wasi:nn` when inference is configured.
//! - Once per plugin version ([`Sandbox::grant`], [`Sandbox::prepare`]): the
//!   models its manifest pins, the compiled component and its
//!   `InstancePre`, limits resolved against the host's maxima.
//! - Per request ([`Sandbox::run`]): a new Store with its own WASI context,
//!   memory limiter and captured stdio; instantiate, call, drop. A Store is
//!   never reused, so nothing leaks from one request into the next.
//!
//! Concurrency is bounded three times: a host-wide semaphore sized to the
//! pool, one per plugin name shared by all its versions (so cycling versions
//! cannot multiply a plugin's share), and one per version (its manifest's
//! own limit). All are tried, not awaited: overload is an immediate, clean
//! [`RunError::Overloaded`].

mod bindings;
mod cache;
mod capture;
mod limits;
mod state;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use plugin_store::{Digest, INFERENCE, PluginManifest, Trust};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use wasmtime::component::{Component, Linker, ResourceTableError};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};

pub use limits::{LimitPolicy, Limits};
pub use state::LogLimits;

use crate::inference::{Grant, Inference, InferenceConfig, ModelFile, ModelsToLoad, Outcome};
use bindings::{ReasonRequest, ReasoningError, ReasoningPluginPre};
use cache::ArtifactCache;
use capture::Capture;
use service_kit::reply;
use state::{RequestIdentity, RequestState};

/// Dirty linear memory reset by copying per slot (only with `PAGEMAP_SCAN`,
/// Linux 6.7+, which finds the dirty pages); the rest is decommitted.
const KEEP_RESIDENT_MEMORY: usize = 4 << 20;
/// The same for tables.
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// How the sandbox is built. The defaults suit a small server.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Instances that may run at once, host-wide; sizes the pooling allocator
    /// and the host semaphore. Default 256.
    pub pool_size: u32,
    /// Use the pooling allocator (default). Off only to measure its benefit.
    pub pooling: bool,
    /// Wasm stack per instance, in bytes. Default 512 KiB.
    pub max_wasm_stack: usize,
    /// Per-plugin limit defaults and maxima.
    pub limits: LimitPolicy,
    /// Bounds on logging and captured stdio per request.
    pub log_limits: LogLimits,
    /// Where compiled components are cached; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// How often the epoch advances: a running plugin yields to other
    /// requests at least this often. Default 1 ms.
    pub epoch_tick: Duration,
    /// Inference for plugins granted it; `None` (the default) serves none.
    pub inference: Option<InferenceConfig>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            pool_size: 256,
            pooling: true,
            max_wasm_stack: 512 * 1024,
            limits: LimitPolicy::default(),
            log_limits: LogLimits::default(),
            cache_dir: None,
            epoch_tick: Duration::from_millis(1),
            inference: None,
        }
    }
}

/// Why a plugin cannot be made ready to run. Permanent for a given module.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("the module is not a valid component: {0}")]
    Compile(String),
    #[error("the plugin does not fit this host: {0}")]
    Link(String),
    #[error("{0}")]
    Limits(String),
    #[error("{0}")]
    Capability(String),
}

/// Why one request did not produce an answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    #[error("all {scope} sandbox slots are busy; retry shortly")]
    Overloaded { scope: &'static str },
    /// A model the plugin called was running all the calls it may at once.
    #[error("{0}")]
    ModelBusy(String),
    #[error("the plugin rejected the input: {0}")]
    InvalidInput(String),
    #[error("the plugin could not answer: {0}")]
    Failed(String),
    #[error("the plugin answered with invalid output: {0}")]
    InvalidOutput(String),
    #[error("the plugin ran past its {} ms deadline{}", .deadline.as_millis(), if *.in_inference { " (in an inference call, stopped there)" } else { "" })]
    Timeout {
        deadline: Duration,
        /// Whether an inference call was running then (and was stopped).
        in_inference: bool,
    },
    #[error("the plugin tried to grow its memory (all its memories together) past its {} MiB limit", .limit_bytes >> 20)]
    MemoryLimit { limit_bytes: u64 },
    #[error("the plugin {0}")]
    ResourceLimit(String),
    #[error("the plugin's answer of {size} bytes exceeds its {limit}-byte output limit")]
    OutputLimit { size: usize, limit: usize },
    #[error("the plugin trapped: {0}")]
    Trapped(String),
}

/// One request as the plugin sees it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub correlation_id: Arc<str>,
    pub intent: String,
    /// One JSON value, as text.
    pub input: String,
    /// Sorted by key.
    pub context: Vec<(String, String)>,
}

/// A plugin's answer, checked against its limits.
#[derive(Debug)]
pub struct Answer {
    /// Valid JSON, passed on without re-encoding.
    pub output: Box<RawValue>,
    pub confidence: Option<f64>,
    pub notes: Vec<String>,
    pub stats: RunStats,
}

/// What one request cost.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RunStats {
    /// Everything the sandbox did for the request, in microseconds.
    pub duration_us: u64,
    /// Where that time went, in nanoseconds.
    pub timing_ns: Timing,
    /// Largest linear memory the instance reached, in bytes.
    pub memory_peak_bytes: u64,
    pub log_records: u32,
    pub logs_dropped: u32,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Inference calls the plugin made (through `wasi:nn`).
    pub inference_calls: u32,
}

/// The phases of one request in the sandbox, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Timing {
    /// A new Store: WASI context, limiter, captured stdio.
    pub setup: u64,
    /// Instantiating the component in a pool slot.
    pub instantiate: u64,
    /// The `reason` call: lowering the request, guest work, lifting the answer.
    pub call: u64,
    /// Dropping the Store: returning the slot, resetting its memory.
    pub teardown: u64,
}

/// A plugin version, compiled, linked and limited: ready for requests.
pub struct PreparedPlugin {
    pre: ReasoningPluginPre<RequestState>,
    name: Arc<str>,
    limits: Limits,
    config: Arc<[(String, String)]>,
    random_seed: u64,
    /// This version's own limit.
    version_slots: Semaphore,
    /// Shared by every prepared version of the plugin.
    plugin_slots: Arc<PluginSlots>,
    /// The models it may use, if granted inference.
    grant: Option<Grant>,
}

/// Instances of one plugin at once, whatever the version: as many as the
/// largest limit among its prepared versions.
struct PluginSlots {
    slots: Semaphore,
    size: Mutex<u32>,
}

impl PreparedPlugin {
    /// The limits every request of this plugin runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Why one of the models it was granted no longer verifies under
    /// `trust` at `now` (its key revoked, expired or no longer allowed for
    /// the model's name), if one does not.
    pub fn untrusted_model(&self, trust: &Trust, now: std::time::SystemTime) -> Option<String> {
        self.grant.as_ref()?.untrusted_model(trust, now)
    }
}

/// The wasmtime engine and linker with this project's sandbox policy.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<RequestState>,
    /// `linker` plus `wasi:nn`, for plugins granted inference.
    inference_linker: Option<Linker<RequestState>>,
    inference: Option<Inference>,
    cache: Option<ArtifactCache>,
    slots: Semaphore,
    /// Per plugin name; entries die with the last version prepared.
    plugin_slots: Mutex<HashMap<Arc<str>, Weak<PluginSlots>>>,
    pool_size: u32,
    log_limits: LogLimits,
    limits: LimitPolicy,
}

impl Sandbox {
    /// Builds the engine, the linker and the epoch ticker.
    pub fn new(config: &SandboxConfig) -> anyhow::Result<Self> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack)
            .memory_init_cow(true);
        if config.pooling {
            let n = config.pool_size;
            let mut pool = PoolingAllocationConfig::new();
            // Each component may use at most a pool slot's share of core
            // instances, memories and tables (a component that needs more
            // fails to compile, with the reason), so `n` requests always
            // fit, whatever plugins they run.
            pool.total_component_instances(n)
                .max_core_instances_per_component(state::MAX_CORE_INSTANCES)
                .max_memories_per_component(state::MAX_MEMORIES)
                .max_tables_per_component(state::MAX_TABLES)
                .total_core_instances(n.saturating_mul(state::MAX_CORE_INSTANCES))
                .total_memories(n.saturating_mul(state::MAX_MEMORIES))
                .total_tables(n.saturating_mul(state::MAX_TABLES))
                .total_stacks(n)
                .max_memory_size(config.limits.maxima.memory_bytes as usize);
            if PoolingAllocationConfig::is_pagemap_scan_available() {
                // Reset only the pages a request dirtied, with a copy instead of
                // `madvise`: no syscall per slot, no page faults on reuse.
                pool.pagemap_scan(Enabled::Yes)
                    .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
                    .table_keep_resident(KEEP_RESIDENT_TABLE);
            }
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&wasm)
            .map_err(|e| anyhow::anyhow!("cannot create the wasm engine: {e}"))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link WASI: {e}"))?;
        bindings::ReasoningPlugin::add_to_linker::<_, wasmtime::component::HasSelf<RequestState>>(
            &mut linker,
            |state| state,
        )
        .map_err(|e| anyhow::anyhow!("cannot link the plugin contract: {e}"))?;
        let (inference, inference_linker) = match &config.inference {
            Some(inference) => {
                let mut with_nn = linker.clone();
                wasmtime_wasi_nn::wit::add_to_linker(&mut with_nn, RequestState::nn)
                    .and_then(|()| {
                        // Tensors are host memory: created only within the budget.
                        with_nn.allow_shadowing(true);
                        with_nn
                            .instance(state::NN_TENSOR_INTERFACE)?
                            .func_wrap("[constructor]tensor", state::new_tensor)
                    })
                    .map_err(|e| anyhow::anyhow!("cannot link wasi:nn: {e}"))?;
                with_nn.allow_shadowing(false);
                (Some(Inference::start(inference)?), Some(with_nn))
            }
            None => (None, None),
        };

        let cache = match &config.cache_dir {
            Some(dir) => Some(ArtifactCache::open(dir, &engine).map_err(|e| {
                anyhow::anyhow!("cannot open the compile cache `{}`: {e}", dir.display())
            })?),
            None => None,
        };
        spawn_epoch_ticker(&engine, config.epoch_tick)?;
        Ok(Self {
            engine,
            linker,
            inference_linker,
            inference,
            cache,
            slots: Semaphore::new(config.pool_size as usize),
            plugin_slots: Mutex::default(),
            pool_size: config.pool_size,
            log_limits: config.log_limits,
            limits: config.limits,
        })
    }

    /// Compiles a module, or loads it from the disk cache. CPU-heavy: call it
    /// off the async workers. Returns whether the cache had it.
    pub fn compile(
        &self,
        digest: &Digest,
        module: &[u8],
    ) -> Result<(Component, bool), PrepareError> {
        if let Some(component) = self
            .cache
            .as_ref()
            .and_then(|c| c.load(&self.engine, digest))
        {
            return Ok((component, true));
        }
        let component = Component::new(&self.engine, module)
            .map_err(|e| PrepareError::Compile(format!("{e:#}")))?;
        if let Some(cache) = &self.cache {
            cache.store(digest, &component);
        }
        Ok((component, false))
    }

    /// What loading the models a version's manifest pins takes: the ones
    /// to [`fetch_model`](crate::inference::fetch_model) for
    /// [`grant`](Self::grant), and the ones loaded, held until then.
    pub fn models_to_load(&self, manifest: &PluginManifest) -> ModelsToLoad {
        match (&self.inference, &manifest.inference) {
            (Some(inference), Some(need)) if manifest.capabilities.contains(INFERENCE) => {
                inference.to_load(need)
            }
            _ => ModelsToLoad::default(),
        }
    }

    /// The models a version's manifest pins, loaded (those not loaded yet
    /// from `fetched`) and trusted under `trust`, if it declares inference.
    /// Blocking: call it off the async workers.
    pub fn grant(
        &self,
        manifest: &PluginManifest,
        trust: &Trust,
        to_load: ModelsToLoad,
        fetched: Vec<ModelFile>,
    ) -> Result<Option<Grant>, PrepareError> {
        if !manifest.capabilities.contains(INFERENCE) {
            return Ok(None);
        }
        let need = manifest.inference.as_ref().ok_or_else(|| {
            PrepareError::Capability("it declares `inference` but names no models".into())
        })?;
        let inference = self.inference.as_ref().ok_or_else(|| {
            PrepareError::Capability(
                "it needs the `inference` capability, which this Axon does not serve (start it with `--onnxruntime`)".into(),
            )
        })?;
        inference
            .grant(need, trust, to_load, fetched)
            .map(Some)
            .map_err(PrepareError::Capability)
    }

    /// Links a compiled component and resolves its limits. A component
    /// that imports what its manifest's capabilities do not grant is
    /// refused here, at load, with the capability it lacks.
    pub fn prepare(
        &self,
        manifest: &PluginManifest,
        component: &Component,
        grant: Option<Grant>,
    ) -> Result<PreparedPlugin, PrepareError> {
        let limits = self
            .limits
            .resolve(&manifest.limits)
            .map_err(PrepareError::Limits)?;
        let component_type = component.component_type();
        let imports = component_type.imports(&self.engine).map(|(name, _)| name);
        let undeclared = plugin_store::component::needed_by(imports)
            .into_iter()
            .find(|(capability, _)| !manifest.capabilities.contains(*capability));
        if let Some((capability, import)) = undeclared {
            return Err(PrepareError::Capability(format!(
                "it imports `{import}` but its manifest does not declare the `{capability}` capability"
            )));
        }
        let linker = match (&grant, &self.inference_linker) {
            (Some(_), Some(with_nn)) => with_nn,
            _ => &self.linker,
        };
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| PrepareError::Link(format!("{e:#}")))?;
        let pre = ReasoningPluginPre::new(pre).map_err(|e| {
            PrepareError::Link(format!(
                "it does not export `agent:reasoning/reasoner@1.x`: {e:#}"
            ))
        })?;
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&manifest.digest.as_bytes()[..8]);
        Ok(PreparedPlugin {
            pre,
            name: manifest.name.as_str().into(),
            limits,
            config: manifest
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            random_seed: u64::from_le_bytes(seed),
            version_slots: Semaphore::new(limits.max_concurrency as usize),
            plugin_slots: self.plugin_slots(manifest.name.as_str(), limits.max_concurrency),
            grant,
        })
    }

    /// The slots `name` shares across its versions, grown to `size` if a
    /// version asks for more than the others did.
    fn plugin_slots(&self, name: &str, size: u32) -> Arc<PluginSlots> {
        let mut by_name = self
            .plugin_slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = by_name.get(name).and_then(Weak::upgrade) {
            let mut current = shared.size.lock().unwrap_or_else(PoisonError::into_inner);
            if size > *current {
                shared.slots.add_permits((size - *current) as usize);
                *current = size;
            }
            drop(current);
            return shared;
        }
        by_name.retain(|_, slots| slots.strong_count() > 0);
        let shared = Arc::new(PluginSlots {
            slots: Semaphore::new(size as usize),
            size: Mutex::new(size),
        });
        by_name.insert(name.into(), Arc::downgrade(&shared));
        shared
    }

    /// Where this Axon runs models: its pool.
    pub fn accelerator(&self) -> crate::inference::Accelerator {
        self.inference
            .as_ref()
            .map_or_else(Default::default, Inference::accelerator)
    }

    /// Unloads the models no loaded version holds, where inference is on.
    pub fn unload_unused_models(&self) {
        if let Some(inference) = &self.inference {
            inference.unload_unused();
        }
    }

    /// Each model's calls and runs, where inference is on.
    pub fn inference_metrics(&self) -> Option<&crate::inference::InferenceMetrics> {
        self.inference.as_ref().map(Inference::metrics)
    }

    /// Instances running now, host-wide.
    pub fn in_flight(&self) -> usize {
        (self.pool_size as usize).saturating_sub(self.slots.available_permits())
    }

    /// Runs one request in a fresh instance of `plugin`.
    pub async fn run(
        &self,
        plugin: &PreparedPlugin,
        invocation: Invocation,
    ) -> Result<Answer, RunError> {
        let _version_slot = plugin
            .version_slots
            .try_acquire()
            .map_err(|_| RunError::Overloaded { scope: "plugin" })?;
        let _plugin_slot = plugin
            .plugin_slots
            .slots
            .try_acquire()
            .map_err(|_| RunError::Overloaded { scope: "plugin" })?;
        let _host_slot = self
            .slots
            .try_acquire()
            .map_err(|_| RunError::Overloaded { scope: "host" })?;

        let started = Instant::now();
        let stdout = Capture::new(self.log_limits.max_stdio_bytes);
        let stderr = Capture::new(self.log_limits.max_stdio_bytes);
        let identity = RequestIdentity {
            plugin: plugin.name.clone(),
            correlation_id: invocation.correlation_id.clone(),
        };
        let mut state = RequestState::new(
            identity,
            plugin.config.clone(),
            plugin.random_seed,
            plugin.limits.memory_bytes,
            self.log_limits,
            stdout.clone(),
            stderr.clone(),
        );
        let budget = plugin.grant.as_ref().map(|grant| {
            let (nn, budget) = grant.for_request(started + plugin.limits.deadline);
            state.nn = Some(nn);
            state.nn_budget = Some(budget.clone());
            budget
        });
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Yield to other requests at every tick; the deadline is the timeout below.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        let request = ReasonRequest {
            correlation_id: invocation.correlation_id.to_string(),
            intent: invocation.intent,
            input: invocation.input,
            context: invocation.context,
        };

        let set_up = Instant::now();
        let mut instantiated = None;
        let outcome = tokio::time::timeout(plugin.limits.deadline, async {
            let instance = plugin.pre.instantiate_async(&mut store).await?;
            instantiated = Some(Instant::now());
            instance
                .agent_reasoning_reasoner()
                .call_reason(&mut store, &request)
                .await
        })
        .await;
        let called = Instant::now();
        let instantiated = instantiated.unwrap_or(called);

        let state = store.data();
        let (memory_peak_bytes, memory_exceeded) = (state.limiter.peak, state.limiter.exceeded);
        let (log_records, logs_dropped) = (state.log_records, state.logs_dropped);
        drop(store);
        let finished = Instant::now();

        let (stdout_text, stdout_bytes) = stdout.contents();
        let (stderr_text, stderr_bytes) = stderr.contents();
        log_stdio(
            &plugin.name,
            &invocation.correlation_id,
            &stdout_text,
            &stderr_text,
        );
        let nanos = |from: Instant, to: Instant| to.duration_since(from).as_nanos() as u64;
        let stats = RunStats {
            duration_us: finished.duration_since(started).as_micros() as u64,
            timing_ns: Timing {
                setup: nanos(started, set_up),
                instantiate: nanos(set_up, instantiated),
                call: nanos(instantiated, called),
                teardown: nanos(called, finished),
            },
            memory_peak_bytes,
            log_records,
            logs_dropped,
            stdout_bytes,
            stderr_bytes,
            inference_calls: budget.as_ref().map_or(0, |b| b.calls()),
        };

        // A bound broken in inference decides, whatever the plugin made of
        // the error it was given.
        match budget.map(|b| b.outcome()) {
            Some(Outcome::LimitBroken(message)) => return Err(RunError::ResourceLimit(message)),
            Some(Outcome::Busy(message)) => return Err(RunError::ModelBusy(message)),
            // Whatever the plugin made of the error: it answered too late.
            Some(Outcome::DeadlinePassed { in_call }) => {
                return Err(RunError::Timeout {
                    deadline: plugin.limits.deadline,
                    in_inference: in_call,
                });
            }
            _ => {}
        }
        match outcome {
            Err(_elapsed) => Err(RunError::Timeout {
                deadline: plugin.limits.deadline,
                in_inference: false,
            }),
            Ok(Err(error)) => Err(classify_trap(&error, memory_exceeded, &plugin.limits)),
            Ok(Ok(Err(ReasoningError::InvalidInput(message)))) => {
                Err(RunError::InvalidInput(reply::bounded_message(message)))
            }
            Ok(Ok(Err(ReasoningError::Failed(message)))) => {
                Err(RunError::Failed(reply::bounded_message(message)))
            }
            Ok(Ok(Ok(response))) => {
                if response.notes.len() > reply::MAX_NOTES {
                    return Err(RunError::InvalidOutput(format!(
                        "{} notes is more than the {} an answer may carry",
                        response.notes.len(),
                        reply::MAX_NOTES
                    )));
                }
                // Output and notes as the reply will carry them.
                let size = response.output.len() + reply::notes_len(&response.notes);
                if size > plugin.limits.output_bytes {
                    return Err(RunError::OutputLimit {
                        size,
                        limit: plugin.limits.output_bytes,
                    });
                }
                let output = RawValue::from_string(response.output)
                    .map_err(|e| RunError::InvalidOutput(format!("output is not JSON: {e}")))?;
                let confidence = match response.confidence {
                    Some(c) if !(0.0..=1.0).contains(&c) => {
                        return Err(RunError::InvalidOutput(format!(
                            "confidence must be between 0 and 1, got {c}"
                        )));
                    }
                    other => other,
                };
                Ok(Answer {
                    output,
                    confidence,
                    notes: response.notes,
                    stats,
                })
            }
        }
    }
}

/// Names what went wrong when a call failed instead of returning.
fn classify_trap(error: &wasmtime::Error, memory_exceeded: bool, limits: &Limits) -> RunError {
    if memory_exceeded {
        // A Rust guest aborts when allocation fails; the cause is the limit.
        return RunError::MemoryLimit {
            limit_bytes: limits.memory_bytes,
        };
    }
    let table_full = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<ResourceTableError>(),
            Some(ResourceTableError::Full)
        )
    });
    if table_full {
        return RunError::ResourceLimit(format!(
            "held more than {} host resources (WASI streams, pollables, descriptors) at once",
            state::MAX_WASI_RESOURCES
        ));
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => {
            RunError::Trapped("stack overflow: the plugin recursed too deeply".into())
        }
        Some(Trap::Interrupt) => RunError::Timeout {
            deadline: limits.deadline,
            in_inference: false,
        },
        Some(Trap::UnreachableCodeReached) => RunError::Trapped(
            "the plugin panicked or aborted (wasm `unreachable`); its stderr is in Axon's log"
                .into(),
        ),
        Some(trap) => RunError::Trapped(trap.to_string()),
        None => RunError::Trapped(reply::bounded_message(format!("{error:#}"))),
    }
}

fn log_stdio(plugin: &str, correlation_id: &str, stdout: &str, stderr: &str) {
    if !stdout.is_empty() {
        let stdout = state::printable(stdout);
        tracing::info!(target: "plugin", plugin, correlation_id, stream = "stdout", "{stdout}");
    }
    if !stderr.is_empty() {
        let stderr = state::printable(stderr);
        tracing::warn!(target: "plugin", plugin, correlation_id, stream = "stderr", "{stderr}");
    }
}

/// Advances the engine's epoch every `tick` on one thread, which ends when the
/// engine is dropped (it holds only a weak reference).
fn spawn_epoch_ticker(engine: &Engine, tick: Duration) -> anyhow::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("axon-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(tick);
            }
        })
        .map(drop)
        .map_err(|e| anyhow::anyhow!("cannot start the epoch ticker: {e}"))
}
