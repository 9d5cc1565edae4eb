//! The floor: the same load with *empty* eBPF programs on the agent's hooks, attached by
//! bpftrace. What any agent of this shape costs on this kernel before it does any work, so the
//! agent's throughput is read against it (issue 27) and not only against no probes at all.
//!
//! The hooks come from the agent itself (the `HOOK` column of `apiscope check --verbose`), so
//! the floor follows the probe table. Two approximations, both named in benchmarks.md:
//! - bpftrace 0.17 has no BTF-typed tracepoints, so a `tp_btf` hook gets the classic tracepoint
//!   of the same event (a little dearer);
//! - Go's return probes sit at each `RET` of the function, which bpftrace cannot place, so the
//!   Go scenarios have no floor.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::process::{self, Guarded};

/// How long bpftrace has to compile and attach its programs.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the tracepoints' formats are (the agent mounts tracefs if needed).
const TRACEFS_EVENTS: &str = "/sys/kernel/tracing/events";

/// The agent's hooks, as `check --verbose` lists them.
#[derive(Clone, Debug)]
pub struct Hooks {
    /// The kernel hooks as bpftrace probes (`tracepoint:CATEGORY:NAME`).
    kernel: Vec<String>,
    /// `uprobe:F1,F2` and `uretprobe:F1,F2` hooks of the OpenSSL programs.
    tls: Vec<String>,
}

impl Hooks {
    /// Runs `BIN check --verbose` and reads its program table.
    pub fn of_agent(bin: &Path) -> Result<Self> {
        let output = Command::new(bin)
            .args(["check", "--verbose"])
            .stderr(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {} check --verbose", bin.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let hooks = Self::parse(&stdout);
        if hooks.kernel.is_empty() {
            bail!("`apiscope check --verbose` listed no hooks:\n{stdout}");
        }
        Ok(hooks)
    }

    /// The `HOOK` column of the `PROGRAM` table.
    fn parse(table: &str) -> Self {
        let mut hooks = Self {
            kernel: Vec::new(),
            tls: Vec::new(),
        };
        let rows = table
            .lines()
            .skip_while(|line| !line.starts_with("PROGRAM"))
            .skip(1)
            .take_while(|line| !line.trim().is_empty());
        for row in rows {
            let Some(hook) = row.split_whitespace().last() else {
                continue;
            };
            if let Some(probe) = tracepoint(hook) {
                hooks.kernel.push(probe);
            } else if hook.starts_with("uprobe:SSL_") || hook.starts_with("uretprobe:SSL_") {
                hooks.tls.push(hook.to_owned());
            }
        }
        hooks
    }

    /// The bpftrace program: an empty action on every kernel hook and, with `libssl`, on each
    /// OpenSSL function the agent probes in it.
    pub fn script(&self, libssl: Option<&Path>) -> String {
        let mut probes = self.kernel.clone();
        if let Some(library) = libssl {
            for hook in &self.tls {
                let Some((kind, functions)) = hook.split_once(':') else {
                    continue;
                };
                probes.extend(
                    functions
                        .split(',')
                        .filter(|function| function.starts_with("SSL_"))
                        .map(|function| format!("{kind}:{}:{function}", library.display())),
                );
            }
        }
        probes.sort();
        probes.dedup();
        format!("{} {{}}\n", probes.join(",\n"))
    }
}

/// The classic tracepoint of a `tracepoint:` or `tp_btf:` hook; `None` for other hooks, or if
/// tracefs has no such event.
fn tracepoint(hook: &str) -> Option<String> {
    if hook.starts_with("tracepoint:") {
        return Some(hook.to_owned());
    }
    let name = hook.strip_prefix("tp_btf:")?;
    let category = fs::read_dir(TRACEFS_EVENTS)
        .ok()?
        .flatten()
        .find(|entry| entry.path().join(name).is_dir())?;
    Some(format!(
        "tracepoint:{}:{name}",
        category.file_name().to_string_lossy()
    ))
}

/// The OpenSSL library process `pid` has mapped, from its memory maps.
pub fn libssl_of(pid: i64) -> Result<PathBuf> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps"))
        .with_context(|| format!("cannot read the maps of {pid}"))?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            Path::new(path)
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("libssl.so"))
        })
        .map(PathBuf::from)
        .with_context(|| format!("process {pid} maps no libssl"))
}

/// bpftrace running the floor's empty programs; killed if dropped before [`Floor::stop`].
pub struct Floor {
    guard: Guarded,
}

/// What bpftrace prints once its probes are attached (the script's `BEGIN` action: bpftrace
/// fires `BEGIN` after attaching every other probe).
const ATTACHED: &str = "floor attached";

impl Floor {
    /// Starts bpftrace on `script` (its output in `DIR/floor.log`) and waits (bounded) until
    /// its probes are attached.
    pub fn attach(script: &str, dir: &Path) -> Result<Self> {
        let program = dir.join("floor.bt");
        let log = dir.join("floor.log");
        fs::write(
            &program,
            format!("{script}BEGIN {{ printf(\"{ATTACHED}\\n\"); }}\n"),
        )
        .with_context(|| format!("cannot write {}", program.display()))?;
        let output = fs::File::create(&log)?;
        let mut cmd = Command::new("bpftrace");
        cmd.arg(&program).stdout(output.try_clone()?).stderr(output);
        let mut guard = Guarded::spawn("bpftrace", &mut cmd)?;
        let started = Instant::now();
        loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            if text.contains(ATTACHED) {
                return Ok(Self { guard });
            }
            if let Some(exit) = guard.try_exit()? {
                bail!("bpftrace ended ({}): {text}", exit.describe());
            }
            if started.elapsed() > ATTACH_TIMEOUT {
                bail!("bpftrace did not attach within {ATTACH_TIMEOUT:?}: {text}");
            }
            process::sleep(Duration::from_millis(50))?;
        }
    }

    /// Detaches the programs: bpftrace ends on SIGTERM.
    pub fn stop(mut self) -> Result<()> {
        self.guard.stop(Duration::from_secs(10)).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
PROGRAM   GROUP   VERIFIED INSNS   OF BUDGET  HOOK
sock_enter_send_length  core  176  0.1%  tp_btf:sock_send_length
syscalls_enter_read  core  125  0.1%  tracepoint:syscalls:sys_enter_read
openssl_enter_ssl_read  tls_openssl  85  0.0%  uprobe:SSL_read,gnutls_record_recv
openssl_exit_ssl_io  tls_openssl  85  0.0%  uretprobe:SSL_read,gnutls_record_recv
go_tls_return  tls_go  6000  3.0%  uprobe:crypto/tls.(*Conn).Write+RET
handshake_copy  tls_handshake  5000  2.5%  tail_call:0

NEXT TABLE
";

    #[test]
    fn the_script_covers_the_kernel_hooks_and_the_openssl_functions_in_libssl() {
        let hooks = Hooks::parse(TABLE);
        let plain = hooks.script(None);
        assert!(
            plain.contains("tracepoint:syscalls:sys_enter_read"),
            "{plain}"
        );
        assert!(!plain.contains("uprobe"), "{plain}");
        let tls = hooks.script(Some(Path::new("/lib/libssl.so.3")));
        assert!(tls.contains("uprobe:/lib/libssl.so.3:SSL_read"), "{tls}");
        assert!(tls.contains("uretprobe:/lib/libssl.so.3:SSL_read"), "{tls}");
        assert!(
            !tls.contains("gnutls") && !tls.contains("crypto/tls"),
            "{tls}"
        );
        assert!(tls.trim_end().ends_with("{}"), "{tls}");
    }
}
