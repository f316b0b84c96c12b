//! `echo`: returns its input unchanged. The smallest useful plugin: it measures
//! the cost of the sandbox itself (instantiate, call, drop) with no guest work.

use agent_plugin_sdk::{Error, Plugin, Request, Response, export_plugin};

struct Echo;

impl Plugin for Echo {
    fn reason(request: Request) -> Result<Response, Error> {
        Ok(Response::raw_json(request.into_input_json()))
    }
}

export_plugin!(Echo);
