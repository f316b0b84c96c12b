//! Axon's ONNX backend on `ort`, in place of wasmtime-wasi-nn's, which runs
//! one model's calls one at a time (one session behind a mutex), builds the
//! call's bookkeeping again for every request and copies each tensor
//! several times on its way in and out. Here:
//!
//! - a model keeps a pool of sessions, one per call running at once, made
//!   as concurrency first needs them and bounded by the model's calls at
//!   once (`--max-inference-concurrency`), so calls of one model run side
//!   by side;
//! - every session draws on one process-wide ONNX Runtime thread pool whose
//!   threads do not spin when idle ([`thread_pool`]), so models loaded do
//!   not each keep a pool of threads taking cores from the plugins;
//! - an input is copied once (its bytes become `f32`s) and an output once;
//! - a call still running at the request's deadline is stopped there
//!   (ONNX Runtime's terminate flag, set by one thread that looks at the
//!   calls running every millisecond: [`Deadlines`]), and one that would
//!   start after it is not started.
//!
//! The guard ([`super::guard`]) has checked every input against the
//! model's signed manifest before a call reaches [`OnnxModel::run`].

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ort::environment::GlobalThreadPoolOptions;
use ort::execution_providers::{
    CPUExecutionProvider, CUDAExecutionProvider, ExecutionProviderDispatch,
};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::run_options::RunOptions;
use ort::session::{Session, SessionInputValue};
use ort::tensor::TensorElementType;
use ort::value::{Tensor as OrtTensor, ValueType};
use plugin_store::model::ModelManifest;
use wasmtime_wasi_nn::Tensor;
use wasmtime_wasi_nn::backend::NamedTensor;
use wasmtime_wasi_nn::wit::TensorType;

use super::Accelerator;

/// The process-wide thread pool every session shares: `threads` threads
/// for one call's parallel work (0: one per core), none spinning when idle.
pub(super) fn thread_pool(threads: usize) -> ort::Result<GlobalThreadPoolOptions> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    GlobalThreadPoolOptions::default()
        .with_intra_threads(threads)?
        // Sessions run their nodes in sequence: no inter-op parallelism.
        .with_inter_threads(1)?
        .with_spin_control(false)
}

/// Why a call failed.
#[derive(Debug)]
pub(super) enum RunFailure {
    /// The request's deadline had passed: the call did not start.
    PastDeadline,
    /// The request's deadline passed during the call, which stopped there.
    StoppedAtDeadline,
    /// ONNX Runtime refused the call or failed.
    Failed(String),
}

/// A model loaded into ONNX Runtime: its sessions, idle ones kept.
pub(super) struct OnnxModel {
    /// `name@version`, for the log.
    label: String,
    /// The model's bytes, for the sessions made later.
    bytes: Vec<u8>,
    accelerator: Accelerator,
    /// Its inputs' names, in the order ONNX Runtime takes them.
    inputs: Vec<String>,
    /// Sessions not running a call now.
    idle: Mutex<Vec<Session>>,
    deadlines: Arc<Deadlines>,
}

impl OnnxModel {
    /// Loads `bytes`, the model `manifest` signs, and makes a first
    /// session: refused if ONNX Runtime cannot, or if the graph's inputs and
    /// outputs are not the manifest's 32-bit float tensors.
    pub(super) fn load(
        manifest: &ModelManifest,
        bytes: Vec<u8>,
        accelerator: Accelerator,
        deadlines: Arc<Deadlines>,
    ) -> Result<Self, String> {
        let label = format!("{}@{}", manifest.name, manifest.version);
        let session = new_session(&bytes, accelerator)
            .map_err(|e| format!("model `{label}` does not load in ONNX Runtime: {e}"))?;
        fits(manifest, &session).map_err(|e| {
            format!("model `{label}`: {e}; correct its model.toml and publish a new version")
        })?;
        let inputs = session.inputs.iter().map(|i| i.name.clone()).collect();
        Ok(Self {
            label,
            bytes,
            accelerator,
            inputs,
            idle: Mutex::new(vec![session]),
            deadlines,
        })
    }

    /// Runs the model on `inputs` (checked by the guard), stopping at
    /// `deadline`. Blocking.
    pub(super) fn run(
        &self,
        inputs: Vec<NamedTensor>,
        deadline: Instant,
    ) -> Result<Vec<NamedTensor>, RunFailure> {
        if Instant::now() >= deadline {
            return Err(RunFailure::PastDeadline);
        }
        let values = self.input_values(inputs)?;
        let mut session = self.take_session()?;
        let outputs = run_until(&mut session, values, deadline, &self.deadlines);
        self.give_back(session);
        outputs
    }

    /// `inputs` as ONNX Runtime values, in the model's order.
    fn input_values(
        &self,
        mut inputs: Vec<NamedTensor>,
    ) -> Result<Vec<(String, SessionInputValue<'static>)>, RunFailure> {
        let mut values = Vec::with_capacity(self.inputs.len());
        for name in &self.inputs {
            let index = inputs
                .iter()
                .position(|input| &input.name == name)
                .ok_or_else(|| RunFailure::Failed(format!("input `{name}` is missing")))?;
            let Tensor {
                dimensions, data, ..
            } = inputs.swap_remove(index).tensor;
            let shape: Vec<i64> = dimensions.into_iter().map(i64::from).collect();
            // wasm is little-endian: the plugin's bytes are its floats.
            let floats: Vec<f32> = data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let tensor = OrtTensor::from_array((shape, floats)).map_err(failed)?;
            values.push((name.clone(), tensor.into()));
        }
        Ok(values)
    }

    /// An idle session, or a new one: the guard's slots bound how many
    /// calls run at once, and so how many sessions there are.
    fn take_session(&self) -> Result<Session, RunFailure> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(session) => Ok(session),
            None => match new_session(&self.bytes, self.accelerator) {
                Ok(session) => {
                    tracing::info!(model = %self.label, "another ONNX Runtime session made, for calls at once");
                    Ok(session)
                }
                Err(e) => {
                    tracing::warn!(model = %self.label, "cannot make another ONNX Runtime session (out of memory? lower --max-inference-concurrency): {e}");
                    Err(failed(e))
                }
            },
        }
    }

    fn give_back(&self, session: Session) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(session);
    }
}

/// Whether `session`'s graph takes and gives the tensors `manifest`
/// declares: the same names, all 32-bit floats.
fn fits(manifest: &ModelManifest, session: &Session) -> Result<(), String> {
    let sides = [
        (
            "inputs",
            &manifest.inputs,
            session
                .inputs
                .iter()
                .map(|i| (&i.name, &i.input_type))
                .collect::<Vec<_>>(),
        ),
        (
            "outputs",
            &manifest.outputs,
            session
                .outputs
                .iter()
                .map(|o| (&o.name, &o.output_type))
                .collect(),
        ),
    ];
    for (side, declared, graph) in sides {
        let names: BTreeSet<&str> = declared.iter().map(|s| s.name.as_str()).collect();
        let found: BTreeSet<&str> = graph.iter().map(|(name, _)| name.as_str()).collect();
        if names != found {
            return Err(format!(
                "its manifest declares {side} {names:?}, and the ONNX graph has {found:?}"
            ));
        }
        for (name, ty) in graph {
            if !matches!(
                ty,
                ValueType::Tensor {
                    ty: TensorElementType::Float32,
                    ..
                }
            ) {
                return Err(format!(
                    "`{name}` of the ONNX graph is {ty}, not a tensor of 32-bit floats (the only kind Axon serves)"
                ));
            }
        }
    }
    Ok(())
}

fn new_session(bytes: &[u8], accelerator: Accelerator) -> ort::Result<Session> {
    let provider: ExecutionProviderDispatch = match accelerator {
        // Fail rather than fall back to the CPU without a word.
        Accelerator::Cuda => CUDAExecutionProvider::default().build().error_on_failure(),
        Accelerator::Cpu | Accelerator::SimulatedCuda => CPUExecutionProvider::default().build(),
    };
    Session::builder()?
        .with_execution_providers([provider])?
        .with_optimization_level(GraphOptimizationLevel::Level3)?
        .commit_from_memory(bytes)
}

/// The calls running now, each with its deadline and the flag that stops
/// it, and one thread that sets the flag of those past their deadline every
/// [`DEADLINE_TICK`]. A call registers in a map under a lock: cheaper than a
/// timer of its own, which cost about 14 us a call (a task spawned on
/// another tokio worker).
#[derive(Default)]
pub(super) struct Deadlines {
    calls: Mutex<HashMap<u64, (Instant, Arc<RunOptions>)>>,
    next: AtomicU64,
}

/// How late after its deadline a call is stopped, at most (plus the time to
/// the model's next node).
const DEADLINE_TICK: Duration = Duration::from_millis(1);

impl Deadlines {
    /// Starts the thread, which ends when the last holder drops it.
    pub(super) fn start() -> std::io::Result<Arc<Self>> {
        let deadlines = Arc::new(Self::default());
        let watched = Arc::downgrade(&deadlines);
        std::thread::Builder::new()
            .name("axon-inference-deadlines".into())
            .spawn(move || {
                while let Some(deadlines) = watched.upgrade() {
                    deadlines.stop_overdue(Instant::now());
                    drop(deadlines);
                    std::thread::sleep(DEADLINE_TICK);
                }
            })?;
        Ok(deadlines)
    }

    fn stop_overdue(&self, now: Instant) {
        let calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        for (deadline, options) in calls.values() {
            if *deadline <= now {
                // A call that has ended already ignores it.
                let _ = options.terminate();
            }
        }
    }

    /// Watches a call until the returned guard drops.
    fn watch(&self, deadline: Instant, options: Arc<RunOptions>) -> Watched<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (deadline, options));
        Watched {
            deadlines: self,
            id,
        }
    }
}

struct Watched<'a> {
    deadlines: &'a Deadlines,
    id: u64,
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        self.deadlines
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// One call on `session`, stopped at `deadline`.
fn run_until(
    session: &mut Session,
    values: Vec<(String, SessionInputValue<'static>)>,
    deadline: Instant,
    deadlines: &Deadlines,
) -> Result<Vec<NamedTensor>, RunFailure> {
    let options = Arc::new(RunOptions::new().map_err(failed)?);
    let watched = deadlines.watch(deadline, options.clone());
    let result = session.run_with_options(values, &options);
    drop(watched);
    let outputs = match result {
        Ok(outputs) => outputs,
        Err(_) if Instant::now() >= deadline => return Err(RunFailure::StoppedAtDeadline),
        Err(e) => return Err(failed(e)),
    };
    outputs
        .iter()
        .map(|(name, value)| {
            let (shape, floats) = value.try_extract_tensor::<f32>().map_err(|e| {
                RunFailure::Failed(format!("output `{name}` is not 32-bit floats: {e}"))
            })?;
            let dimensions = shape
                .iter()
                .map(|&d| u32::try_from(d))
                .collect::<Result<Vec<u32>, _>>()
                .map_err(|_| RunFailure::Failed(format!("output `{name}` has shape {shape}")))?;
            let data = floats.iter().flat_map(|f| f.to_le_bytes()).collect();
            Ok(NamedTensor {
                name: name.to_owned(),
                tensor: Tensor {
                    dimensions,
                    ty: TensorType::Fp32,
                    data,
                },
            })
        })
        .collect()
}

fn failed(error: ort::Error) -> RunFailure {
    RunFailure::Failed(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_artifacts::SUPPORT_INTENT_MODEL;
    use plugin_store::model::ModelSpec;

    fn model() -> OnnxModel {
        let library = plugin_artifacts::onnxruntime_library().unwrap();
        let started = ort::init_from(library.display().to_string())
            .with_global_thread_pool(thread_pool(1).unwrap())
            .commit();
        started.unwrap();
        let bytes = SUPPORT_INTENT_MODEL.bytes().unwrap();
        let spec = ModelSpec::from_toml(&SUPPORT_INTENT_MODEL.spec_text().unwrap()).unwrap();
        let manifest = ModelManifest::new(spec, &bytes, "test".into());
        OnnxModel::load(&manifest, bytes, Accelerator::Cpu, deadlines()).unwrap()
    }

    fn deadlines() -> Arc<Deadlines> {
        Deadlines::start().unwrap()
    }

    fn one_row() -> Vec<NamedTensor> {
        let data = [0.01f32; 1024]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        vec![NamedTensor {
            name: "features".into(),
            tensor: Tensor {
                dimensions: vec![1, 1024],
                ty: TensorType::Fp32,
                data,
            },
        }]
    }

    fn later() -> Instant {
        Instant::now() + std::time::Duration::from_secs(60)
    }

    #[test]
    fn calls_at_once_each_run_on_a_session_of_their_own() {
        let model = model();
        // A call holds the only session: another does not wait for it.
        let held = model.take_session().unwrap();
        let outputs = model.run(one_row(), later()).unwrap();
        assert_eq!(model.idle.lock().unwrap().len(), 1);
        model.give_back(held);
        assert_eq!(model.idle.lock().unwrap().len(), 2);
        // Every output, as `f32` bytes of its shape.
        assert!(!outputs.is_empty());
        for output in &outputs {
            let elements: u32 = output.tensor.dimensions.iter().product();
            assert_eq!(
                output.tensor.data.len(),
                elements as usize * 4,
                "{}",
                output.name
            );
        }
        // And the same call gives the same answer on either session.
        let again = model.run(one_row(), later()).unwrap();
        assert!(
            outputs
                .iter()
                .zip(&again)
                .all(|(a, b)| a.name == b.name && a.tensor == b.tensor)
        );
    }

    #[test]
    fn a_model_unlike_its_manifest_is_refused_at_load() {
        let model = model();
        let session = model.take_session().unwrap();
        let bytes = SUPPORT_INTENT_MODEL.bytes().unwrap();
        let spec = ModelSpec::from_toml(&SUPPORT_INTENT_MODEL.spec_text().unwrap()).unwrap();
        let mut manifest = ModelManifest::new(spec, &bytes, "test".into());
        assert!(fits(&manifest, &session).is_ok());
        manifest.inputs[0].name = "pixels".into();
        let err = fits(&manifest, &session).unwrap_err();
        assert!(
            err.contains(r#"declares inputs {"pixels"}, and the ONNX graph has {"features"}"#),
            "{err}"
        );
        let err = OnnxModel::load(&manifest, bytes, Accelerator::Cpu, deadlines())
            .err()
            .unwrap();
        assert!(err.contains("correct its model.toml"), "{err}");
    }

    #[test]
    fn a_call_after_the_deadline_does_not_start() {
        let model = model();
        let result = model.run(one_row(), Instant::now());
        assert!(matches!(result, Err(RunFailure::PastDeadline)));
    }
}
