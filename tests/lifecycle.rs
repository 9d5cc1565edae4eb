//! The agent as a guest on the host: it runs with exactly the capabilities the Helm chart and
//! the systemd unit grant, refuses to start twice on one state directory, leaves no program or
//! probe attached when it stops, whether by SIGTERM or by SIGKILL (a crash), and never leaves
//! a process it held at exec stopped: not when it is late, not when it dies.
//!
//! The tests here count the host's BPF programs and links (with `bpftool`), so they run one
//! at a time ([`support::one_at_a_time`]): another agent of this binary starting meanwhile
//! would look like a leak.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::otlp::OtlpReceiver;
use support::{
    Agent, COMMAND_TIMEOUT, ChildGuard, TempDir, agent_command, children, marker, metric_sample,
    one_at_a_time, run, stat_field, without_terminal,
};

/// How long the kernel may take to free a program after its last reference is closed (it
/// frees them after an RCU grace period, not at once).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// The capabilities documented in helm/apiscope/README.md ("Privileges") and
/// agent/systemd/apiscope.service: DAC_READ_SEARCH, KILL, SYS_PTRACE, SYS_ADMIN, PERFMON, BPF.
const DOCUMENTED_CAPABILITIES: [u32; 6] = [2, 5, 19, 21, 38, 39];

/// The longest hold at exec the configuration allows: the window in which a test sees a held
/// process stopped.
const LONGEST_HOLD: &str = "capture.exec_hold_ms=2000";

/// The ids of the BPF objects loaded on the host.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct BpfObjects {
    programs: BTreeSet<u64>,
    links: BTreeSet<u64>,
}

impl BpfObjects {
    fn now() -> BpfObjects {
        let ids = |kind: &str| -> BTreeSet<u64> {
            let out = run(
                Command::new("bpftool").args(["--json", kind, "show"]),
                COMMAND_TIMEOUT,
            );
            assert!(
                out.status.success(),
                "bpftool {kind} show: {}",
                out.describe()
            );
            let listed: Value = serde_json::from_str(out.stdout_text().trim())
                .unwrap_or_else(|e| panic!("bpftool {kind} show printed no JSON ({e})"));
            listed
                .as_array()
                .unwrap_or_else(|| panic!("bpftool {kind} show: not a list: {listed}"))
                .iter()
                .map(|object| object["id"].as_u64().expect("an object id"))
                .collect()
        };
        BpfObjects {
            programs: ids("prog"),
            links: ids("link"),
        }
    }

    /// The objects of `self` not in `before`.
    fn since(&self, before: &BpfObjects) -> BpfObjects {
        BpfObjects {
            programs: &self.programs - &before.programs,
            links: &self.links - &before.links,
        }
    }

    /// The objects of `self` still loaded now.
    fn still_loaded(&self) -> BpfObjects {
        let now = BpfObjects::now();
        BpfObjects {
            programs: &self.programs & &now.programs,
            links: &self.links & &now.links,
        }
    }

    fn is_empty(&self) -> bool {
        self.programs.is_empty() && self.links.is_empty()
    }
}

/// Starts an agent, checks that it loaded and attached its programs, ends it with `end`
/// and checks that everything it loaded is gone.
fn leaves_nothing_attached(end: impl FnOnce(Agent)) {
    let before = BpfObjects::now();
    let agent = Agent::start_exporting(&[], &[]);
    let loaded = BpfObjects::now().since(&before);
    assert!(
        loaded.programs.len() >= 10 && loaded.links.len() >= 10,
        "the agent loaded and attached only {loaded:?}"
    );
    end(agent);
    let deadline = Instant::now() + RELEASE_TIMEOUT;
    loop {
        let left = loaded.still_loaded();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still loaded {RELEASE_TIMEOUT:?} after the agent ended: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_detaches_every_probe() {
    let _serial = one_at_a_time();
    leaves_nothing_attached(|agent| {
        agent.stop_for_lines();
    });
}

#[test]
fn a_crash_leaves_nothing_attached() {
    let _serial = one_at_a_time();
    leaves_nothing_attached(Agent::kill);
}

#[test]
fn a_second_agent_on_the_same_state_directory_refuses_to_start() {
    let _serial = one_at_a_time();
    let state = TempDir::new("lifecycle-state");
    let directory = state.path().to_str().expect("utf-8 path").to_owned();
    let env = [("APISCOPE_INVENTORY_DIRECTORY", directory.as_str())];
    let first = Agent::start_exporting(&[], &env);
    let before = BpfObjects::now();
    let second = run(
        agent_command()
            .arg("run")
            .env("APISCOPE_INVENTORY_DIRECTORY", &directory),
        COMMAND_TIMEOUT,
    );
    assert!(
        !second.status.success(),
        "a second agent started: {}",
        second.describe()
    );
    let stderr = second.stderr_text();
    assert!(
        stderr.contains(&format!("another apiscope (pid {})", first.pid()))
            && stderr.contains(&directory)
            && stderr.trim().lines().count() == 1,
        "not one clear line naming the running agent: {}",
        second.describe()
    );
    assert!(
        BpfObjects::now().since(&before).is_empty(),
        "the refused agent loaded programs"
    );
    // The lock goes with the process, even when it ends without cleaning up.
    first.kill();
    Agent::start_exporting(&[], &env).stop_for_lines();
}

#[test]
fn the_documented_capabilities_are_enough_and_exactly_what_it_holds() {
    let _serial = one_at_a_time();
    let receiver = OtlpReceiver::start();
    let mut agent = Agent::start_exporting_with_capabilities(
        &DOCUMENTED_CAPABILITIES,
        &["--otlp-endpoint", &receiver.endpoint()],
        &[("OTEL_BSP_SCHEDULE_DELAY", "200")],
    );
    let held = std::fs::read_to_string(format!("/proc/{}/status", agent.pid()))
        .expect("the agent's status");
    let mask: u64 = DOCUMENTED_CAPABILITIES.iter().map(|cap| 1 << cap).sum();
    for set in ["CapBnd", "CapPrm", "CapEff"] {
        let value = held
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{set}:")))
            .map(|hex| u64::from_str_radix(hex.trim(), 16).expect("hex"));
        assert_eq!(value, Some(mask), "{set} of the agent:\n{held}");
    }
    // TLS: the OpenSSL uprobes need the most of these capabilities (SYS_ADMIN).
    let dir = TempDir::new("lifecycle-tls");
    let port = support::free_port();
    let server = support::start_https_server(&dir, port, &[]);
    let path = format!("/{}", marker("least-privilege"));
    let out = support::curl(&[
        "-sk",
        "-o",
        "/dev/null",
        &format!("https://127.0.0.1:{port}{path}"),
    ]);
    assert!(out.status.success(), "curl: {}", out.describe());
    let found = receiver.try_wait_for_spans(
        |spans| {
            spans.iter().any(|span| {
                span.is_server()
                    && span.pid() == Some(server.pid())
                    && span.attr_str("url.path") == Some(path.as_str())
            })
        },
        Duration::from_secs(20),
    );
    if found.is_err() {
        agent.fail("no server span of the HTTPS call with only the documented capabilities");
    }
    // KILL is what holding processes at exec needs.
    hold_keeper_of(agent.pid());
    let (_, log) = agent.stop_for_lines_and_log();
    assert!(
        !log.iter().any(|line| line.contains("not held at exec")),
        "processes are not held with the documented capabilities:\n{}",
        log.join("\n")
    );
}

/// A copy of `true` under a new inode: an executable the agent has not inspected, whose exec
/// it therefore holds.
fn new_executable(dir: &TempDir) -> std::path::PathBuf {
    let copy = dir.join("fresh-true");
    std::fs::copy("/bin/true", &copy).expect("copy /bin/true");
    copy
}

/// The state letter of process `pid` (`R`, `S`, `T` for stopped, `Z` for a zombie), `None`
/// once it is gone.
fn state_of(pid: u32) -> Option<String> {
    stat_field(pid, 0)
}

/// Starts `program` without a terminal and waits until it is seen stopped at its exec; fails
/// if it ends (or runs on) without ever being stopped.
fn start_held(program: &std::path::Path) -> ChildGuard {
    let mut child = ChildGuard::spawn("fresh true", without_terminal(&mut Command::new(program)));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        let state = state_of(child.pid());
        if state.as_deref() == Some("T") {
            return child;
        }
        assert!(
            child.try_wait().is_none() && Instant::now() < deadline,
            "{} was never held at its exec (state {state:?})",
            program.display()
        );
        // Polling a state the kernel changes by itself; the hold lasts 2 s.
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The hold keeper of the agent `agent`: its child running `apiscope hold-keeper`.
fn hold_keeper_of(agent: u32) -> u32 {
    children(agent)
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|line| String::from_utf8_lossy(&line).contains("hold-keeper"))
        })
        .unwrap_or_else(|| panic!("the agent (pid {agent}) runs no hold keeper"))
}

#[test]
fn a_hold_the_agent_does_not_end_is_ended_at_its_bound_and_counted() {
    let _serial = one_at_a_time();
    let dir = TempDir::new("hold-bound");
    let program = new_executable(&dir);
    let mut agent = Agent::start_exporting(&["--set", LONGEST_HOLD], &[]);
    // Stopped, the agent cannot inspect the file: only its keeper can end the hold.
    agent.signal(libc::SIGSTOP);
    let mut held = start_held(&program);
    let status = held.wait_timeout(COMMAND_TIMEOUT);
    agent.signal(libc::SIGCONT);
    assert!(
        status.is_some_and(|status| status.success()),
        "the held process did not run to its end: {status:?}"
    );
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        let metrics = agent.get("/metrics");
        let expired = metric_sample(&metrics, "apiscope_exec_holds_expired_total");
        if expired == 1 {
            break;
        }
        assert!(
            expired == 0 && Instant::now() < deadline,
            "expected one expired hold:\n{metrics}"
        );
        // Polling cadence of a counter the agent publishes every second.
        std::thread::sleep(Duration::from_millis(250));
    }
    let (_, log) = agent.stop_for_lines_and_log();
    assert!(
        log.iter()
            .any(|line| line.contains(&format!("process {} was held for 2000 ms", held.pid()))),
        "no warning names the process:\n{}",
        log.join("\n")
    );
}

#[test]
fn a_crash_ends_every_hold_and_the_keeper_with_it() {
    let _serial = one_at_a_time();
    let dir = TempDir::new("hold-crash");
    let program = new_executable(&dir);
    let mut agent = Agent::start_exporting(&["--set", LONGEST_HOLD], &[]);
    let keeper = hold_keeper_of(agent.pid());
    agent.signal(libc::SIGSTOP);
    let mut held = start_held(&program);
    agent.kill();
    let status = held.wait_timeout(COMMAND_TIMEOUT);
    assert!(
        status.is_some_and(|status| status.success()),
        "the held process did not run to its end: {status:?}"
    );
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    // Its new parent may be slow to reap it: a zombie has ended.
    while state_of(keeper).is_some_and(|state| state != "Z") {
        assert!(
            Instant::now() < deadline,
            "the hold keeper (pid {keeper}) outlived the agent"
        );
        // Polling for an exit the keeper makes by itself.
        std::thread::sleep(Duration::from_millis(20));
    }
}
