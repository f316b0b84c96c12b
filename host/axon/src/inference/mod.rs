//! Inference for plugins granted the `inference` capability: host-owned
//! ONNX models run through `wasi:nn` (wasmtime-wasi-nn's ONNX backend on
//! `ort`), with libonnxruntime loaded at start-up from the path the operator
//! gives (`--onnxruntime`), never downloaded.
//!
//! - A model is read from the model directory (`<dir>/<name>/<version>/`:
//!   `model.onnx` and `manifest.json`, its signed manifest), verified under
//!   the trust list, digest-checked, loaded once and shared by every plugin
//!   version that pins it. Its signature is checked again each time a
//!   plugin version that pins it loads; a version already loaded keeps it.
//! - A plugin sees only the models its signed manifest pins, by name; it
//!   cannot load weights of its own (there is no backend for `load`).
//! - Every call is checked against the model's declared inputs and bounded
//!   ([`guard`]): bytes per call, calls per request, calls at once per model,
//!   and the bytes of tensors a request creates (`sandbox::state::new_tensor`).
//!   A request that breaks a bound fails with its limit code whatever the
//!   plugin does with the error it sees.

mod guard;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use plugin_store::model::{ModelFormat, ModelManifest, model_files};
use plugin_store::{Digest, Envelope, GpuNeed, InferenceNeed, PluginName, Trust, Version};
use wasmtime_wasi_nn::backend::BackendInner;
use wasmtime_wasi_nn::backend::onnx::OnnxBackend;
use wasmtime_wasi_nn::wit::{ExecutionTarget, WasiNnCtx};
use wasmtime_wasi_nn::{Graph, GraphRegistry};

pub use guard::{CallBudget, Outcome};

/// Where the runtime and the models are, and the bounds on every call.
#[derive(Debug, Clone)]
pub struct InferenceConfig {
    /// libonnxruntime (e.g. from the `onnxruntime` wheel's `capi/`).
    pub onnxruntime: PathBuf,
    /// The model directory: `<name>/<version>/{model.onnx,manifest.json}`.
    pub models_dir: PathBuf,
    pub limits: InferenceLimits,
    /// Where models run: this Axon's pool.
    pub accelerator: Accelerator,
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

    fn target(self) -> ExecutionTarget {
        match self {
            Self::Cuda => ExecutionTarget::Gpu,
            Self::Cpu | Self::SimulatedCuda => ExecutionTarget::Cpu,
        }
    }
}

/// Bounds on inference, per call, per request and per model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InferenceLimits {
    /// Input bytes one call may pass, all tensors together.
    pub max_input_bytes: usize,
    /// Calls one request may make.
    pub max_calls_per_request: u32,
    /// Calls of one model running at once, host-wide; more are refused
    /// (503, retry) rather than queued behind a blocked thread.
    pub max_concurrent_per_model: u32,
}

impl Default for InferenceLimits {
    /// 4 MiB per call, 16 calls per request, 4 calls of a model at once.
    fn default() -> Self {
        Self {
            max_input_bytes: 4 << 20,
            max_calls_per_request: 16,
            max_concurrent_per_model: 4,
        }
    }
}

/// A model loaded and verified: shared by every plugin that pins it.
pub struct LoadedModel {
    pub manifest: ModelManifest,
    /// Its signed manifest, verified again at each grant.
    envelope: Envelope,
    graph: Graph,
    /// Calls running now, host-wide.
    in_flight: std::sync::atomic::AtomicU32,
}

/// The runtime, once per process, and the models loaded so far.
pub struct Inference {
    models_dir: PathBuf,
    limits: InferenceLimits,
    accelerator: Accelerator,
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
        let committed =
            std::panic::catch_unwind(|| ort::init_from(shown.clone()).with_name("axon").commit())
                .map_err(|_| {
                anyhow::anyhow!(
                    "`{shown}` is not a usable ONNX Runtime (version 1.22 or later is needed)"
                )
            })?;
        committed.map_err(|e| anyhow::anyhow!("cannot start ONNX Runtime from `{shown}`: {e}"))?;
        match config.accelerator {
            Accelerator::Cuda => check_cuda(&shown)?,
            Accelerator::SimulatedCuda => tracing::warn!(
                "serving as the GPU pool with models on the CPU (`--accelerator simulated-cuda`): for testing routing only"
            ),
            Accelerator::Cpu => {}
        }
        Ok(Self {
            models_dir: config.models_dir.clone(),
            limits: config.limits,
            accelerator: config.accelerator,
            models: Mutex::default(),
        })
    }

    /// Where this Axon runs models.
    pub fn accelerator(&self) -> Accelerator {
        self.accelerator
    }

    /// The models `need` pins, each loaded once and verified under `trust`:
    /// what one plugin version may use. Blocking (reads and loads models).
    pub fn grant(&self, need: &InferenceNeed, trust: &Trust) -> Result<Grant, String> {
        if need.gpu == GpuNeed::Required && !self.accelerator.is_gpu() {
            return Err(
                "it requires a GPU, and this Axon is the CPU pool (Orbit routes such plugins to the GPU pool, an Axon started with `--accelerator cuda`)".into(),
            );
        }
        let mut models = HashMap::new();
        for (name, version) in &need.models {
            models.insert(name.to_string(), self.model(name, version, trust)?);
        }
        Ok(Grant {
            models: Arc::new(models),
            limits: self.limits,
        })
    }

    fn model(
        &self,
        name: &PluginName,
        version: &Version,
        trust: &Trust,
    ) -> Result<Arc<LoadedModel>, String> {
        let key = (name.clone(), version.clone());
        let cached = self.loaded().get(&key).cloned();
        if let Some(model) = cached {
            // Loaded once, but trusted only as long as its key is.
            trust
                .verify_model(&model.envelope, name, version, SystemTime::now())
                .map_err(|e| format!("model `{name}@{version}` is not trusted: {e}"))?;
            return Ok(model);
        }
        let model = Arc::new(load_model(
            &self.models_dir,
            name,
            version,
            trust,
            self.accelerator,
        )?);
        tracing::info!(model = %name, %version, digest = %model.manifest.digest, "model loaded");
        Ok(self.loaded().entry(key).or_insert(model).clone())
    }

    fn loaded(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(PluginName, Version), Arc<LoadedModel>>> {
        self.models.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Fails unless the CUDA execution provider can be set up from `library`:
/// wasi-nn's backend would otherwise fall back to the CPU without a word.
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

/// Reads, verifies and loads `name@version` from `dir`.
fn load_model(
    dir: &Path,
    name: &PluginName,
    version: &Version,
    trust: &Trust,
    accelerator: Accelerator,
) -> Result<LoadedModel, String> {
    let (model_path, manifest_path) = model_files(dir, name, version);
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| {
            format!(
                "model `{name}@{version}`: cannot read `{}`: {e}",
                path.display()
            )
        })
    };
    let envelope = String::from_utf8(read(&manifest_path)?)
        .map_err(|_| format!("model `{name}@{version}`: manifest.json is not UTF-8"))
        .and_then(|text| {
            Envelope::from_json(&text).map_err(|e| format!("model `{name}@{version}`: {e}"))
        })?;
    let manifest = trust
        .verify_model(&envelope, name, version, SystemTime::now())
        .map_err(|e| format!("model `{name}@{version}` is not trusted: {e}"))?
        .manifest;
    let bytes = read(&model_path)?;
    let digest = Digest::of(&bytes);
    if digest != manifest.digest || bytes.len() as u64 != manifest.size {
        return Err(format!(
            "model `{name}@{version}`: model.onnx has digest {digest} ({} bytes), its signed manifest says {} ({} bytes): the file was changed or replaced",
            bytes.len(),
            manifest.digest,
            manifest.size
        ));
    }
    let ModelFormat::Onnx = manifest.format;
    let graph = OnnxBackend::default()
        .load(&[&bytes], accelerator.target())
        .map_err(|e| format!("model `{name}@{version}` does not load in ONNX Runtime: {e:#}"))?;
    Ok(LoadedModel {
        manifest,
        envelope,
        graph,
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
    /// The `wasi:nn` context of one request, and the budget it draws on.
    pub fn for_request(&self) -> (WasiNnCtx, Arc<CallBudget>) {
        let budget = Arc::new(CallBudget::new(self.limits));
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
    let budget = Arc::new(CallBudget::new(InferenceLimits::default()));
    WasiNnCtx::new([], GrantedGraphs::new(HashMap::new(), budget).into())
}
