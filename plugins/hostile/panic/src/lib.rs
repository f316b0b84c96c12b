//! Hostile test plugin: panics on every request.

use agent_plugin_sdk::{Error, Plugin, Request, Response, export_plugin};

struct Panic;

impl Plugin for Panic {
    fn reason(request: Request) -> Result<Response, Error> {
        panic!("deliberate panic for request {}", request.correlation_id)
    }
}

export_plugin!(Panic);
