//! `cargo xtask test [-- ARGS...]`: every check CI runs, in order, stopping at the first failure.

use std::ffi::OsString;

use anyhow::Result;

use crate::{agent_bin, build, cargo, fuzz, run, setup, vm};

/// Seconds each fuzz target runs for: long enough to get well past the seeds (tens of thousands
/// of inputs), short enough to keep all of them under 4 minutes.
const FUZZ_SECONDS: u64 = 15;

/// Installs what the tests need, then runs `cargo fmt --check`, clippy, the release build of the
/// agent, `cargo test ARGS...` and, unless ARGS pick tests, the capture tests again with the
/// file-table socket lookup (what kernels before 6.3 use), the smoke suite on the kernel matrix
/// (`vm-test`) and every fuzz target for [`FUZZ_SECONDS`]. Everything but the fuzz targets
/// (their own build, in `agent/fuzz/target`) is in release mode, so the eBPF object is built
/// once there.
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
        .env("APISCOPE_BIN", agent_bin()))?;
    if !args.is_empty() {
        return Ok(());
    }
    run(cargo()
        .args([
            "test",
            "--release",
            "-p",
            "apiscope-e2e",
            "--test",
            "capture",
        ])
        .env("APISCOPE_BIN", agent_bin())
        .env("APISCOPE_SOCKET_LOOKUP", "fd_table"))?;
    vm::run_matrix(&vm::KERNELS)?;
    fuzz::fuzz_targets(&fuzz::targets()?, FUZZ_SECONDS, fuzz::Sanitizer::None)
}
