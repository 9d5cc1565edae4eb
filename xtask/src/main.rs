//! Developer tasks for apiscope, run as `cargo xtask <task>` (an alias in `.cargo/config.toml`).
//!
//! * `setup [--for-tests]`: check, and install where missing, what building (and testing) needs.
//! * `build`: setup, then build the agent in release mode (`target/release/apiscope`).
//! * `run [-- ARGS...]`: build, then replace this process with `apiscope run ARGS...`.
//! * `test [--repeat N] [--load] [-- ARGS...]`: setup for tests, then fmt, clippy, build, every
//!   test binary (ARGS go to each), the kernel matrix and 15 s of every fuzz target, each to its
//!   end, and one summary of what failed; `--repeat`/`--load` hunt flaky tests.
//! * `fuzz [--seconds N] [--target NAME]`: the cargo-fuzz targets of `agent/fuzz` (every one, or
//!   NAME), N seconds each (default 10); fails naming those that crashed.
//! * `bench [--quick]`: the end-to-end overhead and completeness benchmark (nginx, wrk, the agent
//!   exporting to a counting OTLP sink); `bench --micro [-- ARGS...]`: setup, then the criterion
//!   benchmarks (`cargo bench -p agent ARGS...`).
//! * `vm-test [--kernel 6.1|6.12|all]`: the smoke suite on Debian's 6.1 and 6.12 kernels,
//!   booted under qemu with this machine's root file system (see `vm`).
//! * `detect-bench [--show N]`: the injection detector's quality benchmark (recall per class and
//!   false-positive rate on labelled corpora downloaded into `target/detect-bench/`).

mod bench;
mod build;
mod detect_bench;
mod fuzz;
mod run;
mod setup;
mod test;
mod vm;

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

/// Command line of `cargo xtask`.
#[derive(Parser)]
#[command(about = "Developer tasks for apiscope")]
struct Cli {
    /// The task to run.
    #[command(subcommand)]
    task: Task,
}

/// The tasks `cargo xtask` knows.
#[derive(Subcommand)]
enum Task {
    /// Check, and install where missing, the nightly's rust-src, bpf-linker and the mounts.
    Setup {
        /// Also install the Debian and PyPI packages the tests use, and cargo-fuzz.
        #[arg(long)]
        for_tests: bool,
    },
    /// Set up, then build the agent in release mode (target/release/apiscope).
    Build,
    /// Build, then exec `apiscope run ARGS...` (e.g. `cargo xtask run -- --dump`).
    Run {
        /// Arguments for `apiscope run`, after `--`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Set up for tests, then run fmt, clippy, the release build, every test binary, the
    /// kernel matrix and the fuzz targets, each to its end, and summarise what failed.
    Test(test::TestArgs),
    /// Run the fuzz targets of agent/fuzz for a bounded time; fails naming those that crashed.
    Fuzz(fuzz::FuzzArgs),
    /// End-to-end overhead and completeness benchmark (`--micro`: the criterion benchmarks).
    Bench(bench::BenchArgs),
    /// Boot Debian's 6.1 and 6.12 kernels under qemu and run the smoke suite there against the
    /// agent built here.
    VmTest(vm::VmArgs),
    /// Quality benchmark of the injection detector: recall and false positives on corpora.
    DetectBench {
        /// Print up to N misses and N false positives per class.
        #[arg(long, default_value_t = 0)]
        show: usize,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Setup { for_tests } => setup::setup(for_tests),
        Task::Build => build::build(),
        Task::Run { args } => run::exec_agent(&args),
        Task::Test(args) => test::test(&args),
        Task::Fuzz(args) => fuzz::fuzz(&args),
        Task::Bench(args) => bench::bench(&args),
        Task::VmTest(args) => vm::vm_test(&args),
        Task::DetectBench { show } => detect_bench::detect_bench(show),
    };
    // The error chain on one line, without the backtrace `RUST_BACKTRACE` would add.
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The workspace root: the parent of the xtask crate.
fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in a subdirectory of the workspace")
}

/// The rustup toolchain that builds the eBPF crate: `$EBPF_TOOLCHAIN`, or `nightly`.
fn ebpf_toolchain() -> String {
    env::var("EBPF_TOOLCHAIN").unwrap_or_else(|_| "nightly".to_owned())
}

/// The release binary of the agent, `target/release/apiscope` (honours `CARGO_TARGET_DIR`).
fn agent_bin() -> PathBuf {
    let target =
        env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    workspace_root()
        .join(target)
        .join("release")
        .join("apiscope")
}

/// `cargo` run in the workspace root, with `EBPF_TOOLCHAIN` set for `agent/build.rs`.
fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root())
        .env("EBPF_TOOLCHAIN", ebpf_toolchain());
    cmd
}

/// Prints `cmd`, runs it with this process's stdio, and fails unless it exits with status 0.
fn run(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    println!("+ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed: {status}");
    }
    Ok(())
}

/// `cmd` as a shell-like line: the variables it sets, the program, its arguments.
fn display(cmd: &Command) -> String {
    let envs = cmd.get_envs().filter_map(|(key, value)| {
        value.map(|value| format!("{}={}", key.display(), value.display()))
    });
    let words = [cmd.get_program()]
        .into_iter()
        .chain(cmd.get_args())
        .map(|word| word.display().to_string());
    envs.chain(words).collect::<Vec<_>>().join(" ")
}
