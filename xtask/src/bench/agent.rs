//! The agent under test: `apiscope run` exporting to the sink over OTLP/gRPC, started fresh for
//! each measured run and stopped with SIGTERM so that it flushes, and what it costs.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use super::process::{self, Guarded};

/// How long the agent has to attach its probes and log `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the agent has to drain, flush and exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// The environment of every agent run: short batch delays so that little is in flight at
/// SIGTERM, metrics every second; everything else the defaults.
pub const ENV: &[(&str, &str)] = &[
    ("RUST_LOG", "info"),
    ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
];

/// A running agent; killed if dropped before [`Agent::stop`].
pub struct Agent {
    /// The process.
    guard: Guarded,
    /// Its stderr (the log).
    log: PathBuf,
    /// Its CPU seconds when it logged `ready` (attaching, scanning processes).
    cpu_at_ready: f64,
    /// Seconds from start to `ready`.
    ready_after: f64,
}

/// What one agent run cost and what it reported about loss.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AgentReport {
    /// Seconds from start until it logged `ready`.
    pub ready_after_s: f64,
    /// CPU seconds (user + system, all threads) spent before `ready`: start-up, not per call.
    pub startup_cpu_s: f64,
    /// CPU seconds from `ready` to exit: capture, decoding, export and the final flush.
    pub cpu_s: f64,
    /// Peak resident set size (`VmHWM`) just before SIGTERM, in KiB.
    pub peak_rss_kib: u64,
    /// Seconds from SIGTERM to exit.
    pub exit_after_s: f64,
    /// The last `capture totals:` line's counters (`events_sent`, `ring_buffer_full`, ...).
    pub capture: BTreeMap<String, u64>,
    /// The `OTLP totals:` line's counters (`spans_exported`, `spans_dropped`, ...).
    pub otlp: BTreeMap<String, u64>,
    /// Time spent in the agent's eBPF programs (in the traced processes' context, so not in
    /// `cpu_s`), in ns, with `--bpf-stats` (`kernel.bpf_stats_enabled`).
    pub bpf_run_time_ns: Option<u64>,
    /// Runs of the agent's eBPF programs, with `--bpf-stats`.
    pub bpf_run_count: Option<u64>,
    /// Log lines at WARN or ERROR level, as printed.
    pub warnings: Vec<String>,
}

impl AgentReport {
    /// A counter of the `capture totals:` line, 0 if absent.
    pub fn capture_counter(&self, name: &str) -> u64 {
        self.capture.get(name).copied().unwrap_or(0)
    }

    /// A counter of the `OTLP totals:` line, 0 if absent.
    pub fn otlp_counter(&self, name: &str) -> u64 {
        self.otlp.get(name).copied().unwrap_or(0)
    }
}

impl Agent {
    /// Starts `apiscope run --otlp-endpoint ENDPOINT --otlp-protocol grpc ARGS...` with [`ENV`],
    /// its stderr in `log`, and waits (bounded) for its `ready` line.
    pub fn start(bin: &Path, endpoint: &str, log: &Path, args: &[&str]) -> Result<Self> {
        let file = fs::File::create(log)?;
        let mut cmd = Command::new(bin);
        cmd.args([
            "run",
            "--otlp-endpoint",
            endpoint,
            "--otlp-protocol",
            "grpc",
        ])
        .args(args)
        .envs(ENV.iter().copied())
        .stdout(Stdio::null())
        .stderr(file);
        let started = Instant::now();
        let mut guard = Guarded::spawn("apiscope", &mut cmd)?;
        loop {
            if let Some(exit) = guard.try_exit()? {
                bail!(
                    "apiscope exited before `ready` ({}): {}",
                    exit.describe(),
                    fs::read_to_string(log).unwrap_or_default()
                );
            }
            let text = fs::read_to_string(log).unwrap_or_default();
            if text.lines().any(|line| line.contains(" ready: ")) {
                break;
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!("apiscope not ready after {READY_TIMEOUT:?}: {text}");
            }
            process::sleep(Duration::from_millis(20))?;
        }
        let ready_after = started.elapsed().as_secs_f64();
        let cpu_at_ready = process::cpu_seconds(guard.pid())?;
        Ok(Self {
            guard,
            log: log.to_owned(),
            cpu_at_ready,
            ready_after,
        })
    }

    /// Reads its peak RSS, sends SIGTERM, waits (bounded) for it to flush and exit, and
    /// parses its totals. Fails if it did not exit with status 0.
    pub fn stop(mut self) -> Result<AgentReport> {
        let peak_rss_kib = process::peak_rss_kib(self.guard.pid())?;
        let bpf = bpf_program_stats(self.guard.pid());
        let stopping = Instant::now();
        self.guard.signal(libc::SIGTERM);
        let exit = match self.guard.wait_timeout(EXIT_TIMEOUT)? {
            Some(exit) => exit,
            None => {
                let exit = self.guard.stop(Duration::ZERO)?;
                bail!("apiscope did not exit within {EXIT_TIMEOUT:?} of SIGTERM ({exit:?})");
            }
        };
        let exit_after_s = stopping.elapsed().as_secs_f64();
        let log = fs::read_to_string(&self.log)
            .with_context(|| format!("cannot read {}", self.log.display()))?;
        if !exit.success() {
            bail!("apiscope ended with {}: {log}", exit.describe());
        }
        let mut report = parse_log(&log);
        report.ready_after_s = self.ready_after;
        report.startup_cpu_s = self.cpu_at_ready;
        report.cpu_s = (exit.cpu.as_secs_f64() - self.cpu_at_ready).max(0.0);
        report.peak_rss_kib = peak_rss_kib;
        report.exit_after_s = exit_after_s;
        if let Some((run_time_ns, run_count)) = bpf {
            report.bpf_run_time_ns = Some(run_time_ns);
            report.bpf_run_count = Some(run_count);
        }
        if report.otlp.is_empty() {
            bail!("apiscope logged no `OTLP totals:` line: {log}");
        }
        Ok(report)
    }
}

/// The summed `run_time_ns` and `run_cnt` of the eBPF programs process `pid` holds, from
/// `/proc/PID/fdinfo`; `None` unless `kernel.bpf_stats_enabled` is 1 (the kernel only counts
/// then, though fdinfo always shows the fields) or no program is found.
fn bpf_program_stats(pid: libc::pid_t) -> Option<(u64, u64)> {
    if fs::read_to_string(BPF_STATS_SYSCTL).ok()?.trim() != "1" {
        return None;
    }
    let mut seen = std::collections::BTreeSet::new();
    let (mut run_time_ns, mut run_count, mut any) = (0, 0, false);
    for entry in fs::read_dir(format!("/proc/{pid}/fdinfo")).ok()? {
        let Ok(info) = fs::read_to_string(entry.ok()?.path()) else {
            continue;
        };
        let field = |name: &str| -> Option<u64> {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        };
        // Program fds (not links, which name a prog_id too but carry no statistics).
        if let (Some(id), Some(time), Some(count)) =
            (field("prog_id:"), field("run_time_ns:"), field("run_cnt:"))
            && seen.insert(id)
        {
            run_time_ns += time;
            run_count += count;
            any = true;
        }
    }
    any.then_some((run_time_ns, run_count))
}

/// Turns `kernel.bpf_stats_enabled` on while it lives, and restores the previous value.
pub struct BpfStats {
    /// The value to restore.
    previous: String,
}

/// The sysctl behind [`BpfStats`].
const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    /// Enables the statistics (a few tens of ns per program run while on).
    pub fn enable() -> Result<Self> {
        let previous = fs::read_to_string(BPF_STATS_SYSCTL)
            .with_context(|| format!("cannot read {BPF_STATS_SYSCTL}"))?;
        fs::write(BPF_STATS_SYSCTL, "1")
            .with_context(|| format!("cannot write {BPF_STATS_SYSCTL}"))?;
        Ok(Self {
            previous: previous.trim().to_owned(),
        })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(error) = fs::write(BPF_STATS_SYSCTL, &self.previous) {
            eprintln!("warning: cannot restore {BPF_STATS_SYSCTL}: {error}");
        }
    }
}

/// The counters of the last `capture totals:` line and of the `OTLP totals:` line, and the
/// warnings, of an agent log.
fn parse_log(log: &str) -> AgentReport {
    let mut report = AgentReport::default();
    for line in log.lines() {
        if let Some((_, list)) = line.split_once("capture totals: ") {
            report.capture = counters(list);
        } else if let Some((_, list)) = line.split_once("OTLP totals: ") {
            report.otlp = counters(list);
        }
        if (line.contains(" WARN ") || line.contains(" ERROR ")) && report.warnings.len() < 20 {
            report.warnings.push(line.to_owned());
        }
    }
    report
}

/// `a=1, b=2` as a map; items that are not `name=number` are skipped.
fn counters(list: &str) -> BTreeMap<String, u64> {
    list.split(',')
        .filter_map(|item| {
            let (name, value) = item.trim().split_once('=')?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_totals() {
        let log = "\
[2026-11-22T06:22:49Z INFO  agent::pipeline] ready: capturing socket and TLS traffic (pid 1)
[2026-11-22T06:22:55Z WARN  agent::capture::openssl] TLS capture not attached to /proc/2/exe
[2026-11-22T06:23:49Z INFO  agent::pipeline] capture totals: events_sent=10, ring_buffer_full=0, records_read=10, records_malformed=0
[2026-11-22T06:23:55Z INFO  agent::pipeline] capture totals: events_sent=134, ring_buffer_full=7, records_read=127, records_malformed=0
[2026-11-22T06:23:59Z INFO  agent::pipeline] OTLP totals: spans_exported=5, spans_dropped=1, spans_failed=0, metric_exports_failed=0
";
        let report = parse_log(log);
        assert_eq!(report.capture_counter("events_sent"), 134);
        assert_eq!(report.capture_counter("ring_buffer_full"), 7);
        assert_eq!(report.otlp_counter("spans_exported"), 5);
        assert_eq!(report.otlp_counter("spans_dropped"), 1);
        assert_eq!(report.warnings.len(), 1);
    }
}
