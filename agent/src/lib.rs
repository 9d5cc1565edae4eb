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

pub mod analysis;
pub mod calls;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod config;
pub mod enrich;
pub mod export;
pub mod instance;
pub mod inventory_command;
pub mod pipeline;
pub mod protocols;
pub mod selection;
pub mod streams;
