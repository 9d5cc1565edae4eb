//! Export: where the agent's results leave the process.

pub mod dump;
pub mod health;
pub mod otlp;
pub mod server;
pub mod stdout;
