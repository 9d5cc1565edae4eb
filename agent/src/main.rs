//! The `apiscope` command.

use std::{path::PathBuf, process::ExitCode};

use agent::{
    capture::{
        Capture, CaptureSettings,
        features::{self, Status},
    },
    config::Config,
    pipeline::{self, RunOptions},
    streams::StreamSettings,
};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use log::info;

/// See every API call this host makes or serves, TLS included, from the kernel.
#[derive(Debug, Parser)]
#[command(name = "apiscope", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that this kernel and these privileges allow capture; exit 0 only if they do.
    Check,
    /// Capture until SIGINT or SIGTERM.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Print every captured chunk as one JSON line on stdout.
    #[arg(long)]
    dump: bool,
    /// YAML configuration file; flags and environment variables override its keys.
    #[arg(long, env = "APISCOPE_CONFIG")]
    config: Option<PathBuf>,
    /// Payload bytes captured per call (capture.capture_cap).
    #[arg(long, env = "APISCOPE_CAPTURE_CAP")]
    capture_cap: Option<u32>,
    /// Ring-buffer size in bytes, a power of two (capture.ring_buffer_bytes).
    #[arg(long, env = "APISCOPE_RING_BUFFER_BYTES")]
    ring_buffer_bytes: Option<u32>,
    /// Connections tracked at once (streams.max_connections).
    #[arg(long, env = "APISCOPE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Seconds of silence before a connection's state is dropped (streams.idle_timeout_secs).
    #[arg(long, env = "APISCOPE_IDLE_TIMEOUT_SECS")]
    idle_timeout_secs: Option<u64>,
}

impl RunArgs {
    /// The file's configuration with flags and environment variables applied on top.
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(value) = self.capture_cap {
            config.capture.capture_cap = value;
        }
        if let Some(value) = self.ring_buffer_bytes {
            config.capture.ring_buffer_bytes = value;
        }
        if let Some(value) = self.max_connections {
            config.streams.max_connections = value;
        }
        if let Some(value) = self.idle_timeout_secs {
            config.streams.idle_timeout_secs = value;
        }
        Ok(config)
    }
}

fn check() -> anyhow::Result<bool> {
    let mut findings = features::check_host();
    if findings
        .iter()
        .all(|finding| finding.status != Status::Missing)
    {
        let loaded = Capture::start(CaptureSettings {
            capture_cap: 16 * 1024,
            ring_buffer_bytes: 1 << 20,
        })
        .map(|_| "every kernel program loads and attaches".to_owned())
        .map_err(|error| error.to_string());
        findings.push(features::load_finding(loaded));
    }
    println!("{:<12} {:<8} DETAIL", "FEATURE", "STATUS");
    for finding in &findings {
        println!("{finding}");
    }
    Ok(findings
        .iter()
        .all(|finding| finding.status != Status::Missing))
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    if let Err(reason) = features::privileges() {
        anyhow::bail!("apiscope run {reason}");
    }
    match features::ensure_tracefs() {
        Ok((Status::Fixed, detail)) => info!("tracefs {detail}"),
        Ok(_) => {}
        Err(detail) => anyhow::bail!("tracefs {detail}"),
    }
    let options = RunOptions {
        capture: CaptureSettings {
            capture_cap: config.capture.capture_cap,
            ring_buffer_bytes: config.capture.ring_buffer_bytes,
        },
        streams: StreamSettings {
            max_connections: config.streams.max_connections.max(1),
            idle_timeout_ns: config
                .streams
                .idle_timeout_secs
                .saturating_mul(1_000_000_000),
        },
        dump: args.dump,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(pipeline::run(options))?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let result = match cli.command {
        Command::Check => check().map(|ok| {
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        Command::Run(args) => run(args).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|error| {
        eprintln!("apiscope: error: {error:#}");
        ExitCode::FAILURE
    })
}
