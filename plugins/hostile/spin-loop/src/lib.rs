//! Hostile test plugin: burns CPU or blocks in the host.
//!
//! - `{"iterations": N}` spins N times, then answers;
//! - `{}` spins forever;
//! - `{"sleep_ms": N}` sleeps N ms through `wasi:clocks` (blocking in the host,
//!   where epoch interruption cannot reach).

use std::hint::black_box;
use std::time::Duration;

use agent_plugin_sdk::{Error, Plugin, Request, Response, export_plugin};
use serde::Deserialize;

#[derive(Deserialize)]
struct Input {
    iterations: Option<u64>,
    sleep_ms: Option<u64>,
}

struct SpinLoop;

impl Plugin for SpinLoop {
    fn reason(request: Request) -> Result<Response, Error> {
        let input: Input = request.input()?;
        if let Some(ms) = input.sleep_ms {
            std::thread::sleep(Duration::from_millis(ms));
            return Ok(Response::raw_json(format!("{{\"slept_ms\":{ms}}}")));
        }
        let limit = input.iterations.unwrap_or(u64::MAX);
        let mut i = 0u64;
        while i < limit {
            i = black_box(i + 1);
        }
        Ok(Response::raw_json(format!("{{\"iterations\":{i}}}")))
    }
}

export_plugin!(SpinLoop);
