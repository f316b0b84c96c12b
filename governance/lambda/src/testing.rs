//! What the function's test and its latency benchmark share: the function's
//! binary run against a real Lambda runtime API, a policy table on moto, and
//! a generated corpus of questions.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_stores::DynamoPolicyStore;
use aws_stores::testing::{LambdaApi, Moto};
use governance::store::{Activate, ActivationKind, NewPolicySet};
use governance::{
    DecisionRequest, PluginInfo, PluginNeeds, PolicyDocument, PolicyStore, Principal, PrincipalKind,
};
use rand::RngExt;
use rand::rngs::StdRng;

/// The function's name: `cargo lambda watch` knows it as a binary of the
/// workspace.
pub const FUNCTION: &str = "governance-lambda";

/// Policies that reach every outcome: group and tenant scopes, labels,
/// publisher, principal type, pre-releases, the client address, the intent,
/// the time, conditions on `summarize`'s input, and a forbid that fails to
/// evaluate (overflow) on major versions of 2 and above.
pub const POLICIES: &str = r#"
@id("developers-approved")
permit (principal in AgentRuntime::Group::"developers", action, resource)
when { resource.labels.contains("approved") && resource.publisher == "agent-runtime" };

@id("experimental-only-for-beta")
forbid (principal, action, resource)
when { resource.labels.contains("experimental") }
unless { principal in AgentRuntime::Group::"beta" };

@id("acme-may-echo")
permit (principal in AgentRuntime::Tenant::"acme", action, resource == AgentRuntime::Plugin::"echo");

@id("no-pre-releases-for-services")
forbid (principal is AgentRuntime::Service, action, resource)
when { resource.version.pre != "" };

@id("ops-from-the-office-in-2026")
permit (principal in AgentRuntime::Group::"ops", action, resource)
when {
  context.source_ip.isInRange(ip("10.0.0.0/8")) &&
  context.time >= datetime("2026-01-01") &&
  context.intent != "delete"
};

@id("long-summaries-for-beta-only")
forbid (principal, action == AgentRuntime::Action::"summarize", resource)
when { context.input.words > 1000 }
unless { principal in AgentRuntime::Group::"beta" };

@id("ops-summarize-in-english")
permit (principal in AgentRuntime::Group::"ops", action == AgentRuntime::Action::"summarize", resource)
when { context.input has lang && context.input.lang == "en" };

@id("overflows-past-major-1")
forbid (principal, action, resource)
when { resource.version.major * 4611686018427387904 > 4 };
"#;

/// The workspace root, where `cargo lambda watch` finds the function.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The function's binary, `binary`, configured to take [`FUNCTION`]'s
/// invocations from `api` and read policy sets from `table` on `moto`.
pub fn function_command(binary: &Path, api: &LambdaApi, moto: &Moto, table: &str) -> Command {
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", api.runtime_api(FUNCTION))
        .env("AWS_LAMBDA_FUNCTION_NAME", FUNCTION)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "moto")
        .env("AWS_SECRET_ACCESS_KEY", "moto")
        .env("AGENT_RUNTIME_POLICY_TABLE", table)
        .env("AGENT_RUNTIME_POLICY_REFRESH_SECS", "1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// A running function; killed when dropped.
pub struct RunningFunction(pub Child);

impl RunningFunction {
    /// Starts [`function_command`], its errors on this process's stderr.
    pub fn start(
        binary: &Path,
        api: &LambdaApi,
        moto: &Moto,
        table: &str,
    ) -> std::io::Result<Self> {
        function_command(binary, api, moto, table)
            .stderr(Stdio::inherit())
            .spawn()
            .map(Self)
    }

    /// Stops it now.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for RunningFunction {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The schema every version is put with: `summarize` has an input schema
/// (`words`, and optionally `lang`), so an action of its own.
pub fn policy_schema() -> String {
    let summarize = governance::InputType::of_schema(&serde_json::json!({
        "type": "object",
        "required": ["words"],
        "properties": {"words": {"type": "integer"}, "lang": {"type": "string"}}
    }));
    let plugins = summarize
        .map(|ty| std::collections::BTreeMap::from([("summarize".to_owned(), ty)]))
        .unwrap_or_default();
    format!(
        "{}{}",
        governance::SCHEMA,
        governance::inputs::plugin_actions_fragment(&plugins)
    )
}

/// Puts `text` as a new version of `store` and activates it, as `agentctl
/// policy put --activate` does; returns the version.
pub async fn put_active(
    store: &dyn PolicyStore,
    text: &str,
) -> Result<u64, governance::PolicyStoreError> {
    let version = store
        .put(&NewPolicySet {
            documents: vec![PolicyDocument {
                name: "policies.cedar".into(),
                text: text.into(),
            }],
            schema: policy_schema(),
            author: "test".into(),
            message: String::new(),
        })
        .await?
        .version;
    let revision = store.head().await?.map_or(0, |h| h.revision);
    store
        .activate(&Activate {
            version,
            expected_revision: revision,
            kind: ActivationKind::Activate,
            actor: "test",
        })
        .await?;
    Ok(version)
}

/// A new policy table on `moto` with `text` as its active version.
pub async fn policy_table(
    moto: &Moto,
    table: &str,
    text: &str,
) -> Result<Arc<DynamoPolicyStore>, governance::PolicyStoreError> {
    let store = Arc::new(DynamoPolicyStore::new(&moto.sdk_config(), table));
    store.create_table().await?;
    put_active(store.as_ref(), text).await?;
    Ok(store)
}

/// One generated question: who, what, and how it was asked.
#[derive(Debug)]
pub struct Question {
    pub principal: Principal,
    pub plugin: PluginInfo,
    pub intent: &'static str,
    pub source_ip: IpAddr,
    pub time: SystemTime,
    /// `summarize`'s input, as policies see it.
    pub input: Option<serde_json::Value>,
}

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

fn some_of(rng: &mut StdRng, from: &[&str]) -> BTreeSet<String> {
    from.iter()
        .filter(|_| rng.random_bool(0.5))
        .map(|s| (*s).to_owned())
        .collect()
}

impl Question {
    /// A question over the names [`POLICIES`] speak of, and others.
    pub fn generate(rng: &mut StdRng) -> Self {
        let principal = Principal {
            id: format!("p-{}", rng.random_range(0..50)),
            kind: if rng.random_bool(0.7) {
                PrincipalKind::User
            } else {
                PrincipalKind::Service
            },
            groups: some_of(rng, &["developers", "beta", "ops"])
                .into_iter()
                .collect(),
            tenant: pick(rng, &["acme", "globex", "default"]).to_owned(),
        };
        let mut version = semver::Version::new(rng.random_range(0..4), rng.random_range(0..3), 0);
        if rng.random_bool(0.25) {
            version.pre = semver::Prerelease::new("rc.1").unwrap_or(semver::Prerelease::EMPTY);
        }
        let plugin = PluginInfo {
            name: pick(rng, &["echo", "keywords", "summarize"]).to_owned(),
            version,
            publisher: pick(rng, &["agent-runtime", "someone-else"]).to_owned(),
            tags: some_of(rng, &["nlp", "fast"]),
            labels: some_of(rng, &["approved", "experimental"]),
            needs: PluginNeeds {
                capabilities: some_of(rng, &["inference"]),
                models: some_of(rng, &["support-intent", "sentiment"]),
                gpu: pick(rng, &["none", "preferred", "required"]).to_owned(),
            },
        };
        let addresses = [
            IpAddr::from([10, 1, 2, 3]),
            IpAddr::from([192, 168, 0, 7]),
            IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1u16]),
            IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1u16]),
        ];
        // 2025-01-01 to 2027-01-01, to the microsecond.
        let time = SystemTime::UNIX_EPOCH
            + Duration::from_micros(rng.random_range(1_735_689_600_000_000..1_798_761_600_000_000));
        let input = (plugin.name == "summarize").then(|| {
            let mut input = serde_json::json!({"words": rng.random_range(0..2000)});
            if rng.random_bool(0.7) {
                input["lang"] = pick(rng, &["en", "fr"]).into();
            }
            input
        });
        Self {
            principal,
            plugin,
            input,
            intent: pick(rng, &["summarize", "extract", "delete"]),
            source_ip: addresses[rng.random_range(0..addresses.len())],
            time,
        }
    }

    pub fn request(&self) -> DecisionRequest<'_> {
        DecisionRequest {
            principal: &self.principal,
            plugin: &self.plugin,
            intent: self.intent,
            source_ip: self.source_ip,
            time: self.time,
            input: self.input.as_ref(),
        }
    }
}
