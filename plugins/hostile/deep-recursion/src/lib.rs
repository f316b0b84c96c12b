//! Hostile test plugin: recurses `{"depth": N}` levels deep, or without bound
//! when `depth` is absent, to overflow a stack.
//!
//! - by default each level lives in wasm locals, so the host's wasm stack
//!   limit is what overflows (a `stack overflow` trap);
//! - with `"shadow": true` each level also keeps a buffer on the guest's own
//!   stack in linear memory, which overflows first (an out-of-bounds trap).

use std::hint::black_box;

use agent_plugin_sdk::{Error, Plugin, Request, Response, export_plugin};
use serde::Deserialize;

#[derive(Deserialize)]
struct Input {
    depth: Option<u64>,
    #[serde(default)]
    shadow: bool,
    /// Always 0; read from the input so the optimiser cannot fold the work
    /// after each call (which keeps the recursion from becoming a loop).
    #[serde(default)]
    salt: u32,
}

#[inline(never)]
fn native(level: u64, limit: u64, salt: u32) -> u64 {
    if level >= limit {
        return level;
    }
    native(level + 1, limit, salt).rotate_left(salt)
}

#[inline(never)]
fn shadow(level: u64, limit: u64) -> u64 {
    let frame = black_box([0u8; 128]);
    if level >= limit {
        return level;
    }
    let reached = shadow(level + 1, limit);
    black_box(&frame);
    reached
}

struct DeepRecursion;

impl Plugin for DeepRecursion {
    fn reason(request: Request) -> Result<Response, Error> {
        let input: Input = request.input()?;
        let limit = input.depth.unwrap_or(u64::MAX);
        let reached = if input.shadow {
            shadow(0, limit)
        } else {
            native(0, limit, input.salt)
        };
        Ok(Response::raw_json(format!("{{\"reached\":{reached}}}")))
    }
}

export_plugin!(DeepRecursion);
