//! What the end-to-end benchmark measures: one load shape per scenario, and which of the
//! issue's targets apply to it.

use std::time::Duration;

use anyhow::{Result, anyhow};

use super::{nginx, server::ServerUnderTest, wrk::Load};

/// Which server a scenario loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// Debian's nginx ([`super::nginx`]), TLS by OpenSSL.
    Nginx,
    /// A Go `net/http` server ([`super::go_server`]), TLS by Go's `crypto/tls`.
    Go,
}

/// One load shape against one server.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Short name, used in tables, file names and `--scenario`.
    pub name: &'static str,
    /// One line for people.
    pub about: &'static str,
    /// The server loaded.
    pub server: Server,
    /// Over TLS (the agent reads plaintext at OpenSSL's `SSL_read`/`SSL_write`, or at Go's
    /// `crypto/tls`).
    pub tls: bool,
    /// The URL path.
    pub path: &'static str,
    /// wrk threads.
    pub threads: u32,
    /// Open connections.
    pub connections: u32,
    /// Requests per second per connection, or `None` for saturation.
    pub rate_per_connection: Option<u32>,
    /// The peak-RSS target applies (the small-response scenarios at saturation).
    pub rss_target: bool,
    /// Flags added to the agent's command line (the defaults otherwise).
    pub agent_args: &'static [&'static str],
    /// The agent exports only some spans: completeness (spans per request) does not apply.
    pub samples_spans: bool,
}

/// The agent's flags that export one span in ten, by trace id.
const TEN_PERCENT_OF_SPANS: &[&str] = &[
    "--set",
    "export.otlp.sampling.sampler=traceidratio",
    "--set",
    "export.otlp.sampling.sampler_arg=0.1",
];

impl Scenario {
    /// Every scenario, in the order they run.
    pub fn all() -> Vec<Self> {
        let small = |name, about, tls| Self {
            name,
            about,
            server: Server::Nginx,
            tls,
            path: nginx::SMALL_PATH,
            threads: 2,
            connections: 64,
            rate_per_connection: None,
            rss_target: true,
            agent_args: &[],
            samples_spans: false,
        };
        vec![
            small(
                "plain-small",
                "plain HTTP, 100-byte responses, 64 connections, saturation",
                false,
            ),
            small(
                "tls-small",
                "TLS, 100-byte responses, 64 connections, saturation",
                true,
            ),
            Self {
                agent_args: TEN_PERCENT_OF_SPANS,
                samples_spans: true,
                ..small(
                    "plain-small-spans-10pct",
                    "plain-small with 10 % of spans exported (traceidratio 0.1); every call is \
                     still decoded, measured and analysed",
                    false,
                )
            },
            Self {
                threads: 1,
                connections: 16,
                ..small(
                    "plain-1t16c",
                    "plain HTTP, nginx `return 200`, 1 wrk thread, 16 connections, saturation \
                     (issue 27's measurement)",
                    false,
                )
            },
            Self {
                threads: 1,
                connections: 16,
                ..small(
                    "tls-1t16c",
                    "TLS, nginx `return 200`, 1 wrk thread, 16 connections, saturation (issue \
                     27's measurement)",
                    true,
                )
            },
            Self {
                agent_args: &["--set", "export.otlp.compression=none"],
                ..small(
                    "plain-small-nogzip",
                    "plain-small with the agent's OTLP exports uncompressed (the default is gzip)",
                    false,
                )
            },
            Self {
                connections: 1_000,
                rss_target: false,
                ..small(
                    "plain-1000conn",
                    "plain HTTP, 100-byte responses, 1,000 connections, saturation",
                    false,
                )
            },
            Self {
                path: nginx::LARGE_PATH,
                rss_target: false,
                ..small(
                    "plain-64k",
                    "plain HTTP, 64 KiB responses (sendfile off), 64 connections, saturation",
                    false,
                )
            },
            Self {
                connections: 20,
                rate_per_connection: Some(50),
                rss_target: false,
                ..small(
                    "plain-1k-rps",
                    "plain HTTP, 100-byte responses, 20 connections x 50 req/s = 1,000 req/s",
                    false,
                )
            },
            Self {
                connections: 20,
                rate_per_connection: Some(50),
                rss_target: false,
                ..small(
                    "tls-1k-rps",
                    "TLS, 100-byte responses, 20 connections x 50 req/s = 1,000 req/s",
                    true,
                )
            },
            Self {
                server: Server::Go,
                rss_target: false,
                ..small(
                    "go-tls-small",
                    "Go net/http over crypto/tls, 11-byte responses, 64 connections, saturation",
                    true,
                )
            },
            Self {
                server: Server::Go,
                connections: 20,
                rate_per_connection: Some(50),
                rss_target: false,
                ..small(
                    "go-tls-1k-rps",
                    "Go net/http over crypto/tls, 20 connections x 50 req/s = 1,000 req/s",
                    true,
                )
            },
        ]
    }

    /// At saturation (no fixed rate).
    pub fn saturating(&self) -> bool {
        self.rate_per_connection.is_none()
    }

    /// The wrk run of this scenario against `server`, lasting `duration`.
    pub fn load(&self, server: &dyn ServerUnderTest, duration: Duration) -> Result<Load> {
        let base = server.base_url(self.tls).ok_or_else(|| {
            anyhow!(
                "{}: {} has no {} listener",
                self.name,
                server.service(),
                if self.tls { "TLS" } else { "plain" }
            )
        })?;
        Ok(Load {
            url: format!("{base}{}", self.path),
            threads: self.threads,
            connections: self.connections,
            duration,
            rate_per_connection: self.rate_per_connection,
        })
    }
}
