//! `agentctl mcp`: MCP on stdio for desktop agents, which speak stdio, in
//! front of Orbit's `/mcp`, which speaks Streamable HTTP behind SigV4 (the
//! pattern of AWS's own SigV4 MCP proxy).
//!
//! Each JSON-RPC message read from stdin is POSTed to Orbit, signed with the
//! profile's keys; what Orbit answers (a JSON body, or the messages of an
//! event stream) is written to stdout, one message per line. Orbit's MCP is
//! stateless, so messages are forwarded independently and concurrently (at
//! most [`IN_FLIGHT`] at once, each bounded by [`ORBIT_TIMEOUT`]). A request
//! Orbit refuses before MCP sees it (unsigned, rate-limited, too large) gets
//! a JSON-RPC error carrying Orbit's error envelope. Logs go to stderr;
//! stdout carries only MCP.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use orbit::client::OrbitClient;
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, Semaphore};

use crate::dispatch::OrbitArgs;

/// Messages forwarded at once.
const IN_FLIGHT: usize = 16;

/// Longest message accepted from stdin (Orbit's default body limit).
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// How long one message may wait for Orbit: past the longest plugin
/// deadline Axon allows by default (30 s), with room for the hops.
const ORBIT_TIMEOUT: Duration = Duration::from_secs(60);

/// The JSON-RPC error code for a request Orbit refused before MCP saw it,
/// or could not be asked.
const REFUSED_BY_ORBIT: i64 = -32001;

/// Where a request names its protocol version (MCP 2026-07-28).
const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

#[derive(Args)]
pub(crate) struct McpArgs {
    #[command(flatten)]
    orbit: OrbitArgs,
}

pub(crate) async fn run(data_dir: &Path, args: McpArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(ORBIT_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let client = args.orbit.client(data_dir)?.with_http(http);
    let stdout = Arc::new(Mutex::new(tokio::io::stdout()));
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // The version the last `initialize` settled, for the requests after it.
    let negotiated: Arc<RwLock<Option<String>>> = Arc::default();
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut forwarding = tokio::task::JoinSet::new();
    while let Some(line) = read_line(&mut stdin, MAX_MESSAGE_BYTES)
        .await
        .context("reading stdin")?
    {
        let permit = slots.clone().acquire_owned().await?;
        let (client, stdout, negotiated) = (client.clone(), stdout.clone(), negotiated.clone());
        forwarding.spawn(async move {
            let replies = match line {
                Line::Message(text) => forward(&client, text, &negotiated).await,
                Line::TooLong => vec![error(
                    Value::Null,
                    -32600,
                    &format!("message longer than {MAX_MESSAGE_BYTES} bytes"),
                    None,
                )],
            };
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

/// One line of stdin.
#[derive(Debug, PartialEq)]
enum Line {
    Message(String),
    /// Longer than the limit: skipped to its end, never held whole.
    TooLong,
}

/// The next non-empty line, holding at most `max` bytes of it; `None` at
/// the end of input.
async fn read_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    max: usize,
) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            // End of input: a last line without a newline still counts.
            return Ok(match (too_long, line.is_empty()) {
                (true, _) => Some(Line::TooLong),
                (false, true) => None,
                (false, false) => Some(Line::Message(String::from_utf8_lossy(&line).into())),
            });
        }
        let (chunk, ends) = match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => (&buffer[..at], Some(at + 1)),
            None => (buffer, None),
        };
        if !too_long && line.len() + chunk.len() <= max {
            line.extend_from_slice(chunk);
        } else {
            too_long = true;
            line.clear();
        }
        let used = ends.unwrap_or(buffer.len());
        reader.consume(used);
        if ends.is_some() {
            if too_long {
                return Ok(Some(Line::TooLong));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                line.clear();
                continue;
            }
            return Ok(Some(Line::Message(String::from_utf8_lossy(&line).into())));
        }
    }
}

/// Sends one message to Orbit; returns the messages to write back.
async fn forward(
    client: &OrbitClient,
    text: String,
    negotiated: &RwLock<Option<String>>,
) -> Vec<Value> {
    let message: Value = match serde_json::from_str(&text) {
        Ok(message) => message,
        Err(e) => return vec![error(Value::Null, -32700, &format!("not JSON: {e}"), None)],
    };
    let id = message.get("id").cloned();
    let version = message["params"]["_meta"][META_PROTOCOL_VERSION]
        .as_str()
        .map(str::to_owned)
        .or_else(|| negotiated.read().ok().and_then(|v| v.clone()));
    let request = match client.signed(reqwest::Method::POST, "/mcp", text.into_bytes()) {
        Ok(request) => request.header("accept", "application/json, text/event-stream"),
        Err(e) => return refused(id, &format!("cannot sign the request: {e}"), None),
    };
    let request = match (&version, message["method"].as_str()) {
        (Some(version), Some(method)) if method != "initialize" => {
            request.header("mcp-protocol-version", version)
        }
        _ => request,
    };
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return refused(id, &format!("cannot reach orbit: {e}"), None),
    };
    let status = response.status();
    let is_stream = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"));
    let body = match response.text().await {
        Ok(body) => body,
        Err(e) => return refused(id, &format!("reading orbit's answer: {e}"), None),
    };
    let replies = replies(id, status, is_stream, &body);
    if message["method"] == "initialize"
        && let Some(settled) = replies
            .iter()
            .find_map(|reply| reply["result"]["protocolVersion"].as_str())
        && let Ok(mut negotiated) = negotiated.write()
    {
        *negotiated = Some(settled.to_owned());
    }
    replies
}

/// What to write back for Orbit's answer to the message with `id`.
fn replies(
    id: Option<Value>,
    status: reqwest::StatusCode,
    is_stream: bool,
    body: &str,
) -> Vec<Value> {
    if is_stream {
        return events(body);
    }
    match serde_json::from_str::<Value>(body) {
        Ok(reply) if reply.get("jsonrpc").is_some() => vec![reply],
        Ok(envelope) if !status.is_success() => {
            let text = format!(
                "orbit answered {status}: {}: {}",
                envelope["error"]["code"].as_str().unwrap_or("?"),
                envelope["error"]["message"].as_str().unwrap_or("?")
            );
            refused(id, &text, Some(envelope))
        }
        _ if body.trim().is_empty() && status.is_success() => Vec::new(),
        _ => refused(
            id,
            &format!("orbit answered {status} with no MCP message"),
            None,
        ),
    }
}

/// The error for a request Orbit refused; a notification gets none.
fn refused(id: Option<Value>, text: &str, envelope: Option<Value>) -> Vec<Value> {
    id.map(|id| error(id, REFUSED_BY_ORBIT, text, envelope))
        .into_iter()
        .collect()
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
    use reqwest::StatusCode;

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

    #[test]
    fn orbits_refusal_is_a_json_rpc_error_carrying_its_envelope() {
        let envelope = r#"{"error":{"code":"RATE_LIMIT_EXCEEDED","message":"too many requests from this principal; retry in 1 s"},"correlation_id":"c","timestamp":"t"}"#;
        let replies = replies(
            Some(json!(3)),
            StatusCode::TOO_MANY_REQUESTS,
            false,
            envelope,
        );
        assert_eq!(replies.len(), 1);
        let reply = &replies[0];
        assert_eq!(reply["id"], 3);
        assert_eq!(reply["error"]["code"], REFUSED_BY_ORBIT);
        assert_eq!(
            reply["error"]["data"]["error"]["code"],
            "RATE_LIMIT_EXCEEDED"
        );
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("orbit answered 429 Too Many Requests: RATE_LIMIT_EXCEEDED: too many")
        );
        // A notification is never answered, even with an error.
        assert!(replies_for_notification(envelope).is_empty());
        // MCP's own answers pass through as they are, errors included.
        let jsonrpc = r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"bad"}}"#;
        let passed = self::replies(Some(json!(3)), StatusCode::BAD_REQUEST, false, jsonrpc);
        assert_eq!(
            passed,
            vec![serde_json::from_str::<Value>(jsonrpc).unwrap()]
        );
        // A notification's `202` with no body writes nothing.
        assert!(self::replies(None, StatusCode::ACCEPTED, false, "").is_empty());
    }

    fn replies_for_notification(body: &str) -> Vec<Value> {
        replies(None, StatusCode::UNAUTHORIZED, false, body)
    }

    #[tokio::test]
    async fn lines_are_read_within_the_limit_and_a_longer_one_is_skipped_whole() {
        let input = format!("{{\"a\":1}}\n\n   \n{}\n{{\"b\":2}}", "x".repeat(50));
        let mut reader = BufReader::with_capacity(8, input.as_bytes());
        let mut lines = Vec::new();
        while let Some(line) = read_line(&mut reader, 16).await.unwrap() {
            lines.push(line);
        }
        assert_eq!(
            lines,
            vec![
                Line::Message("{\"a\":1}".into()),
                Line::TooLong,
                Line::Message("{\"b\":2}".into()),
            ]
        );
    }
}
