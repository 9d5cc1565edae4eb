//! `cargo xtask bench --micro [-- ARGS...]`: the criterion micro-benchmarks of the agent's hot
//! paths.

use std::ffi::OsString;

use anyhow::Result;

use crate::{cargo, run};

/// Runs `cargo bench -p agent ARGS...` (criterion prints and saves its numbers under
/// `target/criterion`). The caller has run setup.
pub fn criterion(args: &[OsString]) -> Result<()> {
    run(cargo().args(["bench", "-p", "agent"]).args(args))
}
