//! With no collector configured: one readable line per call on stdout, so a bare host shows
//! its API traffic with nothing else installed.

use std::io::{self, Write};

use crate::{
    analysis::AnalyzedCall,
    calls::Payload,
    clock::WallClock,
    export::semconv::{CallDescription, Kind},
};

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

    /// Writes the line of one call: time, service, side, method, route, status, duration, peer.
    pub fn print(
        &mut self,
        analyzed: &AnalyzedCall,
        description: &CallDescription,
    ) -> io::Result<()> {
        let call = &analyzed.call.call;
        let (method, status) = match &call.payload {
            Payload::Http(http) => (
                http.request.method.as_str(),
                http.response
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |response| response.status.to_string()),
            ),
        };
        let side = match description.kind {
            Kind::Server => "server",
            Kind::Client => "client",
        };
        let arrow = match description.kind {
            Kind::Server => "<-",
            Kind::Client => "->",
        };
        let peer = call
            .connection
            .peer
            .map_or_else(|| "?".to_owned(), |peer| peer.to_string());
        writeln!(
            self.out,
            "{} {} {side} {method} {} {status} {:.3}ms {arrow} {peer}{}",
            rfc3339(self.clock.unix_ns(call.start_ns)),
            analyzed.call.process.service_name,
            analyzed.route.as_deref().unwrap_or("-"),
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

    #[test]
    fn formats_utc_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(1_795_324_302_650_105_427),
            "2026-11-22T05:11:42.650Z"
        );
    }
}
