//! Shared code for the end-to-end tests: processes that are always cleaned up,
//! the agent under test, its JSON chunks, Python fixtures, curl, temp files.
//!
//! Every process a test starts is held by a [`ChildGuard`], which SIGKILLs
//! and reaps it on drop, so a failing (panicking) test leaves nothing behind.
//! Nothing here sleeps to synchronise: servers and the agent announce
//! readiness on a pipe, and waits poll with a deadline.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod cgroup;
pub mod kube;
pub mod nginx;
pub mod otlp;
pub mod rotel;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

/// How long the agent may take to load and attach every probe.
pub const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a Python fixture may take to print READY.
pub const FIXTURE_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a test waits for the chunks it expects.
pub const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a short command (curl, openssl, the CLI) may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the agent may take to exit after SIGTERM / SIGINT.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The agent's default per-call capture cap, in bytes.
pub const DEFAULT_CAPTURE_CAP: u64 = 16384;

const POLL: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// The agent binary: `$E2E_AGENT_BIN` (set by `cargo xtask test`), else
/// `<workspace root>/target/release/apiscope`. Every test that runs the agent gets it here,
/// so that a test run without root fails here, once per test, with the reason, instead of
/// skipping: an end-to-end test that did not run proves nothing.
pub fn agent_bin() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "the end-to-end tests load the agent's eBPF programs and must run as root \
         (sudo -E cargo xtask test)"
    );
    let (path, source) = match std::env::var_os("E2E_AGENT_BIN") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), "$E2E_AGENT_BIN"),
        _ => (
            workspace_root().join("target/release/apiscope"),
            "E2E_AGENT_BIN is unset, so the default path",
        ),
    };
    if !path.is_file() {
        panic!(
            "agent binary {} ({source}) does not exist: build it with `cargo xtask build`, \
             run these tests through `cargo xtask test`, or point E2E_AGENT_BIN at it",
            path.display()
        );
    }
    path
}

/// Held by the tests of one binary that must not share the host with another agent of it
/// (see [`one_at_a_time`]).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Waits until no other test of this binary holds the guard, and holds it: for tests that
/// count the host's BPF objects or load it, which another agent running meanwhile would skew
/// (each agent also captures the other's exports to the test's receivers).
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The real Python interpreter (resolved once through `python3` on PATH, so
/// that a pyenv shim does not stand between the test and the process it
/// spawns).
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = run(
            Command::new("python3").args(["-c", "import sys; print(sys.executable)"]),
            COMMAND_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "python3 -c 'print(sys.executable)' failed: {}",
            out.describe()
        );
        let exe = out.stdout_text().trim().to_owned();
        assert!(!exe.is_empty(), "python3 did not print sys.executable");
        PathBuf::from(exe)
    })
}

/// A fixture script or directory under tests/fixtures/.
pub fn fixture(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    assert!(path.exists(), "fixture {} is missing", path.display());
    path
}

/// `n` random bytes from /dev/urandom, as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A string unique to one test run, e.g. `apiscope-e2e-plain-3f9a…`; safe in
/// a URL path, so tests put it in the requests they make and find their own
/// chunks by it.
pub fn marker(test: &str) -> String {
    format!("apiscope-e2e-{test}-{}", random_hex(8))
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A directory of its own for one test under `CARGO_TARGET_TMPDIR`. Removed
/// on drop, unless the test is failing (then it is kept for a post-mortem
/// and its path printed).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{test}-{}", random_hex(6)));
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("kept temp dir {} of the failed test", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A self-signed certificate for CN=localhost.
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Field `n` of `/proc/PID/stat` after the command name (0 is the state letter, 1 the parent's
/// pid); `None` once the process is gone.
pub fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, which may hold spaces and parentheses, ends at the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n).map(str::to_owned)
}

/// The processes whose parent is `parent`.
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        // Processes may exit while the directory is walked.
        .filter(|&pid| stat_field(pid, 1).and_then(|ppid| ppid.parse().ok()) == Some(parent))
        .collect()
}

/// Every probe group of the agent, by the name `check` gives it.
pub const PROBE_GROUPS: [&str; 8] = [
    "core",
    "vectored_io",
    "batched_messages",
    "tls_openssl",
    "tls_go",
    "tls_handshake",
    "stdio",
    "library_hold",
];

/// The system's `libssl.so.3`, as the dynamic loader finds it.
pub fn system_libssl() -> String {
    let out = run(Command::new("ldconfig").arg("-p"), COMMAND_TIMEOUT);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.trim_start().starts_with("libssl.so.3 "))
        .find_map(|line| line.rsplit(" => ").next().map(str::trim).map(str::to_owned))
        .expect("ldconfig -p lists libssl.so.3")
}

/// `openssl req -x509 -newkey rsa:2048 -nodes ... -subj /CN=localhost` into `dir`.
pub fn make_cert(dir: &TempDir) -> Cert {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = run(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-days", "1", "-subj", "/CN=localhost"]),
        COMMAND_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        out.describe()
    );
    Cert { cert, key }
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// Owns a child process: on drop, unless it has already been reaped, it is
/// sent SIGKILL and waited for (by pid), so nothing outlives the test, even
/// one that panics.
pub struct ChildGuard {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd`. The child also gets SIGKILL if the thread that spawned
    /// it dies (e.g. the test binary is killed), so a stray root agent cannot
    /// outlive a test run.
    pub fn spawn(name: &str, cmd: &mut Command) -> ChildGuard {
        // SAFETY: the closure only makes the prctl syscall, which is
        // async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {name} ({}): {e}", describe_command(cmd)));
        ChildGuard {
            name: name.to_owned(),
            child,
            status: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status, if the process has exited (it is then reaped).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("waitpid({}) for {}: {e}", self.pid(), self.name));
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// Sends `signal` to the process, unless it has already been reaped.
    pub fn signal(&mut self, signal: libc::c_int) {
        if self.try_wait().is_some() {
            return;
        }
        // SAFETY: plain syscall; the pid is our un-reaped child, so it cannot
        // have been recycled.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(
            rc,
            0,
            "kill({}, {signal}) for {}: {}",
            self.pid(),
            self.name,
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.status.is_some() || matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain syscalls on our own un-reaped child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            let mut status = 0;
            while libc::waitpid(pid, &mut status, 0) < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
            }
        }
    }
}

fn describe_command(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Human-readable exit status ("exit 1", "signal 9").
pub fn describe_status(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{status}"),
    }
}

/// Spawns a thread that sends every line read from `pipe` (lossily decoded,
/// without its line ending) into the returned channel, which disconnects at
/// EOF.
fn line_reader(name: String, pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        while matches!(buf.last(), Some(b'\n' | b'\r')) {
                            buf.pop();
                        }
                        if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .expect("spawn reader thread");
    rx
}

/// What a finished command did.
pub struct Finished {
    pub pid: u32,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub command: String,
}

impl Finished {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Command, status, stdout and stderr, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "`{}` ({}), stdout:\n{}\nstderr:\n{}",
            self.command,
            describe_status(&self.status),
            truncate(&self.stdout_text(), 4000),
            truncate(&self.stderr_text(), 4000)
        )
    }
}

/// Makes `cmd` start a session of its own, so that it has no controlling terminal, whether or
/// not the tests run in one: the agent never holds a process with a terminal at exec.
pub fn without_terminal(cmd: &mut Command) -> &mut Command {
    // SAFETY: setsid is async-signal-safe, as code between fork and exec must be.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        })
    }
}

/// Runs `cmd` to completion with stdin closed and stdout/stderr captured;
/// panics (killing it) if it runs longer than `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Finished {
    let command = describe_command(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(&command, cmd);
    let stdout = read_all_in_thread(guard.child_mut().stdout.take().expect("piped stdout"));
    let stderr = read_all_in_thread(guard.child_mut().stderr.take().expect("piped stderr"));
    let Some(status) = guard.wait_timeout(timeout) else {
        drop(guard);
        panic!(
            "`{command}` still running after {timeout:?}; killed it. stderr so far:\n{}",
            String::from_utf8_lossy(&stderr.join().unwrap_or_default())
        );
    };
    Finished {
        pid: guard.pid(),
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        command,
    }
}

fn read_all_in_thread(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Runs curl with `args` (plus `--max-time`), asserts it exits 0 and returns
/// what it did; `Finished::pid` is curl's pid, for finding its chunks.
pub fn curl(args: &[&str]) -> Finished {
    let out = run(
        Command::new("curl").args(["--max-time", "30"]).args(args),
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "curl failed: {}", out.describe());
    out
}

/// A long-running child with stdin, stdout and stderr piped; stdout and
/// stderr are read line by line by background threads.
pub struct Proc {
    guard: ChildGuard,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    stdout_log: Vec<String>,
    stderr_log: Vec<String>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut guard = ChildGuard::spawn(name, cmd);
        let child = guard.child_mut();
        let stdin = child.stdin.take();
        let stdout = line_reader(
            format!("{name} stdout"),
            child.stdout.take().expect("piped stdout"),
        );
        let stderr = line_reader(
            format!("{name} stderr"),
            child.stderr.take().expect("piped stderr"),
        );
        Proc {
            guard,
            stdin,
            stdout,
            stderr,
            stdout_log: Vec::new(),
            stderr_log: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    pub fn name(&self) -> &str {
        self.guard.name()
    }

    pub fn guard_mut(&mut self) -> &mut ChildGuard {
        &mut self.guard
    }

    /// Writes one line to the child's stdin.
    pub fn write_line(&mut self, line: &str) {
        let name = self.guard.name().to_owned();
        let stdin = self.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("write to stdin of {name}: {e}"));
    }

    /// Moves every stderr line received so far into the log and returns the
    /// whole log.
    pub fn stderr_lines(&mut self) -> &[String] {
        while let Ok(line) = self.stderr.try_recv() {
            self.stderr_log.push(line);
        }
        &self.stderr_log
    }

    /// The tail of stderr, for panic messages.
    pub fn stderr_tail(&mut self) -> String {
        let lines = self.stderr_lines();
        let start = lines.len().saturating_sub(60);
        let mut text = lines[start..].join("\n");
        if start > 0 {
            text = format!("[... {start} earlier lines]\n{text}");
        }
        text
    }

    /// Waits for the next stdout line matching `pred` (earlier lines are
    /// skipped but kept for diagnostics). Panics, with stdout and stderr, if
    /// the process exits or closes stdout first, or on timeout.
    pub fn wait_stdout_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl FnMut(&str) -> bool,
    ) -> String {
        self.wait_line(Pipe::Stdout, what, timeout, pred)
    }

    /// As [`Proc::wait_stdout_line`], on stderr.
    pub fn wait_stderr_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl FnMut(&str) -> bool,
    ) -> String {
        self.wait_line(Pipe::Stderr, what, timeout, pred)
    }

    fn wait_line(
        &mut self,
        pipe: Pipe,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (lines, log) = match pipe {
                Pipe::Stdout => (&self.stdout, &mut self.stdout_log),
                Pipe::Stderr => (&self.stderr, &mut self.stderr_log),
            };
            match lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    let found = pred(&line);
                    log.push(line.clone());
                    if found {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.guard.wait_timeout(Duration::from_secs(5));
                    self.fail(&format!(
                        "closed {pipe:?} ({}) before printing {what}",
                        status.map_or("still running".to_owned(), |s| describe_status(&s))
                    ));
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(status) = self.guard.try_wait() {
                        self.fail(&format!(
                            "exited ({}) before printing {what}",
                            describe_status(&status)
                        ));
                    }
                    if Instant::now() >= deadline {
                        self.fail(&format!("did not print {what} within {timeout:?}"));
                    }
                }
            }
        }
    }

    /// Waits for the process to exit; panics on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.guard.wait_timeout(timeout) {
            Some(status) => status,
            None => self.fail(&format!("did not exit within {timeout:?}")),
        }
    }

    /// Panics with `msg`, the process's stdout so far and its stderr tail.
    pub fn fail(&mut self, msg: &str) -> ! {
        if self.guard.try_wait().is_some() {
            // It has exited: let the reader thread pass on its last words.
            let deadline = Instant::now() + Duration::from_secs(2);
            while let Ok(line) = self
                .stderr
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                self.stderr_log.push(line);
            }
        }
        while let Ok(line) = self.stdout.try_recv() {
            self.stdout_log.push(line);
        }
        let stdout = truncate(&self.stdout_log.join("\n"), 4000);
        let stderr = self.stderr_tail();
        panic!(
            "{} (pid {}) {msg}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}",
            self.guard.name(),
            self.pid()
        );
    }
}

/// One of a child's output pipes.
#[derive(Debug, Clone, Copy)]
enum Pipe {
    Stdout,
    Stderr,
}

/// Starts `python3 tests/fixtures/<script> <args>`, without waiting for
/// anything.
pub fn spawn_python(script: &str, args: &[&str]) -> Proc {
    let mut cmd = Command::new(python());
    cmd.arg("-u")
        .arg(fixture(script))
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
    Proc::spawn(script, &mut cmd)
}

/// The next JSON event a fixture prints on stdout (a line starting with `{`).
pub fn next_json_event(fixture: &mut Proc, what: &str) -> Value {
    let line = fixture.wait_stdout_line(what, FIXTURE_READY_TIMEOUT, |l| l.starts_with('{'));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line}"))
}

/// Decodes the base64 string field `name` of a fixture event.
pub fn base64_field(event: &Value, name: &str) -> Vec<u8> {
    let text = event[name]
        .as_str()
        .unwrap_or_else(|| panic!("no string field `{name}` in {event}"));
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("`{name}` is not base64 ({e}) in {event}"))
}

/// Starts `python3 tests/fixtures/<script> --port <port> <args>` and waits
/// until it prints READY (it listens from then on).
pub fn start_python_server(script: &str, port: u16, args: &[&str]) -> Proc {
    let port = port.to_string();
    let mut all = vec!["--port", port.as_str()];
    all.extend_from_slice(args);
    let mut server = spawn_python(script, &all);
    server.wait_stdout_line("READY", FIXTURE_READY_TIMEOUT, |l| l.trim() == "READY");
    server
}

/// `https_server.py` on 127.0.0.1:`port` with a fresh self-signed certificate made in `dir`
/// (which must outlive the server), and `args` after it.
pub fn start_https_server(dir: &TempDir, port: u16, args: &[&str]) -> Proc {
    let cert = make_cert(dir);
    let mut all = vec![
        "--cert",
        cert.cert.to_str().expect("utf-8 path"),
        "--key",
        cert.key.to_str().expect("utf-8 path"),
    ];
    all.extend_from_slice(args);
    start_python_server("https_server.py", port, &all)
}

// ---------------------------------------------------------------------------
// The agent and its chunks
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Sent by the process.
    Egress,
    /// Received by the process.
    Ingress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Client,
    Server,
    Unknown,
}

/// One line of `apiscope run --dump`: the bytes one syscall (or one OpenSSL
/// call) moved on one connection.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub fd: i32,
    pub conn_id: u64,
    pub direction: Direction,
    pub tls: bool,
    /// The bytes moved inside the kernel (sendfile/splice); none captured.
    pub gap: bool,
    /// Bytes the call really moved.
    pub len: u64,
    /// Bytes in `data` (< `len` when truncated by the capture cap).
    pub captured: u64,
    /// Offset of this chunk in the connection's stream, for its direction.
    pub offset: u64,
    pub local: String,
    pub peer: String,
    pub role: Role,
    /// As printed: UTF-8 text, or "b64:" + base64.
    pub data: String,
}

impl Chunk {
    /// Parses one stdout line of the agent; the error says what is wrong.
    pub fn parse(line: &str) -> Result<Chunk, String> {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let obj = v.as_object().ok_or("not a JSON object")?;
        let field = |name: &str| obj.get(name).ok_or_else(|| format!("no field `{name}`"));
        let uint = |name: &str| {
            field(name)?
                .as_u64()
                .ok_or_else(|| format!("`{name}` is not an unsigned integer"))
        };
        let string = |name: &str| {
            field(name)?
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("`{name}` is not a string"))
        };
        let u32_field = |name: &str| {
            u32::try_from(uint(name)?).map_err(|_| format!("`{name}` does not fit in u32"))
        };
        let fd = field("fd")?
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or("`fd` is not an i32")?;
        let direction = match string("direction")?.as_str() {
            "egress" => Direction::Egress,
            "ingress" => Direction::Ingress,
            other => return Err(format!("`direction` is {other:?}")),
        };
        let role = match string("role")?.as_str() {
            "client" => Role::Client,
            "server" => Role::Server,
            "unknown" => Role::Unknown,
            other => return Err(format!("`role` is {other:?}")),
        };
        Ok(Chunk {
            ts_ns: uint("ts_ns")?,
            pid: u32_field("pid")?,
            tid: u32_field("tid")?,
            comm: string("comm")?,
            fd,
            conn_id: uint("conn_id")?,
            direction,
            tls: field("tls")?.as_bool().ok_or("`tls` is not a bool")?,
            gap: field("gap")?.as_bool().ok_or("`gap` is not a bool")?,
            len: uint("len")?,
            captured: uint("captured")?,
            offset: uint("offset")?,
            local: string("local")?,
            peer: string("peer")?,
            role,
            data: string("data")?,
        })
    }

    /// The captured bytes (`data` decoded, "b64:" prefix handled).
    pub fn bytes(&self) -> Vec<u8> {
        match self.data.strip_prefix("b64:") {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_else(|e| panic!("bad base64 in chunk data ({e}): {self}")),
            None => self.data.as_bytes().to_vec(),
        }
    }

    pub fn contains(&self, needle: &[u8]) -> bool {
        find(&self.bytes(), needle).is_some()
    }

    pub fn contains_str(&self, needle: &str) -> bool {
        self.contains(needle.as_bytes())
    }

    /// (pid, conn_id): a connection as seen by one process.
    pub fn conn(&self) -> (u32, u64) {
        (self.pid, self.conn_id)
    }

    /// The per-chunk invariants of the contract: `captured <= len`, `data`
    /// decodes to exactly `captured` bytes.
    pub fn assert_sane(&self) {
        assert!(self.captured <= self.len, "captured > len in chunk {self}");
        assert_eq!(
            self.bytes().len() as u64,
            self.captured,
            "data does not decode to `captured` bytes in chunk {self}"
        );
    }
}

impl fmt::Display for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = match self.direction {
            Direction::Egress => "egress ",
            Direction::Ingress => "ingress",
        };
        write!(
            f,
            "pid={} tid={} comm={:?} fd={} conn={} {dir} tls={} role={:?} {} -> {} \
             off={} len={} cap={} data={:?}",
            self.pid,
            self.tid,
            self.comm,
            self.fd,
            self.conn_id,
            self.tls,
            self.role,
            self.local,
            self.peer,
            self.offset,
            self.len,
            self.captured,
            truncate(&String::from_utf8_lossy(&self.bytes()), 100),
        )
    }
}

/// A summary of many chunks for panic messages: one line per (connection,
/// direction, tls) with totals and the start of the first chunk's data.
pub fn summarize(chunks: &[Chunk]) -> String {
    #[derive(Default)]
    struct Group {
        count: usize,
        len: u64,
        captured: u64,
        first: Option<String>,
    }
    // (pid, comm, conn_id, direction, tls, local, peer)
    type Key = (u32, String, u64, Direction, bool, String, String);
    let mut groups: BTreeMap<Key, Group> = BTreeMap::new();
    for c in chunks {
        let key = (
            c.pid,
            c.comm.clone(),
            c.conn_id,
            c.direction,
            c.tls,
            c.local.clone(),
            c.peer.clone(),
        );
        let g = groups.entry(key).or_default();
        g.count += 1;
        g.len += c.len;
        g.captured += c.captured;
        g.first
            .get_or_insert_with(|| truncate(&String::from_utf8_lossy(&c.bytes()), 80));
    }
    let mut out = format!(
        "{} chunks in {} groups (pid comm conn dir tls local -> peer):\n",
        chunks.len(),
        groups.len()
    );
    for (i, ((pid, comm, conn, dir, tls, local, peer), g)) in groups.iter().enumerate() {
        if i == 80 {
            out.push_str(&format!("  ... {} more groups\n", groups.len() - 80));
            break;
        }
        out.push_str(&format!(
            "  {pid} {comm:?} conn={conn} {dir:?} tls={tls} {local} -> {peer}: {} chunks, \
             len={} captured={} first={:?}\n",
            g.count,
            g.len,
            g.captured,
            g.first.as_deref().unwrap_or("")
        ));
    }
    out
}

/// The agent binary, run with [`with_test_environment`]: for the tests that run it to its
/// end (a refused start, `check`, `inventory`); [`Agent`] starts the ones that keep running.
pub fn agent_command() -> Command {
    let mut cmd = Command::new(agent_bin());
    with_test_environment(&mut cmd);
    cmd
}

/// What every agent a test starts runs with: its log at `info` (the ready line must not be
/// filtered out), no OTLP settings inherited from the developer's shell (only what the test
/// sets), and the health endpoints on a port of its own (agents of tests running side by side
/// must not contend for the default one).
pub fn with_test_environment(cmd: &mut Command) {
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("APISCOPE_SERVER_LISTEN", "127.0.0.1:0");
}

/// The agent under test: `apiscope run --dump` ([`Agent::start`]), or
/// `apiscope run` exporting elsewhere ([`Agent::start_exporting`]).
pub struct Agent {
    proc: Proc,
    chunks: Vec<Chunk>,
    /// Whether stdout carries `--dump` chunks (else its lines are only kept).
    dump: bool,
    /// The agent's own inventory directory, when the test named none.
    _inventory: Option<TempDir>,
}

impl Agent {
    /// Starts `apiscope run --dump <extra_args>` and waits until it logs
    /// that every probe is attached (a stderr line with the word "ready").
    pub fn start(extra_args: &[&str]) -> Agent {
        let mut args = vec!["run", "--dump"];
        args.extend_from_slice(extra_args);
        Agent::launch(&args, &[], true)
    }

    /// Starts `apiscope run <args>` WITHOUT `--dump` (e.g. with
    /// `--otlp-endpoint`), with `env` added to the environment, and waits
    /// until it logs `ready`. Its stdout is kept, not parsed, and
    /// [`Agent::stop`] returns no chunks.
    pub fn start_exporting(args: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        Agent::launch(&all, env, false)
    }

    /// Like [`Agent::start_exporting`], with only the capabilities `keep` (numbers) left in
    /// the agent's bounding, permitted and effective sets: `capsh` drops every other one
    /// from the bounding set before it execs the agent as root.
    pub fn start_exporting_with_capabilities(
        keep: &[u32],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .expect("read /proc/sys/kernel/cap_last_cap")
            .trim()
            .parse()
            .expect("cap_last_cap is a number");
        let drop: Vec<String> = (0..=last)
            .filter(|cap| !keep.contains(cap))
            .map(|cap| cap.to_string())
            .collect();
        let mut cmd = Command::new("capsh");
        cmd.arg(format!("--drop={}", drop.join(",")))
            .args(["--", "-c", "exec \"$0\" \"$@\""])
            .arg(agent_bin())
            .arg("run")
            .args(args);
        Agent::launch_command(cmd, env, false)
    }

    fn launch(args: &[&str], env: &[(&str, &str)], dump: bool) -> Agent {
        let mut cmd = agent_command();
        cmd.args(args);
        Agent::launch_command(cmd, env, dump)
    }

    /// Starts the agent through `cmd`, a command that ends by exec'ing the agent with its
    /// arguments (as `unshare` or `capsh` do), and waits until it logs `ready`; with `dump`,
    /// its stdout is parsed as `--dump` chunks.
    pub fn launch_command(mut cmd: Command, env: &[(&str, &str)], dump: bool) -> Agent {
        with_test_environment(&mut cmd);
        // Nor share the host's inventory database.
        let inventory = (!env
            .iter()
            .any(|(key, _)| *key == "APISCOPE_INVENTORY_DIRECTORY"))
        .then(|| TempDir::new("agent-inventory"));
        if let Some(directory) = &inventory {
            cmd.env("APISCOPE_INVENTORY_DIRECTORY", directory.path());
        }
        cmd.envs(env.iter().copied());
        let mut proc = Proc::spawn("apiscope", &mut cmd);
        proc.wait_stderr_line("`ready`", AGENT_READY_TIMEOUT, |line| {
            has_word(line, "ready")
        });
        Agent {
            proc,
            chunks: Vec::new(),
            dump,
            _inventory: inventory,
        }
    }

    /// Panics with `msg`, the agent's stdout so far and its stderr tail.
    pub fn fail(&mut self, msg: &str) -> ! {
        self.proc.fail(msg)
    }

    /// The tail of the agent's stderr (its log), for messages.
    pub fn stderr_tail(&mut self) -> String {
        self.proc.stderr_tail()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Sends `signal` to the agent, which keeps running.
    pub fn signal(&mut self, signal: libc::c_int) {
        self.proc.guard_mut().signal(signal);
    }

    /// Parses every stdout line received so far. Returns false once stdout
    /// is closed.
    fn drain(&mut self, wait: Duration) -> bool {
        let mut first = true;
        loop {
            let next = if first {
                self.proc.stdout.recv_timeout(wait)
            } else {
                self.proc.stdout.try_recv().map_err(|e| match e {
                    mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                    mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                })
            };
            first = false;
            match next {
                Ok(line) => self.push_line(line),
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    fn push_line(&mut self, line: String) {
        if !self.dump {
            self.proc.stdout_log.push(line);
            return;
        }
        match Chunk::parse(&line) {
            Ok(chunk) => self.chunks.push(chunk),
            Err(e) => self.proc.fail(&format!(
                "printed a stdout line that is not a valid chunk ({e}):\n{}",
                truncate(&line, 2000)
            )),
        }
    }

    /// Collects chunks until `pred` over all chunks collected so far (since
    /// the agent started) holds, and returns them all. Panics with a summary
    /// of what was seen if that takes longer than `timeout` or the agent
    /// exits.
    pub fn wait_for_chunks(
        &mut self,
        mut pred: impl FnMut(&[Chunk]) -> bool,
        timeout: Duration,
    ) -> Vec<Chunk> {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.chunks) {
                return self.chunks.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                let summary = summarize(&self.chunks);
                self.proc.fail(&format!(
                    "did not print the expected chunks within {timeout:?}; saw {summary}"
                ));
            }
            let open = self.drain((deadline - now).min(Duration::from_millis(100)));
            if !open {
                if pred(&self.chunks) {
                    return self.chunks.clone();
                }
                let status = self.proc.guard.wait_timeout(Duration::from_secs(5));
                let summary = summarize(&self.chunks);
                self.proc.fail(&format!(
                    "closed stdout ({}) before printing the expected chunks; saw {summary}",
                    status.map_or("still running".to_owned(), |s| describe_status(&s))
                ));
            }
        }
    }

    /// Sends SIGTERM, asserts the agent exits 0 (within [`STOP_TIMEOUT`];
    /// else it is killed and the test fails), and returns every chunk it
    /// printed, including the ones it flushed while stopping.
    pub fn stop(self) -> Vec<Chunk> {
        self.stop_with(libc::SIGTERM)
    }

    /// Like [`Agent::stop`], with another signal (SIGINT).
    pub fn stop_with(mut self, signal: libc::c_int) -> Vec<Chunk> {
        self.finish(signal);
        std::mem::take(&mut self.chunks)
    }

    /// Kills the agent with SIGKILL, as a crash would end it (no cleanup of its own), and
    /// waits until it is gone.
    pub fn kill(mut self) {
        self.proc.guard.signal(libc::SIGKILL);
        let status = self.proc.wait_exit(STOP_TIMEOUT);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "the agent ended with {} instead of SIGKILL",
            describe_status(&status)
        );
    }

    /// Stops an agent started without `--dump` and returns every line it printed on stdout.
    pub fn stop_for_lines(self) -> Vec<String> {
        self.stop_for_lines_and_log().0
    }

    /// Stops an agent started without `--dump`; returns its stdout lines and its log (stderr).
    pub fn stop_for_lines_and_log(mut self) -> (Vec<String>, Vec<String>) {
        self.finish(libc::SIGTERM);
        self.proc.stderr_lines();
        (
            std::mem::take(&mut self.proc.stdout_log),
            std::mem::take(&mut self.proc.stderr_log),
        )
    }

    /// The `http://ADDRESS` of the agent's health and metrics endpoints, from its log.
    pub fn endpoints_url(&mut self) -> String {
        let line = self
            .proc
            .stderr_lines()
            .iter()
            .find(|line| line.contains("serving /healthz"))
            .cloned();
        match line.and_then(|line| line.split_whitespace().last().map(str::to_owned)) {
            Some(url) if url.starts_with("http://") => url,
            _ => self.fail("no `serving /healthz ... on http://ADDRESS` line in the log"),
        }
    }

    /// The body of one of the agent's own endpoints (`/inventory`, `/openapi/{service}`);
    /// fails the test with the agent's log when the request fails.
    pub fn get(&mut self, path: &str) -> String {
        let url = format!("{}{path}", self.endpoints_url());
        let out = curl(&["-sS", "--fail-with-body", &url]);
        if !out.status.success() {
            self.fail(&format!("GET {url}: {}", out.describe()));
        }
        out.stdout_text()
    }

    /// Waits for a log line matching `pred`; panics with the log on timeout.
    pub fn wait_log_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl FnMut(&str) -> bool,
    ) -> String {
        self.proc.wait_stderr_line(what, timeout, pred)
    }

    /// Sends `signal`, asserts exit 0 and reads stdout to its end.
    fn finish(&mut self, signal: libc::c_int) {
        self.proc.guard.signal(signal);
        let status = self.proc.wait_exit(STOP_TIMEOUT);
        if !status.success() {
            self.proc.fail(&format!(
                "exited with {} after signal {signal}; expected exit 0",
                describe_status(&status)
            ));
        }
        // Read stdout to its end: chunks printed while stopping count too.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.drain(Duration::from_millis(100)) {
            if Instant::now() >= deadline {
                self.proc
                    .fail("stdout still open 10 s after the agent exited (inherited by a child?)");
            }
        }
    }
}

/// The value of the Prometheus sample `series` (name and labels, as the agent's `/metrics`
/// writes them) in `metrics`; panics with the text if there is none.
pub fn metric_sample(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{series}` sample in\n{metrics}"))
}

/// The agent's resident memory, in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// The agent's largest resident memory, in KiB (`VmHWM` of /proc/PID/status): since it
/// started, or since [`reset_peak_rss`].
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM")
}

/// Makes the kernel's record of process `pid`'s largest resident memory start again from
/// what it holds now (`5` to /proc/PID/clear_refs).
pub fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .unwrap_or_else(|e| panic!("reset the peak RSS of {pid}: {e}"));
}

/// The `field` of /proc/PID/status, a size in kB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{status}"))
}

/// True if `line` contains `word` (ASCII case-insensitive) as a whole word.
pub fn has_word(line: &str, word: &str) -> bool {
    line.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w.eq_ignore_ascii_case(word))
}

// ---------------------------------------------------------------------------
// Helpers over chunks and bytes
// ---------------------------------------------------------------------------

/// The position of the first `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Non-overlapping occurrences of `needle` in `haystack`.
pub fn count_occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    assert!(!needle.is_empty());
    let mut count = 0;
    let mut rest = haystack;
    while let Some(i) = find(rest, needle) {
        count += 1;
        rest = &rest[i + needle.len()..];
    }
    count
}

/// The chunks of connection (pid, conn_id) in `direction`, in offset order.
pub fn stream_chunks(chunks: &[Chunk], conn: (u32, u64), direction: Direction) -> Vec<&Chunk> {
    let mut out: Vec<&Chunk> = chunks
        .iter()
        .filter(|c| c.conn() == conn && c.direction == direction)
        .collect();
    out.sort_by_key(|c| (c.offset, c.ts_ns));
    out
}

/// The captured bytes of `chunks` (already in offset order), concatenated.
pub fn concat(chunks: &[&Chunk]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.bytes()).collect()
}

/// Every connection (pid, conn_id) of process `pid` that has a chunk in
/// `direction` containing `needle`.
pub fn conns_with(
    chunks: &[Chunk],
    pid: u32,
    direction: Direction,
    needle: &[u8],
) -> Vec<(u32, u64)> {
    let mut conns: Vec<(u32, u64)> = chunks
        .iter()
        .filter(|c| c.pid == pid && c.direction == direction && c.contains(needle))
        .map(Chunk::conn)
        .collect();
    conns.sort_unstable();
    conns.dedup();
    conns
}

/// The one connection of process `pid` that carried `needle` in
/// `direction`; panics with a summary if there is none or several.
pub fn one_conn_with(
    chunks: &[Chunk],
    pid: u32,
    direction: Direction,
    needle: &str,
    what: &str,
) -> (u32, u64) {
    let conns = conns_with(chunks, pid, direction, needle.as_bytes());
    assert_eq!(
        conns.len(),
        1,
        "{what}: expected exactly one connection of pid {pid} with {direction:?} {needle:?}, \
         found {conns:?}; saw {}",
        summarize(chunks)
    );
    conns[0]
}

/// Asserts the chunks (of one stream, in offset order) are back to back:
/// each starts where the previous one ended (`offset + len`).
pub fn assert_contiguous(chunks: &[&Chunk], what: &str) {
    for pair in chunks.windows(2) {
        assert_eq!(
            pair[1].offset,
            pair[0].offset + pair[0].len,
            "{what}: gap or overlap between\n  {}\n  {}",
            pair[0],
            pair[1]
        );
    }
}

/// Asserts every chunk of one connection reports the same addresses.
pub fn assert_same_addresses(chunks: &[&Chunk], what: &str) {
    if let Some(first) = chunks.first() {
        for c in chunks {
            assert!(
                c.local == first.local && c.peer == first.peer,
                "{what}: addresses change within one connection:\n  {first}\n  {c}"
            );
        }
    }
}

/// `s` cut to at most `max` characters, marked when cut.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…[{} more bytes]", &s[..i], s.len() - i),
        None => s.to_owned(),
    }
}
