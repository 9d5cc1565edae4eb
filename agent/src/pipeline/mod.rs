//! The running agent, wired in one place: capture -> streams -> protocols -> calls ->
//! enrichment -> analysis -> export.
//!
//! - [`agent`] starts the parts in their order and stops them in reverse;
//! - the ring-buffer reader (a tokio task) decodes records and sends them in batches over a
//!   bounded channel, so a slow consumer makes the kernel count drops instead of the agent
//!   growing;
//! - the stream stage ([`stages`], its own thread: it may write to stdout, which may block)
//!   runs every stage after capture and hands calls to the exporter;
//! - the control loop ([`control`], this task) owns the kernel object: it attaches OpenSSL
//!   probes to new processes, forgets kernel state of dead ones, logs loss counters, and stops
//!   on a signal.

mod agent;
mod control;
mod inventory_keeper;
mod stages;

use std::{io, net::SocketAddr};

use crate::{
    analysis::{
        inventory::{SpecBinding, store::StoreError},
        security::rules::ActiveRules,
    },
    capture::CaptureError,
    config::Config,
    export::otlp::OtlpError,
    selection::{Selection, StdioSelection},
};

use self::{agent::Agent, control::Signals};

/// What `apiscope run` was asked to do: the configuration, and what it names, read and
/// checked.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The configuration.
    pub config: Config,
    /// Print every chunk as a JSON line on stdout.
    pub dump: bool,
    /// The declared OpenAPI documents, read.
    pub specs: Vec<SpecBinding>,
    /// The security rules loaded at start, unless checking is off.
    pub rules: Option<ActiveRules>,
    /// Which workloads are captured, compiled.
    pub selection: Selection,
    /// Which processes have their standard input and output captured, compiled.
    pub stdio: StdioSelection,
}

/// Where calls go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallOutput {
    /// Spans and metrics to an OpenTelemetry collector.
    Otlp,
    /// One readable line per call on stdout.
    Lines,
    /// Calls are not decoded (`--dump` alone: stdout carries chunks).
    Off,
}

impl RunOptions {
    fn call_output(&self) -> CallOutput {
        if self.config.export.otlp.endpoint().is_some() {
            CallOutput::Otlp
        } else if self.dump {
            CallOutput::Off
        } else {
            CallOutput::Lines
        }
    }
}

/// Why the agent stopped other than by a signal.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Capture could not start.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// Signal handlers or the ring-buffer reader failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The stream stage stopped (e.g. stdout was closed under `--dump`).
    #[error("stream stage stopped: {0}")]
    Streams(String),
    /// The health and metrics endpoints could not listen.
    #[error("cannot serve the health and metrics endpoints on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The Kubernetes API server cannot be reached.
    #[error("kubernetes: {0}")]
    Kubernetes(String),
    /// The OTLP exporter could not be built.
    #[error(transparent)]
    Otlp(#[from] OtlpError),
    /// The inventory database cannot be used.
    #[error(transparent)]
    Inventory(#[from] StoreError),
}

/// Runs until SIGINT or SIGTERM; returns after every probe is detached.
pub async fn run(options: RunOptions) -> Result<(), RunError> {
    let mut signals = Signals::install()?;
    let mut agent = Agent::start(options).await?;
    let outcome = agent.control(&mut signals).await;
    agent.stop().await;
    outcome
}
