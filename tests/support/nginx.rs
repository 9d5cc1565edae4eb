//! Debian's nginx as an HTTP/2 peer: run in the foreground (master and one worker) from a
//! configuration written in the test's temporary directory, serving HTTP/2 with prior
//! knowledge (h2c) on one free 127.0.0.1 port and HTTP/2 over TLS (ALPN `h2`) on another.
//! `GET /ok` answers 200 with a short body, every other path 404.

use std::fs;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{ChildGuard, TempDir, children, free_port, make_cert};

/// The nginx binary of Debian's package.
const NGINX: &str = "/usr/sbin/nginx";
/// How long nginx has to listen on both ports.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long nginx has to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The body of `GET /ok`.
pub const OK_BODY: &str = "ok from nginx over HTTP/2\n";

/// A running nginx; stopped (master and workers) when dropped.
pub struct Nginx {
    master: ChildGuard,
    /// The h2c (prior knowledge) port.
    pub h2c_port: u16,
    /// The TLS port (ALPN `h2`).
    pub tls_port: u16,
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx and waits until both ports accept connections.
    pub fn start(test: &str) -> Nginx {
        let dir = TempDir::new(test);
        let cert = make_cert(&dir);
        let (h2c_port, tls_port) = (free_port(), free_port());
        let root = dir.path().display().to_string();
        let conf = format!(
            r#"daemon off;
master_process on;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{
    worker_connections 256;
}}
http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{h2c_port} http2;
        listen 127.0.0.1:{tls_port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location = /ok {{
            return 200 "{body}";
        }}
        location / {{
            return 404;
        }}
    }}
}}
"#,
            cert = cert.cert.display(),
            key = cert.key.display(),
            body = OK_BODY.escape_default(),
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf).expect("write nginx.conf");
        let mut cmd = Command::new(NGINX);
        cmd.arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let master = ChildGuard::spawn("nginx", &mut cmd);
        let mut nginx = Nginx {
            master,
            h2c_port,
            tls_port,
            dir,
        };
        nginx.wait_listening();
        nginx
    }

    /// Polls both ports (nginx has no other readiness signal) until they accept.
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        for port in [self.h2c_port, self.tls_port] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(status) = self.master.try_wait() {
                    panic!("nginx exited at start ({status:?}): {}", self.error_log());
                }
                assert!(
                    Instant::now() < deadline,
                    "nginx not listening on {port} after {START_TIMEOUT:?}: {}",
                    self.error_log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// nginx's error log, for failure messages.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// The pids of the workers (the master's children), which serve the requests.
    pub fn worker_pids(&self) -> Vec<u32> {
        let master = self.master.pid();
        let workers = children(master);
        assert!(!workers.is_empty(), "nginx (pid {master}) has no worker");
        workers
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let master = self.master.pid();
        // Fast shutdown: the master stops its workers and waits for them before it exits.
        let workers = children(master);
        if self.master.try_wait().is_none() {
            self.master.signal(libc::SIGTERM);
        }
        if self.master.wait_timeout(STOP_GRACE).is_none() {
            // The master is alive, so its workers' pids are still theirs.
            for worker in workers {
                // SAFETY: plain syscall on a child of a process we still hold.
                unsafe {
                    libc::kill(worker as libc::pid_t, libc::SIGKILL);
                }
            }
        }
        // The guard kills and reaps the master if it is still there.
    }
}
