//! `cargo xtask test [-- ARGS...]`: every check CI runs, in order, stopping at the first failure.

use std::ffi::OsString;

use anyhow::Result;

use crate::{agent_bin, build, cargo, run, setup};

/// Installs what the tests need, then runs `cargo fmt --check`, clippy, the release build of the
/// agent and `cargo test ARGS...`. Everything is in release mode, so the eBPF object is built once.
pub fn test(args: &[OsString]) -> Result<()> {
    setup::setup(true)?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo()
        .args(["clippy", "--all-targets", "--release"])
        .args(["--", "-D", "warnings"]))?;
    build::build_agent()?;
    run(cargo()
        .args(["test", "--release"])
        .args(args)
        .env("APISCOPE_BIN", agent_bin()))
}
