//! Baseline (d): the plugin logic compiled natively, behind the same HTTP
//! stack (axum) and the same request shape as Axon: the price of the sandbox
//! is the difference.

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct Body<'a> {
    plugin: &'a str,
    #[serde(borrow)]
    request: Inner<'a>,
}

#[derive(Deserialize)]
struct Inner<'a> {
    #[serde(borrow)]
    input: &'a RawValue,
}

async fn reason(body: Bytes) -> Response {
    let body = match serde_json::from_slice::<Body<'_>>(&body) {
        Ok(body) => body,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let output = match body.plugin {
        "echo" => Ok(body.request.input.get().to_owned()),
        "keywords" => keywords::keywords_json(body.request.input.get())
            .map(|(output, _)| output)
            .map_err(|e| format!("{e:?}")),
        other => Err(format!("no native `{other}`")),
    };
    match output {
        Ok(output) => (
            [("content-type", "application/json")],
            format!("{{\"output\":{output}}}"),
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

/// Serves the native plugins on `listener` until the process is stopped.
pub async fn serve(listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    axum::serve(listener, Router::new().route("/v1/reason", post(reason))).await?;
    Ok(())
}
