//! `agentctl policy`: governance owners' side of the versioned policy store.
//!
//! Before a change: `validate` (strict, against the schema Orbit uses),
//! `test` (a file of cases), `diff` (against what is in force), `replay`
//! (the recorded decisions of the audit trail, decided again). The change:
//! `put` (a new immutable version), `activate --shadow` (decided on live
//! traffic beside the active set, differences recorded, nothing enforced),
//! `activate` or `rollback` (the head moves by compare-and-set, so a
//! concurrent change is never overwritten), `end-shadow`.
//! Inspection: `list`, `history`. Orbit picks up a new head within
//! `--refresh-secs`, and only after checking its hash and validating it.
//!
//! A policy set is named by a path (a directory of `.cedar` files, or one
//! file), by `active`, or by a version number. A stored version is checked
//! against the schema it was put with; files against the schema the plugin
//! registry gives now (each plugin with an input schema has its own action).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use governance::cases::Cases;
use governance::store::{Activate, ActivationKind, NewPolicySet};
use governance::{
    Governance, GovernanceConfig, InputType, PolicyDocument, PolicySchema, PolicyStore,
};

/// `agentctl policy`: which store, and what to do in it.
#[derive(clap::Args)]
pub(crate) struct PolicyArgs {
    #[command(flatten)]
    store: aws_stores::PolicyStoreArgs,
    /// The plugin registry, whose input schemas give plugins their own
    /// actions (its `--aws-endpoint-url` serves the policy store too).
    #[command(flatten)]
    plugins: aws_stores::PluginStoreArgs,
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Create the DynamoDB table of `--policy-store aws` where it is missing
    /// and, if it never had an active set, seed it with the default policies.
    /// The embedded store is created and seeded by `agentctl up`.
    CreateStore,
    /// Check policies strictly against the schema, as activation will.
    Validate {
        /// A directory of `.cedar` files, one file, `active` or a version.
        set: String,
    },
    /// Decide a file of cases with a policy set; fails on any mismatch.
    Test {
        /// A directory of `.cedar` files, one file, `active` or a version.
        set: String,
        /// The cases (TOML, `[[case]]` tables: see governance/README.md).
        #[arg(long)]
        cases: PathBuf,
    },
    /// Show what changes from one policy set to another, as a unified diff.
    Diff {
        /// A directory of `.cedar` files, one file, `active` or a version.
        from: String,
        /// A directory of `.cedar` files, one file, `active` or a version.
        to: String,
    },
    /// Validate policies and store them as a new version (not yet active,
    /// unless `--activate`). The same documents as an existing version reuse it.
    Put {
        /// A directory of `.cedar` files, or one file.
        path: PathBuf,
        /// Why: kept with the version.
        #[arg(long, short)]
        message: String,
        /// Also make it the active set.
        #[arg(long)]
        activate: bool,
    },
    /// Make a stored version the active set (validated first), or with
    /// `--shadow` decide it beside the active set on live traffic without
    /// enforcing it.
    Activate {
        version: u64,
        /// Fail unless the head is still at this revision (from `list`), so
        /// a change made since you looked is never overwritten.
        #[arg(long)]
        expect_revision: Option<u64>,
        /// Put the version in shadow: every request is also decided by it,
        /// each difference recorded in the audit trail and counted, nothing
        /// enforced. It replaces any version in shadow; activating it, or
        /// `end-shadow`, ends it.
        #[arg(long)]
        shadow: bool,
    },
    /// Stop deciding the version in shadow.
    EndShadow {
        /// Fail unless the head is still at this revision.
        #[arg(long)]
        expect_revision: Option<u64>,
    },
    /// Make the version that was active before the current one active again.
    Rollback {
        /// Fail unless the head is still at this revision.
        #[arg(long)]
        expect_revision: Option<u64>,
    },
    /// Decide every request of an audit file again under a candidate set,
    /// and list each decision that would change (outcome, reason or deciding
    /// policies).
    Replay {
        /// The candidate: a directory of `.cedar` files, one file, `active`
        /// or a version.
        candidate: String,
        /// The audit file (checked first). Default
        /// `<data-dir>/audit/decisions.jsonl`.
        #[arg(long)]
        audit: Option<PathBuf>,
    },
    /// Every stored version; `*` marks the active one, `~` the one in shadow.
    List,
    /// Every move of the active set and of the shadow: who, when, from, to.
    History,
}

/// Who policy changes are recorded as.
fn actor() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "operator".to_owned())
}

/// A policy set named on the command line.
enum SetRef {
    Active,
    Version(u64),
    Path(PathBuf),
}

impl SetRef {
    fn parse(text: &str) -> Self {
        if text == "active" {
            Self::Active
        } else if let Ok(version) = text.parse() {
            Self::Version(version)
        } else {
            Self::Path(PathBuf::from(text))
        }
    }

    fn needs_store(&self) -> bool {
        !matches!(self, Self::Path(_))
    }
}

/// The schema policy files are checked against: this release's, with an
/// action for each plugin whose newest servable version in the registry
/// declares an input schema. Without a registry (none created here, or its
/// trust root missing) there are no plugin actions, and the command says so.
async fn registry_schema(
    data_dir: &Path,
    plugins: &aws_stores::PluginStoreArgs,
) -> anyhow::Result<PolicySchema> {
    let types = match input_types(data_dir, plugins).await {
        Ok(types) => types,
        Err(error) => {
            eprintln!(
                "note: no plugin actions (the plugin registry cannot be read: {error:#}); policies are checked against the base schema"
            );
            BTreeMap::new()
        }
    };
    if types.is_empty() {
        return Ok(PolicySchema::base()?);
    }
    let fragment = governance::inputs::plugin_actions_fragment(&types);
    PolicySchema::with_plugin_actions(&fragment)
        .context("the actions generated from the plugins' input schemas")
}

/// Each plugin's input type, from the newest version that verifies and
/// declares an input schema.
async fn input_types(
    data_dir: &Path,
    plugins: &aws_stores::PluginStoreArgs,
) -> anyhow::Result<BTreeMap<String, InputType>> {
    let source = plugins.open(&data_dir.join("plugins")).await?;
    let trust = Arc::new(crate::plugin::trust(data_dir, &source).await?);
    let watcher = plugin_store::Watcher::new(source.registry().clone(), trust).await?;
    let catalog = watcher.current();
    let mut types = BTreeMap::new();
    for (name, plugin) in &catalog.plugins {
        let newest = plugin.versions.values().rev().find_map(|v| {
            let verified = v.verified.as_ref().ok()?;
            verified.manifest.input_schema.as_ref()
        });
        if let Some(schema) = newest {
            let ty = InputType::of_schema(schema)
                .map_err(|e| anyhow::anyhow!("plugin `{name}`: {e}"))?;
            types.insert(name.to_string(), ty);
        }
    }
    Ok(types)
}

/// The schema `set` is checked and decided against: a stored version's
/// own, or for files the registry's.
async fn schema_of(
    set: &SetRef,
    store: Option<&Arc<dyn PolicyStore>>,
    registry: impl AsyncFnOnce() -> anyhow::Result<PolicySchema>,
) -> anyhow::Result<PolicySchema> {
    if let SetRef::Path(_) = set {
        return registry().await;
    }
    let version = stored_version(set, store).await?;
    let store = store.context("no policy store open")?;
    Ok(PolicySchema::of_stored(&store.get(version).await?.schema)?)
}

/// The stored version `set` names (the active one for `active`).
async fn stored_version(set: &SetRef, store: Option<&Arc<dyn PolicyStore>>) -> anyhow::Result<u64> {
    match set {
        SetRef::Path(path) => bail!("`{}` is a directory, not a stored version", path.display()),
        SetRef::Version(version) => Ok(*version),
        SetRef::Active => {
            let store = store.context("no policy store open")?;
            let head = store
                .head()
                .await?
                .context("the policy store has no active set yet")?;
            Ok(head.version)
        }
    }
}

/// The documents of `set`, reading the store only when it names a version.
async fn documents(
    set: &SetRef,
    store: Option<&Arc<dyn PolicyStore>>,
) -> anyhow::Result<Vec<PolicyDocument>> {
    if let SetRef::Path(path) = set {
        return Ok(governance::read_policies(path)?);
    }
    let version = stored_version(set, store).await?;
    let store = store.context("no policy store open")?;
    let stored = store.get(version).await?;
    stored.check_hash()?;
    Ok(stored.documents)
}

/// Strict validation, with a message that names what to fix.
fn validated(
    documents: &[PolicyDocument],
    schema: &PolicySchema,
    what: &str,
) -> anyhow::Result<usize> {
    let compiled = governance::validate(documents, schema)
        .with_context(|| format!("{what} does not validate"))?;
    Ok(compiled.len())
}

pub(crate) async fn run(data_dir: &Path, args: PolicyArgs) -> anyhow::Result<()> {
    let endpoint = args.plugins.aws_endpoint_url.as_deref();
    let registry = async || registry_schema(data_dir, &args.plugins).await;
    // Commands on files alone open no store.
    let refs: Vec<SetRef> = match &args.command {
        PolicyCommand::Validate { set } | PolicyCommand::Test { set, .. } => {
            vec![SetRef::parse(set)]
        }
        PolicyCommand::Diff { from, to } => vec![SetRef::parse(from), SetRef::parse(to)],
        PolicyCommand::Replay { candidate, .. } => vec![SetRef::parse(candidate)],
        _ => Vec::new(),
    };
    let needs_store = refs.is_empty() || refs.iter().any(SetRef::needs_store);
    if let PolicyCommand::CreateStore = args.command {
        return create_store(data_dir, &args.store, endpoint).await;
    }
    let store = if needs_store {
        Some(
            args.store
                .open(data_dir, endpoint)
                .await
                .context("opening the policy store")?,
        )
    } else {
        None
    };
    match args.command {
        PolicyCommand::CreateStore => Ok(()),
        PolicyCommand::Validate { set } => {
            let set_ref = SetRef::parse(&set);
            let documents = documents(&set_ref, store.as_ref()).await?;
            let schema = schema_of(&set_ref, store.as_ref(), registry).await?;
            let count = validated(&documents, &schema, &set)?;
            println!(
                "valid: {count} policies in {} documents, {}",
                documents.len(),
                governance::store::NewPolicySet {
                    documents,
                    schema: schema.text(),
                    author: String::new(),
                    message: String::new(),
                }
                .hash()
            );
            Ok(())
        }
        PolicyCommand::Test { set, cases } => {
            let set_ref = SetRef::parse(&set);
            let documents = documents(&set_ref, store.as_ref()).await?;
            let schema = schema_of(&set_ref, store.as_ref(), registry).await?;
            let text = std::fs::read_to_string(&cases)
                .with_context(|| format!("reading `{}`", cases.display()))?;
            let cases_file =
                Cases::parse(&text).with_context(|| format!("in `{}`", cases.display()))?;
            let governance = Governance::of_set(&documents, &schema, GovernanceConfig::default())
                .with_context(|| format!("{set} does not validate"))?;
            let results = cases_file.run(&governance);
            let mut failed = 0;
            for result in &results {
                match &result.failure {
                    None => println!("ok    {}", result.name),
                    Some(why) => {
                        failed += 1;
                        println!("FAIL  {}: {why}", result.name);
                    }
                }
            }
            println!("{} passed, {failed} failed", results.len() - failed);
            if failed > 0 {
                bail!("{failed} of {} cases failed", results.len());
            }
            Ok(())
        }
        PolicyCommand::Diff { from, to } => {
            let before = documents(&SetRef::parse(&from), store.as_ref()).await?;
            let after = documents(&SetRef::parse(&to), store.as_ref()).await?;
            let changed = print_diff(&before, &after, &from, &to);
            if !changed {
                println!("no changes");
            }
            Ok(())
        }
        PolicyCommand::Put {
            path,
            message,
            activate,
        } => {
            let store = store.context("no policy store open")?;
            put(store.as_ref(), &path, &registry().await?, message, activate).await
        }
        PolicyCommand::Activate {
            version,
            expect_revision,
            shadow,
        } => {
            let store = store.context("no policy store open")?;
            let kind = if shadow {
                ActivationKind::Shadow
            } else {
                ActivationKind::Activate
            };
            activate_version(store.as_ref(), version, expect_revision, kind).await
        }
        PolicyCommand::EndShadow { expect_revision } => {
            let store = store.context("no policy store open")?;
            let head = store
                .head()
                .await?
                .context("the policy store has no active set yet")?;
            let shadow = head.shadow.context("no version is in shadow")?;
            let actor = actor();
            let moved = store
                .activate(&Activate {
                    version: shadow.version,
                    expected_revision: expect_revision.unwrap_or(head.revision),
                    kind: ActivationKind::EndShadow,
                    actor: &actor,
                })
                .await?;
            println!(
                "version {} is no longer in shadow (revision {}); Orbit stops deciding it at its next refresh",
                shadow.version, moved.revision
            );
            Ok(())
        }
        PolicyCommand::Rollback { expect_revision } => {
            let store = store.context("no policy store open")?;
            let head = store
                .head()
                .await?
                .context("the policy store has no active set yet")?;
            let previous = head.previous.with_context(|| {
                format!(
                    "version {} is the first active set: there is nothing to roll back to",
                    head.version
                )
            })?;
            let expected = expect_revision.unwrap_or(head.revision);
            activate_version(
                store.as_ref(),
                previous,
                Some(expected),
                ActivationKind::Rollback,
            )
            .await
        }
        PolicyCommand::Replay { candidate, audit } => {
            let set_ref = SetRef::parse(&candidate);
            let documents = documents(&set_ref, store.as_ref()).await?;
            let schema = schema_of(&set_ref, store.as_ref(), registry).await?;
            let governance = Governance::of_set(&documents, &schema, GovernanceConfig::default())
                .with_context(|| format!("{candidate} does not validate"))?;
            let path = audit.unwrap_or_else(|| data_dir.join("audit").join("decisions.jsonl"));
            replay(&governance, &path)
        }
        PolicyCommand::List => {
            let store = store.context("no policy store open")?;
            let head = store.head().await?;
            let active = head.as_ref().map(|h| h.version);
            let shadow = head
                .as_ref()
                .and_then(|h| h.shadow.as_ref())
                .map(|s| s.version);
            for v in store.list().await? {
                let mark = if Some(v.version) == active {
                    "*"
                } else if Some(v.version) == shadow {
                    "~"
                } else {
                    " "
                };
                println!(
                    "{mark} {:>4}  {}  {:>3} documents  {}  {:<12}  {}",
                    v.version, v.hash, v.documents, v.created_at, v.author, v.message
                );
            }
            match head {
                Some(h) => println!(
                    "active: version {} (revision {}), by {} at {}",
                    h.version, h.revision, h.activated_by, h.activated_at
                ),
                None => println!("no active set"),
            }
            if let Some(shadow) = shadow {
                println!("in shadow: version {shadow} (decided and recorded, never enforced)");
            }
            Ok(())
        }
        PolicyCommand::History => {
            let store = store.context("no policy store open")?;
            for a in store.history().await? {
                let from = a.from.map_or_else(|| "-".to_owned(), |f| f.to_string());
                println!(
                    "{:>4}  {}  {:<10}  {:<12}  {from} -> {}",
                    a.revision,
                    a.at,
                    a.kind.as_str(),
                    a.by,
                    a.version
                );
            }
            Ok(())
        }
    }
}

/// Decides every recorded request of the audit file at `path` with
/// `candidate` and prints each decision that would change.
fn replay(candidate: &Governance, path: &Path) -> anyhow::Result<()> {
    // Two passes, each reading a line at a time: files grow large.
    let open = || {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .with_context(|| format!("reading the audit file `{}`", path.display()))
    };
    governance::audit::verify(open()?).with_context(|| {
        format!(
            "`{}` does not verify: replay trusts only a whole chain",
            path.display()
        )
    })?;
    let (mut records, mut changed, mut granted, mut revoked, mut undecided) = (0, 0, 0, 0, 0);
    for (line, text) in std::io::BufRead::lines(open()?).enumerate() {
        let text = text.with_context(|| format!("reading line {}", line + 1))?;
        let record: governance::AuditRecord = serde_json::from_str(&text)
            .with_context(|| format!("line {}: not an audit record", line + 1))?;
        let request = record
            .request()
            .with_context(|| format!("line {}: its time does not parse", line + 1))?;
        let was = &record.decision;
        records += 1;
        // No policy decided these (the set was stale, or the governance
        // function did not answer): there is nothing to compare.
        // Nor can a decision whose input was too large to record be decided again.
        if record.input_omitted
            || matches!(
                was.reason,
                governance::Outcome::Stale | governance::Outcome::Unavailable
            )
        {
            undecided += 1;
            continue;
        }
        let now = candidate.decide_now(&request);
        if now.same_verdict(was) {
            continue;
        }
        changed += 1;
        match (was.allowed, now.allowed) {
            (false, true) => granted += 1,
            (true, false) => revoked += 1,
            _ => {}
        }
        let describe = |d: &governance::Decision| {
            if d.policies.is_empty() {
                d.reason.as_str().to_owned()
            } else {
                format!("{} ({})", d.reason.as_str(), d.policies.join(", "))
            }
        };
        println!(
            "{}  {}  {} -> {}@{}: {} -> {}",
            record.time,
            record.correlation_id,
            record.principal.id,
            record.plugin.info.name,
            record.plugin.info.version,
            describe(was),
            describe(&now),
        );
    }
    println!(
        "{records} decisions replayed: {changed} would change ({revoked} allowed would be denied, {granted} denied would be allowed)"
    );
    if undecided > 0 {
        println!(
            "{undecided} of them were not decided by policies (governance stale or unavailable), or their input was too large to record, and are left out"
        );
    }
    Ok(())
}

async fn create_store(
    data_dir: &Path,
    args: &aws_stores::PolicyStoreArgs,
    endpoint: Option<&str>,
) -> anyhow::Result<()> {
    if args.policy_store == aws_stores::StoreKind::Local {
        println!("the embedded store is created and seeded by `agentctl up`");
        return Ok(());
    }
    args.create_aws(endpoint).await?;
    let store = args.open(data_dir, endpoint).await?;
    let seed = NewPolicySet {
        documents: governance::default_documents(),
        schema: governance::SCHEMA.to_owned(),
        author: actor(),
        message: "the default policies".to_owned(),
    };
    match governance::store::seed_if_new(store.as_ref(), &seed).await? {
        Some(version) => println!(
            "{} is ready, seeded with the default policies as version {version}",
            store.describe()
        ),
        None => println!(
            "{} is ready; it already had an active set",
            store.describe()
        ),
    }
    Ok(())
}

async fn put(
    store: &dyn PolicyStore,
    path: &Path,
    schema: &PolicySchema,
    message: String,
    activate: bool,
) -> anyhow::Result<()> {
    let documents = governance::read_policies(path)?;
    let count = validated(&documents, schema, &format!("`{}`", path.display()))?;
    let set = NewPolicySet {
        documents,
        schema: schema.text(),
        author: actor(),
        message,
    };
    let hash = set.hash();
    let existing = store
        .list()
        .await?
        .into_iter()
        .rev()
        .find(|v| v.hash == hash);
    let version = match existing {
        Some(v) => {
            println!(
                "unchanged: version {} holds these documents already ({hash})",
                v.version
            );
            v.version
        }
        None => {
            let stored = store.put(&set).await?;
            println!(
                "stored version {} ({count} policies, {hash})",
                stored.version
            );
            stored.version
        }
    };
    if activate {
        activate_version(store, version, None, ActivationKind::Activate).await?;
    } else {
        println!("activate it with `agentctl policy activate {version}`");
    }
    Ok(())
}

/// Validates `version` as Orbit will, then moves the head to it if it is
/// still at `expected` (default: where it is now).
async fn activate_version(
    store: &dyn PolicyStore,
    version: u64,
    expected: Option<u64>,
    kind: ActivationKind,
) -> anyhow::Result<()> {
    let stored = store.get(version).await?;
    stored.check_hash()?;
    let schema = PolicySchema::of_stored(&stored.schema)?;
    validated(&stored.documents, &schema, &format!("version {version}"))?;
    let head = store.head().await?;
    let shadowing = kind == ActivationKind::Shadow;
    if !shadowing && head.as_ref().is_some_and(|h| h.version == version) && expected.is_none() {
        println!("version {version} is the active set already");
        return Ok(());
    }
    let expected_revision = expected.unwrap_or_else(|| head.as_ref().map_or(0, |h| h.revision));
    let actor = actor();
    let moved = store
        .activate(&Activate {
            version,
            expected_revision,
            kind,
            actor: &actor,
        })
        .await?;
    if shadowing {
        println!(
            "version {version} is in shadow beside version {} (revision {}): from Orbit's next refresh every request is also decided by it, \
             never enforced; differences are in the audit trail (`decision.shadow.differs`) and in \
             `orbit_policy_shadow_decisions_total{{result=\"different\"}}`. End it with `agentctl policy end-shadow`, or activate it.",
            moved.version, moved.revision
        );
        return Ok(());
    }
    let from = moved
        .previous
        .map_or_else(|| "none".to_owned(), |p| p.to_string());
    println!(
        "version {} is the active set (revision {}; was {from}); Orbit applies it at its next refresh",
        moved.version, moved.revision
    );
    Ok(())
}

/// Prints a unified diff per document; true when anything differs.
fn print_diff(before: &[PolicyDocument], after: &[PolicyDocument], from: &str, to: &str) -> bool {
    let names: std::collections::BTreeSet<&str> = before
        .iter()
        .chain(after)
        .map(|d| d.name.as_str())
        .collect();
    let text_of = |set: &[PolicyDocument], name: &str| {
        set.iter()
            .find(|d| d.name == name)
            .map_or(String::new(), |d| d.text.clone())
    };
    let mut changed = false;
    for name in names {
        let (a, b) = (text_of(before, name), text_of(after, name));
        if a == b {
            continue;
        }
        changed = true;
        let diff = similar::TextDiff::from_lines(&a, &b);
        print!(
            "{}",
            diff.unified_diff()
                .context_radius(3)
                .header(&format!("{from}/{name}"), &format!("{to}/{name}"))
        );
    }
    changed
}
