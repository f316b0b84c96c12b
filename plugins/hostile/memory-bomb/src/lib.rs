//! Hostile test plugin: allocates `{"mib": N}` MiB and touches every page, or
//! allocates without bound when `mib` is absent.

use std::hint::black_box;

use agent_plugin_sdk::{Error, Plugin, Request, Response, export_plugin};
use serde::Deserialize;

const MIB: usize = 1 << 20;

#[derive(Deserialize)]
struct Input {
    mib: Option<usize>,
}

struct MemoryBomb;

impl Plugin for MemoryBomb {
    fn reason(request: Request) -> Result<Response, Error> {
        let input: Input = request.input()?;
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        while input.mib.is_none_or(|limit| chunks.len() < limit) {
            chunks.push(black_box(vec![0xA5; MIB]));
        }
        let total: usize = black_box(&chunks).iter().map(Vec::len).sum();
        Ok(Response::raw_json(format!(
            "{{\"allocated_mib\":{}}}",
            total / MIB
        )))
    }
}

export_plugin!(MemoryBomb);
