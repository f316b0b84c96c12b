//! A real AWS API emulator for tests: `moto` (PyPI `moto[server]`) on a free
//! loopback port, stopped when dropped.
//!
//! The Python is `$AGENT_RUNTIME_PYTHON` (the venv `./scripts/test.sh` sets
//! up with moto in it), else `python3`. Moto that cannot start is an error
//! that says how to install it: a test that needs it fails, never skips.
//!
//! Moto serves here one request at a time. Its threaded server applies a
//! DynamoDB transaction without a lock (and restores a copy of the whole
//! table when one fails), so concurrent transactions could interleave or
//! undo each other there, which DynamoDB itself never does; served in turn,
//! each call is atomic, as in AWS, while clients still race each other.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
use plugin_store::{PluginSource, StoreError};

use crate::{DynamoRegistry, S3BlobStore};

/// Moto's server app, served by werkzeug one request at a time.
const SERVE_SERIALLY: &str = "\
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
run_simple('127.0.0.1', int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False)
";

/// How long moto may take to start (it imports every service it emulates).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running moto server.
pub struct Moto {
    child: Child,
    endpoint: String,
    /// Moto's own log (a request line each), read when it fails to start.
    log: PathBuf,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Why moto did not start, printed whole (also by `unwrap`), so a test that
/// needs moto fails with the reason and the fix.
pub struct StartError(String);

impl std::fmt::Debug for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn free_port() -> std::io::Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()
        .map(|a| a.port())
}

impl Moto {
    /// Starts moto on a free loopback port and waits until it answers.
    pub fn start() -> Result<Self, StartError> {
        let python = std::env::var("AGENT_RUNTIME_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        Self::start_with(&python)
    }

    /// Starts moto with the `python` given.
    pub fn start_with(python: &str) -> Result<Self, StartError> {
        // A port taken between choosing and binding it: try another.
        let mut last = String::new();
        for _ in 0..3 {
            match Self::start_on(python) {
                Ok(moto) => return Ok(moto),
                Err(reason) => last = reason,
            }
        }
        Err(StartError(format!(
            "cannot start moto_server with `{python}`: {last}\n\
             Run the tests with ./scripts/test.sh (it installs moto from \
             scripts/requirements-test.txt into .venv), or `pip install 'moto[server]'` \
             and set AGENT_RUNTIME_PYTHON to that Python."
        )))
    }

    fn start_on(python: &str) -> Result<Self, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let log = std::env::temp_dir().join(format!("moto-{}-{port}.log", std::process::id()));
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("cannot create its log: {e}"))?;
        let child = Command::new(python)
            .args(["-c", SERVE_SERIALLY, &port.to_string()])
            .env("MOTO_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot run it: {e}"))?;
        let mut moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Ok(Some(status)) = moto.child.try_wait() {
                let stderr = std::fs::read_to_string(&moto.log).unwrap_or_default();
                let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
                return Err(format!("it exited ({status}): {}", tail.join(" | ")));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(moto);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "it did not answer on {addr} within {}s",
            START_TIMEOUT.as_secs()
        ))
    }

    /// Moto's URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// An SDK configuration that reaches moto (any credentials do).
    pub fn sdk_config(&self) -> SdkConfig {
        sdk_config_at(&self.endpoint)
    }

    /// A plugin source on a new versioned `bucket` and registry `table` in
    /// moto, blobs under `plugins/`.
    pub async fn plugin_source(
        &self,
        bucket: &str,
        table: &str,
    ) -> Result<PluginSource, StoreError> {
        let sdk = self.sdk_config();
        let blobs = S3BlobStore::new(&sdk, bucket, "plugins/");
        blobs.create_bucket().await?;
        let registry = DynamoRegistry::new(&sdk, table);
        registry.create_table().await?;
        Ok(PluginSource::new(Arc::new(blobs), Arc::new(registry)))
    }
}

/// A real Lambda API on loopback: `cargo lambda watch --only-lambda-apis`
/// (PyPI `cargo-lambda`). It serves the Invoke API for the functions that are
/// binaries of the workspace it is started in, and the runtime API that a
/// function binary, run by the test, polls for invocations. Stopped when
/// dropped.
pub struct LambdaApi {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for LambdaApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl LambdaApi {
    /// Starts `cargo lambda watch` for the workspace at `workspace` on a
    /// free loopback port. `cargo-lambda` is found beside
    /// `$AGENT_RUNTIME_PYTHON` (the venv `./scripts/test.sh` installs it
    /// into), else on `PATH`.
    pub fn start(workspace: &std::path::Path) -> Result<Self, StartError> {
        let program = std::env::var("AGENT_RUNTIME_PYTHON")
            .ok()
            .and_then(|python| {
                let beside = PathBuf::from(python).with_file_name("cargo-lambda");
                beside.exists().then_some(beside)
            })
            .unwrap_or_else(|| PathBuf::from("cargo-lambda"));
        let mut last = String::new();
        for _ in 0..3 {
            match Self::start_on(&program, workspace) {
                Ok(api) => return Ok(api),
                Err(reason) => last = reason,
            }
        }
        Err(StartError(format!(
            "cannot start `{} lambda watch`: {last}\n\
             Run the tests with ./scripts/test.sh (it installs cargo-lambda from \
             scripts/requirements-test.txt into .venv), or `pip install cargo-lambda` \
             and set AGENT_RUNTIME_PYTHON to that environment's Python.",
            program.display()
        )))
    }

    fn start_on(program: &std::path::Path, workspace: &std::path::Path) -> Result<Self, String> {
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let log =
            std::env::temp_dir().join(format!("cargo-lambda-{}-{port}.log", std::process::id()));
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("cannot create its log: {e}"))?;
        let child = Command::new(program)
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "-A",
                "127.0.0.1",
                "-P",
            ])
            .arg(port.to_string())
            .current_dir(workspace)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot run it: {e}"))?;
        let mut api = Self { child, port, log };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Ok(Some(status)) = api.child.try_wait() {
                let output = std::fs::read_to_string(&api.log).unwrap_or_default();
                let tail: Vec<&str> = output.lines().rev().take(5).collect();
                return Err(format!("it exited ({status}): {}", tail.join(" | ")));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(api);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "it did not answer on {addr} within {}s",
            START_TIMEOUT.as_secs()
        ))
    }

    /// The Invoke API's URL (an SDK endpoint).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `AWS_LAMBDA_RUNTIME_API` from which `function`'s binary takes
    /// the invocations of `function`.
    pub fn runtime_api(&self, function: &str) -> String {
        format!("http://127.0.0.1:{}/.rt/{function}", self.port)
    }

    /// What it has printed so far, to explain a failure.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An SDK configuration that reaches this Lambda API (any credentials do).
    pub fn sdk_config(&self) -> SdkConfig {
        sdk_config_at(&self.endpoint())
    }

    /// Invokes `function` with `payload` as it is: whether it failed (its
    /// `FunctionError`), and its answer.
    pub async fn invoke_raw(
        &self,
        function: &str,
        payload: &[u8],
    ) -> Result<(Option<String>, Vec<u8>), String> {
        let output = aws_sdk_lambda::Client::new(&self.sdk_config())
            .invoke()
            .function_name(function)
            .payload(aws_sdk_lambda::primitives::Blob::new(payload))
            .send()
            .await
            .map_err(|e| crate::causes(&e))?;
        Ok((
            output.function_error,
            output.payload.map(|p| p.into_inner()).unwrap_or_default(),
        ))
    }
}

/// An SDK configuration that reaches an emulator at `endpoint`, with a fixed
/// region and credentials (emulators take any), so a test never consults
/// the machine's own.
pub fn sdk_config_at(endpoint: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .timeout_config(crate::config::timeouts())
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "test", "test", None, None, "test",
        )))
        .build()
}
