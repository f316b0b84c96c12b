//! Axon's configuration: command-line flags with environment fallbacks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use service_kit::front_door::FrontDoor;

use crate::inference::{Accelerator, InferenceConfig, InferenceLimits};
use crate::sandbox::{LimitPolicy, Limits, LogLimits, SandboxConfig};

const MIB: u64 = 1 << 20;

/// Everything Axon needs to start. Every flag has a default that works for
/// the local stack.
#[derive(Debug, Clone, clap::Args)]
pub struct AxonConfig {
    /// Address to serve on.
    #[arg(long, env = "AXON_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Directory holding the embedded plugin store (`plugins/`) and the
    /// compile cache (`axon-cache/`).
    #[arg(long, env = "AGENT_RUNTIME_DATA_DIR", default_value = ".agent-runtime")]
    pub data_dir: PathBuf,
    /// Instances that may run at once, host-wide.
    #[arg(long, env = "AXON_POOL_SIZE", default_value_t = 256)]
    pub pool_size: u32,
    /// Memory for plugins that do not ask, in MiB.
    #[arg(long, default_value_t = 64)]
    pub default_memory_mib: u32,
    /// Most memory any plugin may have, in MiB.
    #[arg(long, default_value_t = 256)]
    pub max_memory_mib: u32,
    /// Deadline for plugins that do not ask, in ms.
    #[arg(long, default_value_t = 1000)]
    pub default_deadline_ms: u32,
    /// Longest deadline any plugin may have, in ms.
    #[arg(long, default_value_t = 30_000)]
    pub max_deadline_ms: u32,
    /// Output size for plugins that do not ask, in KiB.
    #[arg(long, default_value_t = 1024)]
    pub default_output_kib: u32,
    /// Largest output any plugin may have, in KiB.
    #[arg(long, default_value_t = 16 * 1024)]
    pub max_output_kib: u32,
    /// Instances of one plugin at once, for plugins that do not ask.
    #[arg(long, default_value_t = 64)]
    pub default_concurrency: u32,
    /// Largest request body accepted, in KiB.
    #[arg(long, default_value_t = 1024)]
    pub max_body_kib: u32,
    /// Principals whose keys may sign requests to Axon (comma-separated).
    #[arg(
        long,
        env = "AXON_TRUSTED_CALLERS",
        value_delimiter = ',',
        default_value = "orbit"
    )]
    pub trusted_callers: Vec<String>,
    /// The SigV4 signing region callers use.
    #[arg(long, env = "AGENT_RUNTIME_REGION", default_value = auth::DEFAULT_REGION)]
    pub region: String,
    /// Serve `/v1/reason` without SigV4. For tests and benchmarks on
    /// loopback only: anyone who can connect can run plugins.
    #[arg(long, hide = true)]
    pub insecure_no_auth: bool,
    /// Load plugins on first request instead of at start-up (and when
    /// published).
    #[arg(long)]
    pub lazy_load: bool,
    /// The trust root: a file holding the base64 public key that signs the
    /// trust list. Default `<data-dir>/trust/root.pub`.
    #[arg(long, env = "AGENT_RUNTIME_TRUST_ROOT")]
    pub trust_root: Option<PathBuf>,
    /// How often the registry is polled for new versions, revocations and
    /// trust lists, in ms.
    #[arg(long, default_value_t = 1000)]
    pub refresh_ms: u64,
    /// Allocate instances with mmap instead of the pooling allocator
    /// (slower; for measurements).
    #[arg(long, hide = true)]
    pub no_pooling: bool,
    /// Where plugins live (embedded, or S3 and DynamoDB).
    #[command(flatten)]
    pub store: aws_stores::PluginStoreArgs,
    /// How long a client may take to send a request's line and headers, and
    /// how long a kept-alive connection may sit idle, in ms.
    #[arg(long, default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// How long a client may take to send a whole request body, in ms.
    #[arg(long, default_value_t = 30_000)]
    pub body_read_timeout_ms: u64,
    /// Open connections, all clients together.
    #[arg(long, default_value_t = 4_096)]
    pub max_connections: usize,
    /// Open connections from one client address. Axon's only client is
    /// Orbit (a few addresses), so by default this is the whole cap.
    #[arg(long, default_value_t = 4_096)]
    pub max_connections_per_client: usize,
    /// libonnxruntime, to serve plugins with the `inference` capability
    /// (e.g. the `onnxruntime` wheel's `capi/libonnxruntime.so.1.22.1`).
    /// Without it such plugins are refused at load. Models come from the
    /// plugin store (`agentctl model publish`), fetched and verified when a
    /// plugin version that pins them loads.
    #[arg(long, env = "AXON_ONNXRUNTIME")]
    pub onnxruntime: Option<PathBuf>,
    /// Input bytes one inference call may pass, in KiB.
    #[arg(long, default_value_t = 4096)]
    pub max_inference_input_kib: u32,
    /// Inference calls one request may make.
    #[arg(long, default_value_t = 16)]
    pub max_inference_calls: u32,
    /// Inference calls of one model at once, host-wide (0: none). Each
    /// runs on an ONNX Runtime session of its own, made when first needed:
    /// a model may be in memory (on the GPU, for the GPU pool) this many
    /// times.
    #[arg(long, default_value_t = 4)]
    pub max_inference_concurrency: u32,
    /// Rows of one batch of merged calls: calls of different requests to
    /// a model whose manifest says its rows are independent, waiting at
    /// once, run as one batch of at most this many rows (and the model's
    /// `max_batch`; a single call with more rows runs alone); 1: never
    /// merge.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_inference_batch_rows: u32,
    /// Threads one inference call may use, from one pool all calls share,
    /// whose threads sleep when idle (0: one per core; at most 1024).
    #[arg(long, default_value_t = 0, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1024))]
    pub inference_threads: usize,
    /// Where models run, and so which pool this Axon serves: `cpu`, `cuda`
    /// (the GPU pool; `--onnxruntime` must be the `onnxruntime-gpu`
    /// wheel's library), or `simulated-cuda` (announces the GPU pool and
    /// runs on the CPU: for testing routing without a GPU only).
    #[arg(long, env = "AXON_ACCELERATOR", value_enum, default_value_t = Accelerator::Cpu, requires = "onnxruntime")]
    pub accelerator: Accelerator,
}

impl AxonConfig {
    /// The defaults, as if no flag were given, with `data_dir` and `listen` set.
    pub fn local(data_dir: PathBuf, listen: SocketAddr) -> Self {
        Self {
            listen,
            data_dir,
            pool_size: 256,
            default_memory_mib: 64,
            max_memory_mib: 256,
            default_deadline_ms: 1000,
            max_deadline_ms: 30_000,
            default_output_kib: 1024,
            max_output_kib: 16 * 1024,
            default_concurrency: 64,
            max_body_kib: 1024,
            trusted_callers: vec!["orbit".to_owned()],
            region: auth::DEFAULT_REGION.to_owned(),
            insecure_no_auth: false,
            lazy_load: false,
            trust_root: None,
            refresh_ms: 1000,
            no_pooling: false,
            store: aws_stores::PluginStoreArgs::default(),
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            max_connections: 4_096,
            max_connections_per_client: 4_096,
            onnxruntime: None,
            max_inference_input_kib: 4096,
            max_inference_calls: 16,
            max_inference_concurrency: 4,
            max_inference_batch_rows: 64,
            inference_threads: 0,
            accelerator: Accelerator::Cpu,
        }
    }

    /// Inference, if the runtime is given.
    pub fn inference(&self) -> Option<InferenceConfig> {
        Some(InferenceConfig {
            onnxruntime: self.onnxruntime.clone()?,
            limits: InferenceLimits {
                max_input_bytes: self.max_inference_input_kib as usize * 1024,
                max_calls_per_request: self.max_inference_calls,
                max_concurrent_per_model: self.max_inference_concurrency,
                max_batch_rows: self.max_inference_batch_rows,
            },
            accelerator: self.accelerator,
            threads: self.inference_threads,
        })
    }

    /// Where the keyring lives.
    pub fn keyring_path(&self) -> PathBuf {
        self.data_dir.join("keys.json")
    }

    /// The trust root's public key file.
    pub fn trust_root(&self) -> PathBuf {
        self.trust_root
            .clone()
            .unwrap_or_else(|| self.data_dir.join("trust").join("root.pub"))
    }

    /// Where the embedded plugin store lives.
    pub fn plugin_dir(&self) -> PathBuf {
        self.data_dir.join("plugins")
    }

    /// The listener's limits these flags describe. Shutdown waits for the
    /// longest deadline a plugin may have.
    pub fn front_door(&self) -> FrontDoor {
        FrontDoor {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            shutdown_grace: Duration::from_millis(u64::from(self.max_deadline_ms) + 5_000),
        }
    }

    /// The sandbox settings these flags describe.
    pub fn sandbox(&self) -> SandboxConfig {
        let limits =
            |memory_mib: u32, deadline_ms: u32, output_kib: u32, concurrency: u32| Limits {
                memory_bytes: u64::from(memory_mib) * MIB,
                deadline: Duration::from_millis(u64::from(deadline_ms)),
                output_bytes: output_kib as usize * 1024,
                max_concurrency: concurrency,
            };
        SandboxConfig {
            pool_size: self.pool_size,
            pooling: !self.no_pooling,
            limits: LimitPolicy {
                defaults: limits(
                    self.default_memory_mib,
                    self.default_deadline_ms,
                    self.default_output_kib,
                    self.default_concurrency.min(self.pool_size),
                ),
                maxima: limits(
                    self.max_memory_mib,
                    self.max_deadline_ms,
                    self.max_output_kib,
                    self.pool_size,
                ),
            },
            log_limits: LogLimits::default(),
            cache_dir: Some(self.data_dir.join("axon-cache")),
            inference: self.inference(),
            ..SandboxConfig::default()
        }
    }
}
