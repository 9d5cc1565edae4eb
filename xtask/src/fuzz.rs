//! `cargo xtask fuzz [--seconds N] [--target NAME]`: runs the cargo-fuzz targets of `agent/fuzz`
//! (all of them, or NAME), each for N seconds, and fails naming every target that crashed.
//!
//! libFuzzer writes the inputs it finds to the first corpus directory it is given, so each
//! target gets a scratch corpus under `agent/fuzz/target/corpus/` first and the committed seeds
//! (`agent/fuzz/corpus/<target>`) second: the repository's corpus is read, never written. The
//! scratch corpus is kept, so that local runs go on from what earlier ones found. A crash
//! leaves its input in `agent/fuzz/artifacts/<target>/`, and cargo-fuzz prints how to replay it.

use std::{fs, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, ebpf_toolchain, run, setup, workspace_root};

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// Seconds each target runs for (libFuzzer would take 0 for no bound).
    #[arg(long, value_name = "N", default_value_t = 10)]
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Run only this target (a `[[bin]]` of agent/fuzz/Cargo.toml).
    #[arg(long, value_name = "NAME")]
    target: Option<String>,
    /// Build with AddressSanitizer (and LeakSanitizer): for the agent's few `unsafe` blocks;
    /// doubles the first build's time.
    #[arg(long)]
    address_sanitizer: bool,
}

/// Which sanitizer the targets are built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sanitizer {
    /// None: panics, timeouts and the RSS limit are still caught; what decoders are, safe
    /// Rust, cannot do otherwise. The default, and what `cargo xtask test` runs.
    None,
    /// AddressSanitizer, with leak detection.
    Address,
}

impl Sanitizer {
    fn name(self) -> &'static str {
        match self {
            Sanitizer::None => "none",
            Sanitizer::Address => "address",
        }
    }
}

/// Sets up (the agent's build script needs what `setup` installs, and cargo-fuzz), then runs
/// the targets `args` asks for.
pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    setup::setup(false)?;
    setup::ensure_cargo_fuzz()?;
    let mut targets = targets()?;
    if let Some(name) = &args.target {
        if !targets.contains(name) {
            bail!(
                "no fuzz target `{name}` in agent/fuzz/Cargo.toml (there are: {})",
                targets.join(", ")
            );
        }
        targets = vec![name.clone()];
    }
    let sanitizer = if args.address_sanitizer {
        Sanitizer::Address
    } else {
        Sanitizer::None
    };
    fuzz_targets(&targets, args.seconds, sanitizer)
}

/// Builds `targets` (with libFuzzer's instrumentation and `sanitizer`, in
/// `agent/fuzz/target`), then runs each for `seconds`; fails naming every target that crashed:
/// panicked, leaked (with AddressSanitizer), went past 2 GiB, or spent 10 s on one input.
/// Needs cargo-fuzz.
pub fn fuzz_targets(targets: &[String], seconds: u64, sanitizer: Sanitizer) -> Result<()> {
    // Built once up front, so that a build error is not reported as every target's crash;
    // `cargo fuzz build` builds one target, or all.
    let mut build = fuzz_cargo("build", sanitizer);
    if let [only] = targets {
        build.arg(only);
    }
    run(&mut build)?;
    let fuzz_dir = workspace_root().join("agent/fuzz");
    let mut crashed = Vec::new();
    for target in targets {
        let scratch = fuzz_dir.join("target/corpus").join(target);
        fs::create_dir_all(&scratch)
            .with_context(|| format!("cannot create {}", scratch.display()))?;
        let result = run(fuzz_cargo("run", sanitizer)
            .arg(target)
            .arg(&scratch)
            .arg(fuzz_dir.join("corpus").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .args(["-timeout=10", "-rss_limit_mb=2048", "-max_len=65536"]));
        if let Err(error) = result {
            println!("fuzz target {target} crashed: {error:#}");
            crashed.push(target.as_str());
        }
    }
    if !crashed.is_empty() {
        bail!(
            "fuzz targets crashed: {} (their inputs are in agent/fuzz/artifacts/)",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// The targets agent/fuzz/Cargo.toml declares (its `[[bin]]` names), in its order.
pub fn targets() -> Result<Vec<String>> {
    let manifest = workspace_root().join("agent/fuzz/Cargo.toml");
    let text = fs::read_to_string(&manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let names: Vec<String> = text
        .split("[[bin]]")
        .skip(1)
        .filter_map(|bin| {
            let value = bin.lines().find_map(|line| line.strip_prefix("name = "))?;
            Some(value.trim().trim_matches('"').to_owned())
        })
        .collect();
    if names.is_empty() {
        bail!("no [[bin]] targets in {}", manifest.display());
    }
    Ok(names)
}

/// `cargo +<nightly> fuzz <subcommand> --sanitizer <sanitizer>` in `agent/`, never letting
/// rustup download a missing toolchain: libFuzzer's instrumentation and the sanitizers need
/// the nightly that builds the eBPF crate.
fn fuzz_cargo(subcommand: &str, sanitizer: Sanitizer) -> Command {
    let mut cmd = cargo();
    cmd.arg(format!("+{}", ebpf_toolchain()))
        .args(["fuzz", subcommand, "--sanitizer", sanitizer.name()])
        .current_dir(workspace_root().join("agent"))
        .env("RUSTUP_AUTO_INSTALL", "0");
    cmd
}
