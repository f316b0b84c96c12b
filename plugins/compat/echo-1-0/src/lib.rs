//! `echo-1-0`: a plugin built against the published `agent:reasoning@1.0.0`
//! contract (`wit/versions/1.0.0`, frozen) with wit-bindgen alone, as a
//! plugin compiled before 1.1.0 was. The host serves 1.1.0; this proves that
//! such a plugin runs unchanged. It returns its input and, in a note, the
//! value of config key `greeting`, and logs once: every 1.0.0 import used.

wit_bindgen::generate!({
    path: "../../../wit/versions/1.0.0",
    world: "agent:reasoning/reasoning-plugin",
});

use agent::reasoning::types::{ReasonRequest, ReasonResponse, ReasoningError};
use agent::reasoning::{config, log};

struct Echo;

impl exports::agent::reasoning::reasoner::Guest for Echo {
    fn reason(request: ReasonRequest) -> Result<ReasonResponse, ReasoningError> {
        log::log(log::Level::Info, "built for 1.0.0", &[]);
        let greeting = config::get("greeting").unwrap_or_default();
        Ok(ReasonResponse {
            output: request.input,
            confidence: None,
            notes: vec![format!("greeting: {greeting}")],
        })
    }
}

export!(Echo);
