//! Axon over real sockets, with real components compiled from `plugins/`.
//! One test binary (each links wasmtime); modules by theme.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod hostile;
mod inference;
mod isolation;
mod loading;
mod supply_chain;
mod support;
