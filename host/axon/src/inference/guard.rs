//! The bounds on every inference call: the graph and execution context a
//! plugin holds. Every input is checked against the model's signed
//! manifest, and the call against the request's budget and deadline,
//! before it reaches the backend ([`super::onnx`]).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use wasmtime_wasi_nn::backend::{
    BackendError, BackendExecutionContext, BackendGraph, Id, NamedTensor,
};
use wasmtime_wasi_nn::wit::TensorType;
use wasmtime_wasi_nn::{ExecutionContext, Graph, Tensor};

use super::onnx::RunFailure;
use super::{InferenceLimits, LoadedModel};

/// What one request's inference came to, for the host to report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Outcome {
    /// Every call stayed within its bounds (or none was made).
    #[default]
    WithinBounds,
    /// A call broke a bound: the request fails with the limit code.
    LimitBroken(String),
    /// A model was at its limit of calls at once: retry later.
    Busy(String),
    /// The request's deadline passed: during an inference call, which was
    /// stopped there (`in_call`), or before one, which did not start.
    DeadlinePassed { in_call: bool },
}

/// One request's calls: counted, and the first bound broken remembered.
pub struct CallBudget {
    limits: InferenceLimits,
    /// When the request must have answered: calls stop there.
    deadline: Instant,
    calls: AtomicU32,
    /// Bytes of every tensor the plugin created.
    tensor_bytes: AtomicU64,
    outcome: Mutex<Outcome>,
}

impl CallBudget {
    pub(super) fn new(limits: InferenceLimits, deadline: Instant) -> Self {
        Self {
            limits,
            deadline,
            calls: AtomicU32::new(0),
            tensor_bytes: AtomicU64::new(0),
            outcome: Mutex::default(),
        }
    }

    /// Calls of `compute` the request made, refused ones included.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::Relaxed)
    }

    /// How the request's inference went.
    pub fn outcome(&self) -> Outcome {
        self.outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Counts a tensor the plugin creates: `rank` dimensions, `bytes` of
    /// data. wasi-nn keeps it in host memory, outside the plugin's memory
    /// limit, until a call takes it or the plugin drops it; so a request
    /// may create no more bytes of tensors (dimensions and a fixed cost per
    /// tensor included) than all its calls could pass, plus
    /// [`TENSOR_BOOKKEEPING_BYTES`], and no tensor of a rank a model could
    /// not take.
    pub fn create_tensor(&self, rank: usize, bytes: usize) -> Result<(), String> {
        let limits = &self.limits;
        if rank > MAX_TENSOR_RANK {
            let message = format!(
                "created a tensor of rank {rank}; tensors have at most {MAX_TENSOR_RANK} dimensions"
            );
            self.record(Outcome::LimitBroken(message.clone()));
            return Err(message);
        }
        let allowed = (limits.max_input_bytes as u64)
            .saturating_mul(u64::from(limits.max_calls_per_request))
            .saturating_add(TENSOR_BOOKKEEPING_BYTES);
        let counted = (bytes as u64).saturating_add(4 * rank as u64 + TENSOR_OVERHEAD_BYTES);
        let total = self
            .tensor_bytes
            .fetch_add(counted, Ordering::Relaxed)
            .saturating_add(counted);
        if total <= allowed {
            return Ok(());
        }
        let message = format!(
            "created {total} bytes of inference tensors in one request; the limit is {allowed} ({} calls of {} bytes, and 64 KiB)",
            limits.max_calls_per_request, limits.max_input_bytes
        );
        self.record(Outcome::LimitBroken(message.clone()));
        Err(message)
    }

    /// Records `outcome` if it is the first problem.
    pub(super) fn record(&self, outcome: Outcome) {
        let mut first = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
        if *first == Outcome::WithinBounds {
            *first = outcome;
        }
    }

    /// Records `outcome` if it is the first problem, and gives the plugin
    /// the same message as an error.
    fn refuse(&self, outcome: Outcome) -> BackendError {
        let message = match &outcome {
            Outcome::LimitBroken(m) | Outcome::Busy(m) => m.clone(),
            Outcome::DeadlinePassed { .. } => "the request's deadline has passed".into(),
            Outcome::WithinBounds => String::new(),
        };
        self.record(outcome);
        error(message)
    }
}

/// Dimensions a tensor may have: more than any model here takes, few enough
/// that a tensor's dimensions (and the messages that show them) stay small.
pub const MAX_TENSOR_RANK: usize = 8;
/// What a tensor costs besides its data and dimensions, counted against the
/// budget, so that a flood of empty tensors is bounded too.
const TENSOR_OVERHEAD_BYTES: u64 = 64;
/// Room in the budget for the dimensions and fixed costs of the tensors a
/// request that uses every byte of every call needs.
pub const TENSOR_BOOKKEEPING_BYTES: u64 = 64 * 1024;

fn error(message: String) -> BackendError {
    BackendError::BackendAccess(wasmtime::format_err!("{message}"))
}

/// An input that does not fit the model. wasmtime-wasi-nn gives the plugin
/// only an error's outer message, and this variant's carries ours.
fn unfit(message: String) -> BackendError {
    BackendError::UnsupportedTensorType(message)
}

/// `id` as a plugin wrote it.
fn shown(id: &Id) -> String {
    match id {
        Id::Name(name) => format!("`{name}`"),
        Id::Index(index) => format!("#{index}"),
    }
}

/// A graph that never runs: what a plugin gets when it asks for a model by
/// a name too long to be one (the request has already broken a bound).
pub(super) fn refused_graph() -> Graph {
    let refused: Box<dyn BackendGraph> = Box::new(RefusedGraph);
    Graph::from(refused)
}

struct RefusedGraph;

impl BackendGraph for RefusedGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        Err(error("no model has such a name".into()))
    }
}

/// `model`'s graph, as one request may use it.
pub(super) fn graph(model: Arc<LoadedModel>, budget: Arc<CallBudget>) -> Graph {
    let guarded: Box<dyn BackendGraph> = Box::new(GuardedGraph { model, budget });
    Graph::from(guarded)
}

struct GuardedGraph {
    model: Arc<LoadedModel>,
    budget: Arc<CallBudget>,
}

impl BackendGraph for GuardedGraph {
    fn init_execution_context(&self) -> Result<ExecutionContext, BackendError> {
        let guarded: Box<dyn BackendExecutionContext> = Box::new(GuardedContext {
            model: self.model.clone(),
            budget: self.budget.clone(),
        });
        Ok(ExecutionContext::from(guarded))
    }
}

struct GuardedContext {
    model: Arc<LoadedModel>,
    budget: Arc<CallBudget>,
}

impl GuardedContext {
    /// Checks one input against the model's manifest and the byte bound.
    fn check(&self, id: &Id, tensor: &Tensor) -> Result<(), BackendError> {
        let manifest = &self.model.manifest;
        let spec = match id {
            Id::Name(name) => manifest.inputs.iter().find(|s| &s.name == name),
            Id::Index(i) => manifest.inputs.get(*i as usize),
        }
        .ok_or_else(|| {
            let names: Vec<&str> = manifest.inputs.iter().map(|s| s.name.as_str()).collect();
            unfit(format!(
                "model `{}` has no input {}; its inputs are {}",
                manifest.name,
                shown(id),
                names.join(", ")
            ))
        })?;
        if tensor.ty != TensorType::Fp32 {
            return Err(unfit(format!(
                "input `{}` of model `{}` takes 32-bit floats, not {:?}",
                spec.name, manifest.name, tensor.ty
            )));
        }
        let shape_error = || {
            unfit(format!(
                "input `{}` of model `{}` has shape {:?} (-1: up to {}); the tensor has {:?}",
                spec.name, manifest.name, spec.shape, manifest.max_batch, tensor.dimensions
            ))
        };
        if spec.shape.len() != tensor.dimensions.len() {
            return Err(shape_error());
        }
        let mut elements: u64 = 1;
        for (&want, &got) in spec.shape.iter().zip(&tensor.dimensions) {
            if want == -1 && got > manifest.max_batch {
                return Err(self.budget.refuse(Outcome::LimitBroken(format!(
                    "passed a batch of {got} to model `{}`, which takes at most {}",
                    manifest.name, manifest.max_batch
                ))));
            }
            if got == 0 || (want != -1 && i64::from(got) != want) {
                return Err(shape_error());
            }
            elements = elements.saturating_mul(u64::from(got));
        }
        if elements.saturating_mul(4) != tensor.data.len() as u64 {
            return Err(unfit(format!(
                "input `{}` has {} bytes; its shape {:?} of 32-bit floats needs {}",
                spec.name,
                tensor.data.len(),
                tensor.dimensions,
                elements.saturating_mul(4)
            )));
        }
        Ok(())
    }

    /// Refuses the call if the request has made its last one: `calls`
    /// counts this one. Checked before anything else, so that calls with
    /// inputs that do not fit count too.
    fn count_call(&self, calls: u32) -> Result<(), BackendError> {
        let limits = &self.budget.limits;
        if calls > limits.max_calls_per_request {
            return Err(self.budget.refuse(Outcome::LimitBroken(format!(
                "made more than {} inference calls in one request",
                limits.max_calls_per_request
            ))));
        }
        Ok(())
    }

    /// Checks the call's input bytes and takes one of the model's slots, or
    /// refuses.
    fn start_call(&self, input_bytes: usize) -> Result<Slot, BackendError> {
        let limits = &self.budget.limits;
        if input_bytes > limits.max_input_bytes {
            return Err(self.budget.refuse(Outcome::LimitBroken(format!(
                "passed {input_bytes} bytes of input to one inference call; the limit is {}",
                limits.max_input_bytes
            ))));
        }
        let in_flight = &self.model.in_flight;
        if in_flight.fetch_add(1, Ordering::AcqRel) >= limits.max_concurrent_per_model {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(self.budget.refuse(Outcome::Busy(format!(
                "model `{}` is running all the {} calls it may run at once (--max-inference-concurrency); retry shortly",
                self.model.manifest.name, limits.max_concurrent_per_model
            ))));
        }
        Ok(Slot(self.model.clone()))
    }
}

/// One of a model's calls at once; given back when dropped.
struct Slot(Arc<LoadedModel>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `set-input`, `compute()` and `get-output` are wasi-nn's older interface,
/// which Axon does not link: a component has only `compute(inputs)`.
fn older_interface() -> BackendError {
    error("this host serves `compute` with named inputs only".into())
}

impl BackendExecutionContext for GuardedContext {
    fn set_input(&mut self, _id: Id, _tensor: &Tensor) -> Result<(), BackendError> {
        Err(older_interface())
    }

    fn compute(
        &mut self,
        inputs: Option<Vec<NamedTensor>>,
    ) -> Result<Option<Vec<NamedTensor>>, BackendError> {
        // Every call counts, refused ones too.
        let calls = self.budget.calls.fetch_add(1, Ordering::Relaxed) + 1;
        self.count_call(calls)?;
        let inputs = inputs.ok_or_else(older_interface)?;
        let mut input_bytes = 0;
        for input in &inputs {
            self.check(&Id::Name(input.name.clone()), &input.tensor)?;
            input_bytes += input.tensor.data.len();
        }
        let _slot = self.start_call(input_bytes)?;
        let model = &self.model.onnx;
        let deadline = self.budget.deadline;
        match model.run(inputs, deadline) {
            Ok(outputs) => Ok(Some(outputs)),
            Err(RunFailure::PastDeadline) => Err(self
                .budget
                .refuse(Outcome::DeadlinePassed { in_call: false })),
            Err(RunFailure::StoppedAtDeadline) => Err(self
                .budget
                .refuse(Outcome::DeadlinePassed { in_call: true })),
            Err(RunFailure::Failed(message)) => Err(error(format!(
                "model `{}` failed: {message}",
                self.model.manifest.name
            ))),
        }
    }

    fn get_output(&mut self, _id: Id) -> Result<Tensor, BackendError> {
        Err(older_interface())
    }
}
