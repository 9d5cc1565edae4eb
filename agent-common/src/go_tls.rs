//! The attach cookie of the Go `crypto/tls` uprobes: where a `*tls.Conn`'s socket fd lies in
//! the probed binary, and which way the probed function moves data. Userspace packs it per
//! attach point from what it read in the binary; the kernel program unpacks it, so one program
//! serves every Go binary, whatever its version.

use crate::Direction;

/// Where the socket fd of a `*tls.Conn` lies, as three hops, in bytes from each struct's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoConnLayout {
    /// The `net.Conn` interface `conn` in `crypto/tls.Conn` (its data word is 8 bytes further).
    pub conn: u16,
    /// The `*netFD` `fd` in `net.conn`, which `*net.TCPConn` and `*net.UnixConn` embed first.
    pub fd: u16,
    /// `pfd.Sysfd` (the fd, an `int`) in `net.netFD`.
    pub sysfd: u16,
}

const EGRESS_BIT: u64 = 1 << 48;

/// The cookie of an entry probe on a function of a binary with `layout` that moves data in
/// `direction` (`Write`: egress, `Read`: ingress).
pub const fn cookie(layout: GoConnLayout, direction: Direction) -> u64 {
    let egress = match direction {
        Direction::Egress => EGRESS_BIT,
        Direction::Ingress => 0,
    };
    layout.conn as u64 | (layout.fd as u64) << 16 | (layout.sysfd as u64) << 32 | egress
}

/// The layout a cookie carries.
#[inline(always)]
pub const fn layout(cookie: u64) -> GoConnLayout {
    GoConnLayout {
        conn: cookie as u16,
        fd: (cookie >> 16) as u16,
        sysfd: (cookie >> 32) as u16,
    }
}

/// The direction a cookie carries.
#[inline(always)]
pub const fn direction(cookie: u64) -> Direction {
    if cookie & EGRESS_BIT != 0 {
        Direction::Egress
    } else {
        Direction::Ingress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_gives_back_what_was_packed() {
        let layout = GoConnLayout {
            conn: 0x18,
            fd: 0,
            sysfd: 0x10,
        };
        for direction in [Direction::Egress, Direction::Ingress] {
            let packed = cookie(layout, direction);
            assert_eq!(super::layout(packed), layout);
            assert_eq!(super::direction(packed), direction);
        }
    }
}
