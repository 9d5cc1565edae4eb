//! The Go server under test: the TLS peer of the tests (`tests/fixtures/go_tls`, the standard
//! library only) built with Debian's Go, serving HTTP/1.1 over `crypto/tls`, whose plaintext the
//! agent reads with its Go uprobes (`crypto/tls.(*Conn).Read`/`Write`, at entry and at each
//! return instruction). It answers `GET /` with an 11-byte body, and counts the requests it
//! served on a second, plain port.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    process::{self, Guarded},
    server::{ServerUnderTest, status_query},
};
use crate::{display, run, workspace_root};

/// The service name the server's spans carry: its executable's name.
const SERVICE: &str = "apiscope-bench-go";
/// How long the server has to build and start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long it has to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running Go server; stopped when dropped.
pub struct GoServer {
    guard: Guarded,
    /// TLS port.
    https_port: u16,
    /// Plain port of the request count.
    stats_port: u16,
    /// Its standard output and error.
    output: PathBuf,
}

impl GoServer {
    /// Builds the server into `dir`, starts it and waits until it has printed its ports.
    pub fn start(dir: &Path) -> Result<Self> {
        let binary = dir.join(SERVICE);
        run(Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&binary)
            .arg(workspace_root().join("tests/fixtures/go_tls/main.go")))
        .context("building the Go server (Debian's golang-go; `cargo xtask setup` installs it)")?;
        let output = dir.join("go-server.out");
        let file = fs::File::create(&output)?;
        let mut cmd = Command::new(&binary);
        cmd.arg("serve").stdout(file.try_clone()?).stderr(file);
        println!("+ {}", display(&cmd));
        let mut guard = Guarded::spawn("the Go server", &mut cmd)?;
        let end = Instant::now() + START_TIMEOUT;
        loop {
            let text = fs::read_to_string(&output).unwrap_or_default();
            let port = |label: &str| {
                text.lines()
                    .find_map(|line| line.strip_prefix(label)?.trim().parse::<u16>().ok())
            };
            if let (Some(https_port), Some(stats_port)) = (port("listening "), port("stats ")) {
                return Ok(Self {
                    guard,
                    https_port,
                    stats_port,
                    output,
                });
            }
            if let Some(exit) = guard.try_exit()? {
                bail!(
                    "the Go server exited at start ({}): {text}",
                    exit.describe()
                );
            }
            if Instant::now() >= end {
                bail!("the Go server printed no ports after {START_TIMEOUT:?}: {text}");
            }
            process::sleep(Duration::from_millis(50))?;
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL), waiting for it.
    pub fn stop(mut self) -> Result<()> {
        self.guard.stop(STOP_GRACE).map(drop)
    }
}

impl ServerUnderTest for GoServer {
    fn service(&self) -> &'static str {
        SERVICE
    }

    fn base_url(&self, tls: bool) -> Option<String> {
        tls.then(|| format!("https://127.0.0.1:{}", self.https_port))
    }

    fn requests_handled(&self) -> Result<u64> {
        let response = status_query(self.stats_port, "/")?;
        response
            .split("\r\n\r\n")
            .nth(1)
            .and_then(|body| body.trim().parse().ok())
            .with_context(|| format!("unexpected request count: {response}"))
    }

    fn serving_pids(&self) -> Result<Vec<i64>> {
        Ok(vec![i64::from(self.guard.pid())])
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(exit) = self.guard.try_exit()? {
            let text = fs::read_to_string(&self.output).unwrap_or_default();
            bail!("the Go server exited ({}): {text}", exit.describe());
        }
        Ok(())
    }
}
