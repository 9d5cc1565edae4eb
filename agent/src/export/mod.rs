//! Export: where the agent's results leave the process.

pub mod dump;
