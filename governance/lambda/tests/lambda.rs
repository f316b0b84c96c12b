//! The governance function end to end: the real binary, polling a real
//! Lambda runtime API (`cargo lambda watch`), invoked through `aws-sdk-lambda`
//! by Orbit's [`LambdaDecider`], reading policies from DynamoDB on moto.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_stores::testing::{LambdaApi, Moto};
use aws_stores::{DynamoPolicyStore, LambdaDecider};
use governance::{Decider, Decision, DiscoveryRequest, Governance, GovernanceConfig, Outcome};
use governance_lambda::testing::{
    FUNCTION, POLICIES, Question, RunningFunction, function_command, policy_table, put_active,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

const TABLE: &str = "policies";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_governance-lambda"))
}

fn start_function(api: &LambdaApi, moto: &Moto) -> RunningFunction {
    RunningFunction::start(binary(), api, moto, TABLE).unwrap()
}

/// Moto with the policy table holding `POLICIES` as its active version.
async fn policy_store() -> (Moto, Arc<DynamoPolicyStore>) {
    let moto = Moto::start().unwrap();
    let store = policy_table(&moto, TABLE, POLICIES).await.unwrap();
    (moto, store)
}

/// What must agree: everything but the time each side took.
fn verdict(decision: &Decision) -> (bool, Outcome, Vec<String>, Vec<String>, u64, String) {
    let mut policies = decision.policies.clone();
    policies.sort();
    (
        decision.allowed,
        decision.reason,
        policies,
        decision.errors.clone(),
        decision.policy_version,
        decision.policy_set.clone(),
    )
}

const CORPUS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lambda_and_in_process_governance_decide_alike_on_a_generated_corpus() {
    let (moto, store) = policy_store().await;
    let api = LambdaApi::start(&governance_lambda::testing::workspace()).unwrap();
    // Two instances share the invocations, as Lambda scales out.
    let _functions = [start_function(&api, &moto), start_function(&api, &moto)];
    let lambda = Arc::new(LambdaDecider::new(
        &api.sdk_config(),
        FUNCTION,
        Duration::from_secs(30),
    ));
    let local = Arc::new(
        Governance::load(store.clone(), GovernanceConfig::default())
            .await
            .unwrap(),
    );

    let mut rng = StdRng::seed_from_u64(12);
    let corpus: Arc<Vec<Question>> =
        Arc::new((0..CORPUS).map(|_| Question::generate(&mut rng)).collect());
    let workers = 4;
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (corpus, lambda, local) = (corpus.clone(), lambda.clone(), local.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcomes: BTreeMap<&'static str, usize> = BTreeMap::new();
            let mut differences = Vec::new();
            let mut on_input = 0;
            for question in corpus.iter().skip(worker).step_by(workers) {
                let request = question.request();
                let remote = lambda.decide(&request).await;
                let here = local.decide(&request).await;
                if verdict(&remote) != verdict(&here) {
                    differences.push(format!(
                        "{:?} {:?} {} {} at {:?}:\n  lambda     {remote:?}\n  in-process {here:?}",
                        question.principal,
                        question.plugin,
                        question.intent,
                        question.source_ip,
                        question.time
                    ));
                }
                *outcomes.entry(here.reason.as_str()).or_default() += 1;
                if here.policies.iter().any(|p| p.contains("summar")) {
                    on_input += 1;
                }
            }
            (outcomes, differences, on_input)
        }));
    }
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut differences = Vec::new();
    let mut on_input = 0;
    for task in tasks {
        let (counts, mut different, input_decided) = task.await.unwrap();
        on_input += input_decided;
        for (outcome, n) in counts {
            *outcomes.entry(outcome).or_default() += n;
        }
        differences.append(&mut different);
    }
    assert!(
        differences.is_empty(),
        "{} of {CORPUS} decisions differ; the first:\n{}\n{}",
        differences.len(),
        differences[..differences.len().min(3)].join("\n"),
        api.output()
    );
    eprintln!(
        "{CORPUS} decisions agree: {outcomes:?}; {on_input} decided by a condition on the input"
    );
    assert!(
        on_input >= 100,
        "conditions on the input decided only {on_input}"
    );
    assert_eq!(outcomes.values().sum::<usize>(), CORPUS);
    // The corpus reaches every outcome policies can give, so agreeing is
    // not agreeing on one answer.
    for outcome in [
        Outcome::Allowed,
        Outcome::ForbiddenByPolicy,
        Outcome::NoPermittingPolicy,
        Outcome::EvaluationError,
    ] {
        assert!(
            outcomes.get(outcome.as_str()).copied().unwrap_or(0) >= 100,
            "{outcome:?} is rare in the corpus: {outcomes:?}"
        );
    }

    // Discovery too: the corpus in questions of ten plugin versions each.
    let (mut shown, mut hidden) = (0, 0);
    for chunk in corpus.chunks(10) {
        let plugins: Vec<_> = chunk.iter().map(|q| q.plugin.clone()).collect();
        let asked = DiscoveryRequest {
            principal: &chunk[0].principal,
            plugins: &plugins,
            source_ip: chunk[0].source_ip,
            time: chunk[0].time,
        };
        let here = local.discover(&asked).await;
        assert_eq!(lambda.discover(&asked).await, here, "{asked:?}");
        shown += here.iter().filter(|v| **v).count();
        hidden += here.iter().filter(|v| !**v).count();
    }
    assert!(
        shown >= 100 && hidden >= 100,
        "{shown} shown, {hidden} hidden"
    );
    assert!(lambda.is_ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_function_follows_the_store_and_every_failure_is_an_unavailable_deny() {
    let (moto, store) = policy_store().await;
    let api = LambdaApi::start(&governance_lambda::testing::workspace()).unwrap();

    // No active set, no function: it refuses to start, and says why.
    let empty = DynamoPolicyStore::new(&moto.sdk_config(), "empty");
    empty.create_table().await.unwrap();
    let refused = function_command(binary(), &api, &moto, "empty")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("no active policy set"), "{stderr}");

    let mut function = start_function(&api, &moto);
    let lambda = LambdaDecider::new(&api.sdk_config(), FUNCTION, Duration::from_secs(10));
    // Orbit's start-up probe: reachable, and speaking this wire version.
    lambda.probe().await.unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let question = Question::generate(&mut rng);
    let first = lambda.decide(&question.request()).await;
    assert_eq!(first.policy_version, 1, "{first:?}");

    // A new head reaches the function within its refresh period.
    let everything = "@id(\"everything\") permit (principal, action, resource);";
    let version = put_active(store.as_ref(), everything).await.unwrap();
    let started = Instant::now();
    let decision = loop {
        let decision = lambda.decide(&question.request()).await;
        if decision.policy_version == version || started.elapsed() > Duration::from_secs(20) {
            break decision;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(decision.policy_version, version, "{decision:?}");
    assert_eq!(decision.reason, Outcome::Allowed);
    assert_eq!(decision.policies, ["everything"]);

    // A request of another wire version is answered as such.
    let (failed, answer) = api
        .invoke_raw(FUNCTION, br#"{"wire_version": 2, "question": "?"}"#)
        .await
        .unwrap();
    assert_eq!(failed, None);
    let payload: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(payload["wire_version"], 1);
    assert_eq!(payload["error"]["code"], "unsupported_wire_version");

    // A function that does not exist: the probe says so, each decision is a
    // deny whose text names no detail of the deployment (here, the Lambda
    // API's list of functions), and three in a row make it not ready.
    let missing = LambdaDecider::new(
        &api.sdk_config(),
        "no-such-function",
        Duration::from_secs(10),
    );
    let failure = missing.probe().await.unwrap_err();
    assert!(failure.detail.contains("Available functions"), "{failure}");
    for attempt in 1..=3 {
        assert!(missing.is_ready(), "one or two failures are not an outage");
        let decision = missing.decide(&question.request()).await;
        assert_eq!(
            (decision.allowed, decision.reason),
            (false, Outcome::Unavailable),
            "attempt {attempt}"
        );
        let error = &decision.errors[0];
        assert!(
            error.starts_with("invoking the governance function failed: "),
            "{error}"
        );
        assert!(!error.contains("Available functions"), "{error}");
    }
    assert!(!missing.is_ready());

    // A function that no longer answers: a deny within the timeout.
    function.kill();
    let hurried = LambdaDecider::new(&api.sdk_config(), FUNCTION, Duration::from_millis(300));
    let decision = hurried.decide(&question.request()).await;
    assert_eq!(
        (decision.allowed, decision.reason),
        (false, Outcome::Unavailable)
    );
    assert_eq!(
        decision.errors,
        ["the governance function did not answer within 300 ms"]
    );
    assert!(decision.explain().starts_with("governance is unavailable"));
    for _ in 0..2 {
        hurried.decide(&question.request()).await;
    }
    assert!(!hurried.is_ready());
}
