//! `agentctl mcp`: MCP on stdio for desktop agents, which speak stdio, in
//! front of Orbit's `/mcp`, which speaks Streamable HTTP behind SigV4 (the
//! pattern of AWS's own SigV4 MCP proxy).
//!
//! Each JSON-RPC message read from stdin is POSTed to Orbit, signed with the
//! profile's keys; what Orbit answers (a JSON body, or the messages of an
//! event stream) is written to stdout, one message per line. Orbit's MCP is
//! stateless, so messages are forwarded independently and concurrently (at
//! most [`IN_FLIGHT`] at once). A request Orbit refuses before MCP sees it
//! (unsigned, rate-limited, too large) gets a JSON-RPC error carrying Orbit's
//! error envelope. Logs go to stderr; stdout carries only MCP.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use orbit::client::OrbitClient;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, Semaphore};

use crate::dispatch::OrbitArgs;

/// Messages forwarded at once.
const IN_FLIGHT: usize = 16;

/// Longest message accepted from stdin (Orbit's default body limit).
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The JSON-RPC error code for a request Orbit refused before MCP saw it.
const REFUSED_BY_ORBIT: i64 = -32001;

#[derive(Args)]
pub(crate) struct McpArgs {
    #[command(flatten)]
    orbit: OrbitArgs,
}

pub(crate) async fn run(data_dir: &Path, args: McpArgs) -> anyhow::Result<()> {
    let client = args.orbit.client(data_dir)?;
    let stdout = Arc::new(Mutex::new(tokio::io::stdout()));
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut forwarding = tokio::task::JoinSet::new();
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        if line.trim().is_empty() {
            continue;
        }
        let permit = slots.clone().acquire_owned().await?;
        let (client, stdout) = (client.clone(), stdout.clone());
        forwarding.spawn(async move {
            let replies = forward(&client, line).await;
            let mut stdout = stdout.lock().await;
            for reply in replies {
                let mut text = reply.to_string();
                text.push('\n');
                if stdout.write_all(text.as_bytes()).await.is_err() {
                    break;
                }
            }
            let _ = stdout.flush().await;
            drop(permit);
        });
        // Reap what finished, so a long session does not keep every task.
        while forwarding.try_join_next().is_some() {}
    }
    // stdin closed: the agent is done; answer what is still in flight.
    while forwarding.join_next().await.is_some() {}
    Ok(())
}

/// Sends one message to Orbit; returns the messages to write back.
async fn forward(client: &OrbitClient, line: String) -> Vec<Value> {
    let message: Value = match serde_json::from_str(&line) {
        Ok(message) if line.len() <= MAX_MESSAGE_BYTES => message,
        Ok(_) => return vec![error(Value::Null, -32600, "message too large", None)],
        Err(e) => return vec![error(Value::Null, -32700, &format!("not JSON: {e}"), None)],
    };
    let id = message.get("id").cloned();
    let refused = |text: &str, data: Option<Value>| {
        // A notification gets no answer, not even an error.
        id.clone()
            .map(|id| error(id, REFUSED_BY_ORBIT, text, data))
            .into_iter()
            .collect::<Vec<_>>()
    };
    let request = match client.signed(reqwest::Method::POST, "/mcp", line.into_bytes()) {
        Ok(request) => request.header("accept", "application/json, text/event-stream"),
        Err(e) => return refused(&format!("cannot sign the request: {e}"), None),
    };
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return refused(&format!("cannot reach orbit: {e}"), None),
    };
    let status = response.status();
    let is_stream = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"));
    let body = match response.text().await {
        Ok(body) => body,
        Err(e) => return refused(&format!("reading orbit's answer: {e}"), None),
    };
    if is_stream {
        return events(&body);
    }
    match serde_json::from_str::<Value>(&body) {
        Ok(reply) if reply.get("jsonrpc").is_some() => vec![reply],
        Ok(envelope) if !status.is_success() => {
            let text = format!(
                "orbit answered {status}: {}: {}",
                envelope["error"]["code"].as_str().unwrap_or("?"),
                envelope["error"]["message"].as_str().unwrap_or("?")
            );
            refused(&text, Some(envelope))
        }
        _ if body.trim().is_empty() && status.is_success() => Vec::new(),
        _ => refused(
            &format!("orbit answered {status} with no MCP message"),
            None,
        ),
    }
}

/// The messages of an event stream (`data:` lines, an event per blank line).
fn events(body: &str) -> Vec<Value> {
    let mut messages = Vec::new();
    let mut data = String::new();
    for line in body.lines().chain(std::iter::once("")) {
        if let Some(rest) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
        } else if line.is_empty() && !data.is_empty() {
            if let Ok(message) = serde_json::from_str(&data) {
                messages.push(message);
            }
            data.clear();
        }
    }
    messages
}

fn error(id: Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_stream_gives_each_events_message() {
        let body = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n\
                    : keep-alive\n\ndata: {\"jsonrpc\":\"2.0\",\n\
                    data: \"id\":2,\"result\":{}}\n";
        let messages = events(body);
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert_eq!(messages[0]["id"], 1);
        assert_eq!(messages[1]["id"], 2);
    }
}
