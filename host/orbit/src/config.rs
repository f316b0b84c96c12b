//! Orbit's configuration: command-line flags with environment fallbacks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::axon_client::AxonClientConfig;
use crate::rate_limit::Rate;

/// Everything Orbit needs to start; every default suits the local stack.
#[derive(Debug, Clone, clap::Args)]
pub struct OrbitConfig {
    /// Address to serve on.
    #[arg(long, env = "ORBIT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory of the local stack's state: keyring (`keys.json`), the
    /// embedded policy store (`governance/policies.db`), plugin registry
    /// (`plugins/`).
    #[arg(long, env = "AGENT_RUNTIME_DATA_DIR", default_value = ".agent-runtime")]
    pub data_dir: PathBuf,
    /// Axon's base URL.
    #[arg(long, env = "ORBIT_AXON_URL", default_value = "http://127.0.0.1:8081")]
    pub axon_url: String,
    /// The GPU pool's base URL: Axons started with `--accelerator cuda`.
    /// Plugins that require a GPU run only there; without it they are
    /// refused (`503 GPU_UNAVAILABLE`).
    #[arg(long, env = "ORBIT_GPU_AXON_URL")]
    pub gpu_axon_url: Option<String>,
    /// How often the GPU pool's `/ready` is probed, in ms.
    #[arg(long, default_value_t = 1000)]
    pub gpu_probe_ms: u64,
    /// The SigV4 region clients sign for (service `execute-api`).
    #[arg(long, env = "AGENT_RUNTIME_REGION", default_value = auth::DEFAULT_REGION)]
    pub region: String,
    /// The principal whose key Orbit signs its calls to Axon with.
    #[arg(long, default_value = "orbit")]
    pub service_principal: String,
    /// Sustained requests per second per principal.
    #[arg(long, default_value_t = 50)]
    pub principal_rate: u32,
    /// Burst per principal.
    #[arg(long, default_value_t = 100)]
    pub principal_burst: u32,
    /// Sustained requests per second per client address.
    #[arg(long, default_value_t = 100)]
    pub ip_rate: u32,
    /// Burst per client address.
    #[arg(long, default_value_t = 200)]
    pub ip_burst: u32,
    /// Dispatches one principal may have waiting on Axon at once; past it,
    /// `429 RATE_LIMIT_EXCEEDED`. Keeps one caller from holding every Axon
    /// slot (Axon runs 256 instances at once by default).
    #[arg(long, default_value_t = 32)]
    pub max_in_flight_per_principal: u32,
    /// Take the client address from `X-Forwarded-For` (only behind a proxy
    /// that sets it).
    #[arg(long)]
    pub trust_forwarded_for: bool,
    /// Largest request body, in KiB.
    #[arg(long, default_value_t = 1024)]
    pub max_body_kib: u32,
    /// Retries of calls that never reached Axon.
    #[arg(long, default_value_t = 2)]
    pub axon_retries: u32,
    /// Consecutive Axon failures that open the circuit breaker.
    #[arg(long, default_value_t = 5)]
    pub breaker_failures: u32,
    /// How long the breaker stays open before a probe, in ms.
    #[arg(long, default_value_t = 2000)]
    pub breaker_open_ms: u64,
    /// The trust root: a file holding the base64 public key that signs the
    /// trust list. Default `<data-dir>/trust/root.pub`.
    #[arg(long, env = "AGENT_RUNTIME_TRUST_ROOT")]
    pub trust_root: Option<PathBuf>,
    /// How long a dispatch may wait, beyond the plugin's deadline, for Axon
    /// (the hop, and a first load that compiles the version), in ms.
    #[arg(long, default_value_t = 30_000)]
    pub axon_load_wait_ms: u64,
    /// The largest answer read from Axon, in KiB: Axon's largest plugin
    /// output (16 MiB by default) plus room for the envelope.
    #[arg(long, default_value_t = 16 * 1024 + 64)]
    pub max_axon_reply_kib: u32,
    /// How often policies, keys and the plugin registry (aliases,
    /// revocations, new versions) are re-read, in seconds.
    #[arg(long, default_value_t = 2)]
    pub refresh_secs: u64,
    /// How long the last good policy set serves without a successful
    /// refresh (the store unreadable, or its head naming a set that does not
    /// validate); then every dispatch is denied with `GOVERNANCE_STALE`. In
    /// seconds.
    #[arg(long, default_value_t = 300)]
    pub policy_max_staleness_secs: u64,
    /// Where policy sets live (embedded, or DynamoDB): the store
    /// `agentctl policy` writes.
    #[command(flatten)]
    pub policies: aws_stores::PolicyStoreArgs,
    /// Who decides: Orbit over the policy store, or the governance function.
    #[command(flatten)]
    pub governance: aws_stores::GovernanceArgs,
    /// Where plugins live (embedded, or S3 and DynamoDB): the same store
    /// Axon reads.
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
    /// Open connections from one client address (IPv6: one /64).
    #[arg(long, default_value_t = 64)]
    pub max_connections_per_client: usize,
    /// The audit file: every decision appended as a hash-chained JSON line.
    /// Default `<data-dir>/audit/decisions.jsonl`.
    #[arg(long, env = "AGENT_RUNTIME_AUDIT_FILE")]
    pub audit_file: Option<PathBuf>,
    /// Write no audit file: records go only to the `audit` log target,
    /// which must then be enabled (in AWS, the log goes to CloudWatch Logs
    /// once `infra/` sends it there).
    #[arg(
        long,
        env = "AGENT_RUNTIME_NO_AUDIT_FILE",
        conflicts_with = "audit_file"
    )]
    pub no_audit_file: bool,
}

impl OrbitConfig {
    /// The defaults, as if no flag were given, with `data_dir`, `listen` and
    /// the Axon URL set.
    pub fn local(data_dir: PathBuf, listen: SocketAddr, axon_url: String) -> Self {
        Self {
            listen,
            data_dir,
            axon_url,
            gpu_axon_url: None,
            gpu_probe_ms: 1000,
            region: auth::DEFAULT_REGION.to_owned(),
            service_principal: "orbit".to_owned(),
            principal_rate: 50,
            principal_burst: 100,
            ip_rate: 100,
            ip_burst: 200,
            max_in_flight_per_principal: 32,
            trust_forwarded_for: false,
            max_body_kib: 1024,
            axon_retries: 2,
            breaker_failures: 5,
            breaker_open_ms: 2000,
            refresh_secs: 2,
            policy_max_staleness_secs: 300,
            policies: aws_stores::PolicyStoreArgs::default(),
            governance: aws_stores::GovernanceArgs::default(),
            trust_root: None,
            axon_load_wait_ms: 30_000,
            max_axon_reply_kib: 16 * 1024 + 64,
            store: aws_stores::PluginStoreArgs::default(),
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            max_connections: 4_096,
            max_connections_per_client: 64,
            audit_file: None,
            no_audit_file: false,
        }
    }

    /// Where decisions are appended, if to a file.
    pub fn audit_path(&self) -> Option<PathBuf> {
        if self.no_audit_file {
            return None;
        }
        Some(
            self.audit_file
                .clone()
                .unwrap_or_else(|| self.data_dir.join("audit").join("decisions.jsonl")),
        )
    }

    pub fn keyring_path(&self) -> PathBuf {
        self.data_dir.join("keys.json")
    }

    /// Opens the policy store the flags name (the embedded one under
    /// `data_dir` by default).
    pub async fn open_policy_store(
        &self,
    ) -> anyhow::Result<std::sync::Arc<dyn governance::PolicyStore>> {
        use anyhow::Context as _;
        self.policies
            .open(&self.data_dir, self.store.aws_endpoint_url.as_deref())
            .await
            .context("opening the policy store")
    }

    /// Who decides, as the flags say: in-process over the policy store they
    /// name, or the governance function (the policy store is then its
    /// business, not Orbit's), once a probe shows it answers.
    pub async fn open_governance(&self) -> anyhow::Result<crate::Governor> {
        match self.governance.governance {
            aws_stores::GovernanceMode::InProcess => {
                Ok(crate::Governor::InProcess(self.open_policy_store().await?))
            }
            aws_stores::GovernanceMode::Lambda => {
                let decider = self
                    .governance
                    .lambda_decider()
                    .await
                    .map_err(anyhow::Error::msg)?;
                // As in-process governance does not start without a policy
                // set, Orbit does not start without a function it can ask.
                decider.probe().await.map_err(|failure| {
                    anyhow::anyhow!("the governance function cannot be used: {failure}")
                })?;
                Ok(crate::Governor::Remote(std::sync::Arc::new(decider)))
            }
        }
    }

    pub fn plugin_dir(&self) -> PathBuf {
        self.data_dir.join("plugins")
    }

    pub fn trust_root(&self) -> PathBuf {
        self.trust_root
            .clone()
            .unwrap_or_else(|| self.data_dir.join("trust").join("root.pub"))
    }

    /// The listener's limits these flags describe. Shutdown waits as long
    /// as a dispatch may (a plugin's longest deadline and the load wait).
    pub fn front_door(&self) -> service_kit::front_door::FrontDoor {
        service_kit::front_door::FrontDoor {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            shutdown_grace: Duration::from_millis(self.axon_load_wait_ms + 35_000),
        }
    }

    /// How to reach the CPU pool (`gpu` false) or the GPU pool.
    pub(crate) fn axon_client(&self, gpu: bool) -> Option<AxonClientConfig> {
        let (base_url, pool) = if gpu {
            (self.gpu_axon_url.clone()?, "gpu")
        } else {
            (self.axon_url.clone(), "cpu")
        };
        Some(AxonClientConfig {
            base_url,
            pool,
            principal: self.service_principal.clone(),
            region: self.region.clone(),
            retries: self.axon_retries,
            breaker_failures: self.breaker_failures,
            breaker_open_for: Duration::from_millis(self.breaker_open_ms),
            load_wait: Duration::from_millis(self.axon_load_wait_ms),
            max_reply_bytes: self.max_axon_reply_kib as usize * 1024,
        })
    }

    pub(crate) fn principal_rate(&self) -> Rate {
        Rate {
            per_second: self.principal_rate,
            burst: self.principal_burst,
        }
    }

    pub(crate) fn ip_rate(&self) -> Rate {
        Rate {
            per_second: self.ip_rate,
            burst: self.ip_burst,
        }
    }
}
