//! `cargo xtask build`: setup, then the release build of the agent.

use anyhow::Result;

use crate::{cargo, run, setup};

/// Runs setup (without the test packages), then [`build_agent`].
pub fn build() -> Result<()> {
    setup::setup(false)?;
    build_agent()
}

/// `cargo build --release -p agent`: builds `target/release/apiscope`, whose build script
/// compiles the eBPF programs with `$EBPF_TOOLCHAIN`.
pub fn build_agent() -> Result<()> {
    run(cargo().args(["build", "--release", "-p", "agent"]))
}
