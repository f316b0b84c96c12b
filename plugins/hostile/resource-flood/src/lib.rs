//! Hostile test plugin: holds host-side WASI resources without bound.
//!
//! `{"pollables": N}` creates N clock pollables and never drops them, each an
//! entry in the host's resource table for this request; answers
//! `{"held": N}` if the host let it.

use agent_plugin_sdk::{Error, Plugin, Request, Response, export_plugin};
use serde::Deserialize;

#[derive(Deserialize)]
struct Input {
    pollables: usize,
}

struct ResourceFlood;

impl Plugin for ResourceFlood {
    fn reason(request: Request) -> Result<Response, Error> {
        let input: Input = request.input()?;
        for _ in 0..input.pollables {
            let pollable = wasip2::clocks::monotonic_clock::subscribe_duration(0);
            std::mem::forget(pollable);
        }
        Ok(Response::raw_json(format!(
            "{{\"held\":{}}}",
            input.pollables
        )))
    }
}

export_plugin!(ResourceFlood);
