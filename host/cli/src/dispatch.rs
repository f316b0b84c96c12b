//! `agentctl dispatch`: a signed `/dispatch` from the command line.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use auth::SigningKey;
use clap::Args;
use orbit::client::OrbitClient;

#[derive(Args)]
pub(crate) struct DispatchArgs {
    /// The plugin to run. Without it, Orbit's intent table routes
    /// `--intent` (`agentctl route list`).
    plugin: Option<String>,
    /// The input: JSON text, or `@path` to read it from a file.
    #[arg(long, default_value = "{}")]
    input: String,
    /// Pin a plugin version (default: whatever alias `live`, or `--alias`,
    /// points at).
    #[arg(long, requires = "plugin")]
    version: Option<String>,
    /// The alias to resolve (default `live`).
    #[arg(long, conflicts_with = "version", requires = "plugin")]
    alias: Option<String>,
    /// What you want done, in your words.
    #[arg(long, default_value = "cli")]
    intent: String,
    /// Context entries, `key=value`, repeatable.
    #[arg(long = "context", value_parser = parse_pair)]
    context: Vec<(String, String)>,
    #[command(flatten)]
    orbit: OrbitArgs,
}

/// Which Orbit to call, and the keys to sign with.
#[derive(Args)]
pub(crate) struct OrbitArgs {
    /// Orbit's URL.
    #[arg(long, env = "ORBIT_URL", default_value = "http://127.0.0.1:8080")]
    orbit: String,
    /// The credentials-file profile to sign with. (Not `AWS_PROFILE`: a
    /// developer's real AWS profile must not be picked up by accident.)
    #[arg(long, env = "AGENT_RUNTIME_PROFILE", default_value = "agent-runtime")]
    profile: String,
    /// The credentials file (default: `<data-dir>/credentials`).
    #[arg(long, env = "AGENT_RUNTIME_CREDENTIALS")]
    credentials: Option<PathBuf>,
    /// The signing region.
    #[arg(long, env = "AGENT_RUNTIME_REGION", default_value = auth::DEFAULT_REGION)]
    region: String,
}

impl OrbitArgs {
    /// A client signing with the profile's keys.
    pub(crate) fn client(&self, data_dir: &Path) -> anyhow::Result<OrbitClient> {
        let credentials = self
            .credentials
            .clone()
            .unwrap_or_else(|| data_dir.join("credentials"));
        client_from_profile(&self.orbit, &credentials, &self.profile, &self.region)
    }
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not `key=value`"))
}

/// The client for the stack's dev credentials, as `agentctl up` writes them.
pub(crate) fn client_from_profile(
    orbit: &str,
    credentials: &Path,
    profile: &str,
    region: &str,
) -> anyhow::Result<OrbitClient> {
    let (access_key_id, secret_access_key) =
        auth::credentials::read_profile(credentials, profile).map_err(anyhow::Error::msg)?;
    Ok(OrbitClient::new(
        orbit,
        SigningKey {
            access_key_id,
            secret_access_key,
            region: region.to_owned(),
        },
    ))
}

pub(crate) async fn run(data_dir: &Path, args: DispatchArgs) -> anyhow::Result<()> {
    let input_text = match args.input.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading `{path}`"))?,
        None => args.input.clone(),
    };
    let input: serde_json::Value =
        serde_json::from_str(&input_text).context("--input is not valid JSON")?;
    let mut body = serde_json::json!({
        "intent": args.intent,
        "input": input,
        "context": args.context.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
    });
    if let Some(plugin) = args.plugin {
        body["plugin"] = serde_json::Value::String(plugin);
    }
    if let Some(alias) = args.alias {
        body["alias"] = serde_json::Value::String(alias);
    }
    if let Some(version) = args.version {
        body["version"] = serde_json::Value::String(version);
    }
    let client = args.orbit.client(data_dir)?;
    let reply = client.dispatch(&body).await.map_err(anyhow::Error::msg)?;
    println!("{}", serde_json::to_string_pretty(&reply.body)?);
    if !reply.status.is_success() {
        bail!("orbit answered {}", reply.status);
    }
    Ok(())
}
