//! What asking the governance function costs over deciding in-process:
//! the same questions, alternately decided by `Governance` in this process
//! and by the function through `aws-sdk-lambda`, side by side in one run.
//!
//! `cargo bench -p governance-lambda --bench latency` (moto and
//! `cargo-lambda` as the tests find them: `AGENT_RUNTIME_PYTHON`). The Lambda
//! API here is `cargo lambda watch` on loopback, a proxy in front of the
//! function's runtime API: it measures the client, the wire format and the
//! function, not AWS's network or its invoke service.

use std::path::Path;
use std::time::{Duration, Instant};

use aws_stores::LambdaDecider;
use aws_stores::testing::{LambdaApi, Moto};
use governance::{Decider, Governance, GovernanceConfig};
use governance_lambda::testing::{FUNCTION, POLICIES, Question, RunningFunction, policy_table};
use rand::SeedableRng;
use rand::rngs::StdRng;

const WARM_UP: usize = 200;
const REQUESTS: usize = 5_000;

/// Microseconds at the given quantiles of `samples` (sorted here).
fn quantiles(samples: &mut [f64], at: &[f64]) -> Vec<f64> {
    samples.sort_by(f64::total_cmp);
    at.iter()
        .map(|q| samples[((samples.len() - 1) as f64 * q).round() as usize])
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let moto = Moto::start().map_err(|e| e.to_string())?;
    let store = policy_table(&moto, "policies", POLICIES).await?;
    let api =
        LambdaApi::start(&governance_lambda::testing::workspace()).map_err(|e| e.to_string())?;
    let binary = Path::new(env!("CARGO_BIN_EXE_governance-lambda"));
    let _function = RunningFunction::start(binary, &api, &moto, "policies")?;
    let lambda = LambdaDecider::new(&api.sdk_config(), FUNCTION, Duration::from_secs(30));
    let local = Governance::load(store, GovernanceConfig::default()).await?;

    let mut rng = StdRng::seed_from_u64(3);
    let corpus: Vec<Question> = (0..WARM_UP + REQUESTS)
        .map(|_| Question::generate(&mut rng))
        .collect();
    let (mut here, mut remote) = (Vec::new(), Vec::new());
    for (i, question) in corpus.iter().enumerate() {
        let request = question.request();
        let started = Instant::now();
        let a = local.decide(&request).await;
        let local_us = started.elapsed().as_secs_f64() * 1e6;
        let started = Instant::now();
        let b = lambda.decide(&request).await;
        let lambda_us = started.elapsed().as_secs_f64() * 1e6;
        if a.allowed != b.allowed {
            return Err(format!("the two disagree on {question:?}: {a:?} / {b:?}").into());
        }
        if i >= WARM_UP {
            here.push(local_us);
            remote.push(lambda_us);
        }
    }

    let at = [0.5, 0.9, 0.99];
    let local_q = quantiles(&mut here, &at);
    let lambda_q = quantiles(&mut remote, &at);
    println!("{REQUESTS} decisions each, after {WARM_UP} to warm up, alternating:\n");
    println!("| decider | p50 us | p90 us | p99 us |");
    println!("|---|---:|---:|---:|");
    for (name, q) in [
        ("in-process", &local_q),
        ("lambda (cargo lambda watch)", &lambda_q),
    ] {
        println!("| {name} | {:.1} | {:.1} | {:.1} |", q[0], q[1], q[2]);
    }
    println!(
        "\nadded by the Lambda path: p50 +{:.0} us ({:.0}x), p99 +{:.0} us ({:.0}x)",
        lambda_q[0] - local_q[0],
        lambda_q[0] / local_q[0],
        lambda_q[2] - local_q[2],
        lambda_q[2] / local_q[2],
    );
    Ok(())
}
