//! Orbit and Axon together over real sockets: SigV4 on both hops,
//! governance, rate limits, and what happens when Axon goes away.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit;
mod dispatch;
mod earlier_clients;
mod front_door;
mod mcp;
mod openapi;
mod pools;
mod resilience;
mod sigv4;
mod supply_chain;
mod support;
