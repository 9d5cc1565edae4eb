//! The load generator: Debian's `wrk`, at saturation or paced to a fixed rate, and the parsing
//! of its report.
//!
//! wrk has no rate option: a fixed rate is a Lua script whose `delay()` makes each connection
//! wait a fixed time before each request, so `connections x 1000 / delay_ms` requests per second
//! (a little less, since the response time adds to the delay).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use super::process::Guarded;
use crate::display;

/// The wrk binary (Debian's package).
pub const WRK: &str = "wrk";

/// How long past its own duration wrk may take before it is killed.
const OVERRUN: Duration = Duration::from_secs(30);

/// One wrk invocation.
#[derive(Clone, Debug)]
pub struct Load {
    /// The URL, always on 127.0.0.1.
    pub url: String,
    /// wrk threads (`-t`).
    pub threads: u32,
    /// Open connections (`-c`).
    pub connections: u32,
    /// Test duration (`-d`).
    pub duration: Duration,
    /// Requests per second per connection, or `None` for as fast as possible.
    pub rate_per_connection: Option<u32>,
}

/// What wrk reported.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WrkReport {
    /// wrk's pid, whose spans are the client side.
    pub pid: i64,
    /// Requests completed (`N requests in ...`).
    pub requests: u64,
    /// The measured duration in seconds (`... in 10.00s`).
    pub seconds: f64,
    /// `Requests/sec`.
    pub requests_per_sec: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th-percentile latency, microseconds.
    pub p99_us: f64,
    /// Socket errors: connect, read, write, timeout (zero when wrk prints no such line).
    pub socket_errors: SocketErrors,
    /// `Non-2xx or 3xx responses`.
    pub non_2xx: u64,
}

/// wrk's `Socket errors:` line.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct SocketErrors {
    /// Failed connects.
    pub connect: u64,
    /// Failed reads.
    pub read: u64,
    /// Failed writes.
    pub write: u64,
    /// Requests that timed out.
    pub timeout: u64,
}

impl SocketErrors {
    /// All four added up.
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout
    }
}

impl Load {
    /// Runs wrk to completion (bounded by its duration plus [`OVERRUN`]), keeping its output
    /// in `dir`, and parses the report.
    pub fn run(&self, dir: &Path, tag: &str) -> Result<WrkReport> {
        let output = dir.join(format!("wrk-{tag}.txt"));
        let file = fs::File::create(&output)?;
        let mut cmd = Command::new(WRK);
        cmd.arg(format!("-t{}", self.threads))
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{}s", self.duration.as_secs().max(1)))
            .arg("--latency");
        if let Some(rate) = self.rate_per_connection {
            cmd.arg("-s").arg(pacing_script(dir, rate)?);
        }
        cmd.arg(&self.url).stdout(file.try_clone()?).stderr(file);
        let mut wrk = Guarded::spawn("wrk", &mut cmd)?;
        let pid = i64::from(wrk.pid());
        let exit = wrk
            .wait_interruptible(self.duration + OVERRUN)?
            .with_context(|| format!("`{}` did not finish in time", display(&cmd)))?;
        let text = fs::read_to_string(&output)?;
        if !exit.success() {
            bail!("`{}` failed ({}): {text}", display(&cmd), exit.describe());
        }
        let report = parse(&text)
            .with_context(|| format!("unexpected output of `{}`:\n{text}", display(&cmd)))?;
        Ok(WrkReport { pid, ..report })
    }
}

/// Writes (once) the Lua script that paces each connection to `rate` requests per second.
fn pacing_script(dir: &Path, rate: u32) -> Result<PathBuf> {
    let path = dir.join(format!("pace-{rate}.lua"));
    let delay_ms = 1000 / rate.max(1);
    fs::write(
        &path,
        format!(
            "-- {rate} requests per second per connection\nfunction delay()\n  return {delay_ms}\nend\n"
        ),
    )?;
    Ok(path)
}

/// Parses wrk's report (run with `--latency`).
pub fn parse(text: &str) -> Result<WrkReport> {
    let mut report = WrkReport::default();
    let (mut got_requests, mut got_rate, mut got_p50, mut got_p99) = (false, false, false, false);
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [n, "requests", "in", secs, ..] => {
                report.requests = n.parse()?;
                report.seconds = duration_us(secs.trim_end_matches(','))? / 1e6;
                got_requests = true;
            }
            ["Requests/sec:", rate] => {
                report.requests_per_sec = rate.parse()?;
                got_rate = true;
            }
            ["50%", value] => {
                report.p50_us = duration_us(value)?;
                got_p50 = true;
            }
            ["99%", value] => {
                report.p99_us = duration_us(value)?;
                got_p99 = true;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => report.non_2xx = n.parse()?,
            _ if line.starts_with("Socket errors:") => {
                report.socket_errors = parse_socket_errors(line)?;
            }
            _ => {}
        }
    }
    if !(got_requests && got_rate && got_p50 && got_p99) {
        bail!("no requests, Requests/sec or 50%/99% latency line");
    }
    Ok(report)
}

/// `Socket errors: connect 0, read 1, write 0, timeout 2`.
fn parse_socket_errors(line: &str) -> Result<SocketErrors> {
    let mut errors = SocketErrors::default();
    let list = line.trim_start_matches("Socket errors:");
    for item in list.split(',') {
        let mut parts = item.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            bail!("bad socket errors: {line}");
        };
        let value: u64 = value.parse()?;
        match name {
            "connect" => errors.connect = value,
            "read" => errors.read = value,
            "write" => errors.write = value,
            "timeout" => errors.timeout = value,
            _ => bail!("unknown socket error kind `{name}`"),
        }
    }
    Ok(errors)
}

/// A wrk duration (`812.00us`, `1.23ms`, `10.00s`, `1.50m`, `1.00h`) in microseconds.
fn duration_us(text: &str) -> Result<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in `{text}`"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("bad number in `{text}`"))?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => bail!("unknown unit in `{text}`"),
    };
    Ok(number * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 10s test @ http://127.0.0.1:40001/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms  704.12us  22.10ms   89.12%
    Req/Sec    21.50k     1.20k   24.00k    70.00%
  Latency Distribution
     50%    1.40ms
     75%    1.70ms
     90%    2.10ms
     99%    3.90ms
  427843 requests in 10.00s, 97.51MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 2
Requests/sec:  42774.21
Transfer/sec:      9.75MB
";

    #[test]
    fn parses_a_report() {
        let report = parse(REPORT).unwrap();
        assert_eq!(report.requests, 427_843);
        assert!((report.seconds - 10.0).abs() < 1e-9);
        assert!((report.requests_per_sec - 42_774.21).abs() < 1e-6);
        assert!((report.p50_us - 1_400.0).abs() < 1e-6);
        assert!((report.p99_us - 3_900.0).abs() < 1e-6);
        assert_eq!(report.socket_errors.read, 3);
        assert_eq!(report.socket_errors.timeout, 1);
        assert_eq!(report.socket_errors.total(), 4);
        assert_eq!(report.non_2xx, 2);
    }

    #[test]
    fn durations() {
        assert_eq!(duration_us("812.00us").unwrap(), 812.0);
        assert_eq!(duration_us("2.00s").unwrap(), 2e6);
        assert!(duration_us("3.0xs").is_err());
    }

    #[test]
    fn rejects_a_failed_run() {
        assert!(parse("unable to connect to 127.0.0.1:1 Connection refused\n").is_err());
    }
}
