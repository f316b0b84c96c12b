//! `agentctl up`: the whole stack on embedded defaults, from a fresh clone.
//!
//! On first run [`local_stack::prepare`] creates the keyring (a `dev` user
//! and Orbit's service key), writes the dev credentials as AWS profile
//! `agent-runtime`, seeds the default policies and publishes the example
//! plugins (compiled by the build). Then Axon and Orbit (governance
//! in-process) start on loopback; `up` proves the path with signed sample
//! dispatches, prints what to try, and serves until Ctrl-C. `--check` stops
//! after the samples: a smoke test of the whole start-up.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::bail;
use clap::Args;
use local_stack::{LocalStack, PROFILE};
use service_kit::telemetry::{self, LogFormat};

#[derive(Args)]
pub(crate) struct UpArgs {
    /// Where Orbit listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    orbit_listen: SocketAddr,
    /// Where Axon listens.
    #[arg(long, default_value = "127.0.0.1:8081")]
    axon_listen: SocketAddr,
    /// Start, send the sample dispatches, and exit (non-zero if they did not
    /// come out as expected).
    #[arg(long)]
    check: bool,
    /// Log format: `text` or `json`.
    #[arg(long, default_value = "text")]
    log_format: LogFormat,
}

pub(crate) async fn run(data_dir: &Path, args: UpArgs) -> anyhow::Result<()> {
    // Audit records go to the audit file, not the terminal (`RUST_LOG=info`
    // shows them too).
    telemetry::init(
        args.log_format,
        "info,audit=warn,wasmtime=warn,cranelift=warn",
    );
    let prepared = local_stack::prepare(data_dir).await?;
    let stack = LocalStack::start(
        data_dir,
        prepared.onnxruntime.as_deref(),
        args.orbit_listen,
        args.axon_listen,
    )
    .await?;
    let (orbit_addr, axon_addr) = (stack.orbit_addr, stack.axon_addr);

    let samples = samples(
        orbit_addr,
        &prepared.credentials,
        prepared.onnxruntime.is_some(),
    )
    .await;
    match &samples {
        Ok(lines) => {
            println!("\nagent-runtime is up (state in `{}`)", data_dir.display());
            println!("  orbit  http://{orbit_addr}   (POST /dispatch, SigV4)");
            println!("  axon   http://{axon_addr}   (accepts only Orbit's signature)");
            println!();
            for line in lines {
                println!("{line}");
            }
            print_examples(orbit_addr, data_dir);
        }
        Err(e) => eprintln!("the sample dispatch failed: {e:#}"),
    }

    if !args.check && samples.is_ok() {
        println!("\nCtrl-C stops the stack.");
        service_kit::shutdown_signal().await;
        println!("stopping");
    }
    stack.stop().await?;
    samples.map(drop)
}

/// Signed dispatches as the dev user: `keywords` (allowed), `triage`
/// (experimental: denied unless in group `beta`) and, with inference,
/// `support-intent` (a model, through `wasi:nn`).
async fn samples(
    orbit: SocketAddr,
    credentials: &Path,
    inference: bool,
) -> anyhow::Result<Vec<String>> {
    let client = crate::dispatch::client_from_profile(
        &format!("http://{orbit}"),
        credentials,
        PROFILE,
        auth::DEFAULT_REGION,
    )?;
    let allowed = client
        .dispatch(&serde_json::json!({
            "plugin": "keywords",
            "intent": "extract",
            "input": { "text": "Axon runs each plugin in a fresh sandbox. A fresh sandbox per request keeps every plugin honest.", "top": 3 },
        }))
        .await
        .map_err(anyhow::Error::msg)?;
    if !allowed.status.is_success() {
        bail!(
            "dispatching `keywords` gave {}: {}",
            allowed.status,
            allowed.body
        );
    }
    let denied = client
        .dispatch(&serde_json::json!({
            "plugin": "triage",
            "intent": "classify",
            "input": { "subject": "refund please" },
        }))
        .await
        .map_err(anyhow::Error::msg)?;
    if denied.status != reqwest::StatusCode::FORBIDDEN {
        bail!(
            "dispatching `triage` as `dev` should be denied, got {}: {}",
            denied.status,
            denied.body
        );
    }
    let mut lines = vec![
        format!(
            "sample: keywords -> {}  (allowed by {})",
            allowed.body["output"], allowed.body["governance"]["policies"]
        ),
        format!(
            "sample: triage   -> 403 {}  ({})",
            denied.body["error"]["code"], denied.body["governance"]["policies"]
        ),
    ];
    if inference {
        let classified = client
            .dispatch(&serde_json::json!({
                "plugin": "support-intent",
                "intent": "classify",
                "input": { "message": "I was charged twice this month, please refund me" },
            }))
            .await
            .map_err(anyhow::Error::msg)?;
        if !classified.status.is_success() {
            bail!(
                "dispatching `support-intent` gave {}: {}",
                classified.status,
                classified.body
            );
        }
        let output = &classified.body["output"];
        lines.push(format!(
            "sample: support-intent -> intent {}, urgency {}  (a model, through wasi:nn)",
            output["intent"], output["urgency"]
        ));
    } else {
        lines.push(
            "inference is off: ./scripts/up.sh installs the `onnxruntime` wheel into .venv".into(),
        );
    }
    Ok(lines)
}

fn print_examples(orbit: SocketAddr, data_dir: &Path) {
    let data = data_dir.display();
    println!("\ntry it:");
    println!(
        "  cargo run -q -p agentctl -- --data-dir {data} dispatch keywords --orbit http://{orbit} --input '{{\"text\": \"the quick brown fox jumps over the lazy fox\", \"top\": 2}}'"
    );
    println!(
        "  AWS_SHARED_CREDENTIALS_FILE={data}/credentials awscurl --profile {PROFILE} --service execute-api --region us-east-1 \\\n      -X POST -d '{{\"plugin\":\"keywords\",\"intent\":\"extract\",\"input\":{{\"text\":\"a b b\"}}}}' http://{orbit}/dispatch"
    );
    println!(
        "  cargo run -q -p agentctl -- --data-dir {data} keys create --principal bea --groups developers,beta --profile bea"
    );
    println!(
        "  cargo run -q -p agentctl -- --data-dir {data} dispatch triage --profile bea --orbit http://{orbit} --input '{{\"subject\": \"site down, urgent\"}}'"
    );
}
