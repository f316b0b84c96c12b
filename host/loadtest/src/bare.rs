//! Baseline (a): the bare per-request wasmtime host.
//!
//! What `wasmtime serve` does for every request, and nothing else: a new
//! Store with a default WASI context, instantiate from an `InstancePre`, call
//! the export, return its output. Pooling allocator with wasmtime's defaults,
//! no limits, no deadline, no auth, no metrics, no logging. Its own types
//! mirror the WIT records with wasmtime's derive macros (Axon's `bindgen!`
//! stays the only binding of the contract in the product).

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::value::RawValue;
use wasmtime::component::{
    Component, ComponentType, InstancePre, Lift, Linker, Lower, ResourceTable,
};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

#[derive(ComponentType, Lower)]
#[component(record)]
struct ReasonRequest {
    #[component(name = "correlation-id")]
    correlation_id: String,
    intent: String,
    input: String,
    context: Vec<(String, String)>,
}

#[derive(ComponentType, Lift)]
#[component(record)]
struct ReasonResponse {
    output: String,
    #[allow(dead_code)]
    confidence: Option<f64>,
    #[allow(dead_code)]
    notes: Vec<String>,
}

#[derive(ComponentType, Lift)]
#[component(variant)]
enum ReasoningError {
    #[component(name = "invalid-input")]
    InvalidInput(String),
    #[component(name = "failed")]
    Failed(String),
}

#[derive(ComponentType, Lift, Clone, Copy)]
#[component(enum)]
#[repr(u8)]
#[allow(dead_code)] // lifted from the guest's calls, never built here
enum Level {
    #[component(name = "trace")]
    Trace,
    #[component(name = "debug")]
    Debug,
    #[component(name = "info")]
    Info,
    #[component(name = "warn")]
    Warn,
    #[component(name = "error")]
    Error,
}

struct BareState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct Bare {
    engine: Engine,
    pre: InstancePre<BareState>,
    reason: wasmtime::component::ComponentExportIndex,
}

type ReasonFn = (Result<ReasonResponse, ReasoningError>,);

fn linker(engine: &Engine) -> anyhow::Result<Linker<BareState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    linker.instance("agent:reasoning/types@1.1.0")?;
    linker.instance("agent:reasoning/log@1.1.0")?.func_wrap(
        "log",
        |_, (_level, _message, _fields): (Level, String, Vec<(String, String)>)| Ok(()),
    )?;
    let mut config = linker.instance("agent:reasoning/config@1.1.0")?;
    config.func_wrap("get", |_, (_key,): (String,)| Ok((None::<String>,)))?;
    config.func_wrap("get-all", |_, (): ()| Ok((Vec::<(String, String)>::new(),)))?;
    Ok(linker)
}

impl Bare {
    fn new(module: &[u8]) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.allocation_strategy(InstanceAllocationStrategy::pooling());
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let component = Component::new(&engine, module).map_err(|e| anyhow::anyhow!("{e}"))?;
        let pre = linker(&engine)?.instantiate_pre(&component)?;
        let interface = component
            .get_export_index(None, "agent:reasoning/reasoner@1.1.0")
            .context("the component exports no reasoner")?;
        let reason = component
            .get_export_index(Some(&interface), "reason")
            .context("the reasoner has no `reason`")?;
        Ok(Self {
            engine,
            pre,
            reason,
        })
    }

    async fn run(&self, input: String) -> anyhow::Result<String> {
        let mut store = Store::new(
            &self.engine,
            BareState {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        let instance = self.pre.instantiate_async(&mut store).await?;
        let reason =
            instance.get_typed_func::<(ReasonRequest,), ReasonFn>(&mut store, self.reason)?;
        let request = ReasonRequest {
            correlation_id: String::new(),
            intent: "bench".into(),
            input,
            context: Vec::new(),
        };
        let (answer,) = reason.call_async(&mut store, (request,)).await?;
        match answer {
            Ok(response) => Ok(response.output),
            Err(ReasoningError::InvalidInput(m) | ReasoningError::Failed(m)) => {
                Err(anyhow::anyhow!(m))
            }
        }
    }
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    request: Inner<'a>,
}

#[derive(Deserialize)]
struct Inner<'a> {
    #[serde(borrow)]
    input: &'a RawValue,
}

async fn reason(State(bare): State<Arc<Bare>>, body: Bytes) -> Response {
    let input = match serde_json::from_slice::<Body<'_>>(&body) {
        Ok(body) => body.request.input.get().to_owned(),
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    match bare.run(input).await {
        Ok(output) => (
            [("content-type", "application/json")],
            format!("{{\"output\":{output}}}"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Serves `module` on `listener` until the process is stopped.
pub async fn serve(listener: tokio::net::TcpListener, module: &[u8]) -> anyhow::Result<()> {
    let bare = Arc::new(Bare::new(module)?);
    let app = Router::new()
        .route("/v1/reason", post(reason))
        .with_state(bare);
    axum::serve(listener, app).await?;
    Ok(())
}
