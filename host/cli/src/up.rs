//! `agentctl up`: the whole stack on embedded defaults, from a fresh clone.
//!
//! On first run [`local_stack::prepare`] creates the keyring (a `dev` user
//! and Orbit's service key), writes the dev credentials as AWS profile
//! `agent-runtime`, seeds the default policies and publishes the example
//! plugins (compiled by the build). Then Axon and Orbit (governance
//! in-process) start on loopback; `up` proves the path with signed sample
//! dispatches, prints what to try, and serves until Ctrl-C. `--check` stops
//! after the samples: a smoke test of the whole start-up. `--gpu` adds
//! Axon's GPU pool where an NVIDIA GPU is found; `--simulated-gpu` adds one
//! that runs on the CPU, to try the routing anywhere.

use std::net::SocketAddr;
use std::path::Path;

use std::time::{Duration, Instant};

use anyhow::bail;
use axon::inference::Accelerator;
use clap::Args;
use local_stack::{GpuPool, LocalStack, PROFILE};
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
    /// Also run Axon's GPU pool, if this machine has an NVIDIA GPU. ONNX
    /// Runtime must then be the `onnxruntime-gpu` wheel's
    /// (`AGENT_RUNTIME_ONNXRUNTIME`, and its CUDA libraries on
    /// `LD_LIBRARY_PATH`): `./scripts/up.sh --gpu` sets both.
    #[arg(long, conflicts_with = "simulated_gpu")]
    gpu: bool,
    /// Also run a GPU pool that runs its models on the CPU: to try the
    /// routing of plugins that need a GPU on a machine without one.
    #[arg(long)]
    simulated_gpu: bool,
    /// Where the GPU pool's Axon listens.
    #[arg(long, default_value = "127.0.0.1:8082")]
    gpu_axon_listen: SocketAddr,
}

pub(crate) async fn run(data_dir: &Path, args: UpArgs) -> anyhow::Result<()> {
    // Audit records go to the audit file, not the terminal (`RUST_LOG=info`
    // shows them too).
    telemetry::init(
        args.log_format,
        "info,audit=warn,wasmtime=warn,cranelift=warn,wasmtime_wasi_nn=off",
    );
    let prepared = local_stack::prepare(data_dir).await?;
    let accelerator = match (args.gpu, args.simulated_gpu) {
        (true, _) if axon::inference::nvidia_gpus() == 0 => {
            tracing::warn!("no NVIDIA GPU found (no /dev/nvidia0): running the CPU pool only");
            None
        }
        (true, _) => Some(Accelerator::Cuda),
        (false, true) => Some(Accelerator::SimulatedCuda),
        (false, false) => None,
    };
    let gpu = accelerator.map(|accelerator| GpuPool {
        accelerator,
        listen: args.gpu_axon_listen,
    });
    let stack = LocalStack::start(
        data_dir,
        prepared.onnxruntime.as_deref(),
        gpu,
        args.orbit_listen,
        args.axon_listen,
    )
    .await?;
    let (orbit_addr, axon_addr) = (stack.orbit_addr, stack.axon_addr);

    let mut samples = samples(
        orbit_addr,
        &prepared.credentials,
        prepared.onnxruntime.is_some(),
    )
    .await;
    if let (Ok(lines), Some(accelerator)) = (&mut samples, accelerator) {
        match gpu_pool_up(orbit_addr).await {
            Ok(()) => lines.push(format!(
                "sample: the GPU pool ({}) is up: plugins that require or prefer a GPU run there",
                accelerator.as_str()
            )),
            Err(e) => samples = Err(e),
        }
    }
    match &samples {
        Ok(lines) => {
            println!("\nagent-runtime is up (state in `{}`)", data_dir.display());
            println!("  orbit  http://{orbit_addr}   (POST /dispatch, SigV4)");
            println!("  axon   http://{axon_addr}   (accepts only Orbit's signature)");
            if let (Some(gpu_addr), Some(accelerator)) = (stack.gpu_addr, accelerator) {
                println!(
                    "  gpu    http://{gpu_addr}   (Axon's GPU pool, {})",
                    accelerator.as_str()
                );
            }
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

/// Waits until Orbit's probe finds the GPU pool up (it probes every second).
async fn gpu_pool_up(orbit: SocketAddr) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let ready = reqwest::get(format!("http://{orbit}/ready")).await;
        let state = match ready {
            Ok(response) => response.json::<serde_json::Value>().await.ok(),
            Err(_) => None,
        };
        let state = state.map(|body| body["gpu_pool"].clone());
        if state.as_ref().is_some_and(|s| s == "up") {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("Orbit did not find the GPU pool up within 10 s (last `gpu_pool`: {state:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
