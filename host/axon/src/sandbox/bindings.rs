//! The one place that generates host bindings for the WIT contract
//! (`wit/reasoning.wit`, `agent:reasoning@1.1.0`). A plugin built for an
//! earlier 1.x links too: wasmtime resolves imports and exports across
//! semver-compatible versions, and a minor version only adds.
//!
//! Exports are async: a call runs on the request's task, yields at every
//! epoch tick and can be cancelled at its deadline even while blocked in a
//! host call. Imports (`log`, `config`) are plain synchronous functions.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "agent:reasoning/reasoning-plugin",
    exports: { default: async },
});

pub(crate) use agent::reasoning::{config, log, types};
pub(crate) use exports::agent::reasoning::reasoner::{ReasonRequest, ReasoningError};
