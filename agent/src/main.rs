//! The `apiscope` command.

use std::{process::ExitCode, time::Duration};

use agent::{
    capture::{
        Capture, GroupState, KernelSelection, LoadReport, VERIFIER_BUDGET, exec_hold,
        features::{self, Status},
    },
    cli::{RunArgs, SettingsArgs},
    config::Config,
    instance::InstanceLock,
    inventory_command::{self, InventoryArgs},
    pipeline,
};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use log::info;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// See every API call this host makes or serves, TLS included, from the kernel.
#[derive(Debug, Parser)]
#[command(name = "apiscope", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that this kernel and these privileges allow capture, and which probe groups run:
    /// exit 0 if every group does, 2 if the agent would run without some, 1 if it cannot run.
    Check(CheckArgs),
    /// Capture until SIGINT or SIGTERM.
    Run(Box<RunArgs>),
    /// Show the running agent's API inventory.
    Inventory(InventoryArgs),
    /// Print the configuration `run` would use, from the file, the environment and the flags
    /// (OTLP header values redacted).
    Config(SettingsArgs),
    /// Started by `run` itself: continues the processes held at exec once their hold passes
    /// its bound, and all of them when `run` ends (see `capture::exec_hold`).
    #[command(name = exec_hold::KEEPER_COMMAND, hide = true)]
    HoldKeeper(HoldKeeperArgs),
}

/// Flags of the hidden `apiscope hold-keeper`.
#[derive(Debug, clap::Args)]
struct HoldKeeperArgs {
    /// Id of the kernel's `HELD` map.
    #[arg(long)]
    held_map_id: u32,
    /// The longest a process is held, in milliseconds.
    #[arg(long)]
    bound_ms: u64,
}

/// Flags of `apiscope check`.
#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// Also list every kernel program with the instructions the verifier processed for it.
    #[arg(long, short)]
    verbose: bool,
    /// The configuration's `capture:` section is what is checked.
    #[command(flatten)]
    settings: SettingsArgs,
}

/// How `check` ends: what its exit status says.
enum Verdict {
    /// Every probe group runs.
    Complete,
    /// The agent runs, without some groups.
    Degraded,
    /// The agent cannot run.
    Unusable,
}

fn inventory(args: &InventoryArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    print!("{}", runtime.block_on(inventory_command::show(args))?);
    Ok(())
}

fn check(args: &CheckArgs) -> anyhow::Result<Verdict> {
    let mut capture = args.settings.config()?.capture;
    // The check loads the programs once and drops them: a small ring buffer will do.
    capture.ring_buffer_bytes = capture.ring_buffer_bytes.min(1 << 20);
    let wanted = capture.socket_lookup.lookup();
    let findings = features::check_host(wanted);
    println!("{:<12} {:<8} DETAIL", "FEATURE", "STATUS");
    for finding in &findings {
        println!("{finding}");
    }
    if findings
        .iter()
        .any(|finding| finding.status == Status::Missing)
    {
        return Ok(Verdict::Unusable);
    }
    let report = match Capture::start(&capture, &KernelSelection::default()) {
        Ok((capture, _)) => capture.report().clone(),
        Err(error) => {
            println!("{:<12} {:<8} {error}", "probes", "MISSING");
            return Ok(Verdict::Unusable);
        }
    };
    print_groups(&report);
    if args.verbose {
        print_programs(&report);
    }
    Ok(if report.groups_off().next().is_some() {
        Verdict::Degraded
    } else {
        Verdict::Complete
    })
}

/// The configuration as YAML, with the OTLP header values (API keys, often) redacted.
fn print_config(config: &Config) -> anyhow::Result<()> {
    let mut config = config.clone();
    for value in config.export.otlp.headers.0.values_mut() {
        *value = "[redacted]".to_owned();
    }
    print!("{}", serde_yaml_ng::to_string(&config)?);
    Ok(())
}

/// The probe groups' table of `check`.
fn print_groups(report: &LoadReport) {
    println!("\n{:<18} {:<6} DETAIL", "GROUP", "STATE");
    for status in &report.groups {
        let programs = report
            .programs
            .iter()
            .filter(|program| program.group == status.group)
            .count();
        match &status.state {
            GroupState::On => println!(
                "{:<18} {:<6} {programs} programs",
                status.group.name(),
                "on"
            ),
            GroupState::Off(failure) => println!(
                "{:<18} {:<6} {failure}; {}",
                status.group.name(),
                "OFF",
                status.group.lost_without()
            ),
        }
    }
}

/// The per-program table of `check --verbose`: what verifying each program cost, against the
/// budget every program is kept under, and where it attaches.
fn print_programs(report: &LoadReport) {
    println!(
        "\n{:<32} {:<18} {:>14} {:>10}  HOOK",
        "PROGRAM", "GROUP", "VERIFIED INSNS", "OF BUDGET"
    );
    for program in &report.programs {
        let (count, share) = match program.verified_insns {
            Some(count) => (
                count.to_string(),
                format!(
                    "{:.1}%",
                    f64::from(count) * 100.0 / f64::from(VERIFIER_BUDGET)
                ),
            ),
            None => ("unknown".to_owned(), "-".to_owned()),
        };
        println!(
            "{:<32} {:<18} {count:>14} {share:>10}  {}",
            program.program,
            program.group.name(),
            program.hook.attach_point(program.program)
        );
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let options = args.run_options()?;
    if let Err(reason) = features::privileges() {
        anyhow::bail!("apiscope run {reason}");
    }
    if let Err(missing) = features::require_kernel(options.config.capture.socket_lookup.lookup()) {
        anyhow::bail!("this kernel cannot run the agent: {missing}");
    }
    // Before anything is loaded: a second agent must not attach a single probe.
    let _instance = InstanceLock::acquire(&options.config.inventory.directory)?;
    match features::ensure_tracefs() {
        Ok((Status::Fixed, detail)) => info!("tracefs {detail}"),
        Ok(_) => {}
        Err(detail) => anyhow::bail!("tracefs {detail}"),
    }
    // Two workers: the ring-buffer reader and control loop on one, export on the other, so a
    // slow collector never delays reading the ring buffer.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("apiscope-rt")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(pipeline::run(options))?;
    Ok(())
}

fn main() -> ExitCode {
    // Transparent huge pages would back the allocator's arenas with 2 MiB pages that stay
    // resident when mostly free: measured 55 -> 37 MiB peak RSS at idle without them.
    // SAFETY: prctl with integer arguments only; failure leaves THP as it was.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let result = match cli.command {
        Command::Check(args) => check(&args).map(|verdict| match verdict {
            Verdict::Complete => ExitCode::SUCCESS,
            Verdict::Degraded => ExitCode::from(2),
            Verdict::Unusable => ExitCode::FAILURE,
        }),
        Command::Run(args) => run(*args).map(|()| ExitCode::SUCCESS),
        Command::Inventory(args) => inventory(&args).map(|()| ExitCode::SUCCESS),
        Command::HoldKeeper(args) => {
            exec_hold::keep_holds(args.held_map_id, Duration::from_millis(args.bound_ms))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Config(args) => args
            .config()
            .map_err(anyhow::Error::from)
            .and_then(|config| print_config(&config))
            .map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|error| {
        eprintln!("apiscope: error: {error:#}");
        ExitCode::FAILURE
    })
}
