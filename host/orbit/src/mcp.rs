//! MCP at `/mcp` (Streamable HTTP): agents list and call plugins as tools.
//!
//! The route sits behind the same layers as `/dispatch` (the address limit,
//! SigV4, the principal limit), so an MCP request is authenticated and
//! limited like any other. `tools/list` is the caller's filtered discovery:
//! one tool per plugin whose `live` alias the caller may dispatch, with the
//! manifest's description and input schema. `tools/call` is a governed
//! dispatch of that alias, the tool's arguments as the input and the tool's
//! name as the intent: the same checks, decision, audit record and limits
//! as `POST /dispatch`. What would be an error response there is a tool
//! error here (`isError`, the error envelope as structured content), so the
//! agent reads the code and the message.
//!
//! Stateless: each request stands alone (no MCP session to pin a caller to
//! one Orbit), and answers are plain JSON.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use auth::Authenticated;
use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use service_kit::reasoning::DispatchBody;
use service_kit::{ApiError, CorrelationId, ErrorCode};

use crate::dispatch::{Caller, run};
use crate::server::OrbitState;

/// Orbit's MCP service, to nest at `/mcp` behind the signed layers.
pub(crate) fn service(
    state: OrbitState,
    max_body_bytes: usize,
) -> StreamableHttpService<Tools, NeverSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(max_body_bytes)
        // Every request is signed, `Host` included, and a browser holds no
        // keys: DNS rebinding gains nothing, so any host name may serve.
        .disable_allowed_hosts();
    StreamableHttpService::new(
        move || Ok(Tools::new(state.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// The MCP handler: plugins as tools.
#[derive(Clone)]
pub(crate) struct Tools {
    state: OrbitState,
}

impl Tools {
    fn new(state: OrbitState) -> Self {
        Self { state }
    }
}

/// The HTTP request an MCP request came in, as the layers left it.
struct Request<'a> {
    parts: &'a Parts,
    identity: &'a Authenticated,
    peer: SocketAddr,
    correlation_id: CorrelationId,
}

impl<'a> Request<'a> {
    fn of(context: &'a RequestContext<RoleServer>) -> Result<Self, ErrorData> {
        let missing = || ErrorData::internal_error("the request reached MCP unauthenticated", None);
        let parts = context.extensions.get::<Parts>().ok_or_else(missing)?;
        let identity = parts
            .extensions
            .get::<Authenticated>()
            .ok_or_else(missing)?;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0)
            .ok_or_else(missing)?;
        let correlation_id = parts
            .extensions
            .get::<CorrelationId>()
            .cloned()
            .unwrap_or_else(CorrelationId::generate);
        Ok(Self {
            parts,
            identity,
            peer,
            correlation_id,
        })
    }

    fn caller(&self) -> Caller<'_> {
        Caller {
            identity: self.identity,
            peer: self.peer,
            headers: &self.parts.headers,
            correlation_id: &self.correlation_id,
        }
    }
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("orbit", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Each tool is an agent-runtime plugin you may run; a call is governed, audited and \
                 run in a sandbox. A refused or failed call is a tool error whose `error.code` \
                 says why.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let request = Request::of(&context)?;
        let listed = crate::discovery::visible(
            &self.state,
            request.peer,
            &request.parts.headers,
            request.identity,
        )
        .await;
        let tools = listed
            .into_iter()
            .filter_map(|listed| {
                let live = listed.live?;
                let schema = match &live.manifest.input_schema {
                    Some(Value::Object(schema)) => schema.clone(),
                    _ => any_object(),
                };
                Some(Tool::new(
                    listed.plugin.name,
                    listed.plugin.description,
                    Arc::new(schema),
                ))
            })
            .collect();
        // Each caller sees its own list.
        Ok(ListToolsResult::with_all_items(tools).with_cache_scope(CacheScope::Private))
    }

    async fn call_tool(
        &self,
        call: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let request = Request::of(&context)?;
        let input = call.arguments.map(Value::Object).unwrap_or(Value::Null);
        let body = DispatchBody {
            plugin: Some(call.name.to_string()),
            version: None,
            alias: None,
            intent: call.name.to_string(),
            input: serde_json::value::to_raw_value(&input).ok(),
            context: BTreeMap::new(),
        };
        let result = match run(&self.state, &request.caller(), &body).await {
            Ok(dispatched) => {
                let reply = dispatched.reply(&body.intent, &request.correlation_id);
                match serde_json::to_value(&reply) {
                    Ok(reply) => CallToolResult::structured(reply),
                    Err(error) => tool_error(ApiError::internal(error), &request),
                }
            }
            Err(error) => tool_error(error, &request),
        };
        Ok(result.into())
    }
}

/// The input schema of a plugin that declared none: any object.
fn any_object() -> JsonObject {
    let mut schema = JsonObject::new();
    schema.insert("type".into(), json!("object"));
    schema
}

/// A refusal or failure as a tool error: the envelope `POST /dispatch`
/// would have answered, which the agent reads.
fn tool_error(error: ApiError, request: &Request<'_>) -> CallToolResult {
    if error.code() == ErrorCode::InternalError {
        tracing::error!(correlation_id = %request.correlation_id, "an MCP tool call failed inside Orbit");
    }
    let envelope = error.into_envelope(request.correlation_id.to_string());
    CallToolResult::structured_error(serde_json::to_value(envelope).unwrap_or(Value::Null))
}
