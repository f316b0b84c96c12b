//! Governance decisions: the default policies, validation, refresh, fail
//! closed, and properties that must hold for any policy set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use governance::{
    Decision, DecisionRequest, Governance, GovernanceConfig, GovernanceError, LocalPolicyDir,
    Outcome, PluginInfo, Principal, PrincipalKind, RefreshOutcome,
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
    }
}

fn decide(governance: &Governance, who: &Principal, what: &PluginInfo) -> Decision {
    governance.decide_now(&DecisionRequest {
        principal: who,
        plugin: what,
        intent: "test",
        source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        time: SystemTime::now(),
    })
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn governance_over(dir: &Path, config: GovernanceConfig) -> Result<Governance, GovernanceError> {
    Governance::load(Arc::new(LocalPolicyDir::new(dir)), config)
}

fn with_policies(text: &str) -> (tempfile::TempDir, Result<Governance, GovernanceError>) {
    let dir = tempfile::tempdir().unwrap();
    if !text.is_empty() {
        write(dir.path(), "test.cedar", text);
    }
    let governance = governance_over(dir.path(), GovernanceConfig::default());
    (dir, governance)
}

#[test]
fn default_policies_allow_approved_versions_and_keep_experimental_ones_for_beta() {
    let dir = tempfile::tempdir().unwrap();
    assert!(LocalPolicyDir::seed(dir.path(), governance::DEFAULT_POLICIES).unwrap());
    assert!(
        !LocalPolicyDir::seed(dir.path(), governance::DEFAULT_POLICIES).unwrap(),
        "seeding twice overwrote"
    );
    let governance = governance_over(dir.path(), GovernanceConfig::default()).unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    LocalPolicyDir::seed(dir.path(), governance::DEFAULT_POLICIES).unwrap();
    let governance = governance_over(dir.path(), GovernanceConfig::default()).unwrap();
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
    let (_dir, governance) = with_policies(
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
fn invalid_policies_never_load_and_say_why() {
    let (_dir, result) = with_policies(
        r#"@id("bad-attr") permit(principal, action, resource) when { resource.owner == "me" };"#,
    );
    let error = result.err().expect("an invalid set must not load");
    assert!(error.to_string().contains("bad-attr"), "{error}");

    let (_dir, result) = with_policies("permit(principal, action, resource");
    assert!(matches!(result, Err(GovernanceError::InvalidPolicies(_))));

    let (_dir, result) = with_policies(
        r#"@id("same") permit(principal, action, resource); @id("same") forbid(principal, action, resource);"#,
    );
    assert!(result.err().unwrap().to_string().contains("used twice"));
}

#[test]
fn refresh_activates_valid_changes_and_keeps_the_last_good_set() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.cedar",
        r#"@id("all") permit(principal, action, resource);"#,
    );
    let governance = governance_over(dir.path(), GovernanceConfig::default()).unwrap();
    let dev = principal("dev", &[], "local");
    let echo = plugin("echo", &[]);
    assert!(decide(&governance, &dev, &echo).allowed);
    assert_eq!(governance.refresh().unwrap(), RefreshOutcome::Unchanged);

    write(
        dir.path(),
        "b.cedar",
        r#"@id("no-echo") forbid(principal, action, resource == AgentRuntime::Plugin::"echo");"#,
    );
    assert!(matches!(
        governance.refresh().unwrap(),
        RefreshOutcome::Activated { policies: 2, .. }
    ));
    let denied = decide(&governance, &dev, &echo);
    assert_eq!(
        (denied.allowed, denied.policies.clone()),
        (false, vec!["no-echo".to_owned()])
    );

    // A broken edit is refused; the last good set keeps deciding.
    write(
        dir.path(),
        "b.cedar",
        "forbid(principal, action, resource) when { nonsense };",
    );
    assert!(governance.refresh().is_err());
    assert_eq!(decide(&governance, &dev, &echo).policies, ["no-echo"]);
}

#[test]
fn an_unreadable_source_past_the_staleness_bound_denies_everything() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    write(
        &policies,
        "a.cedar",
        r#"@id("all") permit(principal, action, resource);"#,
    );
    let config = GovernanceConfig {
        max_staleness: Duration::from_millis(50),
        ..GovernanceConfig::default()
    };
    let governance = governance_over(&policies, config).unwrap();
    let (dev, echo) = (principal("dev", &[], "local"), plugin("echo", &[]));
    assert!(decide(&governance, &dev, &echo).allowed);

    std::fs::remove_dir_all(&policies).unwrap();
    assert!(matches!(
        governance.refresh(),
        Err(GovernanceError::SourceUnavailable { .. })
    ));
    std::thread::sleep(Duration::from_millis(100));
    let decision = decide(&governance, &dev, &echo);
    assert_eq!(
        (decision.allowed, decision.reason),
        (false, Outcome::Unavailable)
    );
    assert!(
        decision.explain().contains("not been readable"),
        "{}",
        decision.explain()
    );
    use governance::Decider as _;
    assert!(!governance.is_ready());
}

#[test]
fn an_erroring_forbid_still_denies_what_a_permit_allows() {
    let (_dir, governance) = with_policies(
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
    let (_dir, governance) = with_policies(
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
        let (_dir, governance) = with_policies("");
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
        let (_dir, governance) = with_policies(&text);
        let decision = decide(&governance.unwrap(), &who, &what);
        prop_assert!(!decision.allowed);
        prop_assert_eq!(decision.policies, vec!["the-forbid".to_owned()]);
    }

    #[test]
    fn slicing_decides_exactly_as_the_whole_set(
        policies in prop::collection::vec(any_policy(), 0..12),
        who in any_principal(),
        what in any_plugin(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "p.cedar", &policies.join("\n"));
        let sliced = governance_over(dir.path(), GovernanceConfig::default()).unwrap();
        let whole = governance_over(dir.path(), GovernanceConfig { slice: false, ..GovernanceConfig::default() }).unwrap();
        let (a, b) = (decide(&sliced, &who, &what), decide(&whole, &who, &what));
        let (mut pa, mut pb) = (a.policies.clone(), b.policies.clone());
        pa.sort();
        pb.sort();
        prop_assert_eq!((a.allowed, a.reason, pa), (b.allowed, b.reason, pb));
    }
}
