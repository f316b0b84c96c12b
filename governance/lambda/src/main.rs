//! The governance function's binary: read the configuration, load the
//! active policy set once (a cold start), then answer invocations.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use governance_lambda::{DecisionFunction, FunctionConfig};
use lambda_runtime::{LambdaEvent, service_fn};

#[derive(Parser)]
#[command(
    name = "governance-lambda",
    version,
    about = "The governance function: decisions over the DynamoDB policy store, on AWS Lambda"
)]
struct Cli {
    #[command(flatten)]
    config: FunctionConfig,
}

#[tokio::main]
async fn main() -> ExitCode {
    lambda_runtime::tracing::init_default_subscriber();
    let cli = Cli::parse();
    // No valid policy set, no function: the init fails, every invoke fails,
    // and Orbit denies each with `unavailable`.
    let function = match DecisionFunction::start(&cli.config).await {
        Ok(function) => Arc::new(function),
        Err(error) => {
            eprintln!("governance-lambda: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    let served = lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let function = function.clone();
        async move { Ok::<_, lambda_runtime::Error>(function.handle(&event.payload).await) }
    }))
    .await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("governance-lambda: the runtime API failed: {error}");
            ExitCode::FAILURE
        }
    }
}
