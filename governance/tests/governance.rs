//! Governance decisions: the default policies, validation, refresh from the
//! policy store, fail closed, and properties that must hold for any policy
//! set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use governance::store::{
    Activate, Activation, ActivationKind, Head, NewPolicySet, PolicySetVersion, VersionInfo,
};
use governance::{
    Decider as _, Decision, DecisionRequest, DiscoveryRequest, Governance, GovernanceConfig,
    GovernanceError, Outcome, PluginInfo, PluginNeeds, PolicyDocument, PolicySchema, PolicyStore,
    PolicyStoreError, Principal, PrincipalKind, RefreshOutcome, SqlitePolicyStore,
};
use proptest::prelude::*;

fn principal(id: &str, groups: &[&str], tenant: &str) -> Principal {
    Principal {
        id: id.into(),
        kind: PrincipalKind::User,
        groups: groups.iter().map(|g| (*g).into()).collect(),
        tenant: tenant.into(),
    }
}

/// A plugin from the trusted publisher with these operator labels (and the
/// same words as its own tags, which the default policies must ignore).
fn plugin(name: &str, labels: &[&str]) -> PluginInfo {
    let set = labels.iter().map(|t| (*t).into()).collect::<BTreeSet<_>>();
    PluginInfo {
        name: name.into(),
        version: semver::Version::new(1, 2, 3),
        publisher: "agent-runtime".into(),
        tags: set.clone(),
        labels: set,
        needs: Default::default(),
    }
}

fn decide(governance: &Governance, who: &Principal, what: &PluginInfo) -> Decision {
    governance.decide_now(&DecisionRequest {
        principal: who,
        plugin: what,
        intent: "test",
        source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        time: SystemTime::now(),
        input: None,
    })
}

fn documents(text: &str) -> Vec<PolicyDocument> {
    if text.is_empty() {
        return Vec::new();
    }
    vec![PolicyDocument {
        name: "test.cedar".into(),
        text: text.into(),
    }]
}

fn with_policies(text: &str) -> Result<Governance, GovernanceError> {
    Governance::of_documents(&documents(text), GovernanceConfig::default())
}

fn defaults() -> Governance {
    Governance::of_documents(
        &governance::default_documents(),
        GovernanceConfig::default(),
    )
    .unwrap()
}

/// A policy store in a temporary directory.
async fn store() -> (tempfile::TempDir, Arc<SqlitePolicyStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlitePolicyStore::open(&dir.path().join("policies.db"))
        .await
        .unwrap();
    (dir, Arc::new(store))
}

/// Puts `text` as a new version (unchecked, as a store takes it) and activates it.
async fn put_active(store: &dyn PolicyStore, text: &str) -> u64 {
    let version = store
        .put(&NewPolicySet {
            documents: documents(text),
            schema: governance::SCHEMA.into(),
            author: "test".into(),
            message: String::new(),
        })
        .await
        .unwrap()
        .version;
    let revision = store.head().await.unwrap().map_or(0, |h| h.revision);
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

#[test]
fn default_policies_allow_approved_versions_and_keep_experimental_ones_for_beta() {
    let governance = defaults();
    let dev = principal("dev", &["developers"], "local");
    let beta = principal("bea", &["developers", "beta"], "local");

    let echo = decide(&governance, &dev, &plugin("echo", &["approved"]));
    assert!(echo.allowed, "{echo:?}");
    assert_eq!(echo.reason, Outcome::Allowed);
    assert_eq!(echo.policies, ["developers-may-dispatch-approved"]);
    assert!(echo.policy_set.starts_with("sha256:"));

    let triage = plugin("triage", &["approved", "experimental"]);
    let denied = decide(&governance, &dev, &triage);
    assert!(!denied.allowed);
    assert_eq!(denied.reason, Outcome::ForbiddenByPolicy);
    assert_eq!(denied.policies, ["experimental-only-for-beta"]);
    assert!(decide(&governance, &beta, &triage).allowed);

    let outsider = decide(
        &governance,
        &principal("eve", &["sales"], "local"),
        &plugin("echo", &["approved"]),
    );
    assert_eq!(
        (outsider.allowed, outsider.reason),
        (false, Outcome::NoPermittingPolicy)
    );
}

#[test]
fn self_declared_tags_and_publishers_gain_nothing_under_the_default_policies() {
    let governance = defaults();
    let dev = principal("dev", &["developers"], "local");
    // A publisher claiming every word the policies know, with no operator label.
    let claims = PluginInfo {
        labels: BTreeSet::new(),
        tags: ["example", "approved"].map(String::from).into(),
        ..plugin("sneaky", &[])
    };
    let decision = decide(&governance, &dev, &claims);
    assert_eq!(
        (decision.allowed, decision.reason),
        (false, Outcome::NoPermittingPolicy)
    );
    // Approved, but signed by a key of another publisher.
    let other = PluginInfo {
        publisher: "someone-else".into(),
        ..plugin("echo", &["approved"])
    };
    assert!(!decide(&governance, &dev, &other).allowed);
}

#[test]
fn pre_release_and_build_parts_of_the_version_are_visible_to_policy() {
    let governance = with_policies(
        r#"@id("no-pre-releases") forbid(principal, action, resource) when { resource.version.pre != "" };
           @id("all") permit(principal, action, resource);"#,
    );
    let governance = governance.unwrap();
    let who = principal("dev", &["developers"], "local");
    let release = plugin("echo", &[]);
    assert!(decide(&governance, &who, &release).allowed);
    let rc = PluginInfo {
        version: semver::Version::parse("2.0.0-rc.1+build.7").unwrap(),
        ..release
    };
    let decision = decide(&governance, &who, &rc);
    assert_eq!(decision.policies, ["no-pre-releases"]);
}

#[test]
fn policies_restrict_capabilities_models_and_the_gpu_with_their_reason() {
    let governance = with_policies(
        r#"@id("gpu-only-for-acme") forbid(principal, action, resource)
             when { resource.gpu == "required" } unless { principal in AgentRuntime::Tenant::"acme" };
           @id("triage-not-with-sentiment") forbid(principal, action, resource)
             when { resource.name == "triage" && resource.models.contains("sentiment") };
           @id("inference-for-developers") forbid(principal, action, resource)
             when { resource.capabilities.contains("inference") }
             unless { principal in AgentRuntime::Group::"developers" };
           @id("all") permit(principal, action, resource);"#,
    )
    .unwrap();
    let inference = |name: &str, model: &str, gpu: &str| PluginInfo {
        needs: PluginNeeds {
            capabilities: ["inference".to_owned()].into(),
            models: [model.to_owned()].into(),
            gpu: gpu.into(),
        },
        ..plugin(name, &[])
    };
    let acme = principal("ann", &["developers"], "acme");
    let other = principal("bob", &["developers"], "globex");
    let outsider = principal("eve", &[], "acme");

    let gpu = inference("support-intent", "support-intent", "required");
    assert!(decide(&governance, &acme, &gpu).allowed);
    let denied = decide(&governance, &other, &gpu);
    assert_eq!(
        (denied.allowed, denied.reason, denied.policies),
        (
            false,
            Outcome::ForbiddenByPolicy,
            vec!["gpu-only-for-acme".to_owned()]
        )
    );
    // Preferring a GPU is not requiring one.
    assert!(
        decide(
            &governance,
            &other,
            &inference("support-intent", "support-intent", "preferred")
        )
        .allowed
    );

    let denied = decide(
        &governance,
        &acme,
        &inference("triage", "sentiment", "none"),
    );
    assert_eq!(denied.policies, ["triage-not-with-sentiment"]);
    assert!(
        decide(
            &governance,
            &acme,
            &inference("triage", "support-intent", "none")
        )
        .allowed
    );

    let denied = decide(&governance, &outsider, &inference("echo", "m", "none"));
    assert_eq!(denied.policies, ["inference-for-developers"]);
    // A plugin that needs nothing is untouched by all three.
    assert!(decide(&governance, &outsider, &plugin("echo", &[])).allowed);
    // Discovery decides on the same attributes.
    let plugins = [gpu.clone(), plugin("echo", &[])];
    let listed = |who: &Principal| {
        governance.discover_now(&DiscoveryRequest {
            principal: who,
            plugins: &plugins,
            source_ip: "127.0.0.1".parse().unwrap(),
            time: std::time::SystemTime::now(),
        })
    };
    assert_eq!(listed(&acme), [true, true]);
    assert_eq!(listed(&other), [false, true]);
}

#[test]
fn invalid_policies_never_load_and_say_why() {
    let result = with_policies(
        r#"@id("bad-attr") permit(principal, action, resource) when { resource.owner == "me" };"#,
    );
    let error = result.err().expect("an invalid set must not load");
    assert!(error.to_string().contains("bad-attr"), "{error}");

    let result = with_policies("permit(principal, action, resource");
    assert!(matches!(result, Err(GovernanceError::InvalidPolicies(_))));

    let result = with_policies(
        r#"@id("same") permit(principal, action, resource); @id("same") forbid(principal, action, resource);"#,
    );
    assert!(result.err().unwrap().to_string().contains("used twice"));
}

#[tokio::test]
async fn refresh_activates_new_heads_and_keeps_the_last_good_set_without_resetting_its_age() {
    let (_dir, store) = store().await;
    let v1 = put_active(
        store.as_ref(),
        r#"@id("all") permit(principal, action, resource);"#,
    )
    .await;
    let config = GovernanceConfig {
        max_staleness: Duration::from_millis(300),
        ..GovernanceConfig::default()
    };
    let governance = Governance::load(store.clone(), config).await.unwrap();
    let dev = principal("dev", &[], "local");
    let echo = plugin("echo", &[]);
    let allowed = decide(&governance, &dev, &echo);
    assert_eq!((allowed.allowed, allowed.policy_version), (true, v1));
    assert_eq!(
        governance.refresh().await.unwrap(),
        RefreshOutcome::Unchanged
    );

    let v2 = put_active(
        store.as_ref(),
        r#"@id("all") permit(principal, action, resource);
           @id("no-echo") forbid(principal, action, resource == AgentRuntime::Plugin::"echo");"#,
    )
    .await;
    assert!(matches!(
        governance.refresh().await.unwrap(),
        RefreshOutcome::Activated { version, policies: 2, .. } if version == v2
    ));
    let denied = decide(&governance, &dev, &echo);
    assert_eq!(
        (
            denied.allowed,
            denied.policies.clone(),
            denied.policy_version
        ),
        (false, vec!["no-echo".to_owned()], v2)
    );

    // A broken version activated behind the tools' back is refused; the last
    // good set keeps deciding, and the refresh counts as a failure.
    let broken = put_active(
        store.as_ref(),
        "forbid(principal, action, resource) when { nonsense };",
    )
    .await;
    let error = governance.refresh().await.unwrap_err();
    assert!(
        error.to_string().contains(&format!("version {broken}")),
        "{error}"
    );
    assert_eq!(decide(&governance, &dev, &echo).policies, ["no-echo"]);
    assert_eq!(governance.status().refresh_failures, 1);

    // Failing refreshes do not restart the clock: past the bound every
    // decision is stale, with no store path in what the caller reads.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !governance.status().stale {
        assert!(governance.refresh().await.is_err());
        assert!(std::time::Instant::now() < deadline, "never went stale");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stale = decide(&governance, &dev, &echo);
    assert_eq!((stale.allowed, stale.reason), (false, Outcome::Stale));
    assert_eq!(stale.policy_version, v2, "names the set in force");
    let explained = stale.explain();
    assert!(explained.contains("not been refreshed"), "{explained}");
    assert!(
        !explained.contains(".db") && !explained.contains('/'),
        "{explained}"
    );
    assert!(!governance.is_ready());

    // Activating a good version again recovers on the next refresh.
    let fixed = put_active(
        store.as_ref(),
        r#"@id("all") permit(principal, action, resource);"#,
    )
    .await;
    governance.refresh().await.unwrap();
    let status = governance.status();
    assert_eq!((status.version, status.stale), (fixed, false));
    assert!(decide(&governance, &dev, &echo).allowed);
    assert!(governance.is_ready());
}

/// Moves the store's head as `kind` says, about `version`.
async fn move_head(store: &dyn PolicyStore, version: u64, kind: ActivationKind) {
    let revision = store.head().await.unwrap().map_or(0, |h| h.revision);
    store
        .activate(&Activate {
            version,
            expected_revision: revision,
            kind,
            actor: "test",
        })
        .await
        .unwrap();
}

async fn put_only(store: &dyn PolicyStore, text: &str) -> u64 {
    store
        .put(&NewPolicySet {
            documents: documents(text),
            schema: governance::SCHEMA.into(),
            author: "test".into(),
            message: String::new(),
        })
        .await
        .unwrap()
        .version
}

#[tokio::test]
async fn a_version_in_shadow_is_decided_beside_the_set_in_force_and_never_enforced() {
    let (_dir, store) = store().await;
    let all = r#"@id("all") permit(principal, action, resource);"#;
    let v1 = put_active(store.as_ref(), all).await;
    let v2 = put_only(
        store.as_ref(),
        &format!(
            r#"{all} @id("no-echo") forbid(principal, action, resource == AgentRuntime::Plugin::"echo");"#
        ),
    )
    .await;
    move_head(store.as_ref(), v2, ActivationKind::Shadow).await;
    let governance = Governance::load(store.clone(), GovernanceConfig::default())
        .await
        .unwrap();
    assert_eq!(governance.status().shadow_version, Some(v2));
    let dev = principal("dev", &[], "local");

    let echo = decide(&governance, &dev, &plugin("echo", &[]));
    assert_eq!(
        (echo.allowed, echo.policy_version, echo.policies.clone()),
        (true, v1, vec!["all".to_owned()]),
        "the set in force decides"
    );
    let shadow = echo.shadow.expect("decided in shadow too");
    assert_eq!(
        (shadow.policy_version, shadow.allowed, shadow.reason),
        (v2, false, Outcome::ForbiddenByPolicy)
    );
    assert_eq!(shadow.policies, ["no-echo"]);
    assert!(shadow.differs);
    let keywords = decide(&governance, &dev, &plugin("keywords", &[]));
    assert!(keywords.allowed);
    assert!(!keywords.shadow.expect("decided in shadow too").differs);

    // Ended: decisions carry no shadow after the next refresh.
    move_head(store.as_ref(), v2, ActivationKind::EndShadow).await;
    assert_eq!(
        governance.refresh().await.unwrap(),
        RefreshOutcome::Shadow { version: None }
    );
    assert_eq!(decide(&governance, &dev, &plugin("echo", &[])).shadow, None);

    // A shadow that does not validate is left out and changes nothing else:
    // no refresh failure, no staleness, the same decisions.
    let broken = put_only(
        store.as_ref(),
        "forbid(principal, action, resource) when { nonsense };",
    )
    .await;
    move_head(store.as_ref(), broken, ActivationKind::Shadow).await;
    assert_eq!(
        governance.refresh().await.unwrap(),
        RefreshOutcome::Shadow { version: None }
    );
    let status = governance.status();
    assert_eq!(
        (
            status.version,
            status.shadow_version,
            status.refresh_failures
        ),
        (v1, None, 0)
    );
    let echo = decide(&governance, &dev, &plugin("echo", &[]));
    assert!(echo.allowed && echo.shadow.is_none());

    // Activating the version in shadow enforces it and ends its shadow.
    move_head(store.as_ref(), v2, ActivationKind::Shadow).await;
    governance.refresh().await.unwrap();
    assert_eq!(governance.status().shadow_version, Some(v2));
    move_head(store.as_ref(), v2, ActivationKind::Activate).await;
    assert!(matches!(
        governance.refresh().await.unwrap(),
        RefreshOutcome::Activated { version, .. } if version == v2
    ));
    let status = governance.status();
    assert_eq!((status.version, status.shadow_version), (v2, None));
}

fn discover(governance: &Governance, who: &Principal, what: &[PluginInfo]) -> Vec<bool> {
    governance.discover_now(&DiscoveryRequest {
        principal: who,
        plugins: what,
        source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        time: SystemTime::now(),
    })
}

fn decide_with(governance: &Governance, who: &Principal, what: &PluginInfo, intent: &str) -> bool {
    governance
        .decide_now(&DecisionRequest {
            principal: who,
            plugin: what,
            intent,
            source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            time: SystemTime::now(),
            input: None,
        })
        .allowed
}

#[test]
fn discovery_shows_what_some_intent_would_be_allowed_and_hides_the_rest() {
    let governance = with_policies(
        r#"
        @id("approved") permit (principal in AgentRuntime::Group::"developers", action, resource)
          when { resource.labels.contains("approved") };
        @id("experimental-for-beta") forbid (principal, action, resource)
          when { resource.labels.contains("experimental") } unless { principal in AgentRuntime::Group::"beta" };
        @id("summaries") permit (principal, action, resource == AgentRuntime::Plugin::"summarize")
          when { context.intent == "summarize" };
        @id("files") permit (principal, action, resource == AgentRuntime::Plugin::"files");
        @id("no-deletes") forbid (principal, action, resource == AgentRuntime::Plugin::"files")
          when { context.intent == "delete" };
        @id("one-intent") permit (principal, action, resource == AgentRuntime::Plugin::"undo")
          when { context.intent == "undo" };
        @id("not-that-one") forbid (principal, action, resource == AgentRuntime::Plugin::"undo")
          when { context.intent == "undo" };
        @id("big") permit (principal, action, resource == AgentRuntime::Plugin::"big");
        @id("overflows") forbid (principal, action, resource == AgentRuntime::Plugin::"big")
          when { resource.version.major * 4611686018427387904 > 4 };
        @id("patterns") permit (principal, action, resource == AgentRuntime::Plugin::"grep")
          when { context.intent like "find *" };
        "#,
    )
    .unwrap();
    let mut big = plugin("big", &[]);
    big.version = semver::Version::new(3, 0, 0);
    let plugins = [
        plugin("echo", &["approved"]),
        plugin("triage", &["approved", "experimental"]),
        plugin("summarize", &[]),
        plugin("files", &[]),
        plugin("undo", &[]),
        big,
        plugin("grep", &[]),
        plugin("unknown", &[]),
    ];
    let dev = principal("dev", &["developers"], "t");
    let bea = principal("bea", &["developers", "beta"], "t");
    let shown = |who: &Principal| -> Vec<&str> {
        discover(&governance, who, &plugins)
            .iter()
            .zip(&plugins)
            .filter(|(visible, _)| **visible)
            .map(|(_, p)| p.name.as_str())
            .collect()
    };
    // `summarize` for one intent, `files` for all but one, `grep` for a
    // pattern; `undo`'s only intent is forbidden, `big` always errors.
    assert_eq!(shown(&dev), ["echo", "summarize", "files", "grep"]);
    assert_eq!(
        shown(&bea),
        ["echo", "triage", "summarize", "files", "grep"]
    );
    // What is shown is what some dispatch is allowed.
    assert!(decide_with(&governance, &dev, &plugins[2], "summarize"));
    assert!(!decide_with(&governance, &dev, &plugins[4], "undo"));
    assert!(decide_with(&governance, &dev, &plugins[6], "find x"));
}

#[tokio::test]
async fn stale_governance_shows_nothing() {
    let (_dir, store) = store().await;
    put_active(store.as_ref(), r#"permit(principal, action, resource);"#).await;
    let flaky = Arc::new(Flaky {
        inner: store,
        down: AtomicBool::new(false),
    });
    let config = GovernanceConfig {
        max_staleness: Duration::from_millis(100),
        ..GovernanceConfig::default()
    };
    let governance = Governance::load(flaky.clone(), config).await.unwrap();
    let dev = principal("dev", &[], "t");
    assert_eq!(discover(&governance, &dev, &[plugin("echo", &[])]), [true]);
    flaky.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = governance.refresh().await;
    assert_eq!(discover(&governance, &dev, &[plugin("echo", &[])]), [false]);
}

/// A real store that can be made unreachable.
struct Flaky {
    inner: Arc<SqlitePolicyStore>,
    down: AtomicBool,
}

impl Flaky {
    fn check(&self) -> Result<(), PolicyStoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(PolicyStoreError::Backend("connection refused".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl PolicyStore for Flaky {
    async fn put(&self, set: &NewPolicySet) -> Result<PolicySetVersion, PolicyStoreError> {
        self.check()?;
        self.inner.put(set).await
    }
    async fn get(&self, version: u64) -> Result<PolicySetVersion, PolicyStoreError> {
        self.check()?;
        self.inner.get(version).await
    }
    async fn list(&self) -> Result<Vec<VersionInfo>, PolicyStoreError> {
        self.check()?;
        self.inner.list().await
    }
    async fn head(&self) -> Result<Option<Head>, PolicyStoreError> {
        self.check()?;
        self.inner.head().await
    }
    async fn activate(&self, request: &Activate<'_>) -> Result<Head, PolicyStoreError> {
        self.check()?;
        self.inner.activate(request).await
    }
    async fn history(&self) -> Result<Vec<Activation>, PolicyStoreError> {
        self.check()?;
        self.inner.history().await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[tokio::test]
async fn an_unreachable_store_past_the_staleness_bound_denies_everything() {
    let (_dir, inner) = store().await;
    put_active(
        inner.as_ref(),
        r#"@id("all") permit(principal, action, resource);"#,
    )
    .await;
    let store = Arc::new(Flaky {
        inner,
        down: AtomicBool::new(false),
    });
    let config = GovernanceConfig {
        max_staleness: Duration::from_millis(200),
        ..GovernanceConfig::default()
    };
    let governance = Governance::load(store.clone(), config).await.unwrap();
    let (dev, echo) = (principal("dev", &[], "local"), plugin("echo", &[]));
    assert!(decide(&governance, &dev, &echo).allowed);

    store.down.store(true, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !governance.status().stale {
        assert!(matches!(
            governance.refresh().await,
            Err(GovernanceError::Store(PolicyStoreError::Backend(_)))
        ));
        assert!(std::time::Instant::now() < deadline, "never went stale");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let decision = decide(&governance, &dev, &echo);
    assert_eq!((decision.allowed, decision.reason), (false, Outcome::Stale));
    assert!(!governance.is_ready());

    store.down.store(false, Ordering::SeqCst);
    assert_eq!(
        governance.refresh().await.unwrap(),
        RefreshOutcome::Unchanged
    );
    assert!(governance.is_ready());
    assert!(decide(&governance, &dev, &echo).allowed);
}

#[tokio::test]
async fn governance_never_starts_without_a_valid_active_set() {
    let (_dir, store) = store().await;
    let error = Governance::load(store.clone(), GovernanceConfig::default())
        .await
        .err()
        .expect("a store never activated must not load");
    assert!(matches!(error, GovernanceError::NoActivePolicySet(_)));
    assert!(error.to_string().contains("agentctl policy put"), "{error}");

    let broken = put_active(
        store.as_ref(),
        r#"@id("bad-attr") permit(principal, action, resource) when { resource.owner == "me" };"#,
    )
    .await;
    let error = Governance::load(store.clone(), GovernanceConfig::default())
        .await
        .err()
        .expect("an invalid head must not load");
    let text = error.to_string();
    assert!(
        text.contains("bad-attr") && text.contains(&format!("version {broken}")),
        "{text}"
    );
}

#[test]
fn the_default_policies_pass_their_own_cases() {
    let cases = governance::cases::Cases::parse(include_str!("../policies/tests.toml")).unwrap();
    let results = cases.run(&defaults());
    assert!(results.len() >= 5);
    let failures: Vec<_> = results.iter().filter_map(|r| r.failure.as_ref()).collect();
    assert!(failures.is_empty(), "{failures:?}");
    // And a case that expects the wrong thing fails, saying why.
    let wrong = governance::cases::Cases::parse(
        r#"[[case]]
name = "outsider"
principal = { id = "eve", groups = ["sales"] }
plugin = { name = "echo", labels = ["approved"], publisher = "agent-runtime" }
expect = "allow""#,
    )
    .unwrap();
    let failure = wrong.run(&defaults())[0].failure.clone().unwrap();
    assert!(
        failure.contains("expected allow, got no_permitting_policy"),
        "{failure}"
    );
    assert!(governance::cases::Cases::parse("[[case]]\nname = \"x\"\nexpect = \"maybe\"").is_err());
}

#[test]
fn an_erroring_forbid_still_denies_what_a_permit_allows() {
    let governance = with_policies(
        r#"@id("all") permit(principal, action, resource);
           @id("overflowing-forbid") forbid(principal, action, resource) when { resource.version.major + 9223372036854775807 > 0 };"#,
    );
    let decision = decide(
        &governance.unwrap(),
        &principal("dev", &[], "local"),
        &plugin("echo", &[]),
    );
    assert!(!decision.allowed, "{decision:?}");
    assert_eq!(decision.reason, Outcome::EvaluationError);
    assert!(
        decision
            .errors
            .iter()
            .any(|e| e.contains("overflowing-forbid")),
        "{:?}",
        decision.errors
    );
}

#[test]
fn an_evaluation_error_denies() {
    // Valid against the schema, but overflows at run time.
    let governance = with_policies(
        r#"@id("overflows") permit(principal, action, resource) when { resource.version.major + 9223372036854775807 > 0 };"#,
    );
    let decision = decide(
        &governance.unwrap(),
        &principal("dev", &[], "local"),
        &plugin("echo", &[]),
    );
    assert!(!decision.allowed);
    assert_eq!(decision.reason, Outcome::EvaluationError);
    assert!(!decision.errors.is_empty());
}

const PLUGINS: &[&str] = &["alpha", "beta", "gamma"];
const TENANTS: &[&str] = &["t1", "t2"];
const GROUPS: &[&str] = &["g1", "g2"];
const TAGS: &[&str] = &["x", "y"];

/// A policy from a small grammar that covers every slicing case: scoped to a
/// plugin, to a tenant, to both, or to neither; permits and forbids.
fn any_policy() -> impl Strategy<Value = String> {
    let p = prop::sample::select(PLUGINS);
    let t = prop::sample::select(TENANTS);
    let g = prop::sample::select(GROUPS);
    let tag = prop::sample::select(TAGS);
    let effect = prop::sample::select(&["permit", "forbid"][..]);
    (effect, p, t, g, tag, 0..6u8).prop_map(|(effect, p, t, g, tag, shape)| match shape {
        0 => format!(r#"{effect}(principal, action, resource == AgentRuntime::Plugin::"{p}");"#),
        1 => format!(r#"{effect}(principal in AgentRuntime::Tenant::"{t}", action, resource);"#),
        2 => format!(
            r#"{effect}(principal in AgentRuntime::Tenant::"{t}", action, resource == AgentRuntime::Plugin::"{p}");"#
        ),
        3 => format!(r#"{effect}(principal in AgentRuntime::Group::"{g}", action, resource) when {{ resource.tags.contains("{tag}") }};"#),
        4 => format!(r#"{effect}(principal, action, resource) unless {{ principal in AgentRuntime::Group::"{g}" }};"#),
        _ => format!(r#"{effect}(principal, action, resource) when {{ context.intent == "{tag}" }};"#),
    })
}

/// A permit for one tenant only (by scope, or by the principal's `tenant`
/// attribute), with or without a further condition.
fn tenant_permit() -> impl Strategy<Value = (String, &'static str)> {
    let t = prop::sample::select(TENANTS);
    let g = prop::sample::select(GROUPS);
    let p = prop::sample::select(PLUGINS);
    (t, g, p, 0..4u8).prop_map(|(t, g, p, shape)| {
        let text = match shape {
            0 => format!(r#"permit(principal in AgentRuntime::Tenant::"{t}", action, resource);"#),
            1 => format!(r#"permit(principal in AgentRuntime::Tenant::"{t}", action, resource == AgentRuntime::Plugin::"{p}");"#),
            2 => format!(r#"permit(principal in AgentRuntime::Group::"{g}", action, resource) when {{ principal.tenant == "{t}" }};"#),
            _ => format!(r#"permit(principal, action, resource) when {{ principal in AgentRuntime::Tenant::"{t}" && context.intent == "x" }};"#),
        };
        (text, t)
    })
}

fn any_principal() -> impl Strategy<Value = Principal> {
    (
        prop::sample::subsequence(GROUPS, 0..=2),
        prop::sample::select(TENANTS),
    )
        .prop_map(|(groups, tenant)| principal("someone", &groups, tenant))
}

fn any_plugin() -> impl Strategy<Value = PluginInfo> {
    (
        prop::sample::select(PLUGINS),
        prop::sample::subsequence(TAGS, 0..=2),
    )
        .prop_map(|(name, tags)| plugin(name, &tags))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn an_empty_set_denies_everything(who in any_principal(), what in any_plugin()) {
        let governance = with_policies("");
        let decision = decide(&governance.unwrap(), &who, &what);
        prop_assert!(!decision.allowed);
        prop_assert_eq!(decision.reason, Outcome::NoPermittingPolicy);
    }

    #[test]
    fn a_matching_forbid_beats_any_permit(
        permits in prop::collection::vec(any_policy(), 0..6),
        who in any_principal(),
        what in any_plugin(),
    ) {
        let permits: Vec<String> = permits.iter().map(|p| p.replacen("forbid", "permit", 1)).collect();
        let text = format!(
            "{}\n@id(\"the-forbid\") forbid(principal, action, resource == AgentRuntime::Plugin::\"{}\");\npermit(principal, action, resource);",
            permits.join("\n"),
            what.name
        );
        let governance = with_policies(&text);
        let decision = decide(&governance.unwrap(), &who, &what);
        prop_assert!(!decision.allowed);
        prop_assert_eq!(decision.policies, vec!["the-forbid".to_owned()]);
    }

    /// Discovery shows a plugin exactly when some intent is allowed. The
    /// grammar compares intents with `x` and `y` only, so those and one
    /// other intent are every case there is.
    #[test]
    fn discovery_shows_a_plugin_exactly_when_some_intent_is_allowed(
        policies in prop::collection::vec(any_policy(), 0..10),
        who in any_principal(),
        what in any_plugin(),
    ) {
        let governance = with_policies(&policies.join("\n")).unwrap();
        let allowed_somehow = ["x", "y", "something else"]
            .iter()
            .any(|intent| decide_with(&governance, &who, &what, intent));
        prop_assert_eq!(discover(&governance, &who, std::slice::from_ref(&what)), vec![allowed_somehow]);
    }

    /// Tenant isolation: where every permit is for one tenant, a principal
    /// is allowed only by a permit for its own tenant, whatever the forbids.
    #[test]
    fn no_allow_crosses_tenants_without_a_policy_for_that_tenant(
        permits in prop::collection::vec(tenant_permit(), 0..8),
        forbids in prop::collection::vec(any_policy(), 0..4),
        who in any_principal(),
        what in any_plugin(),
    ) {
        let mut text = String::new();
        for (i, (permit, _)) in permits.iter().enumerate() {
            text.push_str(&format!("@id(\"permit-{i}\") {permit}\n"));
        }
        for forbid in &forbids {
            text.push_str(&forbid.replacen("permit", "forbid", 1));
            text.push('\n');
        }
        let governance = with_policies(&text).unwrap();
        for intent in ["x", "y"] {
            if !decide_with(&governance, &who, &what, intent) {
                continue;
            }
            let decision = governance.decide_now(&DecisionRequest {
                principal: &who,
                plugin: &what,
                intent,
                source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                time: SystemTime::now(),
                input: None,
            });
            prop_assert!(!decision.policies.is_empty());
            for id in &decision.policies {
                let i: usize = id.trim_start_matches("permit-").parse().unwrap();
                prop_assert_eq!(permits[i].1, who.tenant.as_str(), "{} allowed {:?}", id, who);
            }
        }
    }

    #[test]
    fn slicing_decides_exactly_as_the_whole_set(
        policies in prop::collection::vec(any_policy(), 0..12),
        who in any_principal(),
        what in any_plugin(),
    ) {
        let documents = documents(&policies.join("\n"));
        let sliced = Governance::of_documents(&documents, GovernanceConfig::default()).unwrap();
        let whole = Governance::of_documents(&documents, GovernanceConfig { slice: false, ..GovernanceConfig::default() }).unwrap();
        let (a, b) = (decide(&sliced, &who, &what), decide(&whole, &who, &what));
        let (mut pa, mut pb) = (a.policies.clone(), b.policies.clone());
        pa.sort();
        pb.sort();
        prop_assert_eq!((a.allowed, a.reason, pa), (b.allowed, b.reason, pb));
    }
}

// ---- Conditions on the request's input (plugins with an input schema) ----

/// The schema with an action of its own for `approve-expense` and `alpha`
/// (input `{amount: Long, currency: String, note?: String}` and `{n: Long}`).
fn schema_with_plugin_actions() -> PolicySchema {
    let expense = governance::InputType::of_schema(&serde_json::json!({
        "type": "object",
        "required": ["amount", "currency"],
        "properties": {
            "amount": {"type": "integer"},
            "currency": {"type": "string"},
            "note": {"type": "string"},
            "ratio": {"type": "number"}
        }
    }))
    .unwrap();
    let alpha = governance::InputType::of_schema(&serde_json::json!({
        "type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}
    }))
    .unwrap();
    let plugins = std::collections::BTreeMap::from([
        ("approve-expense".to_owned(), expense),
        ("alpha".to_owned(), alpha),
    ]);
    PolicySchema::with_plugin_actions(&governance::inputs::plugin_actions_fragment(&plugins))
        .unwrap()
}

fn with_plugin_actions(text: &str, slice: bool) -> Result<Governance, GovernanceError> {
    Governance::of_set(
        &documents(text),
        &schema_with_plugin_actions(),
        GovernanceConfig {
            slice,
            ..GovernanceConfig::default()
        },
    )
}

fn decide_input(
    governance: &Governance,
    who: &Principal,
    what: &PluginInfo,
    input: &serde_json::Value,
) -> Decision {
    governance.decide_now(&DecisionRequest {
        principal: who,
        plugin: what,
        intent: "test",
        source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        time: SystemTime::now(),
        input: Some(input),
    })
}

const SMALL_EXPENSES: &str = r#"
@id("finance-approves-small-expenses")
permit (
  principal in AgentRuntime::Group::"finance",
  action == AgentRuntime::Action::"approve-expense",
  resource
) when { context.input.amount < 1000 };

@id("no-expenses-in-other-currencies")
forbid (principal, action == AgentRuntime::Action::"approve-expense", resource)
unless { context.input.currency == "EUR" };
"#;

#[test]
fn an_input_condition_allows_and_denies() {
    let governance = with_plugin_actions(SMALL_EXPENSES, true).unwrap();
    let finance = principal("fin", &["finance"], "t1");
    let expense = plugin("approve-expense", &[]);
    let allowed = decide_input(
        &governance,
        &finance,
        &expense,
        &serde_json::json!({"amount": 999, "currency": "EUR"}),
    );
    assert!(allowed.allowed, "{allowed:?}");
    assert_eq!(allowed.policies, ["finance-approves-small-expenses"]);
    let too_much = decide_input(
        &governance,
        &finance,
        &expense,
        &serde_json::json!({"amount": 1000, "currency": "EUR"}),
    );
    assert_eq!(too_much.reason, Outcome::NoPermittingPolicy);
    let dollars = decide_input(
        &governance,
        &finance,
        &expense,
        &serde_json::json!({"amount": 5, "currency": "USD"}),
    );
    assert_eq!(dollars.reason, Outcome::ForbiddenByPolicy);
    assert_eq!(dollars.policies, ["no-expenses-in-other-currencies"]);
    // Without the input the policies that read it fail: a deny, never an allow.
    let blind = decide(&governance, &finance, &expense);
    assert!(!blind.allowed);
    assert_eq!(blind.reason, Outcome::EvaluationError);
    // Another group gets nothing, whatever the input.
    let dev = principal("dev", &["developers"], "t1");
    let input = serde_json::json!({"amount": 1, "currency": "EUR"});
    assert!(!decide_input(&governance, &dev, &expense, &input).allowed);
}

#[test]
fn strict_validation_knows_each_plugins_input() {
    let typo = SMALL_EXPENSES.replace("context.input.amount", "context.input.ammount");
    let error = with_plugin_actions(&typo, true).err().unwrap().to_string();
    assert!(error.contains("ammount"), "{error}");
    // `ratio` is a JSON number, which Cedar has no type for: not visible.
    let ratio = SMALL_EXPENSES.replace("context.input.amount < 1000", "context.input.ratio < 1");
    assert!(with_plugin_actions(&ratio, true).is_err());
    // An optional field needs `has` first, as Cedar's strict mode says.
    let note = r#"permit (principal, action == AgentRuntime::Action::"approve-expense", resource)
        when { context.input.note == "ok" };"#;
    assert!(with_plugin_actions(note, true).is_err());
    let guarded = note.replace(
        "context.input.note ==",
        "context.input has note && context.input.note ==",
    );
    assert!(with_plugin_actions(&guarded, true).is_ok());
    // Plugins without an input schema have no action of their own.
    let unknown = r#"permit (principal, action == AgentRuntime::Action::"echo", resource);"#;
    assert!(with_plugin_actions(unknown, true).is_err());
}

#[test]
fn with_plugin_actions_dispatch_covers_every_plugin_only_through_in() {
    let eq = r#"@id("no-experimental") forbid (principal, action == AgentRuntime::Action::"dispatch", resource)
        when { resource.labels.contains("experimental") };"#;
    let error = with_plugin_actions(eq, true).err().unwrap().to_string();
    assert!(
        error.contains("no-experimental")
            && error.contains("action in AgentRuntime::Action::\"dispatch\""),
        "{error}"
    );
    let text = format!("{}\n{SMALL_EXPENSES}", eq.replace("action ==", "action in"));
    let governance = with_plugin_actions(&text, true).unwrap();
    let finance = principal("fin", &["finance"], "t1");
    let input = serde_json::json!({"amount": 1, "currency": "EUR"});
    let experimental = plugin("approve-expense", &["experimental"]);
    let denied = decide_input(&governance, &finance, &experimental, &input);
    assert_eq!(denied.policies, ["no-experimental"]);
    // And the default policies, which use `in`, validate with plugin actions.
    assert!(
        Governance::of_set(
            &governance::default_documents(),
            &schema_with_plugin_actions(),
            GovernanceConfig::default()
        )
        .is_ok()
    );
}

#[test]
fn discovery_lists_a_plugin_some_input_would_be_allowed() {
    let governance = with_plugin_actions(SMALL_EXPENSES, true).unwrap();
    let expense = plugin("approve-expense", &[]);
    let finance = principal("fin", &["finance"], "t1");
    let dev = principal("dev", &["developers"], "t1");
    assert_eq!(
        discover(&governance, &finance, std::slice::from_ref(&expense)),
        [true]
    );
    assert_eq!(
        discover(&governance, &dev, std::slice::from_ref(&expense)),
        [false]
    );
}

#[tokio::test]
async fn a_stored_version_is_decided_with_the_plugin_actions_it_was_put_with() {
    let (_dir, store) = store().await;
    let schema = schema_with_plugin_actions();
    let set = NewPolicySet {
        documents: documents(SMALL_EXPENSES),
        schema: schema.text(),
        author: "test".into(),
        message: String::new(),
    };
    // The generated actions decide too, so they are in the hash.
    assert_ne!(
        set.hash(),
        NewPolicySet {
            schema: governance::SCHEMA.into(),
            ..set.clone()
        }
        .hash()
    );
    let version = store.put(&set).await.unwrap().version;
    store
        .activate(&Activate {
            version,
            expected_revision: 0,
            kind: ActivationKind::Activate,
            actor: "test",
        })
        .await
        .unwrap();
    let governance = Governance::load(store.clone(), GovernanceConfig::default())
        .await
        .unwrap();
    let decision = decide_input(
        &governance,
        &principal("fin", &["finance"], "t1"),
        &plugin("approve-expense", &[]),
        &serde_json::json!({"amount": 10, "currency": "EUR"}),
    );
    assert!(decision.allowed, "{decision:?}");
    assert_eq!(decision.policy_set, set.hash());
}

/// The slicing grammar grown with the rest of the entity model: principal
/// `==`, `is ... in`, resource `in`, conditions on `alpha`'s input, and
/// policies that fail to evaluate.
fn any_policy_with_input() -> impl Strategy<Value = String> {
    let p = prop::sample::select(PLUGINS);
    let t = prop::sample::select(TENANTS);
    let effect = prop::sample::select(&["permit", "forbid"][..]);
    let base = any_policy()
        .prop_map(|p| p.replace("action,", "action in AgentRuntime::Action::\"dispatch\","));
    let extra = (effect, p, t, 0..3i64, 0..6u8).prop_map(|(effect, p, t, n, shape)| match shape {
        0 => format!(r#"{effect}(principal == AgentRuntime::User::"someone", action, resource == AgentRuntime::Plugin::"{p}");"#),
        1 => format!(r#"{effect}(principal is AgentRuntime::User in AgentRuntime::Tenant::"{t}", action, resource);"#),
        2 => format!(r#"{effect}(principal, action, resource in AgentRuntime::Plugin::"{p}");"#),
        3 => format!(r#"{effect}(principal, action == AgentRuntime::Action::"alpha", resource) when {{ context.input.n < {n} }};"#),
        4 => format!(r#"{effect}(principal in AgentRuntime::Tenant::"{t}", action == AgentRuntime::Action::"alpha", resource == AgentRuntime::Plugin::"alpha") when {{ context.input.n == {n} }};"#),
        // Overflows (the version's major is 1): an evaluation error.
        _ => format!(r#"{effect}(principal, action, resource == AgentRuntime::Plugin::"{p}") when {{ resource.version.major + 9223372036854775807 > 0 }};"#),
    });
    prop_oneof![base, extra]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Sliced and whole sets agree on several requests decided one after
    /// another by the same two engines (so their caches are exercised).
    #[test]
    fn slicing_decides_exactly_as_the_whole_set_with_inputs_and_errors(
        policies in prop::collection::vec(any_policy_with_input(), 0..12),
        requests in prop::collection::vec((any_principal(), any_plugin(), 0..3i64), 1..6),
    ) {
        let text = policies.join("\n");
        let sliced = with_plugin_actions(&text, true).unwrap();
        let whole = with_plugin_actions(&text, false).unwrap();
        for (who, what, n) in &requests {
            let input = serde_json::json!({"n": n});
            let (a, b) = (decide_input(&sliced, who, what, &input), decide_input(&whole, who, what, &input));
            let (mut pa, mut pb) = (a.policies.clone(), b.policies.clone());
            pa.sort();
            pb.sort();
            prop_assert_eq!((a.allowed, a.reason, pa), (b.allowed, b.reason, pb));
        }
    }
}
