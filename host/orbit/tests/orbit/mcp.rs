//! MCP at `/mcp` over a real socket: behind SigV4 like every signed route,
//! and a `tools/call` is a dispatch on record under the HTTP request's
//! correlation id. (The MCP Python SDK drives it as an agent would in the
//! cli crate's tests.)

use std::time::SystemTime;

use serde_json::{Value, json};

use orbit::client::Reply;

use crate::support::{Stack, code};

const MCP_ACCEPT: &str = "application/json, text/event-stream";

fn tool_call(name: &str, arguments: Value) -> Vec<u8> {
    json!({
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": { "name": name, "arguments": arguments },
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn an_unsigned_mcp_request_is_refused_before_mcp_sees_it() {
    let stack = Stack::start().await;
    let response = reqwest::Client::new()
        .post(format!("{}/mcp", stack.orbit_url))
        .header("content-type", "application/json")
        .header("accept", MCP_ACCEPT)
        .body(tool_call("echo", json!({})))
        .send()
        .await
        .unwrap();
    let reply = crate::support::reply(response).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(code(&reply), "MISSING_AUTHORIZATION");
    assert!(reply.headers.contains_key("x-ratelimit-limit"));
    assert!(stack.audit_records().is_empty(), "nothing was decided");
}

#[tokio::test]
async fn a_tool_call_is_a_dispatch_on_record_under_the_requests_correlation_id() {
    let stack = Stack::start().await;
    let reply = signed_mcp(&stack, tool_call("echo", json!({ "text": "hi" }))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["id"], 7, "{}", reply.body);
    let result = &reply.body["result"];
    assert_ne!(result["isError"], true, "{result}");
    let answer = &result["structuredContent"];
    assert_eq!(answer["output"], json!({ "text": "hi" }), "{result}");
    assert_eq!(answer["correlation_id"], "sig-test");
    assert_eq!(answer["governance"]["allowed"], true);

    let records = stack.audit_records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].correlation_id, "sig-test");
    assert_eq!(records[0].intent, "echo");
    assert!(records[0].decision.allowed);
}

/// A signed MCP request to `/mcp` as `dev`.
async fn signed_mcp(stack: &Stack, body: Vec<u8>) -> Reply {
    Stack::send_signed(
        &format!("{}/mcp", stack.orbit_url),
        &stack.dev_key,
        &body,
        SystemTime::now(),
        |request| {
            request
                .headers_mut()
                .insert("accept", MCP_ACCEPT.parse().unwrap());
        },
    )
    .await
}

#[tokio::test]
async fn the_tool_list_is_the_callers_own_and_mcps_own_errors_keep_their_bodies() {
    let stack = Stack::start().await;
    let list = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" })
        .to_string()
        .into_bytes();
    let reply = signed_mcp(&stack, list.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let result = &reply.body["result"];
    let names: Vec<&str> = result["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"keywords") && names.contains(&"echo"),
        "{result}"
    );
    assert!(
        !names.contains(&"triage"),
        "`dev` may not run triage: {result}"
    );
    assert_eq!(result["cacheScope"], "private", "{result}");

    // A method MCP does not know is a JSON-RPC error, as rmcp wrote it.
    let unknown = json!({ "jsonrpc": "2.0", "id": 2, "method": "no/such" })
        .to_string()
        .into_bytes();
    let reply = signed_mcp(&stack, unknown).await;
    assert_eq!(reply.body["id"], 2, "{}", reply.body);
    assert!(reply.body["error"]["code"].is_i64(), "{}", reply.body);

    // Without the `Accept` MCP requires, rmcp refuses; its answer reaches
    // the caller as rmcp wrote it (saying what to fix), not as a generic
    // envelope.
    let response = stack
        .dev
        .signed(reqwest::Method::POST, "/mcp", list)
        .unwrap()
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 406);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("must accept both application/json and text/event-stream"),
        "{text}"
    );
}
