//! Child processes the benchmark starts, and what it reads about them from `/proc`.
//!
//! Every child is a [`Guarded`]: it runs in a process group of its own (so nginx's workers go
//! with their master), and dropping the guard kills that group by its id and reaps the child,
//! on every exit path (errors, panics, and SIGINT/SIGTERM to xtask, which
//! [`install_interrupt_handler`] turns into an error at the next bounded wait).

use std::{
    fs,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::display;

/// How often the bounded waits poll.
const POLL: Duration = Duration::from_millis(20);
/// How long [`Guarded::stop`] and `Drop` wait after SIGKILL before giving up on reaping.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Set by the SIGINT/SIGTERM handler.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set a flag instead of killing xtask, so that the bounded waits
/// fail with an error and every guard's `Drop` stops its child.
pub fn install_interrupt_handler() {
    let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Fails if xtask was asked to stop (SIGINT or SIGTERM).
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps for `duration` in short steps, failing early if xtask is interrupted.
pub fn sleep(duration: Duration) -> Result<()> {
    let end = Instant::now() + duration;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        thread::sleep(POLL.min(end - now));
    }
}

/// How a reaped child ended, with the CPU time it and its reaped children used.
#[derive(Clone, Copy, Debug)]
pub struct Exit {
    /// The raw wait status.
    pub status: libc::c_int,
    /// User plus system CPU time, from `wait4`'s resource usage.
    pub cpu: Duration,
}

impl Exit {
    /// True for a normal exit with status 0.
    pub fn success(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }

    /// The status as text: `exit 0`, `signal 9`.
    pub fn describe(&self) -> String {
        if libc::WIFEXITED(self.status) {
            format!("exit {}", libc::WEXITSTATUS(self.status))
        } else if libc::WIFSIGNALED(self.status) {
            format!("signal {}", libc::WTERMSIG(self.status))
        } else {
            format!("wait status {:#x}", self.status)
        }
    }
}

/// A child process in its own process group, killed (the whole group) and reaped on drop.
pub struct Guarded {
    /// What it is, for messages.
    name: String,
    /// Its pid, which is also its process group id.
    pid: libc::pid_t,
    /// Set once reaped: from then on its pid is never signalled again.
    exit: Option<Exit>,
}

impl Guarded {
    /// Starts `cmd` in a new process group, with stdin from `/dev/null`.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let shown = display(cmd);
        let child = cmd
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name}: `{shown}`"))?;
        let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        // The `Child` handle is dropped without waiting: this guard reaps the pid itself (with
        // `wait4`, to get its CPU time), and dropping a `Child` neither kills nor waits.
        drop(child);
        Ok(Self {
            name: name.to_owned(),
            pid,
            exit: None,
        })
    }

    /// Its pid.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Sends `signal` to the child's whole process group, unless it has been reaped.
    pub fn signal_group(&self, signal: libc::c_int) {
        if self.exit.is_none() {
            // SAFETY: plain syscall; the group id is our own unreaped child's pid, so it
            // cannot have been reused.
            unsafe { libc::kill(-self.pid, signal) };
        }
    }

    /// Sends `signal` to the child only, unless it has been reaped.
    pub fn signal(&self, signal: libc::c_int) {
        if self.exit.is_none() {
            // SAFETY: plain syscall on our own unreaped child.
            unsafe { libc::kill(self.pid, signal) };
        }
    }

    /// Reaps the child if it has exited; never blocks.
    pub fn try_exit(&mut self) -> Result<Option<Exit>> {
        if let Some(exit) = self.exit {
            return Ok(Some(exit));
        }
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to locals; the pid is our child.
        let reaped = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == 0 {
            return Ok(None);
        }
        if reaped < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("wait4 for {} (pid {})", self.name, self.pid));
        }
        let exit = Exit {
            status,
            cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
        };
        self.exit = Some(exit);
        Ok(Some(exit))
    }

    /// Waits up to `timeout` for the child to exit. Does not check for interruption, so that
    /// it can be used while cleaning up.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<Exit>> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.try_exit()? {
                return Ok(Some(exit));
            }
            if Instant::now() >= end {
                return Ok(None);
            }
            thread::sleep(POLL);
        }
    }

    /// Waits up to `timeout` for the child to exit on its own, failing early if xtask is
    /// interrupted.
    pub fn wait_interruptible(&mut self, timeout: Duration) -> Result<Option<Exit>> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.try_exit()? {
                return Ok(Some(exit));
            }
            check_interrupted()?;
            if Instant::now() >= end {
                return Ok(None);
            }
            thread::sleep(POLL);
        }
    }

    /// SIGTERM to the group, up to `grace` for the child to exit, then SIGKILL to the group.
    /// Any process left in the group after the child is reaped is killed at once.
    pub fn stop(&mut self, grace: Duration) -> Result<Exit> {
        if let Some(exit) = self.exit {
            return Ok(exit);
        }
        self.signal_group(libc::SIGTERM);
        let exit = match self.wait_timeout(grace)? {
            Some(exit) => exit,
            None => {
                eprintln!(
                    "warning: {} (pid {}) still running {grace:?} after SIGTERM: SIGKILL",
                    self.name, self.pid
                );
                self.signal_group(libc::SIGKILL);
                self.wait_timeout(KILL_WAIT)?
                    .with_context(|| format!("{} (pid {}) survived SIGKILL", self.name, self.pid))?
            }
        };
        // Leftovers of the group (nginx workers whose master died): right after reaping, the
        // group id cannot have been reused yet.
        // SAFETY: plain syscall; ESRCH when the group is empty.
        unsafe { libc::kill(-self.pid, libc::SIGKILL) };
        Ok(exit)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if self.exit.is_some() {
            return;
        }
        self.signal_group(libc::SIGKILL);
        match self.wait_timeout(KILL_WAIT) {
            Ok(Some(_)) => {}
            Ok(None) => eprintln!(
                "warning: {} (pid {}) not reaped {KILL_WAIT:?} after SIGKILL",
                self.name, self.pid
            ),
            Err(error) => eprintln!("warning: {error:#}"),
        }
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(u64::try_from(tv.tv_sec).unwrap_or(0))
        + Duration::from_micros(u64::try_from(tv.tv_usec).unwrap_or(0))
}

/// Raises this process's RLIMIT_NOFILE (inherited by wrk and nginx) to `want`, or to the hard
/// limit if raising that is not allowed. Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if limit.rlim_cur >= want {
        return Ok(limit.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: limit.rlim_max.max(want),
    };
    // SAFETY: valid pointer to a local.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(want);
    }
    // Without CAP_SYS_RESOURCE only the soft limit can move, up to the hard one.
    let soft = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: valid pointer to a local.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(limit.rlim_max)
}

/// Clock ticks per second, for the times in `/proc/PID/stat`.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// User plus system CPU time of process `pid` so far (all its threads), from `/proc/PID/stat`
/// (`utime` + `stime`, clock ticks converted with `sysconf(_SC_CLK_TCK)`).
pub fn cpu_seconds(pid: libc::pid_t) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_stat_cpu(&stat)
        .map(|ticks| ticks as f64 / clock_ticks())
        .with_context(|| format!("unexpected {path}: {stat}"))
}

/// `utime + stime` in clock ticks from the text of a `/proc/PID/stat`.
fn parse_stat_cpu(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may contain anything, so count fields after the
    // last `)`: field 3 (state) comes first, utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The peak resident set size of process `pid` in KiB (`VmHWM` of `/proc/PID/status`).
pub fn peak_rss_kib(pid: libc::pid_t) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .with_context(|| format!("no VmHWM in {path}"))
}

/// CPU time used so far by this process (all threads), from `getrusage(RUSAGE_SELF)`.
pub fn own_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a local.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

/// Busy fraction of all CPUs over `window`, from `/proc/stat` (to warn when the machine is
/// not idle before measuring).
pub fn busy_fraction(window: Duration) -> Result<f64> {
    fn sample() -> Result<(u64, u64)> {
        let stat = fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
        let line = stat.lines().next().context("empty /proc/stat")?;
        let values: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
        Ok((values.iter().take(8).sum(), idle))
    }
    let (total0, idle0) = sample()?;
    sleep(window)?;
    let (total1, idle1) = sample()?;
    let total = total1.saturating_sub(total0);
    if total == 0 {
        return Ok(0.0);
    }
    Ok(1.0 - idle1.saturating_sub(idle0) as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_counts_fields_after_the_command_name() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 30 0 0 20 0 9 0 1234 5678 90 18446744073709551615";
        assert_eq!(parse_stat_cpu(stat), Some(280));
    }
}
