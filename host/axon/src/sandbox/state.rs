//! What one request's Store holds, and the host side of the contract's
//! imports (`log`, `config`).
//!
//! The WASI context is built to deny: no preopened directories, no
//! environment, no arguments, no sockets or name lookup, stdin closed, stdout
//! and stderr captured with a bound. Clocks are frozen at the Unix epoch and
//! randomness is a generator seeded from the module digest, so a plugin
//! version gives the same answer to the same input, and cannot time the host.

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreContextMut};
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

use wasmtime_wasi_nn::wit::{TensorType, WasiNnCtx, WasiNnView};

use crate::inference::CallBudget;

use super::bindings::{config, log, types};
use super::capture::Capture;

/// Per-request bounds on the `log` import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Records kept per request; the rest are counted as dropped.
    pub max_records: u32,
    /// Bytes of one message (and of all its fields together) kept.
    pub max_record_bytes: usize,
    /// Bytes of stdout, and separately of stderr, kept per request.
    pub max_stdio_bytes: usize,
}

impl Default for LogLimits {
    /// 100 records of 2 KiB; 16 KiB each of stdout and stderr.
    fn default() -> Self {
        Self {
            max_records: 100,
            max_record_bytes: 2048,
            max_stdio_bytes: 16 * 1024,
        }
    }
}

/// Who is running, for log lines.
#[derive(Debug, Clone)]
pub(crate) struct RequestIdentity {
    pub(crate) plugin: Arc<str>,
    pub(crate) correlation_id: Arc<str>,
}

/// Host-side WASI resources (streams, pollables, descriptors) one request
/// may hold at once. wasmtime's own default is a million; a plugin that
/// creates them in a loop would hold host memory outside its memory limit.
pub(crate) const MAX_WASI_RESOURCES: usize = 4096;

/// The data of one request's Store.
pub(crate) struct RequestState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: RequestLimiter,
    config: Arc<[(String, String)]>,
    identity: RequestIdentity,
    log_limits: LogLimits,
    pub(crate) log_records: u32,
    pub(crate) logs_dropped: u32,
    /// The granted models, for plugins with inference.
    pub(crate) nn: Option<WasiNnCtx>,
    /// The bounds their use draws on.
    pub(crate) nn_budget: Option<Arc<CallBudget>>,
}

impl RequestState {
    pub(crate) fn new(
        identity: RequestIdentity,
        config: Arc<[(String, String)]>,
        random_seed: u64,
        memory_limit: u64,
        log_limits: LogLimits,
        stdout: Capture,
        stderr: Capture,
    ) -> Self {
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout)
            .stderr(stderr)
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            // Unpredictable, as `wasi:random/random` promises: a plugin that
            // makes a key or a nonce must not let callers guess it. Seeded
            // per request from the thread's CSPRNG (itself from the OS).
            .secure_random(StdRng::from_rng(&mut rand::rng()))
            .insecure_random(StdRng::seed_from_u64(random_seed.rotate_left(32)))
            .insecure_random_seed(u128::from(random_seed))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_WASI_RESOURCES);
                table
            },
            limiter: RequestLimiter::new(memory_limit),
            config,
            identity,
            log_limits,
            log_records: 0,
            logs_dropped: 0,
            nn: None,
            nn_budget: None,
        }
    }
}

impl RequestState {
    /// The `wasi:nn` view: the granted models, or none.
    pub(crate) fn nn(&mut self) -> WasiNnView<'_> {
        let ctx = self.nn.get_or_insert_with(crate::inference::no_models);
        WasiNnView::new(&mut self.table, ctx)
    }
}

/// The `wasi:nn` interface whose tensor constructor [`new_tensor`] replaces.
/// Should wasmtime-wasi-nn serve another version, the shadow would define a
/// new, unused instance: `inference::hostile_inference_gets_its_limit_code_
/// while_others_answer` (hoarding tensors) fails then.
pub(crate) const NN_TENSOR_INTERFACE: &str = "wasi:nn/tensor@0.2.0-rc-2024-10-28";

/// `wasi:nn`'s tensor constructor, in place of wasmtime-wasi-nn's, which
/// keeps any number of tensors of any size in host memory: each tensor is
/// counted against the request's inference budget first.
pub(crate) fn new_tensor(
    mut store: StoreContextMut<'_, RequestState>,
    (dimensions, ty, data): (Vec<u32>, TensorType, Vec<u8>),
) -> wasmtime::Result<(Resource<wasmtime_wasi_nn::Tensor>,)> {
    let state = store.data_mut();
    let Some(budget) = &state.nn_budget else {
        return Err(wasmtime::format_err!(
            "this plugin was not granted inference"
        ));
    };
    budget
        .create_tensor(dimensions.len(), data.len())
        .map_err(|message| wasmtime::format_err!("{message}"))?;
    let tensor = wasmtime_wasi_nn::Tensor {
        dimensions,
        ty,
        data,
    };
    Ok((state.table.push(tensor)?,))
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Both clocks read zero: the Unix epoch, and the start of monotonic time.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

/// What one request's Store may hold, counted across every memory, table
/// and core instance of the component: a component made of several core
/// modules gets one budget, not one per memory. Remembers whether the
/// memory cap was hit, so that the trap that follows (a Rust guest aborts
/// when allocation fails) is reported as `PLUGIN_MEMORY_LIMIT` rather than
/// a generic trap.
pub(crate) struct RequestLimiter {
    memory_limit: u64,
    /// Linear memory across all the component's memories now.
    memory_bytes: u64,
    /// Table elements across all its tables now.
    table_elements: u64,
    /// What the last approved growth added, to give back if wasmtime then
    /// refuses it for another reason (a declared maximum, the pool's cap).
    last_memory_growth: u64,
    last_table_growth: u64,
    pub(crate) peak: u64,
    pub(crate) exceeded: bool,
}

/// Table elements one request may hold, all tables together; Rust guests
/// use a few hundred, the Python example a few thousand.
pub(crate) const MAX_TABLE_ELEMENTS: u64 = 100_000;
/// Core instances, tables and memories one request may create. The pool
/// refuses a component that needs more when it is compiled (see
/// `Sandbox::new`); these bound the same things when pooling is off.
pub(crate) const MAX_CORE_INSTANCES: u32 = 64;
pub(crate) const MAX_TABLES: u32 = 16;
pub(crate) const MAX_MEMORIES: u32 = 2;

impl RequestLimiter {
    fn new(memory_limit: u64) -> Self {
        Self {
            memory_limit,
            memory_bytes: 0,
            table_elements: 0,
            last_memory_growth: 0,
            last_table_growth: 0,
            peak: 0,
            exceeded: false,
        }
    }
}

impl ResourceLimiter for RequestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // `current` of this memory is already counted (a new memory grows
        // from 0 to its initial size).
        let after =
            (self.memory_bytes.saturating_sub(current as u64)).saturating_add(desired as u64);
        if after > self.memory_limit {
            self.exceeded = true;
            return Ok(false);
        }
        self.last_memory_growth = after.saturating_sub(self.memory_bytes);
        self.memory_bytes = after;
        self.peak = self.peak.max(after);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_bytes = self.memory_bytes.saturating_sub(self.last_memory_growth);
        self.last_memory_growth = 0;
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let after =
            (self.table_elements.saturating_sub(current as u64)).saturating_add(desired as u64);
        if after > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.last_table_growth = after.saturating_sub(self.table_elements);
        self.table_elements = after;
        Ok(true)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.table_elements = self.table_elements.saturating_sub(self.last_table_growth);
        self.last_table_growth = 0;
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES as usize
    }

    fn tables(&self) -> usize {
        MAX_TABLES as usize
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES as usize
    }
}

/// `text` with every control character written as an escape (`\n`,
/// `\u{1b}`), so what a plugin logs or prints stays on its own line in the
/// text log format and cannot forge another record or colour the terminal.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Cuts `text` to at most `max` bytes on a character boundary.
fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}

impl log::Host for RequestState {
    fn log(&mut self, level: log::Level, mut message: String, fields: Vec<(String, String)>) {
        if self.log_records >= self.log_limits.max_records {
            self.logs_dropped += 1;
            return;
        }
        self.log_records += 1;
        let max = self.log_limits.max_record_bytes;
        truncate(&mut message, max);
        let mut rendered = String::new();
        for (key, value) in &fields {
            if rendered.len() + key.len() + value.len() + 2 > max {
                rendered.push_str(" …");
                break;
            }
            if !rendered.is_empty() {
                rendered.push(' ');
            }
            rendered.push_str(&printable(key));
            rendered.push('=');
            rendered.push_str(&printable(value));
        }
        let message = printable(&message);
        let plugin = &*self.identity.plugin;
        let correlation_id = &*self.identity.correlation_id;
        macro_rules! emit {
            ($level:ident) => {
                tracing::$level!(target: "plugin", plugin, correlation_id, fields = %rendered, "{message}")
            };
        }
        match level {
            log::Level::Trace => emit!(trace),
            log::Level::Debug => emit!(debug),
            log::Level::Info => emit!(info),
            log::Level::Warn => emit!(warn),
            log::Level::Error => emit!(error),
        }
    }
}

/// The `types` interface declares types only.
impl types::Host for RequestState {}

impl config::Host for RequestState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config
            .binary_search_by(|(k, _)| k.as_str().cmp(&key))
            .ok()
            .map(|i| self.config[i].1.clone())
    }

    fn get_all(&mut self) -> Vec<(String, String)> {
        self.config.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn plugin_text_cannot_start_a_new_log_line_or_send_escape_codes() {
        let forged = "ok\n2026-01-01T00:00:00Z  INFO orbit: dispatch allowed\r\u{1b}[31mred\u{7}";
        let shown = printable(forged);
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert_eq!(
            shown,
            "ok\\n2026-01-01T00:00:00Z  INFO orbit: dispatch allowed\\r\\u{1b}[31mred\\u{7}"
        );
        assert!(matches!(
            printable("plain é 😀"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
    use super::*;

    #[test]
    fn the_memory_limit_covers_all_memories_together() {
        let mut limiter = RequestLimiter::new(1 << 20);
        // Two memories of 384 KiB each fit...
        assert!(limiter.memory_growing(0, 384 << 10, None).unwrap());
        assert!(limiter.memory_growing(0, 384 << 10, None).unwrap());
        // ...a third does not, nor does growing either past the remainder.
        assert!(!limiter.memory_growing(0, 384 << 10, None).unwrap());
        assert!(limiter.exceeded);
        assert!(!limiter.memory_growing(384 << 10, 768 << 10, None).unwrap());
        assert!(limiter.memory_growing(384 << 10, 640 << 10, None).unwrap());
        assert_eq!(limiter.peak, 1 << 20);
    }

    #[test]
    fn growth_wasmtime_refuses_afterwards_is_not_counted() {
        let mut limiter = RequestLimiter::new(1 << 20);
        assert!(limiter.memory_growing(0, 512 << 10, None).unwrap());
        // Approved here, then refused by the memory's own maximum.
        assert!(limiter.memory_growing(512 << 10, 1 << 20, None).unwrap());
        limiter
            .memory_grow_failed(wasmtime::Error::msg("past the declared maximum"))
            .unwrap();
        // The failed growth left no phantom bytes behind.
        assert!(limiter.memory_growing(0, 512 << 10, None).unwrap());
        let mut tables = RequestLimiter::new(1 << 20);
        let all = MAX_TABLE_ELEMENTS as usize;
        assert!(tables.table_growing(0, all, None).unwrap());
        tables
            .table_grow_failed(wasmtime::Error::msg("past the pool's cap"))
            .unwrap();
        assert!(tables.table_growing(0, all, None).unwrap());
    }

    #[test]
    fn table_elements_are_counted_across_tables() {
        let mut limiter = RequestLimiter::new(1 << 20);
        let half = (MAX_TABLE_ELEMENTS / 2) as usize;
        assert!(limiter.table_growing(0, half, None).unwrap());
        assert!(limiter.table_growing(0, half, None).unwrap());
        assert!(!limiter.table_growing(0, 1, None).unwrap());
    }

    #[test]
    fn memory_limiter_denies_growth_past_the_limit_and_remembers() {
        let mut limiter = RequestLimiter::new(1 << 20);
        assert!(limiter.memory_growing(0, 1 << 19, None).unwrap());
        assert!(!limiter.exceeded);
        assert!(
            !limiter
                .memory_growing(1 << 19, (1 << 20) + 1, None)
                .unwrap()
        );
        assert!(limiter.exceeded);
        assert_eq!(limiter.peak, 1 << 19);
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        let mut text = "héllo".to_owned();
        truncate(&mut text, 2);
        assert_eq!(text, "h…");
        let mut short = "ok".to_owned();
        truncate(&mut short, 10);
        assert_eq!(short, "ok");
    }
}
