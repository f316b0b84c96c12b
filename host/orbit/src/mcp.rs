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
//! one Orbit), and answers are plain JSON. rmcp's own error responses (a
//! missing `Accept`, a malformed message) keep their JSON-RPC bodies.

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
use service_kit::{ApiError, CorrelationId};

use crate::dispatch::{Caller, run};
use crate::server::OrbitState;

/// Orbit's MCP service, to nest at `/mcp` behind the signed layers.
pub(crate) fn service(
    state: OrbitState,
    max_body_bytes: usize,
) -> impl tower::Service<
    axum::extract::Request,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
+ Send
+ Sync
+ 'static {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(max_body_bytes)
        // Every request is signed, `Host` included, and a browser holds no
        // keys: DNS rebinding gains nothing, so any host name may serve.
        .disable_allowed_hosts();
    let mcp: StreamableHttpService<Tools, NeverSessionManager> = StreamableHttpService::new(
        move || Ok(Tools::new(state.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    tower::ServiceBuilder::new()
        .map_response(|response: axum::http::Response<_>| {
            service_kit::error::keep_error_body(response.map(axum::body::Body::new))
        })
        .service(mcp)
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
        // Only a wiring fault gets here without these: the route sits
        // behind SigV4, and Orbit serves with connection info.
        let missing = |what: &str| {
            tracing::error!("an MCP request reached Orbit's handler without {what}");
            ErrorData::internal_error("internal error in Orbit's MCP handler", None)
        };
        let parts = context
            .extensions
            .get::<Parts>()
            .ok_or_else(|| missing("its HTTP request"))?;
        let identity = parts
            .extensions
            .get::<Authenticated>()
            .ok_or_else(|| missing("a verified signature"))?;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0)
            .ok_or_else(|| missing("the client address"))?;
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
                // What `tools/call` runs: the `live` version.
                let manifest = &live.manifest;
                let schema = match &manifest.input_schema {
                    Some(Value::Object(schema)) => schema.clone(),
                    _ => any_object(),
                };
                Some(Tool::new(
                    listed.plugin.name,
                    manifest.description.clone(),
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
        // rmcp runs this on a task of its own: log and envelope under the
        // HTTP request's correlation id.
        let id = request.correlation_id.clone();
        service_kit::correlation::within(id, self.call(call, &request)).await
    }
}

impl Tools {
    async fn call(
        &self,
        call: CallToolRequestParams,
        request: &Request<'_>,
    ) -> Result<CallToolResponse, ErrorData> {
        // Tools take an object; no arguments is the empty one.
        let input = Value::Object(call.arguments.unwrap_or_default());
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
                    Err(error) => tool_error(ApiError::internal(error)),
                }
            }
            Err(error) => tool_error(error),
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
/// would have answered (with `retry_after_secs` where it would have sent
/// `Retry-After`), which the agent reads.
fn tool_error(error: ApiError) -> CallToolResult {
    let error = match error.retry_after_secs() {
        Some(secs) => error.with_detail("retry_after_secs", secs),
        None => error,
    };
    let correlation_id = service_kit::correlation::current()
        .map(|id| id.to_string())
        .unwrap_or_default();
    let envelope = error.into_envelope(correlation_id);
    CallToolResult::structured_error(serde_json::to_value(envelope).unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use service_kit::ErrorCode;

    #[test]
    fn a_tool_error_carries_the_envelope_and_when_to_retry() {
        let busy = ApiError::new(ErrorCode::Overloaded, "busy").retry_after(2);
        let result = tool_error(busy);
        assert_eq!(result.is_error, Some(true));
        let content = result.structured_content.unwrap();
        assert_eq!(content["error"]["code"], "OVERLOADED");
        assert_eq!(content["error"]["message"], "busy");
        assert_eq!(content["retry_after_secs"], 2);

        let denied = tool_error(ApiError::new(ErrorCode::GovernanceDenied, "no"));
        assert!(
            denied
                .structured_content
                .unwrap()
                .get("retry_after_secs")
                .is_none()
        );
    }
}
