//! What the benchmark asks of a server under test, whichever it is ([`super::nginx`] or
//! [`super::go_server`]): where to send the load, how many requests it handled, which of its
//! processes serve them.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::Result;

/// Timeout of one status query.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// A server the scenarios load.
pub trait ServerUnderTest {
    /// The `service.name` its spans carry.
    fn service(&self) -> &'static str;
    /// The base URL (scheme, address, port) of its plain (`tls` false) or TLS listener, if it
    /// has that one.
    fn base_url(&self, tls: bool) -> Option<String>;
    /// Its total count of requests handled, status queries excluded.
    fn requests_handled(&self) -> Result<u64>;
    /// The pids of the processes that serve requests, whose spans are the server side.
    fn serving_pids(&self) -> Result<Vec<i64>>;
    /// Fails if it has exited.
    fn check_alive(&mut self) -> Result<()>;
}

/// The whole response to a plain HTTP `GET path` on 127.0.0.1:`port`: how a server's status
/// (its request count) is read.
pub fn status_query(port: u16, path: &str) -> Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, STATUS_TIMEOUT)?;
    stream.set_read_timeout(Some(STATUS_TIMEOUT))?;
    stream.set_write_timeout(Some(STATUS_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    // Bounded: the server closes (Connection: close) and reads time out.
    stream.take(64 * 1024).read_to_string(&mut response)?;
    Ok(response)
}
