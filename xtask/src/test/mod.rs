//! `cargo xtask test [--repeat N] [--load] [-- ARGS...]`: every check CI runs, each one to its
//! end even when an earlier one failed, then one summary of everything that failed (and a
//! non-zero exit if anything did).
//!
//! In order: setup, `cargo fmt --check`, clippy, the release build of the agent and of every
//! test binary (a failure there stops the run: nothing could be tested), every test binary
//! (timed, see [`binaries`]), the capture tests again with the file-table socket lookup, the
//! kernel matrix (`vm-test`, with the same binaries) and every fuzz target for
//! [`FUZZ_SECONDS`]. With ARGS (test name
//! filters for the binaries) only the test binaries run. `--repeat N` runs the test binaries N
//! times after one build, to hunt flaky tests, and `--load` keeps every CPU busy meanwhile.

mod binaries;
mod summary;

use std::{
    ffi::OsString,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Instant,
};

use anyhow::{Result, bail};

use crate::{agent_bin, build, cargo, fuzz, run, setup, vm};

pub use binaries::{TestBinary, build as build_binaries};
use summary::Summary;

/// Seconds each fuzz target runs for: long enough to get well past the seeds (tens of thousands
/// of inputs), short enough to keep all of them under 4 minutes.
const FUZZ_SECONDS: u64 = 15;

/// Options of `cargo xtask test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Run the test binaries N times after one build and report every test that failed at
    /// least once (fmt, clippy, the kernel matrix and fuzzing are left out).
    #[arg(long, value_name = "N", default_value_t = 1)]
    #[arg(value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
    /// Keep every CPU busy with a spinning thread while the test binaries run, as on a loaded
    /// machine.
    #[arg(long)]
    load: bool,
    /// Arguments for every test binary after `--`, e.g. a test name filter.
    #[arg(last = true)]
    args: Vec<OsString>,
}

/// Runs what `args` asks for; fails, after the summary, if anything failed.
pub fn test(args: &TestArgs) -> Result<()> {
    let started = Instant::now();
    setup::setup(true)?;
    let mut summary = Summary::default();
    let everything = args.repeat == 1 && args.args.is_empty();
    if everything {
        summary.step("fmt", || {
            run(cargo().args(["fmt", "--all", "--", "--check"]))
        });
        summary.step("clippy", || {
            run(cargo()
                .args(["clippy", "--all-targets", "--release"])
                .args(["--", "-D", "warnings"]))
        });
    }
    build::build_agent()?;
    let binaries = build_binaries(None, &[])?;
    let agent = agent_bin();
    let agent = agent.to_string_lossy();
    let env = [("E2E_AGENT_BIN", agent.as_ref())];
    {
        let _hog = args.load.then(CpuHog::start);
        for round in 1..=args.repeat {
            if args.repeat > 1 {
                println!("\n=== round {round} of {}", args.repeat);
            }
            for binary in &binaries {
                println!("\n=== {}", binary.name);
                summary.binary(round, &binary.name, binary.run(&args.args, &env));
            }
            if args.args.is_empty() {
                // What kernels before 6.3 use, on every capture test.
                let capture = binaries.iter().find(|binary| binary.name == "capture");
                if let Some(capture) = capture {
                    let name = "capture (fd_table lookup)";
                    println!("\n=== {name}");
                    let env = [env[0], ("APISCOPE_CAPTURE_SOCKET_LOOKUP", "fd_table")];
                    summary.binary(round, name, capture.run(&[], &env));
                }
            }
        }
    }
    if everything {
        summary.step("vm-test", || vm::run_matrix(&vm::KERNELS, &binaries));
        summary.step("fuzz", || {
            fuzz::fuzz_targets(&fuzz::targets()?, FUZZ_SECONDS, fuzz::Sanitizer::None)
        });
    }
    summary.print(args.repeat, started.elapsed());
    let failures = summary.failures();
    if failures > 0 {
        bail!("{failures} failure(s), listed above");
    }
    Ok(())
}

/// One thread per CPU spinning until dropped: the load of a busy machine, for flake hunting.
struct CpuHog {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl CpuHog {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cpus = thread::available_parallelism().map_or(2, usize::from);
        println!("load: {cpus} spinning threads while the tests run");
        let threads = (0..cpus)
            .map(|_| {
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
