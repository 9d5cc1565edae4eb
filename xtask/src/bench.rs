//! `cargo xtask bench [-- ARGS...]`: the criterion micro-benchmarks of the agent's hot paths.

use std::ffi::OsString;

use anyhow::Result;

use crate::{cargo, run, setup};

/// Sets up, then runs `cargo bench -p agent ARGS...` (criterion prints and saves its numbers
/// under `target/criterion`).
pub fn bench(args: &[OsString]) -> Result<()> {
    setup::setup(false)?;
    run(cargo().args(["bench", "-p", "agent"]).args(args))
}
