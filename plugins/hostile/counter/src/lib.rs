//! Hostile test plugin: keeps a counter in a global and returns it.
//! In a fresh instance per request it must always answer `{"count": 1}`.

use std::sync::atomic::{AtomicU64, Ordering};

use agent_plugin_sdk::{Error, Plugin, Request, Response, export_plugin};

static COUNT: AtomicU64 = AtomicU64::new(0);

struct Counter;

impl Plugin for Counter {
    fn reason(_request: Request) -> Result<Response, Error> {
        let count = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Response::raw_json(format!("{{\"count\":{count}}}")))
    }
}

export_plugin!(Counter);
