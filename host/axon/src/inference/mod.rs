//! Inference for plugins granted the `inference` capability: host-owned
//! ONNX models run through `wasi:nn` (wasmtime-wasi-nn's interface, Axon's
//! own ONNX backend on `ort`: [`onnx`]), with libonnxruntime loaded at
//! start-up from the path the operator gives (`--onnxruntime`), never
//! downloaded.
//!
//! - A model is published to the plugin store like a plugin (its bytes in
//!   the blob store by digest, its signed manifest in the registry). When a
//!   plugin version that pins it loads, Axon fetches it ([`fetch_model`]),
//!   verifies its manifest under the trust list and its bytes against the
//!   manifest's digest, and loads it once, shared by every plugin version
//!   that pins it. Its signature is checked again each time such a version
//!   loads; a version already loaded keeps it. Once no loaded version (nor
//!   a request, nor a version loading) holds it, it is unloaded
//!   ([`Inference::unload_unused`]).
//! - A plugin sees only the models its signed manifest pins, by name; it
//!   cannot load weights of its own (there is no backend for `load`).
//! - Every call is checked against the model's declared inputs and bounded
//!   ([`guard`]): bytes per call, calls per request, calls at once per model,
//!   and the bytes of tensors a request creates (`sandbox::state::new_tensor`).
//!   A request that breaks a bound fails with its limit code whatever the
//!   plugin does with the error it sees.

mod guard;
mod onnx;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use plugin_store::model::{ModelFormat, ModelManifest};
use plugin_store::{
    Digest, Envelope, GpuNeed, InferenceNeed, PluginName, PluginSource, StoreError, Trust, Version,
};
use wasmtime_wasi_nn::wit::WasiNnCtx;
use wasmtime_wasi_nn::{Graph, GraphRegistry};

pub use guard::{CallBudget, Outcome};
pub use onnx::InferenceMetrics;

/// Where the runtime is, and the bounds on every call.
#[derive(Debug, Clone)]
pub struct InferenceConfig {
    /// libonnxruntime (e.g. from the `onnxruntime` wheel's `capi/`).
    pub onnxruntime: PathBuf,
    pub limits: InferenceLimits,
    /// Where models run: this Axon's pool.
    pub accelerator: Accelerator,
    /// Threads one call may use, shared by every call (0: one per core).
    pub threads: usize,
}

/// Where an Axon runs models, and so which pool it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Accelerator {
    /// The CPU pool.
    #[default]
    Cpu,
    /// The GPU pool: ONNX Runtime's CUDA execution provider (the
    /// `onnxruntime-gpu` wheel's library, and a GPU).
    Cuda,
    /// For testing routing on a machine without a GPU only: announces
    /// itself as the GPU pool, and runs models on the CPU.
    SimulatedCuda,
}

impl Accelerator {
    /// As `/ready` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::SimulatedCuda => "simulated-cuda",
        }
    }

    /// Whether this Axon serves the GPU pool.
    pub fn is_gpu(self) -> bool {
        self != Self::Cpu
    }
}

/// Bounds on inference, per call, per request and per model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InferenceLimits {
    /// Input bytes one call may pass, all tensors together.
    pub max_input_bytes: usize,
    /// Calls one request may make.
    pub max_calls_per_request: u32,
    /// Calls of one model running at once, host-wide (each on a session of
    /// its own, made when first needed, or merged into one batch); more are
    /// refused (503, retry) rather than queued behind a blocked thread.
    pub max_concurrent_per_model: u32,
    /// Rows of a batch that merges calls of different requests, for a
    /// model whose manifest says its rows are independent (1: never merge;
    /// the model's `max_batch` bounds it too).
    pub max_batch_rows: u32,
}

impl Default for InferenceLimits {
    /// 4 MiB per call, 16 calls per request, 4 calls of a model at once,
    /// batches of up to 64 rows.
    fn default() -> Self {
        Self {
            max_input_bytes: 4 << 20,
            max_calls_per_request: 16,
            max_concurrent_per_model: 4,
            max_batch_rows: 64,
        }
    }
}

/// A model loaded and verified: shared by every plugin that pins it.
pub struct LoadedModel {
    pub manifest: ModelManifest,
    /// Its signed manifest, verified again at each grant.
    envelope: Envelope,
    onnx: onnx::OnnxModel,
    /// Calls running now, host-wide.
    in_flight: std::sync::atomic::AtomicU32,
}

/// The runtime, once per process, and the models loaded so far.
pub struct Inference {
    limits: InferenceLimits,
    /// How models run: where, stopped when, merged how.
    runner: onnx::Runner,
    models: Mutex<HashMap<(PluginName, Version), Arc<LoadedModel>>>,
}

impl Inference {
    /// Loads libonnxruntime from `config.onnxruntime`. Fails with what to do
    /// when the file is missing or is not a usable ONNX Runtime.
    pub fn start(config: &InferenceConfig) -> anyhow::Result<Self> {
        let path = &config.onnxruntime;
        if !path.is_file() {
            anyhow::bail!(
                "ONNX Runtime library `{}` does not exist: install the `onnxruntime` wheel (scripts/requirements-test.txt has it) and pass its `capi/libonnxruntime.so.*`",
                path.display()
            );
        }
        let shown = path.display().to_string();
        // `ort` panics when the library does not load or is too old: keep
        // that a start-up error.
        let committed = std::panic::catch_unwind(|| {
            let builder = ort::init_from(shown.clone()).with_name("axon");
            let pool = onnx::thread_pool(config.threads)
                .map_err(|e| anyhow::anyhow!("cannot set up ONNX Runtime's thread pool: {e}"))?;
            builder
                .with_global_thread_pool(pool)
                .commit()
                .map_err(|e| anyhow::anyhow!("cannot start ONNX Runtime from `{shown}`: {e}"))
        })
        .map_err(|_| {
            anyhow::anyhow!(
                "`{shown}` is not a usable ONNX Runtime (version 1.22 or later is needed)"
            )
        })??;
        if !committed {
            // Only where one process runs several (tests, benchmarks).
            tracing::warn!(
                "ONNX Runtime was started already in this process: its first thread settings stay"
            );
        }
        match config.accelerator {
            Accelerator::Cuda => check_cuda(&shown)?,
            Accelerator::SimulatedCuda => tracing::warn!(
                "serving as the GPU pool with models on the CPU (`--accelerator simulated-cuda`): for testing routing only"
            ),
            Accelerator::Cpu => {}
        }
        let deadlines = onnx::Deadlines::start()
            .map_err(|e| anyhow::anyhow!("cannot start the inference deadline thread: {e}"))?;
        Ok(Self {
            limits: config.limits,
            runner: onnx::Runner {
                accelerator: config.accelerator,
                deadlines,
                max_batch_rows: config.limits.max_batch_rows,
                max_sessions: config.limits.max_concurrent_per_model as usize,
                metrics: InferenceMetrics::default(),
            },
            models: Mutex::default(),
        })
    }

    /// Each model's calls and runs, to register for `/metrics`.
    pub fn metrics(&self) -> &InferenceMetrics {
        &self.runner.metrics
    }

    /// Where this Axon runs models.
    pub fn accelerator(&self) -> Accelerator {
        self.runner.accelerator
    }

    /// What loading a version that pins `need`'s models takes: the models
    /// loaded now, held so that [`unload_unused`](Self::unload_unused)
    /// keeps them until [`grant`](Self::grant), and the ones to
    /// [`fetch_model`] first. Nothing where `grant` refuses anyway (a
    /// version that requires a GPU, on the CPU pool).
    pub fn to_load(&self, need: &InferenceNeed) -> ModelsToLoad {
        let mut to_load = ModelsToLoad::default();
        if self.refuses(need).is_some() {
            return to_load;
        }
        let loaded = self.loaded();
        for pin in ModelPin::all(need) {
            match loaded.get(&(pin.name.clone(), pin.version.clone())) {
                Some(model) => to_load.held.push(Arc::clone(model)),
                None => to_load.to_fetch.push(pin),
            }
        }
        to_load
    }

    /// The models `need` pins, each loaded once (from `fetched`, the ones
    /// `to_load` said to fetch) and trusted under `trust`: what one plugin
    /// version may use. Blocking (loads models).
    pub fn grant(
        &self,
        need: &InferenceNeed,
        trust: &Trust,
        to_load: ModelsToLoad,
        fetched: Vec<ModelFile>,
    ) -> Result<Grant, String> {
        if let Some(reason) = self.refuses(need) {
            return Err(reason.into());
        }
        let mut fetched: HashMap<_, _> = fetched
            .into_iter()
            .map(|file| {
                (
                    (file.manifest.name.clone(), file.manifest.version.clone()),
                    file,
                )
            })
            .collect();
        let mut models = HashMap::new();
        for pin in ModelPin::all(need) {
            let file = fetched.remove(&(pin.name.clone(), pin.version.clone()));
            models.insert(pin.name.to_string(), self.model(&pin, file, trust)?);
        }
        // Held until here: each is in `models` now, or the grant failed.
        drop(to_load);
        Ok(Grant {
            models: Arc::new(models),
            limits: self.limits,
        })
    }

    /// Why this Axon refuses `need` whatever its models.
    fn refuses(&self, need: &InferenceNeed) -> Option<&'static str> {
        (need.gpu == GpuNeed::Required && !self.runner.accelerator.is_gpu()).then_some(
            "it requires a GPU, and this Axon is the CPU pool (Orbit routes such plugins to the GPU pool, an Axon started with `--accelerator cuda`)",
        )
    }

    fn model(
        &self,
        pin: &ModelPin,
        fetched: Option<ModelFile>,
        trust: &Trust,
    ) -> Result<Arc<LoadedModel>, String> {
        let (name, version) = (&pin.name, &pin.version);
        let key = (name.clone(), version.clone());
        let cached = self.loaded().get(&key).cloned();
        if let Some(model) = cached {
            // Loaded once, but trusted only as long as its key is, and
            // only for versions that pin its bytes.
            trust
                .verify_model(&model.envelope, name, version, SystemTime::now())
                .map_err(|e| format!("model `{name}@{version}` is not trusted: {e}"))?;
            pin.check(&model.manifest)?;
            return Ok(model);
        }
        // `to_load` held it or said to fetch it.
        let file = fetched
            .ok_or_else(|| format!("model `{name}@{version}` was neither loaded nor fetched"))?;
        let model = Arc::new(load_model(file, &self.runner)?);
        tracing::info!(model = %name, %version, digest = %model.manifest.digest, "model loaded");
        // Another load may have put it there meanwhile: that one, checked.
        let model = self.loaded().entry(key).or_insert(model).clone();
        self.runner.metrics.set_loaded(&model.manifest, true);
        pin.check(&model.manifest)?;
        Ok(model)
    }

    /// Unloads the models no loaded plugin version (and no request or
    /// load under way) holds: so a model's old versions leave memory as
    /// plugin versions move on. A version that pins one of them later
    /// fetches it again.
    pub fn unload_unused(&self) {
        self.loaded().retain(|_, model| {
            // The map's own reference is the only one left.
            let used = Arc::strong_count(model) > 1;
            if !used {
                let manifest = &model.manifest;
                tracing::info!(model = %manifest.name, version = %manifest.version, "model unloaded: no loaded plugin version pins it");
                self.runner.metrics.set_loaded(manifest, false);
            }
            used
        });
    }

    fn loaded(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(PluginName, Version), Arc<LoadedModel>>> {
        self.models.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Fails unless the CUDA execution provider can be set up from `library`,
/// at start-up rather than at the first model's load.
fn check_cuda(library: &str) -> anyhow::Result<()> {
    use ort::execution_providers::{CUDAExecutionProvider, ExecutionProvider};
    let cuda = CUDAExecutionProvider::default();
    if !cuda.is_available().unwrap_or(false) {
        anyhow::bail!(
            "`{library}` has no CUDA execution provider: for `--accelerator cuda`, pass the library of the `onnxruntime-gpu` wheel (`./scripts/up.sh --gpu` sets one up in .venv-gpu)"
        );
    }
    // Before the provider starts: it crashes the process on a machine
    // without the NVIDIA driver.
    if nvidia_gpus() == 0 {
        anyhow::bail!(
            "no NVIDIA GPU on this machine (no /dev/nvidia0): `--accelerator cuda` needs one; to test routing without one, `--accelerator simulated-cuda`"
        );
    }
    let mut builder = ort::session::Session::builder()
        .map_err(|e| anyhow::anyhow!("cannot start an ONNX Runtime session: {e}"))?;
    cuda.register(&mut builder).map_err(|e| {
        anyhow::anyhow!(
            "the CUDA execution provider does not start (are a GPU and the CUDA 12 libraries present?): {e}"
        )
    })?;
    Ok(())
}

/// NVIDIA GPUs the driver exposes (`/dev/nvidia0`, `/dev/nvidia1`, ...).
pub fn nvidia_gpus() -> usize {
    std::fs::read_dir("/dev").map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|entry| {
                entry.file_name().to_str().is_some_and(|name| {
                    name.strip_prefix("nvidia")
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                })
            })
            .count()
    })
}

/// A model a plugin version pins: by name and version, and, in manifests
/// published since models are pinned by digest, by its bytes' digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPin {
    pub name: PluginName,
    pub version: Version,
    pub digest: Option<Digest>,
}

impl ModelPin {
    /// Every model `need` pins.
    fn all(need: &InferenceNeed) -> impl Iterator<Item = ModelPin> + '_ {
        need.models.iter().map(|(name, version)| ModelPin {
            name: name.clone(),
            version: version.clone(),
            digest: need.digests.get(name).copied(),
        })
    }

    /// Refuses a model (verified) whose bytes are not the pinned ones.
    fn check(&self, model: &ModelManifest) -> Result<(), String> {
        match self.digest {
            Some(pinned) if pinned != model.digest => Err(format!(
                "model `{}@{}` is signed as {}, and this plugin version was published against {pinned}: the model's registry record was replaced by another signed one; an operator must restore it",
                self.name, self.version, model.digest
            )),
            _ => Ok(()),
        }
    }
}

/// What loading one plugin version's models takes: see
/// [`Inference::to_load`].
#[derive(Default)]
pub struct ModelsToLoad {
    /// Loaded already: held, so that they stay loaded until the grant.
    held: Vec<Arc<LoadedModel>>,
    /// Not loaded: to [`fetch_model`] and hand to the grant.
    pub to_fetch: Vec<ModelPin>,
}

/// A model fetched from the plugin store and verified: its manifest signed
/// by a key the trust list allows for it, its bytes the manifest's digest.
pub struct ModelFile {
    manifest: ModelManifest,
    envelope: Envelope,
    bytes: Vec<u8>,
}

impl ModelFile {
    /// Its verified manifest.
    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }
}

/// Why [`fetch_model`] failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Not published, not trusted, or its bytes changed: the plugin
    /// versions that pin it cannot load until that is fixed.
    #[error("{0}")]
    Refused(String),
    /// The plugin store failed: try again.
    #[error("{0}")]
    Unavailable(String),
}

/// Fetches model `pin` from `source` and verifies it under `trust` and
/// against the pinned digest, every time: a registry or blob store that was
/// written behind the publisher's back cannot hand Axon other weights.
pub async fn fetch_model(
    source: &PluginSource,
    pin: &ModelPin,
    trust: &Trust,
) -> Result<ModelFile, FetchError> {
    let (name, version) = (&pin.name, &pin.version);
    let unavailable =
        |e: StoreError| FetchError::Unavailable(format!("fetching model `{name}@{version}`: {e}"));
    let record = source
        .model_record(name, version)
        .await
        .map_err(|e| match e {
            e if e.is_not_found() => {
                FetchError::Refused(format!("{e}: publish it with `agentctl model publish`"))
            }
            e => unavailable(e),
        })?;
    let manifest = trust
        .verify_model(&record.envelope, name, version, SystemTime::now())
        .map_err(|e| FetchError::Refused(format!("model `{name}@{version}` is not trusted: {e}")))?
        .manifest;
    if manifest.digest != record.digest {
        return Err(FetchError::Refused(format!(
            "the registry's digest for model `{name}@{version}` differs from its signed manifest: the registry record was altered; an operator must restore it (publishing again cannot)"
        )));
    }
    pin.check(&manifest).map_err(FetchError::Refused)?;
    let bytes = source.model_bytes(&manifest).await.map_err(|e| match e {
        e @ (StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. }) => {
            FetchError::Refused(format!(
                "model `{name}@{version}`: the stored bytes are not the ones its manifest signs ({e}): they were changed or replaced; publish this version again from the original file"
            ))
        }
        e if e.is_not_found() => FetchError::Refused(format!(
            "model `{name}@{version}`: its bytes are missing from the blob store ({e}); publish this version again from the original file"
        )),
        e => unavailable(e),
    })?;
    Ok(ModelFile {
        manifest,
        envelope: record.envelope,
        bytes,
    })
}

/// Loads a fetched (so verified) model into ONNX Runtime.
fn load_model(file: ModelFile, runner: &onnx::Runner) -> Result<LoadedModel, String> {
    let ModelFile {
        manifest,
        envelope,
        bytes,
    } = file;
    let ModelFormat::Onnx = manifest.format;
    let onnx = onnx::OnnxModel::load(&manifest, bytes, runner)?;
    Ok(LoadedModel {
        manifest,
        envelope,
        onnx,
        in_flight: Default::default(),
    })
}

/// The models one plugin version may use, and the bounds on using them.
#[derive(Clone)]
pub struct Grant {
    models: Arc<HashMap<String, Arc<LoadedModel>>>,
    limits: InferenceLimits,
}

impl Grant {
    /// Why one of the granted models no longer verifies under `trust` at
    /// `now`, if one does not: the versions granted it must go.
    pub fn untrusted_model(&self, trust: &Trust, now: SystemTime) -> Option<String> {
        self.models.values().find_map(|model| {
            let (name, version) = (&model.manifest.name, &model.manifest.version);
            let verified = trust.verify_model(&model.envelope, name, version, now);
            verified
                .err()
                .map(|e| format!("model `{name}@{version}` is not trusted: {e}"))
        })
    }

    /// The `wasi:nn` context of one request that must answer by
    /// `deadline`, and the budget it draws on.
    pub fn for_request(&self, deadline: Instant) -> (WasiNnCtx, Arc<CallBudget>) {
        let budget = Arc::new(CallBudget::new(self.limits, deadline));
        let graphs = self
            .models
            .iter()
            .map(|(name, model)| (name.clone(), guard::graph(model.clone(), budget.clone())))
            .collect();
        // No backends: `load` (weights from the plugin) finds none and fails;
        // `load-by-name` finds only the granted models.
        let ctx = WasiNnCtx::new([], GrantedGraphs::new(graphs, budget.clone()).into());
        (ctx, budget)
    }
}

/// Names longer than this are never a model's (those are at most 64 bytes).
const MAX_MODEL_NAME_BYTES: usize = 128;

/// The per-request registry `load-by-name` reads.
struct GrantedGraphs {
    graphs: HashMap<String, Graph>,
    budget: Arc<CallBudget>,
    refused: Graph,
}

impl GrantedGraphs {
    fn new(graphs: HashMap<String, Graph>, budget: Arc<CallBudget>) -> Self {
        Self {
            graphs,
            budget,
            refused: guard::refused_graph(),
        }
    }
}

impl GraphRegistry for GrantedGraphs {
    fn get(&self, name: &str) -> Option<&Graph> {
        if let Some(graph) = self.graphs.get(name) {
            return Some(graph);
        }
        // wasmtime-wasi-nn keeps (and logs) the name of a model not found
        // in an error the plugin holds: a name too long to be a model's
        // breaks a bound instead, and gets a graph that never runs.
        if name.len() > MAX_MODEL_NAME_BYTES {
            self.budget.record(Outcome::LimitBroken(format!(
                "asked for a model by a name of {} bytes; model names are at most {MAX_MODEL_NAME_BYTES}",
                name.len()
            )));
            return Some(&self.refused);
        }
        None
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Graph> {
        self.graphs.get_mut(name)
    }
}

/// An empty context, for a Store that links no models.
pub fn no_models() -> WasiNnCtx {
    let budget = Arc::new(CallBudget::new(InferenceLimits::default(), Instant::now()));
    WasiNnCtx::new([], GrantedGraphs::new(HashMap::new(), budget).into())
}
