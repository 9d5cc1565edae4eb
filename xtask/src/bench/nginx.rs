//! The server under test: Debian's nginx, run in the foreground from a generated configuration
//! in the benchmark's temporary directory, on free 127.0.0.1 ports.
//!
//! One server answers `GET /` with a fixed ~100-byte body ([`SMALL_BODY`]) and
//! `GET /static/64k.bin` with a 64 KiB file read through user memory (`sendfile off`), over plain
//! HTTP and over TLS (a self-signed certificate made with `openssl`), both HTTP/1.1 with
//! keep-alive. A third port serves `stub_status`, whose request counter tells exactly how many
//! requests nginx handled in a run.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    process::{self, Guarded},
    server::{ServerUnderTest, status_query},
};
use crate::{display, run};

/// The nginx binary (Debian's package).
pub const NGINX: &str = "/usr/sbin/nginx";

/// The small response body: 100 bytes.
pub const SMALL_BODY: &str = "apiscope overhead benchmark: a small, fixed, keep-alive HTTP/1.1 response of 100 bytes...........ok\n";

/// Path of the small response.
pub const SMALL_PATH: &str = "/";
/// Path of the 64 KiB response.
pub const LARGE_PATH: &str = "/static/64k.bin";
/// Size of the large response body.
pub const LARGE_BYTES: usize = 64 * 1024;

/// How long nginx has to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long nginx has to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running nginx (master and one worker); stopped when dropped.
pub struct Nginx {
    /// The master process (its group holds the worker).
    guard: Guarded,
    /// Plain HTTP port.
    http_port: u16,
    /// TLS port.
    https_port: u16,
    /// `stub_status` port (plain HTTP, `GET /status`).
    status_port: u16,
    /// Status queries made so far, which nginx counts as requests.
    status_queries: std::cell::Cell<u64>,
    /// nginx's own error log, shown when something fails.
    error_log: PathBuf,
}

impl Nginx {
    /// Writes the certificate, the 64 KiB file and the configuration under `dir`, starts nginx
    /// and waits until every port accepts connections.
    pub fn start(dir: &Path) -> Result<Self> {
        let www = dir.join("www/static");
        fs::create_dir_all(&www).with_context(|| format!("cannot create {}", www.display()))?;
        // Workers run as `nobody` when nginx starts as root: let them read the tree.
        for path in [dir, &dir.join("www"), &www] {
            fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
        }
        let large: Vec<u8> = (0..LARGE_BYTES).map(|i| b'a' + (i % 26) as u8).collect();
        fs::write(www.join("64k.bin"), large)?;

        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        make_certificate(&cert, &key)?;

        let ports = free_ports::<3>()?;
        let (http_port, https_port, status_port) = (ports[0], ports[1], ports[2]);
        let error_log = dir.join("error.log");
        let conf = dir.join("nginx.conf");
        let text = config(dir, &cert, &key, http_port, https_port, status_port);
        fs::write(&conf, text).with_context(|| format!("cannot write {}", conf.display()))?;

        let stderr = fs::File::create(dir.join("nginx.stderr"))?;
        let mut cmd = Command::new(NGINX);
        cmd.arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(&error_log)
            .stdout(stderr.try_clone()?)
            .stderr(stderr);
        println!("+ {}", display(&cmd));
        let guard = Guarded::spawn("nginx", &mut cmd)?;
        let mut nginx = Self {
            guard,
            http_port,
            https_port,
            status_port,
            status_queries: std::cell::Cell::new(0),
            error_log,
        };
        nginx.wait_listening()?;
        Ok(nginx)
    }

    /// Polls every port until it accepts a connection, bounded by [`START_TIMEOUT`].
    fn wait_listening(&mut self) -> Result<()> {
        let end = Instant::now() + START_TIMEOUT;
        for port in [self.http_port, self.https_port, self.status_port] {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            loop {
                if let Some(exit) = self.guard.try_exit()? {
                    bail!(
                        "nginx exited at start ({}): {}",
                        exit.describe(),
                        self.error_log_tail()
                    );
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    break;
                }
                if Instant::now() >= end {
                    bail!(
                        "nginx not listening on {addr} after {START_TIMEOUT:?}: {}",
                        self.error_log_tail()
                    );
                }
                process::sleep(Duration::from_millis(50))?;
            }
        }
        Ok(())
    }

    /// The last lines of nginx's error log.
    fn error_log_tail(&self) -> String {
        let text = fs::read_to_string(&self.error_log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// Stops nginx (SIGTERM, then SIGKILL), waiting for it.
    pub fn stop(mut self) -> Result<()> {
        self.guard.stop(STOP_GRACE).map(drop)
    }
}

impl ServerUnderTest for Nginx {
    fn service(&self) -> &'static str {
        "nginx"
    }

    fn base_url(&self, tls: bool) -> Option<String> {
        Some(if tls {
            format!("https://127.0.0.1:{}", self.https_port)
        } else {
            format!("http://127.0.0.1:{}", self.http_port)
        })
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(exit) = self.guard.try_exit()? {
            bail!(
                "nginx exited ({}): {}",
                exit.describe(),
                self.error_log_tail()
            );
        }
        Ok(())
    }

    /// `stub_status`'s count, less the status queries (this one included), which it counts.
    fn requests_handled(&self) -> Result<u64> {
        self.status_queries.set(self.status_queries.get() + 1);
        let response = status_query(self.status_port, "/status")?;
        let handled = parse_stub_status(&response)
            .with_context(|| format!("unexpected stub_status: {response}"))?;
        Ok(handled.saturating_sub(self.status_queries.get()))
    }

    /// nginx's workers: the master's children.
    fn serving_pids(&self) -> Result<Vec<i64>> {
        let master = self.guard.pid();
        let mut workers = Vec::new();
        for entry in fs::read_dir("/proc")? {
            let name = entry?.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<i64>().ok()) else {
                continue;
            };
            // Processes may exit while the directory is walked.
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let ppid = stat
                .rfind(')')
                .and_then(|end| stat[end + 1..].split_whitespace().nth(1))
                .and_then(|ppid| ppid.parse::<i64>().ok());
            if ppid == Some(i64::from(master)) {
                workers.push(pid);
            }
        }
        if workers.is_empty() {
            bail!("nginx (pid {master}) has no worker");
        }
        Ok(workers)
    }
}

/// The `requests` counter of a `stub_status` response (the third number of the line after
/// `server accepts handled requests`).
fn parse_stub_status(response: &str) -> Option<u64> {
    let mut lines = response.lines();
    lines.find(|line| {
        line.trim_start()
            .starts_with("server accepts handled requests")
    })?;
    lines.next()?.split_whitespace().nth(2)?.parse().ok()
}

/// A self-signed P-256 certificate for 127.0.0.1, valid for two days.
fn make_certificate(cert: &Path, key: &Path) -> Result<()> {
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(key)
        .arg("-out")
        .arg(cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    run(&mut cmd)
}

/// `N` distinct free TCP ports on 127.0.0.1 (bound together, then released for nginx).
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot bind 127.0.0.1:0")?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// The nginx configuration: everything (pid file, logs, temporary files) under `dir`.
fn config(
    dir: &Path,
    cert: &Path,
    key: &Path,
    http_port: u16,
    https_port: u16,
    status_port: u16,
) -> String {
    let dir = dir.display();
    let cert = cert.display();
    let key = key.display();
    let body = SMALL_BODY.escape_default();
    format!(
        r#"# Generated by `cargo xtask bench`.
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 8192;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    default_type text/plain;
    # Keep-alive for the whole run: the benchmark measures calls, not connection set-up.
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    server {{
        listen 127.0.0.1:{http_port} backlog=4096;
        listen 127.0.0.1:{https_port} ssl backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {dir}/www;

        location = {SMALL_PATH} {{
            return 200 "{body}";
        }}
        location /static/ {{
            # Through user memory (read + write), as a proxy or an application would send it.
            sendfile off;
        }}
    }}

    server {{
        listen 127.0.0.1:{status_port};
        location = /status {{
            stub_status;
        }}
    }}
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_body_is_100_bytes() {
        assert_eq!(SMALL_BODY.len(), 100);
    }

    #[test]
    fn stub_status_requests() {
        let response = "HTTP/1.1 200 OK\r\nServer: nginx\r\n\r\nActive connections: 1 \n\
                        server accepts handled requests\n 12 12 345 \n\
                        Reading: 0 Writing: 1 Waiting: 0 \n";
        assert_eq!(parse_stub_status(response), Some(345));
    }
}
