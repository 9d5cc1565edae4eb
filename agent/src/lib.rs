//! apiscope's userspace agent.
//!
//! Data flows one way through the stages, each owning its types:
//! [`capture`] (kernel programs, their loader and ring-buffer reader) ->
//! [`streams`] (per-connection, per-direction byte streams) ->
//! [`export`] (where results leave the process). [`pipeline`] wires them.

pub mod capture;
pub mod clock;
pub mod config;
pub mod export;
pub mod pipeline;
pub mod streams;
