//! Axon's ONNX backend on `ort`, in place of wasmtime-wasi-nn's, which runs
//! one model's calls one at a time (one session behind a mutex), builds the
//! call's bookkeeping again for every request and copies each tensor
//! several times on its way in and out. Here:
//!
//! - a model keeps a pool of sessions, one per call running at once, made
//!   as concurrency first needs them (on a thread of their own, waited for
//!   no later than the call's deadline) and bounded by the model's calls
//!   at once (`--max-inference-concurrency`), so calls of one model run
//!   side by side;
//! - every session draws on one process-wide ONNX Runtime thread pool whose
//!   threads do not spin when idle ([`thread_pool`]), so models loaded do
//!   not each keep a pool of threads taking cores from the plugins;
//! - an input is copied once (its bytes become `f32`s) and an output once;
//! - a call still running at the request's deadline is stopped there
//!   (ONNX Runtime's terminate flag, set by one thread that sleeps until
//!   the earliest deadline of the calls running: [`Deadlines`]), and one
//!   that would start after it is not started;
//! - a model whose manifest says its rows are independent runs instead one
//!   batch at a time, on one session, each made of the calls of different
//!   requests that waited meanwhile ([`Batcher`]): a row costs 4 to 5 times
//!   less in a batch of 16 than alone on two cores, 37 times less in a
//!   batch of 64 on a GPU (docs/performance.md).
//!
//! The guard ([`super::guard`]) has checked every input against the
//! model's signed manifest before a call reaches [`OnnxModel::run`].

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
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
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
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
#[derive(Debug, Clone)]
pub(super) enum RunFailure {
    /// The request's deadline had passed: the call did not start.
    PastDeadline,
    /// The request's deadline passed during the call, which stopped there.
    StoppedAtDeadline,
    /// ONNX Runtime refused the call or failed.
    Failed(String),
}

/// How this Axon runs every model.
#[derive(Clone)]
pub(super) struct Runner {
    pub accelerator: Accelerator,
    pub deadlines: Arc<Deadlines>,
    /// Rows one batch of merged calls may have (1: calls are not merged).
    pub max_batch_rows: u32,
    /// Sessions one model may have, made or being made: its calls at once.
    pub max_sessions: usize,
    pub metrics: InferenceMetrics,
}

/// Calls and runs of each model (where calls are merged, runs fall
/// behind), and which models are loaded.
#[derive(Clone, Default)]
pub struct InferenceMetrics {
    calls: Family<ModelLabel, Counter>,
    runs: Family<ModelLabel, Counter>,
    loaded: Family<ModelLabel, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
    version: String,
}

impl ModelLabel {
    fn of(manifest: &ModelManifest) -> Self {
        Self {
            model: manifest.name.to_string(),
            version: manifest.version.to_string(),
        }
    }
}

impl InferenceMetrics {
    /// Registers the series in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "axon_inference_calls",
            "Inference calls that reached a model, by model and version",
            self.calls.clone(),
        );
        registry.register(
            "axon_inference_runs",
            "ONNX Runtime runs, by model and version: fewer than calls where calls are merged into batches",
            self.runs.clone(),
        );
        registry.register(
            "axon_inference_models_loaded",
            "1 while a model version is loaded (in memory), 0 once unloaded",
            self.loaded.clone(),
        );
    }

    /// Shows `manifest`'s model as loaded or not.
    pub(super) fn set_loaded(&self, manifest: &ModelManifest, loaded: bool) {
        self.loaded
            .get_or_create(&ModelLabel::of(manifest))
            .set(i64::from(loaded));
    }
}

/// A model loaded into ONNX Runtime: its sessions, idle ones kept.
pub(super) struct OnnxModel {
    /// `name@version`, for the log.
    label: String,
    /// The model's bytes, for the sessions made later.
    bytes: Arc<[u8]>,
    accelerator: Accelerator,
    /// Its inputs' names, in the order ONNX Runtime takes them.
    inputs: Vec<String>,
    /// Sessions not running a call now.
    sessions: Arc<Sessions>,
    deadlines: Arc<Deadlines>,
    /// Where calls wait to run merged, for a model with independent rows.
    batcher: Option<Batcher>,
    /// How long its last run took, in ns: whether the next can run on the
    /// worker thread ([`INLINE_RUN`]). Unknown at first: `u64::MAX`.
    last_run_ns: AtomicU64,
    /// Calls of the model that got to it.
    calls: Counter,
    /// Its runs (a batch of merged calls is one).
    runs: Counter,
}

impl OnnxModel {
    /// Loads `bytes`, the model `manifest` signs, and makes a first
    /// session: refused if ONNX Runtime cannot, or if the graph's inputs and
    /// outputs are not the manifest's 32-bit float tensors.
    pub(super) fn load(
        manifest: &ModelManifest,
        bytes: Vec<u8>,
        runner: &Runner,
    ) -> Result<Self, String> {
        let label = format!("{}@{}", manifest.name, manifest.version);
        let series = ModelLabel::of(manifest);
        let calls = runner.metrics.calls.get_or_create(&series).clone();
        let runs = runner.metrics.runs.get_or_create(&series).clone();
        let accelerator = runner.accelerator;
        let session = new_session(&bytes, accelerator)
            .map_err(|e| format!("model `{label}` does not load in ONNX Runtime: {e}"))?;
        fits(manifest, &session).map_err(|e| {
            format!("model `{label}`: {e}; correct its model.toml and publish a new version")
        })?;
        let inputs = session.inputs.iter().map(|i| i.name.clone()).collect();
        let max_batch_rows = runner.max_batch_rows.min(manifest.max_batch);
        let batcher = (manifest.independent_rows && max_batch_rows > 1).then(|| Batcher {
            max_rows: u64::from(max_batch_rows),
            queue: Mutex::default(),
        });
        Ok(Self {
            label,
            bytes: bytes.into(),
            accelerator,
            inputs,
            sessions: Sessions::with(session, runner.max_sessions),
            deadlines: runner.deadlines.clone(),
            batcher,
            last_run_ns: AtomicU64::new(u64::MAX),
            calls,
            runs,
        })
    }

    /// Runs the model on `inputs` (checked by the guard), stopping at
    /// `deadline`: alone, or merged with other calls waiting at the same
    /// time. Blocking.
    pub(super) fn run(
        &self,
        inputs: Vec<NamedTensor>,
        deadline: Instant,
    ) -> Result<Vec<NamedTensor>, RunFailure> {
        if Instant::now() >= deadline {
            return Err(RunFailure::PastDeadline);
        }
        let inputs = self.in_order(inputs)?;
        self.calls.inc();
        let at_once = self.runs_at_once();
        match &self.batcher {
            Some(batcher) => {
                let call = || self.run_merged(batcher, Call::new(inputs, deadline));
                if at_once { call() } else { blocking(call) }
            }
            None => {
                // The idle session seen may be taken by another call first:
                // then waiting for one is blocking work too.
                let idle = if at_once {
                    self.sessions.lock().idle.pop()
                } else {
                    None
                };
                let run = |mut session: Counted| {
                    let outputs = self.run_on(&mut session.session, inputs, deadline);
                    self.give_back(session);
                    outputs
                };
                match idle {
                    Some(session) => run(session),
                    None => blocking(|| run(self.take_session(deadline)?)),
                }
            }
        }
    }

    /// Whether a call now would start at once and, by the model's last
    /// run, end within [`INLINE_RUN`]: then it runs on the worker thread
    /// as it is. `block_in_place` (which hands the worker's other tasks to
    /// another thread) cost 5 to 9 us a call on the small example model and
    /// about 300 us on a 1.5 ms one (docs/performance.md).
    fn runs_at_once(&self) -> bool {
        let short = self.last_run_ns.load(Ordering::Relaxed) <= INLINE_RUN.as_nanos() as u64;
        short
            && match &self.batcher {
                Some(batcher) => {
                    let queue = batcher.lock();
                    !queue.running && queue.waiting.is_empty()
                }
                None => !self.sessions.lock().idle.is_empty(),
            }
    }

    /// `inputs` in the model's order, their bytes as `f32`s.
    fn in_order(&self, mut inputs: Vec<NamedTensor>) -> Result<Vec<Input>, RunFailure> {
        let mut ordered = Vec::with_capacity(self.inputs.len());
        for name in &self.inputs {
            let index = inputs
                .iter()
                .position(|input| &input.name == name)
                .ok_or_else(|| RunFailure::Failed(format!("input `{name}` is missing")))?;
            let Tensor {
                dimensions, data, ..
            } = inputs.swap_remove(index).tensor;
            // wasm is little-endian: the plugin's bytes are its floats.
            let floats = data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            ordered.push(Input {
                shape: dimensions.into_iter().map(i64::from).collect(),
                floats,
            });
        }
        Ok(ordered)
    }

    /// One run on `session` of `inputs`, in the model's order.
    fn run_on(
        &self,
        session: &mut Session,
        inputs: Vec<Input>,
        deadline: Instant,
    ) -> Result<Vec<NamedTensor>, RunFailure> {
        let mut values = Vec::with_capacity(inputs.len());
        for (name, input) in self.inputs.iter().zip(inputs) {
            let tensor = OrtTensor::from_array((input.shape, input.floats)).map_err(failed)?;
            values.push((name.clone(), SessionInputValue::from(tensor)));
        }
        self.runs.inc();
        let started = Instant::now();
        let outputs = run_until(session, values, deadline, &self.deadlines);
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_run_ns.store(took, Ordering::Relaxed);
        outputs
    }

    /// Runs `call` in a batch: queues it, and whenever no batch of this
    /// model runs and the next one holds `call`, runs it (with whoever's
    /// other calls it holds); returns when `call` has its answer, or at its
    /// deadline while it still waits. So no thread of Axon's own runs
    /// batches, and a call that finds the model idle runs at once, with no
    /// wait for others to join.
    fn run_merged(&self, batcher: &Batcher, call: Call) -> Result<Vec<NamedTensor>, RunFailure> {
        let (id, deadline, woken) = (call.id, call.deadline, call.woken.clone());
        let mut queue = batcher.lock();
        queue.waiting.push_back(call);
        loop {
            if let Some(answer) = queue.answers.remove(&id) {
                return answer;
            }
            if !queue.running {
                let (batch, expired) =
                    next_batch(&mut queue.waiting, batcher.max_rows, Instant::now());
                for call in expired {
                    queue.answer(&Member::of(&call), Err(RunFailure::PastDeadline));
                }
                if batch.iter().any(|call| call.id == id) {
                    queue = self.lead(batcher, queue, batch);
                    continue;
                }
                // The next batch is another call's to run, on its thread.
                for call in batch.into_iter().rev() {
                    queue.waiting.push_front(call);
                }
                if let Some(next) = queue.waiting.front() {
                    next.woken.notify_one();
                }
                if queue.answers.contains_key(&id) {
                    continue;
                }
            }
            // Queued, it waits no longer than its deadline. In a batch
            // running, it waits for the batch, which stops at a deadline no
            // later than its own.
            let queued = queue.waiting.iter().any(|call| call.id == id);
            let left = deadline.saturating_duration_since(Instant::now());
            if !queued {
                queue = woken.wait(queue).unwrap_or_else(PoisonError::into_inner);
            } else if left.is_zero() {
                queue.waiting.retain(|call| call.id != id);
                return Err(RunFailure::PastDeadline);
            } else {
                let waited = woken.wait_timeout(queue, left);
                queue = waited.unwrap_or_else(PoisonError::into_inner).0;
            }
        }
    }

    /// Runs `batch` while `queue` shows a batch running, and answers its
    /// calls (or queues again, first, those to run again).
    fn lead<'a>(
        &self,
        batcher: &'a Batcher,
        mut queue: MutexGuard<'a, Queue>,
        batch: Vec<Call>,
    ) -> MutexGuard<'a, Queue> {
        let members: Vec<Member> = batch.iter().map(Member::of).collect();
        queue.running = true;
        drop(queue);
        // Whatever happens in the run, every call of the batch gets an
        // answer, and the next batch can start.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_batch(batch)));
        let mut queue = batcher.lock();
        queue.running = false;
        match ran {
            Ok(outcomes) => {
                // Calls to run again go back first, in their order.
                for (member, outcome) in members.iter().zip(outcomes).rev() {
                    match outcome {
                        Outcome::Answer(answer) => queue.answer(member, answer),
                        Outcome::Again(call) => queue.waiting.push_front(call),
                    }
                }
            }
            Err(_) => {
                for member in &members {
                    let failure = RunFailure::Failed("the run panicked (a bug in Axon)".into());
                    queue.answer(member, Err(failure));
                }
            }
        }
        if let Some(next) = queue.waiting.front() {
            next.woken.notify_one();
        }
        queue
    }

    /// One run of `batch`'s calls, their inputs one after the other along
    /// the first dimension, stopped at the first call's deadline: each
    /// call's rows of every output; or, where the run stopped at that
    /// deadline, the calls with time left, to run again.
    fn run_batch(&self, mut batch: Vec<Call>) -> Vec<Outcome> {
        let calls = batch.len();
        let Some(deadline) = batch.first().map(|call| call.deadline) else {
            return Vec::new();
        };
        let all = |failure: RunFailure| {
            (0..calls)
                .map(|_| Outcome::Answer(Err(failure.clone())))
                .collect()
        };
        if Instant::now() >= deadline {
            return past_first_deadline(batch, RunFailure::PastDeadline);
        }
        let inputs = match batch.as_mut_slice() {
            // Alone: its inputs as they are, no copy.
            [call] => std::mem::take(&mut call.inputs),
            _ => merged(&batch),
        };
        let mut session = match self.take_session(deadline) {
            Ok(session) => session,
            Err(RunFailure::PastDeadline) => {
                return past_first_deadline(batch, RunFailure::PastDeadline);
            }
            Err(failure) => return all(failure),
        };
        let outputs = self.run_on(&mut session.session, inputs, deadline);
        self.give_back(session);
        match outputs {
            Ok(outputs) if calls == 1 => vec![Outcome::Answer(Ok(outputs))],
            Ok(outputs) => {
                let rows: Vec<u32> = batch.iter().map(|call| call.rows).collect();
                match split(outputs, &rows) {
                    Ok(answers) => answers
                        .into_iter()
                        .map(|a| Outcome::Answer(Ok(a)))
                        .collect(),
                    Err(message) => all(RunFailure::Failed(format!(
                        "{message}: the model does not give one output row per input row, as its manifest's `independent_rows` says"
                    ))),
                }
            }
            Err(RunFailure::StoppedAtDeadline) => {
                past_first_deadline(batch, RunFailure::StoppedAtDeadline)
            }
            Err(failure) => all(failure),
        }
    }

    /// An idle session, or the first to be given back or made. A call
    /// that finds none starts making one, unless as many are being made as
    /// calls wait (a call that gave up waiting leaves its session to the
    /// next) or the model has `max_sessions` already: so the model is in
    /// memory no more times than it has calls at once. A session is made
    /// on a thread of its own, as it can take long (the weights copied and
    /// optimised, onto the GPU for the GPU pool), and the call waits no
    /// later than `deadline`.
    fn take_session(&self, deadline: Instant) -> Result<Counted, RunFailure> {
        let sessions = &self.sessions;
        let mut state = sessions.lock();
        if let Some(session) = state.idle.pop() {
            return Ok(session);
        }
        // A session that cannot be made fails every call waiting then.
        let failures = state.failures;
        state.waiting += 1;
        let taken = loop {
            // At each wake too: the session made for this call may have
            // gone to a call that came meanwhile, or one been lost.
            if state.making < state.waiting
                && state.made < sessions.max
                && let Err(failure) = self.make_session(&mut state)
            {
                break Err(failure);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(RunFailure::PastDeadline);
            }
            let waited = sessions.changed.wait_timeout(state, left);
            state = waited.unwrap_or_else(PoisonError::into_inner).0;
            if let Some(session) = state.idle.pop() {
                break Ok(session);
            }
            if state.failures != failures {
                break Err(RunFailure::Failed(state.last_failure.clone()));
            }
        };
        state.waiting -= 1;
        taken
    }

    /// Starts making one more session, counted in `state` from now on.
    fn make_session(&self, state: &mut SessionState) -> Result<(), RunFailure> {
        let (maker, bytes) = (self.sessions.clone(), self.bytes.clone());
        let (accelerator, label) = (self.accelerator, self.label.clone());
        let made = std::thread::Builder::new()
            .name("axon-onnx-session".into())
            .spawn(move || {
                // A panic must not leave the session counted as being made.
                let made = std::panic::catch_unwind(|| new_session(&bytes, accelerator));
                let session = made.unwrap_or_else(|_| {
                    Err(ort::Error::new("making the session panicked (a bug)"))
                });
                match &session {
                    Ok(_) => {
                        tracing::info!(model = %label, "another ONNX Runtime session made, for calls at once");
                    }
                    Err(e) => {
                        tracing::warn!(model = %label, "cannot make another ONNX Runtime session (out of memory? lower --max-inference-concurrency): {e}");
                    }
                }
                maker.finish_making(session.map_err(|e| e.to_string()));
            });
        match made {
            Ok(_) => {
                state.made += 1;
                state.making += 1;
                Ok(())
            }
            Err(e) => Err(RunFailure::Failed(format!(
                "cannot start a thread to make a session: {e}"
            ))),
        }
    }

    fn give_back(&self, session: Counted) {
        self.sessions.lock().idle.push(session);
        self.sessions.changed.notify_one();
    }
}

/// A session of a model, counted in the model's `made` for as long as it
/// lives: one lost (dropped by a panic in a run) is no longer counted, so
/// it can be made again.
struct Counted {
    session: Session,
    sessions: Weak<Sessions>,
}

impl Counted {
    fn new(session: Session, sessions: &Arc<Sessions>) -> Self {
        Self {
            session,
            sessions: Arc::downgrade(sessions),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // Held in `idle`, a session is dropped only with the model (then
        // this cannot upgrade); so never under the lock taken here.
        if let Some(sessions) = self.sessions.upgrade() {
            sessions.lock().made -= 1;
            // A call waiting may make one now.
            sessions.changed.notify_all();
        }
    }
}

/// A model's sessions not running a call, and a wake-up for calls waiting
/// for one.
struct Sessions {
    state: Mutex<SessionState>,
    changed: Condvar,
    /// Sessions the model may have, made or being made.
    max: usize,
}

struct SessionState {
    idle: Vec<Counted>,
    /// Sessions made (idle or running a call) and being made.
    made: usize,
    /// Sessions being made.
    making: usize,
    /// Calls waiting for a session.
    waiting: usize,
    /// Sessions that could not be made, and why the last one.
    failures: u64,
    last_failure: String,
}

impl Sessions {
    /// A model's sessions, `first` idle, at most `max` in all.
    fn with(first: Session, max: usize) -> Arc<Self> {
        let sessions = Arc::new(Self {
            state: Mutex::new(SessionState {
                idle: Vec::new(),
                made: 1,
                making: 0,
                waiting: 0,
                failures: 0,
                last_failure: String::new(),
            }),
            changed: Condvar::new(),
            max: max.max(1),
        });
        let first = Counted::new(first, &sessions);
        sessions.lock().idle.push(first);
        sessions
    }

    fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A session being made is made, or could not be: a failure is told
    /// to every call waiting (none of them would get that session).
    fn finish_making(self: &Arc<Self>, made: Result<Session, String>) {
        let mut state = self.lock();
        state.making -= 1;
        match made {
            Ok(session) => {
                state.idle.push(Counted::new(session, self));
                drop(state);
                self.changed.notify_one();
            }
            Err(why) => {
                state.made -= 1;
                state.failures += 1;
                state.last_failure = why;
                drop(state);
                self.changed.notify_all();
            }
        }
    }
}

/// How long a call may be expected to take and still run on the worker
/// thread, rather than in `block_in_place`: what a plugin's wasm holds a
/// worker for between two yields (the epoch tick).
const INLINE_RUN: Duration = Duration::from_millis(1);

/// Runs `work` (native inference, or a wait for it) telling tokio that
/// this worker thread is busy, so that other requests move to another
/// worker meanwhile.
fn blocking<R>(work: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// One input of a call: its shape and its data.
#[derive(Debug, Clone, Default)]
struct Input {
    shape: Vec<i64>,
    floats: Vec<f32>,
}

/// A call of a model with independent rows, waiting to run in a batch.
struct Call {
    id: u64,
    /// Its inputs, in the model's order.
    inputs: Vec<Input>,
    deadline: Instant,
    /// Its rows: the first dimension of its inputs. 0 where its inputs
    /// do not agree on one: such a call runs alone.
    rows: u32,
    /// Its thread's wake-up: for its answer, or to run the next batch.
    woken: Arc<Condvar>,
}

/// Numbers calls, to find each one's answer.
static CALLS: AtomicU64 = AtomicU64::new(0);

impl Call {
    fn new(inputs: Vec<Input>, deadline: Instant) -> Self {
        let first = |input: &Input| input.shape.first().copied();
        let rows = match inputs.first().and_then(first) {
            Some(rows) if inputs.iter().all(|input| first(input) == Some(rows)) => {
                u32::try_from(rows).unwrap_or(0)
            }
            _ => 0,
        };
        Self {
            id: CALLS.fetch_add(1, Ordering::Relaxed),
            inputs,
            deadline,
            rows,
            woken: Arc::default(),
        }
    }

    /// Whether `other` can run in one batch with this call: the same
    /// shapes past the first dimension.
    fn merges_with(&self, other: &Call) -> bool {
        self.rows > 0
            && other.rows > 0
            && self.inputs.len() == other.inputs.len()
            && self
                .inputs
                .iter()
                .zip(&other.inputs)
                .all(|(a, b)| a.shape.get(1..) == b.shape.get(1..))
    }
}

/// A call in the batch running, as its answer finds it.
struct Member {
    id: u64,
    woken: Arc<Condvar>,
}

impl Member {
    fn of(call: &Call) -> Self {
        Self {
            id: call.id,
            woken: call.woken.clone(),
        }
    }
}

/// What became of one call of a batch.
enum Outcome {
    Answer(Result<Vec<NamedTensor>, RunFailure>),
    /// The batch stopped at another call's deadline: this one has time left.
    Again(Call),
}

/// The calls of one model waiting to run merged: one batch runs at a time,
/// and the calls that arrive meanwhile make the next.
struct Batcher {
    /// Rows one batch may have: the model's `max_batch` at most.
    max_rows: u64,
    queue: Mutex<Queue>,
}

impl Batcher {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Call>,
    /// Whether a batch is running now.
    running: bool,
    /// Answers of calls that ran, until their threads take them.
    answers: HashMap<u64, Result<Vec<NamedTensor>, RunFailure>>,
}

impl Queue {
    fn answer(&mut self, member: &Member, answer: Result<Vec<NamedTensor>, RunFailure>) {
        self.answers.insert(member.id, answer);
        member.woken.notify_one();
    }
}

/// Takes from `waiting` the next batch: the first call, and after it, in
/// their order, those that merge with it, have no earlier deadline (the
/// batch stops at the first's) and fit in `max_rows` rows together. Takes
/// out the calls past their deadline too, second.
fn next_batch(waiting: &mut VecDeque<Call>, max_rows: u64, now: Instant) -> (Vec<Call>, Vec<Call>) {
    let (expired, left): (Vec<Call>, Vec<Call>) =
        waiting.drain(..).partition(|call| call.deadline <= now);
    let mut left = left.into_iter();
    let Some(first) = left.next() else {
        return (Vec::new(), expired);
    };
    let mut rows = u64::from(first.rows);
    let mut batch = vec![first];
    for call in left {
        let joins = batch[0].merges_with(&call)
            && call.deadline >= batch[0].deadline
            && rows + u64::from(call.rows) <= max_rows;
        if joins {
            rows += u64::from(call.rows);
            batch.push(call);
        } else {
            waiting.push_back(call);
        }
    }
    (batch, expired)
}

/// What becomes of `batch`'s calls when its first call's deadline has
/// passed (so the batch did not start, or stopped): `failure` for the
/// calls with no time left either, another try for the others.
fn past_first_deadline(batch: Vec<Call>, failure: RunFailure) -> Vec<Outcome> {
    let Some(deadline) = batch.first().map(|call| call.deadline) else {
        return Vec::new();
    };
    batch
        .into_iter()
        .map(|call| {
            if call.deadline <= deadline {
                Outcome::Answer(Err(failure.clone()))
            } else {
                Outcome::Again(call)
            }
        })
        .collect()
}

/// The inputs of `batch`'s calls (which merge), one after the other along
/// the first dimension.
fn merged(batch: &[Call]) -> Vec<Input> {
    let Some(first) = batch.first() else {
        return Vec::new();
    };
    let rows: u32 = batch.iter().map(|call| call.rows).sum();
    (0..first.inputs.len())
        .map(|i| {
            let mut shape = first.inputs[i].shape.clone();
            shape[0] = i64::from(rows);
            let floats = batch
                .iter()
                .flat_map(|call| call.inputs[i].floats.iter().copied())
                .collect();
            Input { shape, floats }
        })
        .collect()
}

/// The outputs of a merged run, split into each call's `rows`.
fn split(outputs: Vec<NamedTensor>, rows: &[u32]) -> Result<Vec<Vec<NamedTensor>>, String> {
    let total: u32 = rows.iter().sum();
    let mut answers: Vec<Vec<NamedTensor>> = rows.iter().map(|_| Vec::new()).collect();
    for output in outputs {
        let Tensor {
            dimensions,
            data,
            ty,
        } = output.tensor;
        if dimensions.first() != Some(&total) {
            return Err(format!(
                "output `{}` has shape {dimensions:?} for {total} rows of input",
                output.name
            ));
        }
        let row_bytes = data.len() / total as usize;
        let mut rest = data.as_slice();
        for (answer, &rows) in answers.iter_mut().zip(rows) {
            let (mine, after) = rest.split_at(rows as usize * row_bytes);
            rest = after;
            let mut shape = dimensions.clone();
            shape[0] = rows;
            answer.push(NamedTensor {
                name: output.name.clone(),
                tensor: Tensor {
                    dimensions: shape,
                    ty,
                    data: mine.to_vec(),
                },
            });
        }
    }
    Ok(answers)
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
/// it, and one thread that sets each flag at its deadline. The thread
/// sleeps until the earliest deadline and is woken only by a call due
/// before that: about once per deadline's length (once a second with the
/// default 1 s), plus once for each call due before the one it waits for,
/// and once more after the last call, at its deadline; where a tick every
/// millisecond woke it a thousand times a second, taking a core from a
/// running call's threads each time. A call registers in a map under a lock: cheaper than
/// a timer of its own, which cost about 14 us a call (a task spawned on
/// another tokio worker).
pub(super) struct Deadlines {
    shared: Arc<Shared>,
}

/// What the thread and the calls share.
struct Shared {
    state: Mutex<WatchList>,
    changed: Condvar,
}

#[derive(Default)]
struct WatchList {
    /// Each call not stopped yet, by its number: its deadline and flag.
    calls: HashMap<u64, (Instant, Arc<RunOptions>)>,
    next: u64,
    /// When the thread wakes next; `None`: when a call comes.
    wakes_at: Option<Instant>,
    /// Times the thread looked at the calls (read by the tests).
    rounds: u64,
    /// The last holder of [`Deadlines`] dropped it: the thread ends.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, WatchList> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The thread: stops each call at its deadline, then sleeps until the
    /// next one, or until a call comes with an earlier one.
    fn run(&self) {
        let mut watching = self.lock();
        while !watching.closed {
            watching.rounds += 1;
            let now = Instant::now();
            let mut earliest: Option<Instant> = None;
            watching.calls.retain(|_, (deadline, options)| {
                if *deadline <= now {
                    // A call that has ended already ignores it.
                    let _ = options.terminate();
                    return false;
                }
                earliest = Some(earliest.map_or(*deadline, |at| at.min(*deadline)));
                true
            });
            watching.wakes_at = earliest;
            watching = match earliest {
                Some(at) => {
                    let waited = self.changed.wait_timeout(watching, at - now);
                    waited.unwrap_or_else(PoisonError::into_inner).0
                }
                None => self
                    .changed
                    .wait(watching)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

impl Deadlines {
    /// Starts the thread, which ends when the last holder drops this.
    pub(super) fn start() -> std::io::Result<Arc<Self>> {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            changed: Condvar::new(),
        });
        let watch = shared.clone();
        std::thread::Builder::new()
            .name("axon-inference-deadlines".into())
            .spawn(move || watch.run())?;
        Ok(Arc::new(Self { shared }))
    }

    /// Watches a call until the returned guard drops.
    fn watch(&self, deadline: Instant, options: Arc<RunOptions>) -> Watched<'_> {
        let mut watching = self.shared.lock();
        let id = watching.next;
        watching.next += 1;
        watching.calls.insert(id, (deadline, options));
        // Wake the thread only if it would sleep past this deadline.
        let wake = watching.wakes_at.is_none_or(|at| deadline < at);
        if wake {
            watching.wakes_at = Some(deadline);
        }
        drop(watching);
        if wake {
            self.shared.changed.notify_one();
        }
        Watched {
            deadlines: self,
            id,
        }
    }
}

impl Drop for Deadlines {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_one();
    }
}

struct Watched<'a> {
    deadlines: &'a Deadlines,
    id: u64,
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        self.deadlines.shared.lock().calls.remove(&self.id);
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
        model_merging(1)
    }

    /// The support-intent model (its rows are independent), merging calls
    /// into batches of up to `max_batch_rows` rows.
    fn model_merging(max_batch_rows: u32) -> OnnxModel {
        load(&SUPPORT_INTENT_MODEL, max_batch_rows)
    }

    /// libonnxruntime, loaded for the process by the first call (later
    /// commits of the environment change nothing).
    fn onnxruntime() {
        let library = plugin_artifacts::onnxruntime_library().unwrap();
        let started = ort::init_from(library.display().to_string())
            .with_global_thread_pool(thread_pool(1).unwrap())
            .commit();
        started.unwrap();
    }

    fn load(model: &plugin_artifacts::TrainedModel, max_batch_rows: u32) -> OnnxModel {
        let manifest = manifest(model);
        assert!(manifest.independent_rows);
        OnnxModel::load(&manifest, model.bytes().unwrap(), &runner(max_batch_rows)).unwrap()
    }

    /// `model`'s manifest, with libonnxruntime loaded.
    fn manifest(model: &plugin_artifacts::TrainedModel) -> ModelManifest {
        onnxruntime();
        let bytes = model.bytes().unwrap();
        let spec = ModelSpec::from_toml(&model.spec_text().unwrap()).unwrap();
        ModelManifest::new(spec, &bytes, "test".into())
    }

    fn runner(max_batch_rows: u32) -> Runner {
        Runner {
            accelerator: Accelerator::Cpu,
            deadlines: deadlines(),
            max_batch_rows,
            max_sessions: 4,
            metrics: InferenceMetrics::default(),
        }
    }

    fn deadlines() -> Arc<Deadlines> {
        Deadlines::start().unwrap()
    }

    fn one_row() -> Vec<NamedTensor> {
        rows(1, 0)
    }

    /// `rows` rows of features, each unlike the others (after `seed`).
    fn rows(rows: u32, seed: u32) -> Vec<NamedTensor> {
        let data = (0..rows * 1024)
            .flat_map(|i| (((i + seed * 1024) % 997) as f32 * 1e-3).to_le_bytes())
            .collect();
        vec![NamedTensor {
            name: "features".into(),
            tensor: Tensor {
                dimensions: vec![rows, 1024],
                ty: TensorType::Fp32,
                data,
            },
        }]
    }

    fn floats(tensor: &Tensor) -> Vec<f32> {
        tensor
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    /// Whether two answers are the same tensors, within rounding (a batch
    /// may take other kernels than a row alone).
    fn same(a: &[NamedTensor], b: &[NamedTensor]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(a, b)| {
                a.name == b.name
                    && a.tensor.dimensions == b.tensor.dimensions
                    && floats(&a.tensor)
                        .iter()
                        .zip(floats(&b.tensor))
                        .all(|(x, y)| (x - y).abs() <= 1e-5)
            })
    }

    #[test]
    fn calls_waiting_at_once_run_as_one_batch_and_each_gets_its_rows() {
        let model = Arc::new(model_merging(64));
        let counts = [1, 2, 1, 3];
        let alone: Vec<_> = (0..4)
            .map(|seed| model.run(rows(counts[seed], seed as u32), later()).unwrap())
            .collect();
        let runs = model.runs.get();
        assert_eq!(runs, 4);
        // As if a batch were running: the four calls wait together.
        let batcher = model.batcher.as_ref().unwrap();
        batcher.lock().running = true;
        let deadline = later();
        let calls: Vec<_> = (0..4)
            .map(|seed| {
                let model = model.clone();
                std::thread::spawn(move || model.run(rows(counts[seed], seed as u32), deadline))
            })
            .collect();
        for _ in 0..10_000 {
            if batcher.lock().waiting.len() == 4 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        {
            let mut queue = batcher.lock();
            assert_eq!(queue.waiting.len(), 4, "the calls did not queue");
            queue.running = false;
            queue.waiting.front().unwrap().woken.notify_one();
        }
        for (seed, call) in calls.into_iter().enumerate() {
            let merged = call.join().unwrap().unwrap();
            assert_eq!(merged[0].tensor.dimensions[0], counts[seed]);
            assert!(same(&merged, &alone[seed]), "call {seed}");
        }
        assert_eq!(model.runs.get(), runs + 1, "one run for four calls");
        assert!(batcher.lock().answers.is_empty());
    }

    fn call(rows: u32, width: i64, deadline: Instant) -> Call {
        let input = Input {
            shape: vec![i64::from(rows), width],
            floats: vec![0.0; rows as usize * width as usize],
        };
        Call::new(vec![input], deadline)
    }

    #[test]
    fn a_batch_takes_the_calls_that_merge_within_its_rows_and_deadline() {
        let now = Instant::now();
        let soon = now + Duration::from_secs(1);
        let later = now + Duration::from_secs(2);
        let sooner = now + Duration::from_millis(500);
        let mut waiting: VecDeque<Call> = [
            call(1, 8, now),    // 0: past its deadline
            call(2, 8, soon),   // 1: first, the batch stops at its deadline
            call(1, 8, sooner), // 2: would stop sooner
            call(1, 4, later),  // 3: another shape
            call(7, 8, later),  // 4: past 8 rows together
            call(3, 8, later),  // 5: joins
            call(3, 8, soon),   // 6: joins, the same deadline
            call(1, 8, later),  // 7: no rows left
        ]
        .into();
        let ids: Vec<u64> = waiting.iter().map(|call| call.id).collect();
        let (batch, expired) = next_batch(&mut waiting, 8, now);
        let taken = |calls: &[Call]| calls.iter().map(|call| call.id).collect::<Vec<_>>();
        assert_eq!(taken(&expired), [ids[0]]);
        assert_eq!(taken(&batch), [ids[1], ids[5], ids[6]]);
        let left: Vec<u64> = waiting.iter().map(|call| call.id).collect();
        assert_eq!(left, [ids[2], ids[3], ids[4], ids[7]]);
        // A call whose inputs disagree on the rows runs alone.
        let odd = Input {
            shape: vec![2, 8],
            floats: vec![0.0; 16],
        };
        let mut waiting: VecDeque<Call> = [
            Call::new(
                vec![
                    odd.clone(),
                    Input {
                        shape: vec![3, 8],
                        ..odd
                    },
                ],
                later,
            ),
            call(1, 8, later),
        ]
        .into();
        let (batch, _) = next_batch(&mut waiting, 8, now);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].rows, 0);
        assert_eq!(waiting.len(), 1);
    }

    #[test]
    fn only_a_short_call_that_starts_at_once_runs_on_the_worker_thread() {
        let merging = model_merging(64);
        assert!(!merging.runs_at_once(), "the first run's length is unknown");
        merging.run(one_row(), later()).unwrap();
        merging.last_run_ns.store(1_000, Ordering::Relaxed);
        assert!(merging.runs_at_once());
        // A batch running: the call would wait.
        merging.batcher.as_ref().unwrap().lock().running = true;
        assert!(!merging.runs_at_once());
        merging.batcher.as_ref().unwrap().lock().running = false;
        merging.last_run_ns.store(2_000_000, Ordering::Relaxed);
        assert!(!merging.runs_at_once(), "a 2 ms run");

        let alone = model();
        alone.last_run_ns.store(1_000, Ordering::Relaxed);
        assert!(alone.runs_at_once());
        // No idle session: the call would make one.
        let held = alone.take_session(later()).unwrap();
        assert!(!alone.runs_at_once());
        alone.give_back(held);
    }

    #[test]
    fn a_call_waiting_past_its_deadline_gives_up_there() {
        let model = Arc::new(model_merging(64));
        let batcher = model.batcher.as_ref().unwrap();
        // As if a batch that never ends were running.
        batcher.lock().running = true;
        let deadline = Instant::now() + Duration::from_millis(50);
        let waiting = {
            let model = model.clone();
            std::thread::spawn(move || model.run(one_row(), deadline))
        };
        let result = waiting.join().unwrap();
        assert!(matches!(result, Err(RunFailure::PastDeadline)));
        let queue = batcher.lock();
        assert!(queue.waiting.is_empty() && queue.answers.is_empty());
    }

    #[test]
    fn a_batch_past_its_first_deadline_runs_the_calls_with_time_left_again() {
        let model = model_merging(64);
        let first = call(1, 1024, Instant::now());
        let other = call(1, 1024, later());
        let other_id = other.id;
        let outcomes = model.run_batch(vec![first, other]);
        assert!(matches!(
            outcomes[0],
            Outcome::Answer(Err(RunFailure::PastDeadline))
        ));
        assert!(matches!(&outcomes[1], Outcome::Again(call) if call.id == other_id));
        assert_eq!(model.runs.get(), 0, "nothing ran");
    }

    #[test]
    fn a_merged_runs_outputs_are_split_into_each_calls_rows() {
        let output = || NamedTensor {
            name: "scores".into(),
            tensor: Tensor {
                dimensions: vec![3, 2],
                ty: TensorType::Fp32,
                data: (0..24).collect(),
            },
        };
        let answers = split(vec![output()], &[1, 2]).unwrap();
        assert_eq!(answers[1][0].tensor.dimensions, [2, 2]);
        assert_eq!(answers[1][0].tensor.data, (8..24).collect::<Vec<u8>>());
        let err = split(vec![output()], &[1, 1]).err().unwrap();
        assert!(err.contains("shape [3, 2] for 2 rows of input"), "{err}");
    }

    fn later() -> Instant {
        Instant::now() + std::time::Duration::from_secs(60)
    }

    #[test]
    fn calls_at_once_each_run_on_a_session_of_their_own() {
        let model = model();
        // A call holds the only session: another does not wait for it.
        let held = model.take_session(later()).unwrap();
        let outputs = model.run(one_row(), later()).unwrap();
        assert_eq!(model.sessions.lock().idle.len(), 1);
        model.give_back(held);
        assert_eq!(model.sessions.lock().idle.len(), 2);
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
    fn a_call_waits_for_a_new_session_no_longer_than_its_deadline() {
        // The medium model: making a session (32 MiB of weights, optimised)
        // takes far longer than the call's millisecond. (Taken here, not
        // through `run`, which does not start a call already past its
        // deadline: on a loaded machine the millisecond can pass first.)
        let model = load(&plugin_artifacts::BENCH_MEDIUM_MODEL, 1);
        let held = model.take_session(later()).unwrap();
        let soon = Instant::now() + Duration::from_millis(1);
        let result = model.take_session(soon);
        assert!(
            matches!(result, Err(RunFailure::PastDeadline)),
            "{:?}",
            result.err()
        );
        // The session made meanwhile is kept for the next call.
        let made = model.take_session(later()).unwrap();
        assert_eq!(model.sessions.lock().made, 2);
        model.give_back(made);
        model.give_back(held);
        assert!(model.run(one_row(), later()).is_ok());
        assert_eq!(model.sessions.lock().idle.len(), 2);
    }

    #[test]
    fn a_session_that_cannot_be_made_fails_every_call_waiting_for_it() {
        let mut model = OnnxModel::load(
            &manifest(&SUPPORT_INTENT_MODEL),
            SUPPORT_INTENT_MODEL.bytes().unwrap(),
            &Runner {
                max_sessions: 2,
                ..runner(1)
            },
        )
        .unwrap();
        // Any session made from now on fails.
        model.bytes = Arc::from(&b"not a model"[..]);
        let held = model.take_session(later()).unwrap();
        // As if a session were being made: the calls wait for it.
        {
            let mut state = model.sessions.lock();
            state.made += 1;
            state.making += 1;
        }
        let model = Arc::new(model);
        let soon = Instant::now() + Duration::from_secs(30);
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let model = model.clone();
                std::thread::spawn(move || model.take_session(soon).map(drop))
            })
            .collect();
        while model.sessions.lock().waiting < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        model
            .sessions
            .finish_making(Err("out of memory, say".into()));
        for call in waiting {
            let result = call.join().unwrap();
            assert!(
                matches!(&result, Err(RunFailure::Failed(why)) if why == "out of memory, say"),
                "{:?}",
                result.err()
            );
        }
        assert_eq!(model.sessions.lock().made, 1);
        model.give_back(held);
    }

    #[test]
    fn a_model_has_no_more_sessions_than_calls_at_once() {
        // Three calls at once, on the medium model (a session takes long to
        // make). Calls that give up waiting while the second session is made
        // do not start a third; the third is made for a call that waits.
        let model = OnnxModel::load(
            &manifest(&plugin_artifacts::BENCH_MEDIUM_MODEL),
            plugin_artifacts::BENCH_MEDIUM_MODEL.bytes().unwrap(),
            &Runner {
                max_sessions: 3,
                ..runner(1)
            },
        )
        .unwrap();
        let held = model.take_session(later()).unwrap();
        for _ in 0..3 {
            let result = model.take_session(Instant::now());
            assert!(matches!(result, Err(RunFailure::PastDeadline)));
        }
        assert_eq!(model.sessions.lock().made, 2);
        let second = model.take_session(later()).unwrap();
        let third = model.take_session(later()).unwrap();
        assert_eq!(model.sessions.lock().made, 3);
        // All held: the next call waits for one, to its deadline.
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(matches!(
            model.take_session(soon),
            Err(RunFailure::PastDeadline)
        ));
        assert_eq!(model.sessions.lock().made, 3);
        model.give_back(second);
        model.give_back(third);

        // A session lost (dropped by a panic in a run) is not counted: the
        // next call can make one again.
        drop(held);
        assert_eq!(model.sessions.lock().made, 2);
        let taken: Vec<_> = (0..3)
            .map(|_| model.take_session(later()).unwrap())
            .collect();
        assert_eq!(model.sessions.lock().made, 3);
        for session in taken {
            model.give_back(session);
        }
        assert_eq!(model.sessions.lock().idle.len(), 3);
    }

    #[test]
    fn a_model_unlike_its_manifest_is_refused_at_load() {
        let model = model();
        let session = model.take_session(later()).unwrap();
        let bytes = SUPPORT_INTENT_MODEL.bytes().unwrap();
        let spec = ModelSpec::from_toml(&SUPPORT_INTENT_MODEL.spec_text().unwrap()).unwrap();
        let mut manifest = ModelManifest::new(spec, &bytes, "test".into());
        assert!(fits(&manifest, &session.session).is_ok());
        manifest.inputs[0].name = "pixels".into();
        let err = fits(&manifest, &session.session).unwrap_err();
        assert!(
            err.contains(r#"declares inputs {"pixels"}, and the ONNX graph has {"features"}"#),
            "{err}"
        );
        let err = OnnxModel::load(&manifest, bytes, &runner(1)).err().unwrap();
        assert!(err.contains("correct its model.toml"), "{err}");
    }

    #[test]
    fn a_call_after_the_deadline_does_not_start() {
        let model = model();
        let result = model.run(one_row(), Instant::now());
        assert!(matches!(result, Err(RunFailure::PastDeadline)));
    }

    #[test]
    fn the_deadline_thread_wakes_for_deadlines_not_on_a_clock() {
        onnxruntime();
        let deadlines = Deadlines::start().unwrap();
        let shared = deadlines.shared.clone();
        let rounds = || shared.lock().rounds;
        let watched = || shared.lock().calls.len();
        std::thread::sleep(Duration::from_millis(20));
        let idle = rounds();
        std::thread::sleep(Duration::from_millis(50));
        // (At most one spurious wake-up.)
        assert!(rounds() - idle <= 1, "it woke with no call to watch");

        // A call due later than one watched already does not wake it; the
        // earlier one is stopped at its deadline, not before, the later one
        // at its own.
        let options = || Arc::new(RunOptions::new().unwrap());
        let first = Instant::now() + Duration::from_millis(100);
        let soon = deadlines.watch(first, options());
        let later = deadlines.watch(Instant::now() + Duration::from_millis(150), options());
        assert_eq!(watched(), 2, "none stopped before its deadline");
        for _ in 0..400 {
            match watched() {
                2 => {}
                1 => assert!(Instant::now() >= first, "stopped before its deadline"),
                _ => break,
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(watched(), 0, "both stopped at their deadlines");
        // Woken for the first call, then at each deadline.
        assert!(rounds() - idle <= 4, "{} rounds", rounds() - idle);
        drop((soon, later));

        // A call that ends before its deadline leaves it asleep until then.
        let before = rounds();
        drop(deadlines.watch(Instant::now() + Duration::from_secs(60), options()));
        std::thread::sleep(Duration::from_millis(50));
        assert!(rounds() - before <= 2, "woken once, for the call");

        // Its last holder gone, the thread ends (and drops its share).
        drop(deadlines);
        for _ in 0..400 {
            if Arc::strong_count(&shared) == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(Arc::strong_count(&shared), 1, "the thread still runs");
    }
}
