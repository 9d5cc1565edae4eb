//! With no collector configured: one readable line per call on stdout, so a bare host shows
//! its API traffic with nothing else installed.

use std::io::{self, Write};

use crate::{analysis::AnalyzedCall, calls::Kind, clock::WallClock, streams::Transport};

/// Writes one line per call.
pub struct CallPrinter<W: Write> {
    out: W,
    clock: WallClock,
}

impl<W: Write> CallPrinter<W> {
    /// A printer to `out`.
    pub fn new(out: W, clock: WallClock) -> Self {
        Self { out, clock }
    }

    /// Writes the line of one call: time, service, side, what was called and how it ended
    /// (as its description summarises them), duration, peer.
    pub fn print(&mut self, analyzed: &AnalyzedCall) -> io::Result<()> {
        let call = &analyzed.call.call;
        let description = &analyzed.description;
        let (side, arrow) = match description.kind {
            Kind::Server => ("server", "<-"),
            Kind::Client => ("client", "->"),
        };
        let peer = match (call.connection.peer, call.connection.transport) {
            (Some(peer), _) => peer.to_string(),
            (None, Transport::Stdio) => "stdio".to_owned(),
            (None, Transport::Tcp) => "?".to_owned(),
        };
        writeln!(
            self.out,
            "{} {} {side} {} {} {:.3}ms {arrow} {peer}{}",
            rfc3339(self.clock.unix_ns(call.start_ns)),
            analyzed.call.workload.service_name,
            description.summary,
            description.outcome.as_deref().unwrap_or("-"),
            description.duration_seconds * 1e3,
            if call.gaps.is_complete() {
                ""
            } else {
                " (incomplete)"
            },
        )?;
        self.out.flush()
    }
}

/// UTC time with milliseconds, e.g. `2026-11-22T05:11:40.123Z`.
fn rfc3339(unix_ns: u64) -> String {
    let time = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(unix_ns);
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        calls::Side,
        testing::{call, grpc_call},
    };

    fn line(analyzed: &AnalyzedCall) -> String {
        let mut out = Vec::new();
        CallPrinter::new(&mut out, WallClock::with_offset(0))
            .print(analyzed)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn http_lines_show_method_route_and_status() {
        let text = line(&call(Side::Server, 404, Vec::new()));
        assert!(
            text.contains(" srv server POST /users/{id} 404 2.500ms <- 127.0.0.1:50000"),
            "{text}"
        );
    }

    #[test]
    fn grpc_lines_show_the_rpc_and_its_status_name() {
        let text = line(&grpc_call(Side::Client, Some(5)));
        assert!(
            text.contains(" client grpc helloworld.Greeter/SayHello NOT_FOUND "),
            "{text}"
        );
    }

    #[test]
    fn formats_utc_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(1_795_324_302_650_105_427),
            "2026-11-22T05:11:42.650Z"
        );
    }
}
