//! apiscope's userspace agent.
//!
//! Data flows one way through the stages, each owning its types:
//! [`capture`] (kernel programs, their loader and ring-buffer reader) ->
//! [`streams`] (per-connection, per-direction byte streams) ->
//! [`protocols`] (one decoder per protocol) -> [`calls`] (the decoded API exchanges) ->
//! [`enrich`] (who made or served each call) -> [`analysis`] (routes, the API inventory and
//! its conformance with declared specs, sensitive data) -> [`export`] (OTLP, stdout, HTTP
//! endpoints). [`pipeline`] wires them; [`inventory_command`] reads the inventory back from a
//! running agent; [`instance`] keeps a second agent from starting on the same state directory.

// Every byte the agent reads comes from someone else's program: nothing input can reach may
// panic. Where a panic cannot happen (a built-in pattern), the exception says why.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod analysis;
pub mod calls;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod config;
pub mod digest;
#[cfg(test)]
mod docs_reference;
pub mod enrich;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod instance;
pub mod inventory_command;
pub mod pipeline;
pub mod protocols;
pub mod selection;
pub mod settings_format;
pub mod streams;
pub mod testing;
