//! The whole stack on embedded defaults, in one process: what `agentctl up`
//! runs and what the load benchmark sets up.
//!
//! [`prepare`] makes a data directory usable (idempotently): a keyring with a
//! `dev` user (group `developers`) and Orbit's `orbit` service key, the dev
//! credentials as AWS profile `agent-runtime` in `<data>/credentials` (0600),
//! a policy store seeded with the default policies when it is created
//! (`<data>/governance/policies.db`), a root key, a dev publisher
//! key and a trust list naming it (`<data>/trust/`), and the example plugins
//! (compiled by the build) published through the signed path into
//! `<data>/plugins/`, labelled `approved` (`triage` also `experimental`) and
//! aliased `live` the first time they are published, and the intent table's
//! [`SEED_ROUTES`] set once (the earlier system's `call_reasoning` reaches
//! `echo`). Where ONNX Runtime is found (the `onnxruntime` wheel of the
//! test Python), it also trains the support-intent model and publishes it,
//! and the `support-intent` example, the same way.
//! [`LocalStack::start`] then runs Axon (with inference, if set up), the
//! GPU pool's Axon when asked, and Orbit on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use auth::keyring::Identity;
use auth::{LocalKeyring, PrincipalKind, SigningKey};
use governance::PolicyStore as _;
use governance::store::{NewPolicySet, seed_if_new};
use std::collections::BTreeSet;

use axon::inference::Accelerator;
use plugin_store::model::ModelSpec;
use plugin_store::{AliasTarget, KeyPair, PluginSource, PublishSpec, StoreError, admin};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The AWS profile the dev credentials are written under.
pub const PROFILE: &str = "agent-runtime";

/// What [`prepare`] set up.
pub struct Prepared {
    /// The dev user's key, as written to the credentials file.
    pub dev_key: SigningKey,
    /// Orbit's key (the only one Axon accepts).
    pub orbit_key: SigningKey,
    /// `<data>/credentials`.
    pub credentials: PathBuf,
    /// libonnxruntime, where inference is set up.
    pub onnxruntime: Option<PathBuf>,
}

/// Makes `data_dir` ready for the stack; safe to run on every start.
pub async fn prepare(data_dir: &Path) -> anyhow::Result<Prepared> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating `{}`", data_dir.display()))?;
    let keyring = LocalKeyring::open(&data_dir.join("keys.json"))?;
    let dev_key = ensure_key(&keyring, "dev", PrincipalKind::User, &["developers"])?;
    let orbit_key = ensure_key(&keyring, "orbit", PrincipalKind::Service, &["services"])?;
    let credentials = data_dir.join("credentials");
    auth::credentials::write_profile(
        &credentials,
        PROFILE,
        &dev_key.access_key_id,
        &dev_key.secret_access_key,
    )
    .with_context(|| format!("writing `{}`", credentials.display()))?;

    seed_policies(data_dir).await?;
    let source = plugin_store::PluginSource::local(&data_dir.join("plugins")).await?;
    let trust =
        plugin_store::admin::ensure_dev_trust(&data_dir.join("trust"), &**source.registry())
            .await
            .context("setting up the local trust list")?;
    publish_examples(&source, &trust.publisher).await?;
    let onnxruntime = prepare_inference(&source, &trust.publisher).await?;
    seed_routes(&**source.registry()).await?;
    Ok(Prepared {
        dev_key,
        orbit_key,
        credentials,
        onnxruntime,
    })
}

/// Sets up inference where ONNX Runtime is found: the support-intent model
/// trained (cached by the build) and published to the plugin store, and the
/// `support-intent` example published. Returns the library; `None` (with a
/// warning saying how to turn it on) where there is none.
async fn prepare_inference(
    source: &PluginSource,
    key: &KeyPair,
) -> anyhow::Result<Option<PathBuf>> {
    let library = match plugin_artifacts::onnxruntime_library() {
        Ok(library) => library,
        Err(e) => {
            tracing::warn!(
                "inference is off (the support-intent example is not published): {e}; ./scripts/up.sh installs the `onnxruntime` wheel into .venv"
            );
            return Ok(None);
        }
    };
    let model = plugin_artifacts::SUPPORT_INTENT_MODEL;
    let bytes = model
        .bytes()
        .map_err(anyhow::Error::msg)
        .context("training the support-intent model")?;
    let spec = ModelSpec::from_toml(&model.spec_text().context("reading its model.toml")?)?;
    match source
        .publish_model(&bytes, spec, key, ACTOR, &|_| {})
        .await
    {
        Ok(published) if published.new => {
            let manifest = published.manifest;
            tracing::info!(model = %manifest.name, version = %manifest.version, digest = %manifest.digest, "model published");
        }
        Ok(_) => {}
        Err(e @ StoreError::AlreadyPublished { .. }) => {
            tracing::warn!("{e}; the stack serves the model already there")
        }
        Err(e) => return Err(e).context("publishing the support-intent model"),
    }
    publish_example(source, key, &plugin_artifacts::SUPPORT_INTENT).await?;
    Ok(Some(library))
}

/// Seeds a policy store that has never had an active set: with the
/// `.cedar` files of `<data>/policies/` where that directory exists (a data
/// directory from before the store, kept as its operator left it, even
/// empty), else with the defaults. A store that has had a set is never
/// seeded again, so a set an operator emptied stays empty.
async fn seed_policies(data_dir: &Path) -> anyhow::Result<()> {
    let path = aws_stores::PolicyStoreArgs::local_path(data_dir);
    let store = governance::SqlitePolicyStore::open(&path)
        .await
        .with_context(|| format!("opening the policy store `{}`", path.display()))?;
    // Checked first, so an old policy directory is read (and must validate)
    // only on the run that imports it, never again.
    if store.head().await?.is_some() {
        return Ok(());
    }
    let legacy = data_dir.join("policies");
    let (documents, message) = if legacy.is_dir() {
        let documents = governance::read_policies(&legacy)?;
        (documents, format!("imported from `{}`", legacy.display()))
    } else {
        (
            governance::default_documents(),
            "the default policies".to_owned(),
        )
    };
    governance::validate(&documents, &governance::PolicySchema::base()?)
        .context("the policies to seed the store with")?;
    let seed = NewPolicySet {
        documents,
        schema: governance::SCHEMA.to_owned(),
        author: ACTOR.to_owned(),
        message,
    };
    if let Some(version) = seed_if_new(&store, &seed).await? {
        tracing::info!(store = %path.display(), version, "policy store created: {}", seed.message);
    }
    Ok(())
}

/// The newest key of `principal`, created if it has none.
fn ensure_key(
    keyring: &LocalKeyring,
    principal: &str,
    kind: PrincipalKind,
    groups: &[&str],
) -> anyhow::Result<SigningKey> {
    let key = match keyring.newest_key_of(principal) {
        Some(key) => (*key).clone(),
        None => {
            let key = keyring.create_key(Identity {
                principal: principal.to_owned(),
                kind,
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                tenant: "local".to_owned(),
            })?;
            tracing::info!(principal, access_key_id = %key.access_key_id, "access key created");
            key
        }
    };
    Ok(SigningKey {
        access_key_id: key.access_key_id,
        secret_access_key: key.secret_access_key,
        region: auth::DEFAULT_REGION.to_owned(),
    })
}

/// Who the local stack's own operator actions are recorded as.
pub const ACTOR: &str = "agentctl-up";

/// The routes the local stack starts with: the earlier system's clients
/// dispatch `{"intent": "call_reasoning", "context": {...}}` with no plugin.
pub const SEED_ROUTES: &[(&str, &str)] = &[("call_reasoning", "echo@live")];

/// Sets each of [`SEED_ROUTES`] whose intent has never been routed: a route
/// an operator changed or removed stays as they left it.
async fn seed_routes(registry: &dyn plugin_store::Registry) -> anyhow::Result<()> {
    let history = registry.route_history().await?;
    for (intent, target) in SEED_ROUTES {
        let action = format!("route {intent}");
        if history.iter().any(|h| h.action == action) {
            continue;
        }
        admin::set_route(registry, intent, target.parse()?, ACTOR)
            .await
            .with_context(|| format!("routing intent `{intent}`"))?;
    }
    Ok(())
}

/// Operator labels the local stack gives each example when first published.
fn example_labels(name: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::from(["approved".to_owned()]);
    if name == "triage" {
        labels.insert("experimental".to_owned());
    }
    labels
}

/// Publishes every example plugin, signed by `key`. A new version is
/// labelled and, if the plugin has no `live` alias yet, aliased `live`;
/// an unchanged one is a no-op (operators' later changes stand).
pub async fn publish_examples(source: &PluginSource, key: &KeyPair) -> anyhow::Result<()> {
    for example in plugin_artifacts::EXAMPLES {
        publish_example(source, key, example).await?;
    }
    Ok(())
}

/// Publishes one example (see [`publish_examples`]).
async fn publish_example(
    source: &PluginSource,
    key: &KeyPair,
    example: &plugin_artifacts::Artifact,
) -> anyhow::Result<()> {
    let Some(manifest) = example.manifest_text() else {
        return Ok(());
    };
    let spec = PublishSpec::from_toml(&manifest.context("reading an example's plugin.toml")?)?;
    let module = example
        .bytes()
        .with_context(|| format!("reading the compiled `{}` plugin", example.name))?;
    let published = match source.publish(&module, spec, key, ACTOR).await {
        Ok(published) => published,
        Err(e @ StoreError::AlreadyPublished { .. }) => {
            tracing::warn!(
                "{e}; the stack serves the published one (bump the version in plugin.toml to publish a change)"
            );
            return Ok(());
        }
        Err(e) => {
            return Err(e).with_context(|| format!("publishing the `{}` example", example.name));
        }
    };
    if !published.new {
        return Ok(());
    }
    let m = &published.manifest;
    let registry = &**source.registry();
    admin::set_labels(
        registry,
        &m.name,
        &m.version,
        &example_labels(example.name),
        ACTOR,
    )
    .await?;
    let has_live = registry
        .snapshot()
        .await?
        .aliases
        .iter()
        .any(|a| a.plugin == m.name && a.name == "live");
    if !has_live {
        let target = AliasTarget {
            version: m.version.clone(),
            canary: None,
        };
        admin::set_alias(registry, &m.name, "live", target, ACTOR).await?;
    }
    tracing::info!(plugin = %m.name, version = %m.version, digest = %m.digest, "example published");
    Ok(())
}

/// Axon's GPU pool, run beside the CPU pool when asked.
#[derive(Debug, Clone, Copy)]
pub struct GpuPool {
    /// `Cuda` (where a GPU is found) or `SimulatedCuda` (to try routing
    /// without one).
    pub accelerator: Accelerator,
    pub listen: SocketAddr,
}

/// A server running in this process, until told to stop.
struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self, what: &str) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task
            .await
            .with_context(|| format!("waiting for {what} to stop"))?
    }
}

async fn until_stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Axon and Orbit running in this process.
pub struct LocalStack {
    pub orbit_addr: SocketAddr,
    pub axon_addr: SocketAddr,
    /// The GPU pool's Axon, if one runs.
    pub gpu_addr: Option<SocketAddr>,
    orbit: Running,
    axons: Vec<Running>,
}

impl LocalStack {
    /// Starts Axon (serving inference with `onnxruntime`, if given, models
    /// from the plugin store), the GPU pool's Axon if `gpu` says so (inference
    /// needed), then Orbit pointed at them, on a prepared `data_dir`.
    pub async fn start(
        data_dir: &Path,
        onnxruntime: Option<&Path>,
        gpu: Option<GpuPool>,
        orbit_listen: SocketAddr,
        axon_listen: SocketAddr,
    ) -> anyhow::Result<Self> {
        let source = plugin_store::PluginSource::local(&data_dir.join("plugins")).await?;
        let (cpu, axon_addr) =
            start_axon(data_dir, &source, onnxruntime, None, axon_listen).await?;
        let mut axons = vec![cpu];
        let mut gpu_addr = None;
        if let Some(pool) = gpu {
            let onnxruntime = onnxruntime.context(
                "the GPU pool runs models, and inference is off (no ONNX Runtime found)",
            )?;
            let (gpu, addr) = start_axon(
                data_dir,
                &source,
                Some(onnxruntime),
                Some(pool),
                pool.listen,
            )
            .await?;
            axons.push(gpu);
            gpu_addr = Some(addr);
        }

        let mut orbit_config = orbit::OrbitConfig::local(
            data_dir.to_owned(),
            orbit_listen,
            format!("http://{axon_addr}"),
        );
        orbit_config.gpu_axon_url = gpu_addr.map(|addr| format!("http://{addr}"));
        let governor = orbit_config.open_governance().await?;
        let orbit_state = orbit::build(&orbit_config, source, governor).await?;
        // The servers share this process's descriptors, as the binaries'
        // each do theirs.
        service_kit::front_door::raise_open_files_limit(&orbit_config.front_door());
        let orbit_listener = bind(orbit_config.listen, "Orbit", "--orbit-listen").await?;
        let orbit_addr = orbit_listener
            .local_addr()
            .context("reading Orbit's address")?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(orbit::serve(
            orbit_listener,
            orbit_state,
            orbit_config.front_door(),
            until_stopped(stopped),
        ));
        Ok(Self {
            orbit_addr,
            axon_addr,
            gpu_addr,
            orbit: Running { stop, task },
            axons,
        })
    }

    /// Stops Orbit, and once it has answered what it took (Axon serves
    /// those to the end), the Axons; waits for all.
    pub async fn stop(self) -> anyhow::Result<()> {
        let mut result = self.orbit.stop("Orbit").await;
        for axon in self.axons {
            // Every one is stopped; the first failure is reported.
            let stopped = axon.stop("Axon").await;
            result = result.and(stopped);
        }
        result
    }
}

/// Starts one Axon on `data_dir`: the CPU pool, or `gpu`'s.
async fn start_axon(
    data_dir: &Path,
    source: &PluginSource,
    onnxruntime: Option<&Path>,
    gpu: Option<GpuPool>,
    listen: SocketAddr,
) -> anyhow::Result<(Running, SocketAddr)> {
    let mut config = axon::AxonConfig::local(data_dir.to_owned(), listen);
    if let Some(library) = onnxruntime {
        config.onnxruntime = Some(library.to_owned());
    }
    let flag = match gpu {
        Some(pool) => {
            config.accelerator = pool.accelerator;
            "--gpu-axon-listen"
        }
        None => "--axon-listen",
    };
    let state = axon::build(&config, source.clone()).await?;
    let listener = bind(config.listen, "Axon", flag).await?;
    let addr = listener.local_addr().context("reading Axon's address")?;
    axon::start(&config, &state).await?;
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(axon::serve(
        listener,
        state,
        config.front_door(),
        until_stopped(stopped),
    ));
    Ok((Running { stop, task }, addr))
}

async fn bind(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {what} to {addr}; is another stack running? pass {flag}"))
}

#[cfg(test)]
mod tests {
    use governance::PolicyStore as _;
    use governance::store::{Activate, ActivationKind, NewPolicySet};

    use super::seed_policies;

    async fn store(dir: &std::path::Path) -> governance::SqlitePolicyStore {
        governance::SqlitePolicyStore::open(&aws_stores::PolicyStoreArgs::local_path(dir))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn policies_are_seeded_once_and_an_emptied_set_stays_empty_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        seed_policies(dir.path()).await.unwrap();
        let store = store(dir.path()).await;
        let head = store.head().await.unwrap().unwrap();
        let seeded = store.get(head.version).await.unwrap();
        assert_eq!(seeded.documents, governance::default_documents());

        // The operator locks everything down.
        let empty = store
            .put(&NewPolicySet {
                documents: Vec::new(),
                schema: governance::SCHEMA.into(),
                author: "operator".into(),
                message: "deny everything".into(),
            })
            .await
            .unwrap();
        store
            .activate(&Activate {
                version: empty.version,
                expected_revision: head.revision,
                kind: ActivationKind::Activate,
                actor: "operator",
            })
            .await
            .unwrap();

        // `agentctl up` again, twice: nothing is re-seeded.
        seed_policies(dir.path()).await.unwrap();
        seed_policies(dir.path()).await.unwrap();
        assert_eq!(store.head().await.unwrap().unwrap().version, empty.version);
        assert_eq!(store.list().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn routes_are_seeded_once_and_a_removed_one_stays_removed() {
        use plugin_store::registry::AliasMove;
        use plugin_store::{AliasTarget, Registry as _, SqliteRegistry, Version, VersionRecord};

        let dir = tempfile::tempdir().unwrap();
        let registry = SqliteRegistry::open(&dir.path().join("registry.db"))
            .await
            .unwrap();
        let key = plugin_store::KeyPair::generate().unwrap();
        let echo = VersionRecord {
            name: "echo".parse().unwrap(),
            version: Version::new(1, 0, 0),
            digest: plugin_store::Digest::of(b"echo"),
            envelope: key.sign("application/test", b"echo"),
            published_at: "2026-01-01T00:00:00Z".into(),
            published_by: "test".into(),
        };
        registry.register(&echo).await.unwrap();
        registry
            .move_alias(&AliasMove {
                plugin: echo.name.clone(),
                name: "live".into(),
                target: AliasTarget {
                    version: echo.version.clone(),
                    canary: None,
                },
                previous: None,
                expected_revision: 0,
                actor: "test".into(),
            })
            .await
            .unwrap();
        let routes = async || {
            let snapshot = registry.snapshot().await.unwrap();
            snapshot
                .routes
                .iter()
                .map(|r| format!("{} {}", r.intent, r.target))
                .collect::<Vec<_>>()
        };

        super::seed_routes(&registry).await.unwrap();
        assert_eq!(routes().await, ["call_reasoning echo@live"]);
        // The operator removes it; `agentctl up` again, twice, leaves it so.
        plugin_store::admin::remove_route(&registry, "call_reasoning", "operator")
            .await
            .unwrap();
        super::seed_routes(&registry).await.unwrap();
        super::seed_routes(&registry).await.unwrap();
        assert!(routes().await.is_empty());
    }

    #[tokio::test]
    async fn a_policy_directory_from_before_the_store_is_imported_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("policies");
        std::fs::create_dir(&legacy).unwrap();
        let text = r#"@id("only-beta") permit(principal in AgentRuntime::Group::"beta", action, resource);"#;
        std::fs::write(legacy.join("mine.cedar"), text).unwrap();
        seed_policies(dir.path()).await.unwrap();
        let store = store(dir.path()).await;
        let head = store.head().await.unwrap().unwrap();
        let documents = store.get(head.version).await.unwrap().documents;
        assert_eq!(documents.len(), 1);
        assert_eq!(
            (documents[0].name.as_str(), documents[0].text.as_str()),
            ("mine.cedar", text)
        );

        // Once imported, the directory is never read again: an edit that
        // breaks it does not stop `agentctl up`, and changes nothing.
        std::fs::write(legacy.join("mine.cedar"), "permit (").unwrap();
        seed_policies(dir.path()).await.unwrap();
        assert_eq!(store.head().await.unwrap().unwrap(), head);
    }
}
