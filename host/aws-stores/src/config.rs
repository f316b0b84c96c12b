//! Which stores a process uses: the flags Axon, Orbit and `agentctl` share,
//! so all of them always read the same plugin store (and Orbit and
//! `agentctl policy` the same policy store).

use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use governance::{PolicyStore, PolicyStoreError, SqlitePolicyStore};
use plugin_store::{PluginSource, StoreError};

use crate::{DynamoPolicyStore, DynamoRegistry, S3BlobStore};

/// Where plugins live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// Blobs in `<data-dir>/plugins/blobs`, the registry in
    /// `<data-dir>/plugins/registry.db` (SQLite). No set-up, one machine.
    Local,
    /// Blobs in S3, the registry in DynamoDB, through the standard AWS
    /// credential chain and region.
    Aws,
}

/// The plugin store flags. Defaults: the embedded store.
#[derive(Debug, Clone, clap::Args)]
pub struct PluginStoreArgs {
    /// Where plugins live: `local` (a directory and a SQLite file under the
    /// data directory) or `aws` (S3 and DynamoDB).
    #[arg(
        long,
        env = "AGENT_RUNTIME_PLUGIN_STORE",
        default_value = "local",
        global = true
    )]
    pub plugin_store: StoreKind,
    /// The S3 bucket holding module blobs (`--plugin-store aws`). It should
    /// have versioning on.
    #[arg(long, env = "AGENT_RUNTIME_PLUGIN_BUCKET", global = true)]
    pub plugin_bucket: Option<String>,
    /// The key prefix of module blobs in the bucket.
    #[arg(
        long,
        env = "AGENT_RUNTIME_PLUGIN_PREFIX",
        default_value = "plugins/",
        global = true
    )]
    pub plugin_prefix: String,
    /// The DynamoDB table holding the registry (`--plugin-store aws`).
    #[arg(long, env = "AGENT_RUNTIME_REGISTRY_TABLE", global = true)]
    pub registry_table: Option<String>,
    /// An endpoint for S3 and DynamoDB other than AWS's (an emulator such as
    /// moto). The SDK's own `AWS_ENDPOINT_URL` works too.
    #[arg(long, global = true)]
    pub aws_endpoint_url: Option<String>,
}

impl Default for PluginStoreArgs {
    /// The embedded store, as if no flag were given.
    fn default() -> Self {
        Self {
            plugin_store: StoreKind::Local,
            plugin_bucket: None,
            plugin_prefix: "plugins/".to_owned(),
            registry_table: None,
            aws_endpoint_url: None,
        }
    }
}

impl PluginStoreArgs {
    /// The AWS store in `bucket` and `table`, reached at `endpoint` (or AWS's).
    pub fn aws(bucket: &str, table: &str, endpoint: Option<&str>) -> Self {
        Self {
            plugin_store: StoreKind::Aws,
            plugin_bucket: Some(bucket.to_owned()),
            registry_table: Some(table.to_owned()),
            aws_endpoint_url: endpoint.map(str::to_owned),
            ..Self::default()
        }
    }

    /// Opens the chosen store: the embedded one in `local_dir`, or the AWS
    /// one, checked to be reachable (the table answers, the bucket exists)
    /// so a wrong name fails at start-up rather than on the first request.
    pub async fn open(&self, local_dir: &Path) -> Result<PluginSource, StoreError> {
        match self.plugin_store {
            StoreKind::Local => PluginSource::local(local_dir).await,
            StoreKind::Aws => {
                let sdk = sdk_config(self.aws_endpoint_url.as_deref()).await;
                self.open_aws(&sdk).await
            }
        }
    }

    /// Creates the AWS store's bucket (versioned) and table where they are
    /// missing.
    pub async fn create_aws(&self) -> Result<(), StoreError> {
        let sdk = sdk_config(self.aws_endpoint_url.as_deref()).await;
        let (bucket, table) = self.aws_names()?;
        S3BlobStore::new(&sdk, bucket, &self.plugin_prefix)
            .create_bucket()
            .await?;
        DynamoRegistry::new(&sdk, table).create_table().await
    }

    fn aws_names(&self) -> Result<(&str, &str), StoreError> {
        let missing =
            |flag: &str| StoreError::Invalid(format!("`--plugin-store aws` needs `--{flag}`"));
        let bucket = self
            .plugin_bucket
            .as_deref()
            .ok_or_else(|| missing("plugin-bucket"))?;
        let table = self
            .registry_table
            .as_deref()
            .ok_or_else(|| missing("registry-table"))?;
        Ok((bucket, table))
    }

    /// Opens the AWS store with `sdk` (credentials, region, endpoint).
    pub async fn open_aws(&self, sdk: &SdkConfig) -> Result<PluginSource, StoreError> {
        let (bucket, table) = self.aws_names()?;
        let blobs = S3BlobStore::new(sdk, bucket, &self.plugin_prefix);
        let registry = DynamoRegistry::new(sdk, table);
        registry.check().await?;
        blobs.check().await?;
        Ok(PluginSource::new(Arc::new(blobs), Arc::new(registry)))
    }
}

/// Every AWS call is bounded: a stalled reply must not hold a plugin load
/// (and the requests waiting on it) or the registry refresh forever. An
/// attempt may take 30 s (a module download included), a call with its
/// retries 90 s.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(20))
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(90))
        .build()
}

/// The SDK configuration from the standard chain (environment, profile,
/// container or instance role), with `endpoint` overriding AWS's.
pub async fn sdk_config(endpoint: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts());
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

/// Where governance's policy sets live: the flags Orbit and `agentctl policy`
/// share. Defaults: the embedded store.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyStoreArgs {
    /// Where policy sets live: `local` (a SQLite file under the data
    /// directory) or `aws` (a DynamoDB table, `--policy-table`).
    #[arg(
        long,
        env = "AGENT_RUNTIME_POLICY_STORE",
        default_value = "local",
        global = true
    )]
    pub policy_store: StoreKind,
    /// The DynamoDB table holding policy sets (`--policy-store aws`).
    #[arg(long, env = "AGENT_RUNTIME_POLICY_TABLE", global = true)]
    pub policy_table: Option<String>,
}

impl Default for PolicyStoreArgs {
    /// The embedded store, as if no flag were given.
    fn default() -> Self {
        Self {
            policy_store: StoreKind::Local,
            policy_table: None,
        }
    }
}

impl PolicyStoreArgs {
    /// The embedded store's file under a data directory.
    pub fn local_path(data_dir: &Path) -> std::path::PathBuf {
        data_dir.join("governance").join("policies.db")
    }

    fn table(&self) -> Result<&str, PolicyStoreError> {
        self.policy_table.as_deref().ok_or_else(|| {
            PolicyStoreError::Invalid("`--policy-store aws` needs `--policy-table`".to_owned())
        })
    }

    /// Opens the chosen store: the embedded file under `data_dir`, or the
    /// DynamoDB table at `endpoint` (or AWS's), checked to answer so a wrong
    /// name fails at start-up.
    pub async fn open(
        &self,
        data_dir: &Path,
        endpoint: Option<&str>,
    ) -> Result<Arc<dyn PolicyStore>, PolicyStoreError> {
        match self.policy_store {
            StoreKind::Local => Ok(Arc::new(
                SqlitePolicyStore::open(&Self::local_path(data_dir)).await?,
            )),
            StoreKind::Aws => {
                let sdk = sdk_config(endpoint).await;
                let store = DynamoPolicyStore::new(&sdk, self.table()?);
                store.head().await?;
                Ok(Arc::new(store))
            }
        }
    }

    /// Creates the DynamoDB table of `--policy-store aws` where it is missing.
    pub async fn create_aws(&self, endpoint: Option<&str>) -> Result<(), PolicyStoreError> {
        let sdk = sdk_config(endpoint).await;
        DynamoPolicyStore::new(&sdk, self.table()?)
            .create_table()
            .await
    }
}

/// Who decides whether a dispatch may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GovernanceMode {
    /// Orbit itself, over the policy store (`--policy-store`).
    InProcess,
    /// The governance Lambda function (`--governance-function`), which reads
    /// the policy store itself.
    Lambda,
}

/// Orbit's governance flags. Defaults: in-process.
#[derive(Debug, Clone, clap::Args)]
pub struct GovernanceArgs {
    /// Who decides: `in-process` (Orbit, over the policy store) or `lambda`
    /// (the governance function, invoked for every decision; any failure
    /// denies with `503 GOVERNANCE_UNAVAILABLE`).
    #[arg(long, env = "AGENT_RUNTIME_GOVERNANCE", default_value = "in-process")]
    pub governance: GovernanceMode,
    /// The governance function's name, ARN or alias ARN (`--governance
    /// lambda`).
    #[arg(long, env = "AGENT_RUNTIME_GOVERNANCE_FUNCTION")]
    pub governance_function: Option<String>,
    /// How long a decision may take, invoke included, before it is a deny,
    /// in ms (`--governance lambda`).
    #[arg(
        long,
        env = "AGENT_RUNTIME_GOVERNANCE_TIMEOUT_MS",
        default_value_t = 1000
    )]
    pub governance_timeout_ms: u64,
    /// A Lambda API endpoint other than AWS's (`cargo lambda watch` on
    /// loopback). The SDK's own `AWS_ENDPOINT_URL_LAMBDA` works too.
    #[arg(long, env = "AGENT_RUNTIME_GOVERNANCE_ENDPOINT_URL")]
    pub governance_endpoint_url: Option<String>,
}

impl Default for GovernanceArgs {
    /// In-process, as if no flag were given.
    fn default() -> Self {
        Self {
            governance: GovernanceMode::InProcess,
            governance_function: None,
            governance_timeout_ms: 1000,
            governance_endpoint_url: None,
        }
    }
}

impl GovernanceArgs {
    /// The flags of a Lambda decider invoking `function` at `endpoint` (or
    /// AWS's).
    pub fn lambda(function: &str, endpoint: Option<&str>) -> Self {
        Self {
            governance: GovernanceMode::Lambda,
            governance_function: Some(function.to_owned()),
            governance_endpoint_url: endpoint.map(str::to_owned),
            ..Self::default()
        }
    }

    /// The Lambda decider these flags describe (`--governance lambda`).
    pub async fn lambda_decider(&self) -> Result<crate::LambdaDecider, String> {
        let function = self
            .governance_function
            .as_deref()
            .ok_or("`--governance lambda` needs `--governance-function`")?;
        if self.governance_timeout_ms == 0 {
            return Err("`--governance-timeout-ms` must be above 0".to_owned());
        }
        let sdk = sdk_config(self.governance_endpoint_url.as_deref()).await;
        Ok(crate::LambdaDecider::new(
            &sdk,
            function,
            Duration::from_millis(self.governance_timeout_ms),
        ))
    }
}
