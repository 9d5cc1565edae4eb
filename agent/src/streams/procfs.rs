//! What `/proc` can tell about a socket the kernel side did not announce: its addresses (when
//! the connection record was lost) and, for connections opened before the agent started,
//! whether this process is the serving end.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// TCP state `LISTEN` in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// One line of `/proc/PID/net/tcp{,6}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpEntry {
    /// Local end.
    pub local: SocketAddr,
    /// Remote end.
    pub remote: SocketAddr,
    /// True for listening sockets.
    pub listening: bool,
    /// Socket inode, as in the `socket:[inode]` fd links.
    pub inode: u64,
}

/// Parses `ADDR:PORT` as the kernel prints it: the address as native-endian 32-bit words in hex.
fn parse_endpoint(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(addr, 16).ok()?.to_ne_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                let word = addr.get(i * 8..i * 8 + 8)?;
                chunk.copy_from_slice(&u32::from_str_radix(word, 16).ok()?.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses the text of a `/proc/net/tcp` or `tcp6` file; lines it cannot read are skipped.
pub fn parse_tcp_table(text: &str) -> Vec<TcpEntry> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some(TcpEntry {
                local: parse_endpoint(fields.get(1)?)?,
                remote: parse_endpoint(fields.get(2)?)?,
                listening: *fields.get(3)? == TCP_LISTEN,
                inode: fields.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// The TCP sockets of `pid`'s network namespace.
pub fn tcp_table(pid: u32) -> Vec<TcpEntry> {
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|file| std::fs::read_to_string(format!("/proc/{pid}/net/{file}")).ok())
        .flat_map(|text| parse_tcp_table(&text))
        .collect()
}

/// The socket inode behind `fd` of `pid`, from its `socket:[inode]` link.
pub fn socket_inode(pid: u32, fd: i32) -> Option<u64> {
    let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let text = target.to_str()?;
    text.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// True when `local` is the port of a listening socket in `table`: this process accepted the
/// connection rather than opened it.
pub fn is_served_locally(table: &[TcpEntry], local: SocketAddr) -> bool {
    table.iter().any(|entry| {
        entry.listening
            && entry.local.port() == local.port()
            && (entry.local.ip().is_unspecified() || entry.local.ip() == local.ip())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: garbage";

    #[test]
    fn parses_listening_and_established_sockets() {
        let table = parse_tcp_table(TCP);
        assert_eq!(table.len(), 2);
        assert_eq!(table[0].local, "127.0.0.1:8080".parse().unwrap());
        assert!(table[0].listening);
        assert_eq!(table[1].remote, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(table[1].inode, 4343);
        assert!(!table[1].listening);
    }

    #[test]
    fn ipv6_loopback() {
        let line = "sl\n 0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 77";
        assert_eq!(
            parse_tcp_table(line)[0].local,
            "[::1]:8080".parse().unwrap()
        );
    }

    #[test]
    fn served_locally_when_a_listener_has_the_port() {
        let table = parse_tcp_table(TCP);
        assert!(is_served_locally(&table, "127.0.0.1:8080".parse().unwrap()));
        assert!(!is_served_locally(
            &table,
            "127.0.0.1:50000".parse().unwrap()
        ));
    }
}
