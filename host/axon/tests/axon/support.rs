//! A real Axon on a loopback port, with every test plugin published.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use aws_stores::testing::Moto;
use axon::AxonConfig;
use plugin_artifacts::Artifact;
use plugin_store::admin::DevTrust;
use plugin_store::{Digest, KeyPair, PluginManifest, PluginSource, PublishSpec};
use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Limits the hostile plugins are published with (see each test).
pub const SPIN_DEADLINE_MS: u64 = 1000;
pub const BOMB_MEMORY_MIB: u64 = 16;
pub const OUTPUT_LIMIT_KIB: u64 = 64;
pub const SPIN_CONCURRENCY: u32 = 2;
/// Plugins [`publish_all`] publishes: the three examples and the hostile ones.
pub const PUBLISHED_PLUGINS: usize = 11;

pub struct TestAxon {
    pub url: String,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    pub source: PluginSource,
    /// The root and publisher keys of this Axon's trust list.
    pub trust: DevTrust,
    /// The emulator holding the plugin store, when it is S3 and DynamoDB.
    moto: Option<Moto>,
    _dir: Option<TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The error code of an error envelope.
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error envelope: {}", self.body))
    }

    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap()
    }
}

fn spec(name: &str, extra: &str) -> PublishSpec {
    PublishSpec::from_toml(&format!("name = \"{name}\"\nversion = \"1.0.0\"\n{extra}")).unwrap()
}

/// Publishes every example (from its plugin.toml) and hostile plugin.
pub async fn publish_all(source: &PluginSource, key: &KeyPair) {
    for example in plugin_artifacts::EXAMPLES {
        let spec = PublishSpec::from_toml(&example.manifest_text().unwrap().unwrap()).unwrap();
        source
            .publish(&example.bytes().unwrap(), spec, key, "test")
            .await
            .unwrap();
    }
    let hostile: [(Artifact, String); PUBLISHED_PLUGINS - plugin_artifacts::EXAMPLES.len()] = [
        (plugin_artifacts::COUNTER, String::new()),
        (plugin_artifacts::DEEP_RECURSION, String::new()),
        (plugin_artifacts::ESCAPE, String::new()),
        (
            plugin_artifacts::HUGE_OUTPUT,
            format!("[limits]\noutput_kib = {OUTPUT_LIMIT_KIB}"),
        ),
        (
            plugin_artifacts::MEMORY_BOMB,
            format!("[limits]\nmemory_mib = {BOMB_MEMORY_MIB}"),
        ),
        (plugin_artifacts::PANIC, String::new()),
        (plugin_artifacts::RESOURCE_FLOOD, String::new()),
        (
            plugin_artifacts::SPIN_LOOP,
            format!(
                "[limits]\ndeadline_ms = {SPIN_DEADLINE_MS}\nmax_concurrency = {SPIN_CONCURRENCY}"
            ),
        ),
    ];
    for (artifact, limits) in hostile {
        source
            .publish(
                &artifact.bytes().unwrap(),
                spec(artifact.name, &limits),
                key,
                "test",
            )
            .await
            .unwrap();
    }
}

impl TestAxon {
    /// A fresh data directory with every test plugin published.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut AxonConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_owned();
        let mut axon = Self::start_in(&data_dir, adjust, true).await;
        axon._dir = Some(dir);
        axon
    }

    /// Axon on the embedded store of `data_dir`; `publish` publishes the
    /// test plugins first.
    pub async fn start_in(
        data_dir: &Path,
        adjust: impl FnOnce(&mut AxonConfig),
        publish: bool,
    ) -> Self {
        let source = PluginSource::local(&data_dir.join("plugins"))
            .await
            .unwrap();
        Self::start_on(data_dir, source, adjust, publish).await
    }

    /// Axon with every test plugin published to S3 and DynamoDB on moto.
    pub async fn start_on_aws(adjust: impl FnOnce(&mut AxonConfig)) -> Self {
        let moto = Moto::start().unwrap();
        let source = moto.plugin_source("plugins", "registry").await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut axon = Self::start_on(dir.path(), source, adjust, true).await;
        axon._dir = Some(dir);
        axon.moto = Some(moto);
        axon
    }

    async fn start_on(
        data_dir: &Path,
        source: PluginSource,
        adjust: impl FnOnce(&mut AxonConfig),
        publish: bool,
    ) -> Self {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut config = AxonConfig::local(data_dir.to_owned(), listen);
        config.pool_size = 32;
        // These tests exercise the sandbox; SigV4 is tested with Orbit.
        config.insecure_no_auth = true;
        // Follow the registry closely, so revocations show quickly.
        config.refresh_ms = 100;
        adjust(&mut config);
        let trust =
            plugin_store::admin::ensure_dev_trust(&data_dir.join("trust"), &**source.registry())
                .await
                .unwrap();
        if publish {
            publish_all(&source, &trust.publisher).await;
        }
        let state = axon::build(&config, source.clone()).await.unwrap();
        axon::start(&config, &state).await.unwrap();
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel();
        let door = config.front_door();
        let task = tokio::spawn(async move {
            axon::serve(listener, state, door, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            url,
            client: reqwest::Client::new(),
            data_dir: data_dir.to_owned(),
            source,
            trust,
            moto: None,
            _dir: None,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// Publishes `module` under `spec`, signed by the trusted dev key.
    pub async fn publish(&self, module: &[u8], spec: PublishSpec) -> PluginManifest {
        self.source
            .publish(module, spec, &self.trust.publisher, "test")
            .await
            .unwrap()
            .manifest
    }

    /// Stores `module` and registers `record` as is, bypassing publish's
    /// checks: what an attacker with write access to the stores could do.
    pub async fn register_raw(&self, module: &[u8], record: plugin_store::VersionRecord) {
        self.source
            .blobs()
            .put(&plugin_store::Digest::of(module), module)
            .await
            .unwrap();
        self.source.registry().register(&record).await.unwrap();
    }

    /// Rewrites the stored module `digest` with `tamper` applied, behind the
    /// plugin store's back: a file edit, or a new S3 object version.
    pub async fn tamper_with_blob(&self, digest: &Digest, tamper: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = self.source.blobs().get(digest, u64::MAX).await.unwrap();
        tamper(&mut bytes);
        match &self.moto {
            None => {
                let path = self
                    .data_dir
                    .join("plugins/blobs/sha256")
                    .join(digest.hex());
                std::fs::write(path, bytes).unwrap();
            }
            Some(moto) => {
                let s3 = aws_stores::S3BlobStore::new(&moto.sdk_config(), "plugins", "plugins/");
                s3.client()
                    .put_object()
                    .bucket("plugins")
                    .key(s3.key(digest))
                    .body(bytes.into())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    /// The registered digest of `plugin` at `version`, as Orbit would send it.
    pub async fn digest_of(&self, plugin: &str, version: &str) -> Option<String> {
        let name = plugin.parse().ok()?;
        let version = version.parse().ok()?;
        let entry = self.source.entry(&name, &version).await.ok()?;
        Some(entry.record.digest.to_string())
    }

    /// `POST /v1/reason` for `plugin` 1.0.0 with `input`.
    pub async fn reason(&self, plugin: &str, input: Value) -> Reply {
        self.post(serde_json::json!({
            "plugin": plugin,
            "version": "1.0.0",
            "request": { "intent": "test", "input": input },
        }))
        .await
    }

    /// `POST /v1/reason` with `body`; a body without `digest` gets the
    /// registered one (what Orbit governs), when there is one.
    pub async fn post(&self, mut body: Value) -> Reply {
        if body.get("digest").is_none()
            && let (Some(plugin), Some(version)) =
                (body["plugin"].as_str(), body["version"].as_str())
            && let Some(digest) = self.digest_of(plugin, version).await
        {
            body["digest"] = Value::String(digest);
        }
        self.post_raw(body.to_string().into_bytes()).await
    }

    pub async fn post_raw(&self, body: Vec<u8>) -> Reply {
        let response = self
            .client
            .post(format!("{}/v1/reason", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        Self::reply(response).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        Self::reply(response).await
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until exactly `n` instances are running (Axon's own gauge), so
    /// a test acts once requests hold their slots rather than after a guess
    /// at how long that takes. Gives up after 60 s.
    pub async fn wait_in_flight(&self, n: usize) {
        let want = format!("axon_instances_in_flight {n}\n");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let metrics = self.metrics().await;
            if metrics.contains(&want) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never {n} in flight:\n{metrics}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Publishes spin-loop `version` with its usual concurrency limit and a
    /// 20 s deadline, so requests that sleep hold their slots for as long
    /// as a test needs, however slow the machine.
    pub async fn publish_long_spin_loop(&self, version: &str) {
        let spec = PublishSpec::from_toml(&format!(
            "name = \"spin-loop\"\nversion = \"{version}\"\n[limits]\ndeadline_ms = 20000\nmax_concurrency = {SPIN_CONCURRENCY}"
        ))
        .unwrap();
        self.publish(&plugin_artifacts::SPIN_LOOP.bytes().unwrap(), spec)
            .await;
    }

    pub async fn reply(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "non-JSON body ({e}) with {status}: {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        Reply {
            status,
            headers,
            body,
        }
    }
}
