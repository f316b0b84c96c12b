//! A whole stack in-process: keys, default policies, the example plugins,
//! Axon (SigV4 on, trusting Orbit) and Orbit, each on a loopback port.

use governance::PolicyStore;
use governance::store::{Activate, ActivationKind, NewPolicySet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use auth::keyring::Identity;
use auth::{LocalKeyring, PrincipalKind, SigningKey};
use aws_stores::testing::Moto;
use orbit::OrbitConfig;
use orbit::client::{OrbitClient, Reply};
use plugin_store::{PluginSource, PublishSpec};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Server {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap();
    }
}

pub struct Stack {
    _dir: TempDir,
    pub data_dir: PathBuf,
    /// The plugin store Orbit and Axon share.
    pub source: PluginSource,
    /// The emulator holding the plugin store, when it is S3 and DynamoDB.
    _moto: Option<Moto>,
    /// The policy store Orbit polls (SQLite, or DynamoDB on the emulator).
    pub policies: Arc<dyn PolicyStore>,
    pub orbit_url: String,
    pub axon_addr: SocketAddr,
    pub axon_url: String,
    /// `dev`, in group `developers`.
    pub dev: OrbitClient,
    pub dev_key: SigningKey,
    /// `bea`, in `developers` and `beta`.
    pub bea: OrbitClient,
    /// Orbit's own key (the only one Axon accepts).
    pub orbit_key: SigningKey,
    pub axon: Option<Server>,
    /// The GPU pool's Axon, when the stack started one.
    pub gpu_axon: Option<Server>,
    /// Orbit; `stop` it to shut it down cleanly (the audit log is closed).
    pub orbit: Option<Server>,
}

fn key(
    keyring: &LocalKeyring,
    principal: &str,
    kind: PrincipalKind,
    groups: &[&str],
) -> SigningKey {
    let key = keyring
        .create_key(Identity {
            principal: principal.into(),
            kind,
            groups: groups.iter().map(|g| (*g).into()).collect(),
            tenant: "local".into(),
        })
        .unwrap();
    SigningKey {
        access_key_id: key.access_key_id,
        secret_access_key: key.secret_access_key,
        region: auth::DEFAULT_REGION.into(),
    }
}

pub async fn start_axon(
    data_dir: &Path,
    source: &PluginSource,
    addr: SocketAddr,
) -> (Server, SocketAddr) {
    start_axon_with(data_dir, source, addr, |_| {}).await
}

/// Axon as `adjust` configures it.
pub async fn start_axon_with(
    data_dir: &Path,
    source: &PluginSource,
    addr: SocketAddr,
    adjust: impl FnOnce(&mut axon::AxonConfig),
) -> (Server, SocketAddr) {
    let mut config = axon::AxonConfig::local(data_dir.to_owned(), addr);
    adjust(&mut config);
    let source = source.clone();
    let state = axon::build(&config, source).await.unwrap();
    axon::start(&config, &state).await.unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        axon::serve(listener, state, config.front_door(), async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (
        Server {
            stop: Some(stop),
            task,
        },
        addr,
    )
}

/// Makes `config` serve inference (models from its plugin store).
pub fn serve_inference(config: &mut axon::AxonConfig) {
    config.onnxruntime = Some(plugin_artifacts::onnxruntime_library().unwrap());
}

/// Makes `config` a GPU pool's Axon: inference, on a simulated GPU.
fn simulated_gpu(config: &mut axon::AxonConfig) {
    serve_inference(config);
    config.accelerator = axon::inference::Accelerator::SimulatedCuda;
}

/// Starts the GPU pool's Axon at `addr`.
pub async fn start_gpu_axon(stack: &Stack, addr: SocketAddr) -> Server {
    start_axon_with(&stack.data_dir, &stack.source, addr, simulated_gpu)
        .await
        .0
}

/// Publishes `module` as `spec` says, with operator `labels`, aliased `live`:
/// what the local stack does for each example.
async fn publish_live(
    source: &PluginSource,
    key: &plugin_store::KeyPair,
    module: &[u8],
    spec: PublishSpec,
    labels: &[&str],
) -> plugin_store::PluginManifest {
    let m = source
        .publish(module, spec, key, "test")
        .await
        .unwrap()
        .manifest;
    let labels = labels.iter().map(|l| (*l).to_owned()).collect();
    let registry = &**source.registry();
    plugin_store::admin::set_labels(registry, &m.name, &m.version, &labels, "test")
        .await
        .unwrap();
    let target = plugin_store::AliasTarget {
        version: m.version.clone(),
        canary: None,
    };
    plugin_store::admin::set_alias(registry, &m.name, "live", target, "test")
        .await
        .unwrap();
    m
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A stack whose Orbit config `adjust` may change (rate limits are high
    /// unless a test lowers them).
    pub async fn start_with(adjust: impl FnOnce(&mut OrbitConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let source = PluginSource::local(&dir.path().join("plugins"))
            .await
            .unwrap();
        Self::start_on(dir, source, None, adjust, false, None).await
    }

    /// A stack whose Axon serves inference (the support-intent model is
    /// published to its plugin store), and whose Orbit has a GPU pool at the address
    /// returned, probed every `probe_ms`. With `gpu_first`, the GPU pool's
    /// Axon starts before Orbit (in `gpu_axon`); otherwise nothing runs
    /// there yet: start one with [`start_gpu_axon`].
    pub async fn start_with_gpu_pool(probe_ms: u64, gpu_first: bool) -> (Self, SocketAddr) {
        // A free port, for an Axon that may start later (loopback; nothing
        // else here takes ports).
        let gpu_addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let source = PluginSource::local(&dir.path().join("plugins"))
            .await
            .unwrap();
        let adjust = |c: &mut OrbitConfig| {
            c.gpu_axon_url = Some(format!("http://{gpu_addr}"));
            c.gpu_probe_ms = probe_ms;
        };
        let gpu = gpu_first.then_some(gpu_addr);
        (
            Self::start_on(dir, source, None, adjust, true, gpu).await,
            gpu_addr,
        )
    }

    /// A stack whose plugin store is S3 and DynamoDB on moto.
    pub async fn start_on_aws() -> Self {
        let moto = Moto::start().unwrap();
        let source = moto.plugin_source("plugins", "registry").await.unwrap();
        Self::start_on(
            tempfile::tempdir().unwrap(),
            source,
            Some(moto),
            |_| {},
            false,
            None,
        )
        .await
    }

    async fn start_on(
        dir: TempDir,
        source: PluginSource,
        moto: Option<Moto>,
        adjust: impl FnOnce(&mut OrbitConfig),
        inference: bool,
        gpu_first: Option<SocketAddr>,
    ) -> Self {
        let data_dir = dir.path().to_owned();
        let keyring = LocalKeyring::open(&data_dir.join("keys.json")).unwrap();
        let dev_key = key(&keyring, "dev", PrincipalKind::User, &["developers"]);
        let bea_key = key(
            &keyring,
            "bea",
            PrincipalKind::User,
            &["developers", "beta"],
        );
        let orbit_key = key(&keyring, "orbit", PrincipalKind::Service, &["services"]);
        let policies: Arc<dyn PolicyStore> = match &moto {
            // On AWS, the policy sets too: a DynamoDB table on the emulator.
            Some(moto) => {
                let store = aws_stores::DynamoPolicyStore::new(&moto.sdk_config(), "policies");
                store.create_table().await.unwrap();
                Arc::new(store)
            }
            None => Arc::new(policy_store(&data_dir).await),
        };
        seed_default_policies(policies.as_ref()).await;
        let trust =
            plugin_store::admin::ensure_dev_trust(&data_dir.join("trust"), &**source.registry())
                .await
                .unwrap();
        // As the local stack does: approved (triage also experimental), `live`.
        for example in plugin_artifacts::EXAMPLES {
            let spec = PublishSpec::from_toml(&example.manifest_text().unwrap().unwrap()).unwrap();
            let mut labels = vec!["approved"];
            if example.name == "triage" {
                labels.push("experimental");
            }
            publish_live(
                &source,
                &trust.publisher,
                &example.bytes().unwrap(),
                spec,
                &labels,
            )
            .await;
        }

        if inference {
            publish_support_intent_model(&source, &trust.publisher).await;
        }
        let (axon, axon_addr) =
            start_axon_with(&data_dir, &source, "127.0.0.1:0".parse().unwrap(), |c| {
                if inference {
                    serve_inference(c);
                }
            })
            .await;
        let axon_url = format!("http://{axon_addr}");
        let gpu_axon = match gpu_first {
            Some(addr) => Some(
                start_axon_with(&data_dir, &source, addr, simulated_gpu)
                    .await
                    .0,
            ),
            None => None,
        };
        let mut config = OrbitConfig::local(
            data_dir.clone(),
            "127.0.0.1:0".parse().unwrap(),
            axon_url.clone(),
        );
        config.principal_rate = 10_000;
        config.principal_burst = 10_000;
        config.ip_rate = 10_000;
        config.ip_burst = 10_000;
        config.refresh_secs = 1;
        adjust(&mut config);
        let governor = match config.governance.governance {
            aws_stores::GovernanceMode::InProcess => orbit::Governor::InProcess(policies.clone()),
            // No start-up probe (the tests give endpoints that do not
            // answer), and the emulator's region and credentials, not the
            // machine's: a call fails only where the test means it to.
            aws_stores::GovernanceMode::Lambda => {
                let args = &config.governance;
                let sdk = aws_stores::testing::sdk_config_at(
                    args.governance_endpoint_url.as_deref().unwrap(),
                );
                orbit::Governor::Remote(Arc::new(aws_stores::LambdaDecider::new(
                    &sdk,
                    args.governance_function.as_deref().unwrap(),
                    std::time::Duration::from_millis(args.governance_timeout_ms),
                )))
            }
        };
        let state = orbit::build(&config, source.clone(), governor)
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let orbit_url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel();
        let door = config.front_door();
        let task = tokio::spawn(async move {
            orbit::serve(listener, state, door, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            _dir: dir,
            data_dir,
            source,
            _moto: moto,
            policies,
            dev: OrbitClient::new(&orbit_url, dev_key.clone()),
            dev_key,
            bea: OrbitClient::new(&orbit_url, bea_key),
            orbit_key,
            orbit_url,
            axon_addr,
            axon_url,
            axon: Some(axon),
            gpu_axon,
            orbit: Some(Server {
                stop: Some(stop),
                task,
            }),
        }
    }

    /// Puts `documents` as a new policy version and activates it, as
    /// `agentctl policy put --activate` does; returns the version.
    pub async fn activate_policies(&self, documents: Vec<governance::PolicyDocument>) -> u64 {
        self.activate_policies_with(documents, governance::SCHEMA)
            .await
    }

    /// As [`Self::activate_policies`], validated against `schema` (with
    /// plugin actions, say).
    pub async fn activate_policies_with(
        &self,
        documents: Vec<governance::PolicyDocument>,
        schema: &str,
    ) -> u64 {
        let store = &self.policies;
        let version = store
            .put(&NewPolicySet {
                documents,
                schema: schema.into(),
                author: "test".into(),
                message: "test".into(),
            })
            .await
            .unwrap()
            .version;
        let revision = store.head().await.unwrap().unwrap().revision;
        store
            .activate(&Activate {
                version,
                expected_revision: revision,
                kind: ActivationKind::Activate,
                actor: "test",
            })
            .await
            .unwrap();
        version
    }

    /// Publishes `artifact` as the plugin.toml `toml` says, labelled
    /// `approved` and aliased `live`, and waits until Orbit serves it.
    pub async fn publish_approved(&self, artifact: plugin_artifacts::Artifact, toml: &str) {
        let registry = &**self.source.registry();
        let trust = plugin_store::admin::ensure_dev_trust(&self.data_dir.join("trust"), registry)
            .await
            .unwrap();
        let spec = PublishSpec::from_toml(toml).unwrap();
        if spec.inference.is_some() {
            // Publishing pins the model's digest: it must be there first.
            publish_support_intent_model(&self.source, &trust.publisher).await;
        }
        let m = publish_live(
            &self.source,
            &trust.publisher,
            &artifact.bytes().unwrap(),
            spec,
            &["approved"],
        )
        .await;
        let name = m.name.to_string();
        assert!(
            eventually(Duration::from_secs(30), || async {
                let listing = self
                    .dev
                    .send(reqwest::Method::GET, "/v1/plugins", Vec::new())
                    .await
                    .unwrap();
                listing.body["plugins"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == name.as_str() && !p["aliases"]["live"].is_null())
            })
            .await,
            "Orbit never listed {name} with a `live` alias: {}",
            self.dev
                .send(reqwest::Method::GET, "/v1/plugins", Vec::new())
                .await
                .unwrap()
                .body
        );
    }

    /// Waits until Orbit's `orbit_dispatches_in_flight` gauge reads `n`:
    /// a test acts once requests hold their places, not after a guess at how
    /// long that takes.
    pub async fn wait_in_flight(&self, n: usize) {
        let want = format!("orbit_dispatches_in_flight {n}\n");
        let url = format!("{}/metrics", self.orbit_url);
        assert!(
            eventually(Duration::from_secs(60), || async {
                let metrics = reqwest::get(&url).await.unwrap().text().await.unwrap();
                metrics.contains(&want)
            })
            .await,
            "never {n} dispatches in flight"
        );
    }

    /// A signed dispatch as `dev`.
    pub async fn dispatch(&self, body: serde_json::Value) -> Reply {
        self.dev.dispatch(&body).await.unwrap()
    }

    /// Sends `body` to `url` signed with `key` at `time`, with `tamper`
    /// applied to the request after signing.
    pub async fn send_signed(
        url: &str,
        key: &SigningKey,
        body: &[u8],
        time: SystemTime,
        tamper: impl FnOnce(&mut reqwest::Request),
    ) -> Reply {
        // Axon requires a unique signed request id; Orbit ignores it.
        let request_id = uuid::Uuid::new_v4().to_string();
        let headers = [
            ("content-type", "application/json"),
            ("x-correlation-id", "sig-test"),
            (auth::REQUEST_ID_HEADER, request_id.as_str()),
        ];
        let signed = auth::sign(key, "POST", url, &headers, body, time).unwrap();
        let client = reqwest::Client::new();
        let mut builder = client.post(url).body(body.to_vec());
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        for (name, value) in signed {
            builder = builder.header(name, value);
        }
        let mut request = builder.build().unwrap();
        tamper(&mut request);
        reply(client.execute(request).await.unwrap()).await
    }
}

impl Stack {
    /// Orbit's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.orbit_url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The audit file of this stack's Orbit.
    pub fn audit_path(&self) -> PathBuf {
        self.data_dir.join("audit").join("decisions.jsonl")
    }

    /// The records of the audit file, after checking its chain.
    pub fn audit_records(&self) -> Vec<governance::AuditRecord> {
        let bytes = std::fs::read(self.audit_path()).unwrap();
        governance::audit::verify(bytes.as_slice()).unwrap();
        bytes
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).unwrap())
            .collect()
    }
}

/// The local stack's policy store under `data_dir`.
pub async fn policy_store(data_dir: &std::path::Path) -> governance::SqlitePolicyStore {
    governance::SqlitePolicyStore::open(&aws_stores::PolicyStoreArgs::local_path(data_dir))
        .await
        .unwrap()
}

/// Seeds `store` with the default policies, as `agentctl up` does.
pub async fn seed_default_policies(store: &dyn PolicyStore) {
    governance::store::seed_if_new(
        store,
        &NewPolicySet {
            documents: governance::default_documents(),
            schema: governance::SCHEMA.into(),
            author: "test".into(),
            message: "defaults".into(),
        },
    )
    .await
    .unwrap();
}

pub async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{status} with a non-JSON body ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Reply {
        status,
        headers,
        body,
    }
}

pub fn code(reply: &Reply) -> &str {
    reply.body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error envelope: {} {}", reply.status, reply.body))
}

/// Polls `check` until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Publishes the support-intent model, the one the tests' plugins pin (the
/// same bytes again are a no-op).
async fn publish_support_intent_model(source: &PluginSource, key: &plugin_store::KeyPair) {
    let model = plugin_artifacts::SUPPORT_INTENT_MODEL;
    let spec = plugin_store::model::ModelSpec::from_toml(&model.spec_text().unwrap());
    source
        .publish_model(&model.bytes().unwrap(), spec.unwrap(), key, "test", &|_| {})
        .await
        .unwrap();
}
