//! rotel, a real OpenTelemetry collector (written in Rust, shipped on PyPI as
//! `rotel`, pinned to 0.0.1a15 in xtask's `PIP_PACKAGES`), between the agent
//! and the test's [`OtlpReceiver`](super::otlp::OtlpReceiver).
//!
//! What its CLI offers (`rotel-agent start --help`, the binary says
//! `0.0.1-alpha10-e6a2d53` for `rotel-agent version`); every flag also reads a
//! `ROTEL_*` variable, so those are cleared for the child:
//!
//! - Receivers: `--otlp-grpc-endpoint HOST:PORT` (default `localhost:4317`)
//!   and `--otlp-http-endpoint HOST:PORT` (default `localhost:4318`; paths
//!   `/v1/traces`, `/v1/metrics`, `/v1/logs`, each changeable with
//!   `--otlp-receiver-{traces,metrics,logs}-http-path`). Both always listen;
//!   `--otlp-receiver-{traces,metrics,logs}-disabled` turn signals off. An
//!   address in use ends it at once with `ERROR: unable to bind to ADDR:
//!   Address already in use` on stderr and exit 1.
//! - Exporter: `--exporter otlp` (also `blackhole`, `datadog`, `clickhouse`,
//!   `aws-xray`, `kafka`; `--exporters name:type,...` for several) with
//!   `--otlp-exporter-endpoint URL` and `--otlp-exporter-protocol grpc|http`
//!   (default grpc), `--otlp-exporter-compression gzip|none` (default gzip),
//!   `--otlp-exporter-request-timeout` (5s) and retry backoffs
//!   `--otlp-exporter-retry-{initial-backoff,max-backoff,max-elapsed-time}`
//!   (5s, 30s, 300s), each also per signal
//!   (`--otlp-exporter-traces-...`).
//! - Batching: `--batch-timeout` (default `200ms`, humantime syntax),
//!   `--batch-max-size` (8192), per-signal `--{traces,metrics,logs}-batch-*`,
//!   and `--disable-batching`. `0ms` is accepted but then nothing is ever
//!   flushed on time (a batch only leaves once full: tried here, no span was
//!   forwarded in 20 s), so the shortest usable timeout is `1ms`, used here
//!   (it costs about 5% of a core while idle).
//! - Process: `--log-format text|json` (json used here), `--daemon` with
//!   `--pid-file` (default `/tmp/rotel-agent.pid`, pointed at a temp dir
//!   here) and `--log-file`; `--debug-log traces|metrics|logs` logs what
//!   passes through.
//!
//! Readiness: it binds both receivers before it logs `Starting Rotel.` on
//! stdout (a bind failure comes first, without that line), so the helper
//! waits for that line and then, to be sure, connects to both ports (a
//! bounded number of tries within a bounded time). On SIGTERM it logs
//! `Shutdown signal received.` and exits 0.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;
use std::sync::mpsc::RecvTimeoutError;
use std::thread;
use std::time::{Duration, Instant};

use super::{
    COMMAND_TIMEOUT, Proc, STOP_TIMEOUT, TempDir, describe_status, free_port, python, run,
};

/// The pinned PyPI release (also in xtask's `PIP_PACKAGES`).
pub const ROTEL_PIP_SPEC: &str = "rotel==0.0.1a15";
/// How long rotel may take to log that it started.
pub const ROTEL_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts with fresh ports when one was taken meanwhile.
const BIND_ATTEMPTS: usize = 3;
/// The port probe after the ready line: at most this many connects ...
const PROBE_TRIES: usize = 100;
/// ... this far apart ...
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// ... within this time.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// `rotel/rotel-agent` inside the installed `rotel` package (resolved once).
pub fn rotel_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = run(
            Command::new(python()).args([
                "-c",
                "import rotel, os; print(os.path.dirname(rotel.__file__))",
            ]),
            COMMAND_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "the `rotel` Python package is not installed (`python3 -m pip install \
             {ROTEL_PIP_SPEC}`, or `cargo xtask setup --for-tests`): {}",
            out.describe()
        );
        let bin = PathBuf::from(out.stdout_text().trim()).join("rotel-agent");
        assert!(
            bin.is_file(),
            "{} is missing from the rotel package ({ROTEL_PIP_SPEC} ships it)",
            bin.display()
        );
        bin
    })
    .clone()
}

/// A running rotel: OTLP gRPC and OTLP HTTP receivers on free 127.0.0.1
/// ports, exporting everything over OTLP gRPC to one endpoint. Killed
/// (SIGKILL) on drop unless stopped.
pub struct Rotel {
    proc: Proc,
    grpc_port: u16,
    http_port: u16,
    _dir: TempDir,
}

enum Launch {
    Ready(Rotel),
    /// A port was taken between picking it and rotel binding it.
    PortTaken(String),
}

impl Rotel {
    /// Starts rotel exporting to `export_to` (e.g. an
    /// [`OtlpReceiver::endpoint`](super::otlp::OtlpReceiver::endpoint)) and
    /// waits until both receivers accept connections.
    pub fn start(export_to: &str) -> Rotel {
        let mut last = String::new();
        for _ in 0..BIND_ATTEMPTS {
            match Rotel::launch(export_to) {
                Launch::Ready(rotel) => return rotel,
                Launch::PortTaken(why) => last = why,
            }
        }
        panic!("rotel could not bind its ports in {BIND_ATTEMPTS} attempts; last: {last}");
    }

    fn launch(export_to: &str) -> Launch {
        let dir = TempDir::new("rotel");
        let grpc_port = free_port();
        let mut http_port = free_port();
        while http_port == grpc_port {
            http_port = free_port();
        }
        let mut cmd = Command::new(rotel_bin());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ROTEL_") {
                cmd.env_remove(key);
            }
        }
        cmd.arg("start")
            .args(["--log-format", "json"])
            .arg("--pid-file")
            .arg(dir.join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.join("rotel.log"))
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
            .args(["--exporter", "otlp"])
            .args(["--otlp-exporter-endpoint", export_to])
            .args(["--otlp-exporter-protocol", "grpc"])
            .args(["--batch-timeout", "1ms"])
            .args(["--otlp-exporter-request-timeout", "5s"])
            .args(["--otlp-exporter-retry-initial-backoff", "100ms"])
            .args(["--otlp-exporter-retry-max-backoff", "500ms"])
            .args(["--otlp-exporter-retry-max-elapsed-time", "10s"]);
        let mut proc = Proc::spawn("rotel", &mut cmd);

        // The ready line, or the bind error and exit.
        let deadline = Instant::now() + ROTEL_READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match proc
                .stdout
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) => {
                    let ready = line.contains("Starting Rotel.");
                    proc.stdout_log.push(line);
                    if ready {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = proc.guard.wait_timeout(Duration::from_secs(5));
                    return Rotel::exited_early(proc, status);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(status) = proc.guard.try_wait() {
                        return Rotel::exited_early(proc, Some(status));
                    }
                    if Instant::now() >= deadline {
                        proc.fail(&format!(
                            "did not log `Starting Rotel.` within {ROTEL_READY_TIMEOUT:?}"
                        ));
                    }
                }
            }
        }

        let rotel = Rotel {
            proc,
            grpc_port,
            http_port,
            _dir: dir,
        };
        rotel.probe();
        Launch::Ready(rotel)
    }

    fn exited_early(mut proc: Proc, status: Option<ExitStatus>) -> Launch {
        let stderr = proc.stderr_tail();
        if stderr.contains("unable to bind") || stderr.contains("Address already in use") {
            return Launch::PortTaken(stderr);
        }
        proc.fail(&format!(
            "exited ({}) before logging `Starting Rotel.`",
            status.map_or("status unknown".to_owned(), |s| describe_status(&s))
        ));
    }

    /// Connects to both receivers until each accepts, at most
    /// [`PROBE_TRIES`] times within [`PROBE_TIMEOUT`].
    fn probe(&self) {
        let deadline = Instant::now() + PROBE_TIMEOUT;
        for port in [self.grpc_port, self.http_port] {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut tries = 0;
            loop {
                tries += 1;
                match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                    Ok(_) => break,
                    Err(e)
                        if matches!(e.kind(), ErrorKind::ConnectionRefused)
                            && tries < PROBE_TRIES
                            && Instant::now() < deadline =>
                    {
                        thread::sleep(PROBE_INTERVAL);
                    }
                    Err(e) => panic!(
                        "rotel (pid {}) logged that it started but {addr} does not accept \
                         connections after {tries} tries: {e}",
                        self.pid()
                    ),
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The OTLP/gRPC receiver, `http://127.0.0.1:PORT`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// The OTLP/HTTP receiver's base URL, `http://127.0.0.1:PORT` (it serves
    /// `/v1/traces`, `/v1/metrics`, `/v1/logs`).
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn grpc_port(&self) -> u16 {
        self.grpc_port
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// rotel's log so far (stdout, JSON lines) and stderr tail, for panic
    /// messages.
    pub fn log_tail(&mut self) -> String {
        while let Ok(line) = self.proc.stdout.try_recv() {
            self.proc.stdout_log.push(line);
        }
        let start = self.proc.stdout_log.len().saturating_sub(40);
        format!(
            "--- rotel stdout:\n{}\n--- rotel stderr:\n{}",
            self.proc.stdout_log[start..].join("\n"),
            self.proc.stderr_tail()
        )
    }

    /// Sends SIGTERM and waits (at most [`STOP_TIMEOUT`]) for rotel to exit;
    /// returns its exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.proc.guard.signal(libc::SIGTERM);
        self.proc.wait_exit(STOP_TIMEOUT)
    }
}
