//! The probe table: which kernel program attaches where, and to which group it belongs.
//!
//! Programs are grouped by what they add to capture. A group loads and attaches as one: when
//! the kernel refuses any of its programs, the agent runs without the group (and says so),
//! except for [`ProbeGroup::Core`], without which there is nothing to capture.

use agent_common::{SocketLookup, maps::tail_calls};

/// What a group of kernel programs adds to capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeGroup {
    /// `read`/`write`/`recvfrom`/`sendto`, `sendfile`/`splice`, connection and process
    /// lifecycle: the only group the agent cannot run without.
    Core,
    /// `readv`/`writev`/`recvmsg`/`sendmsg`.
    VectoredIo,
    /// `recvmmsg`/`sendmmsg`, several messages per call.
    BatchedMessages,
    /// TLS plaintext at OpenSSL's `SSL_read`/`SSL_write` and GnuTLS's `gnutls_record_recv`/
    /// `gnutls_record_send` (uprobes on every copy found).
    TlsOpenssl,
    /// TLS plaintext at Go's `crypto/tls.(*Conn).Write`/`.Read` (uprobes on every Go program).
    TlsGo,
    /// The copy of a TLS connection's first record, for the client's JA4 fingerprint.
    TlsHandshake,
    /// Following the stdio wire of selected processes (MCP servers) through `dup` and `fcntl`.
    Stdio,
    /// Holding a process that maps a library new to the agent as code (`mmap`), until the
    /// library's TLS uprobes are attached.
    LibraryHold,
}

impl ProbeGroup {
    /// Every group, in load order.
    pub const ALL: [ProbeGroup; 8] = [
        ProbeGroup::Core,
        ProbeGroup::VectoredIo,
        ProbeGroup::BatchedMessages,
        ProbeGroup::TlsOpenssl,
        ProbeGroup::TlsGo,
        ProbeGroup::TlsHandshake,
        ProbeGroup::Stdio,
        ProbeGroup::LibraryHold,
    ];

    /// Stable snake_case name, used in logs, `check`, `/readyz` and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ProbeGroup::Core => "core",
            ProbeGroup::VectoredIo => "vectored_io",
            ProbeGroup::BatchedMessages => "batched_messages",
            ProbeGroup::TlsOpenssl => "tls_openssl",
            ProbeGroup::TlsGo => "tls_go",
            ProbeGroup::TlsHandshake => "tls_handshake",
            ProbeGroup::Stdio => "stdio",
            ProbeGroup::LibraryHold => "library_hold",
        }
    }

    /// What is not seen while the group is off.
    pub fn lost_without(self) -> &'static str {
        match self {
            ProbeGroup::Core => "nothing can be captured",
            ProbeGroup::VectoredIo => {
                "calls made with readv, writev, recvmsg or sendmsg are not captured"
            }
            ProbeGroup::BatchedMessages => "calls made with recvmmsg or sendmmsg are not captured",
            ProbeGroup::TlsOpenssl => {
                "TLS connections through OpenSSL and GnuTLS are seen, their plaintext is not"
            }
            ProbeGroup::TlsGo => "TLS connections of Go programs are seen, their plaintext is not",
            ProbeGroup::TlsHandshake => "server spans carry no JA4 client fingerprint",
            ProbeGroup::Stdio => {
                "stdio capture sees only processes that keep their wire on fd 0 and 1"
            }
            ProbeGroup::LibraryHold => {
                "the first TLS calls through a library new to the agent (a container's own \
                 libssl) may be missed"
            }
        }
    }

    /// True for the one group the agent cannot run without.
    pub fn is_required(self) -> bool {
        self == ProbeGroup::Core
    }
}

/// Where a program attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// A classic tracepoint (`/sys/kernel/tracing/events/<category>/<name>`).
    Tracepoint {
        /// Tracepoint category, e.g. `syscalls`.
        category: &'static str,
        /// Tracepoint name, e.g. `sys_enter_read`.
        name: &'static str,
    },
    /// A BTF-typed raw tracepoint (`tp_btf/<name>`).
    BtfTracepoint {
        /// Tracepoint name, e.g. `sock_send_length`.
        name: &'static str,
    },
    /// Never attached: syscall exits tail-call into it through this slot of `TAIL_CALLS`.
    TailCall {
        /// Its slot (`agent_common::tail_calls`).
        slot: u32,
    },
    /// Uprobes attached to each TLS library copy or program found (see `capture::tls`).
    TlsUprobe,
}

impl Hook {
    /// Where `program`, attached here, attaches, in bpftrace's notation where it has one
    /// (`tracepoint:syscalls:sys_enter_read`, `uprobe:SSL_read,...`): the `HOOK` column of
    /// `apiscope check --verbose`, which the benchmark reads to attach empty programs at the
    /// same places.
    pub fn attach_point(self, program: &str) -> String {
        let go_functions = || super::tls::GO_FUNCTIONS.map(|(function, _)| function);
        let library_functions = || -> Vec<&str> {
            TLS_ENTRY_PROBES
                .iter()
                .chain(&GNUTLS_ENTRY_PROBES)
                .filter(|(_, entry)| program == TLS_EXIT_PROGRAM || *entry == program)
                .map(|(function, _)| *function)
                .collect()
        };
        match self {
            Self::Tracepoint { category, name } => format!("tracepoint:{category}:{name}"),
            Self::BtfTracepoint { name } => format!("tp_btf:{name}"),
            Self::TailCall { slot } => format!("tail_call:{slot}"),
            Self::TlsUprobe if program == GO_TLS_ENTRY_PROGRAM => {
                format!("uprobe:{}", go_functions().join(","))
            }
            Self::TlsUprobe if program == GO_TLS_RETURN_PROGRAM => {
                format!(
                    "uprobe:{}",
                    go_functions().map(|f| format!("{f}+RET")).join(",")
                )
            }
            Self::TlsUprobe if program == TLS_EXIT_PROGRAM => {
                format!("uretprobe:{}", library_functions().join(","))
            }
            Self::TlsUprobe => format!("uprobe:{}", library_functions().join(",")),
        }
    }
}

/// One kernel program, its hook and its group.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// Program name in the eBPF object.
    pub program: &'static str,
    /// Where it attaches.
    pub hook: Hook,
    /// What it belongs to.
    pub group: ProbeGroup,
    /// The socket lookup it serves, when it only loads with that one.
    pub only_with: Option<SocketLookup>,
}

impl Probe {
    /// Whether the program is loaded when sockets are found by `lookup`.
    pub fn used_with(&self, lookup: SocketLookup) -> bool {
        self.only_with.is_none_or(|only| only == lookup)
    }
}

const fn syscall(program: &'static str, name: &'static str, group: ProbeGroup) -> Probe {
    Probe {
        program,
        hook: Hook::Tracepoint {
            category: "syscalls",
            name,
        },
        group,
        only_with: None,
    }
}

const fn tracepoint(program: &'static str, category: &'static str, name: &'static str) -> Probe {
    Probe {
        program,
        hook: Hook::Tracepoint { category, name },
        group: ProbeGroup::Core,
        only_with: None,
    }
}

const fn socket_tracepoint(program: &'static str, name: &'static str) -> Probe {
    Probe {
        program,
        hook: Hook::BtfTracepoint { name },
        group: ProbeGroup::Core,
        only_with: Some(SocketLookup::Tracepoints),
    }
}

const fn tls_uprobe(program: &'static str, group: ProbeGroup) -> Probe {
    Probe {
        program,
        hook: Hook::TlsUprobe,
        group,
        only_with: None,
    }
}

use ProbeGroup::{BatchedMessages, Core, LibraryHold, Stdio, TlsGo, TlsOpenssl, VectoredIo};

/// Every program, in the order each group attaches them.
pub const PROBES: &[Probe] = &[
    // The socket check must be in place before any syscall exit can look for it.
    socket_tracepoint("sock_enter_send_length", "sock_send_length"),
    socket_tracepoint("sock_enter_recv_length", "sock_recv_length"),
    // Before any connection's first I/O can look for the agent's own connections.
    tracepoint("sock_enter_inet_set_state", "sock", "inet_sock_set_state"),
    syscall("syscalls_enter_read", "sys_enter_read", Core),
    syscall("syscalls_exit_read", "sys_exit_read", Core),
    syscall("syscalls_enter_write", "sys_enter_write", Core),
    syscall("syscalls_exit_write", "sys_exit_write", Core),
    syscall("syscalls_enter_recvfrom", "sys_enter_recvfrom", Core),
    syscall("syscalls_exit_recvfrom", "sys_exit_recvfrom", Core),
    syscall("syscalls_enter_sendto", "sys_enter_sendto", Core),
    syscall("syscalls_exit_sendto", "sys_exit_sendto", Core),
    syscall("syscalls_enter_sendfile64", "sys_enter_sendfile64", Core),
    syscall("syscalls_exit_sendfile64", "sys_exit_sendfile64", Core),
    syscall("syscalls_enter_splice", "sys_enter_splice", Core),
    syscall("syscalls_exit_splice", "sys_exit_splice", Core),
    syscall("syscalls_enter_connect", "sys_enter_connect", Core),
    syscall("syscalls_exit_connect", "sys_exit_connect", Core),
    syscall("syscalls_exit_accept", "sys_exit_accept", Core),
    syscall("syscalls_exit_accept4", "sys_exit_accept4", Core),
    syscall("syscalls_enter_close", "sys_enter_close", Core),
    tracepoint("process_enter_exec", "sched", "sched_process_exec"),
    tracepoint("process_enter_fork", "sched", "sched_process_fork"),
    tracepoint("process_enter_exit", "sched", "sched_process_exit"),
    syscall("syscalls_enter_readv", "sys_enter_readv", VectoredIo),
    syscall("syscalls_exit_readv", "sys_exit_readv", VectoredIo),
    syscall("syscalls_enter_writev", "sys_enter_writev", VectoredIo),
    syscall("syscalls_exit_writev", "sys_exit_writev", VectoredIo),
    syscall("syscalls_enter_recvmsg", "sys_enter_recvmsg", VectoredIo),
    syscall("syscalls_exit_recvmsg", "sys_exit_recvmsg", VectoredIo),
    syscall("syscalls_enter_sendmsg", "sys_enter_sendmsg", VectoredIo),
    syscall("syscalls_exit_sendmsg", "sys_exit_sendmsg", VectoredIo),
    syscall(
        "syscalls_enter_recvmmsg",
        "sys_enter_recvmmsg",
        BatchedMessages,
    ),
    syscall(
        "syscalls_exit_recvmmsg",
        "sys_exit_recvmmsg",
        BatchedMessages,
    ),
    syscall(
        "syscalls_enter_sendmmsg",
        "sys_enter_sendmmsg",
        BatchedMessages,
    ),
    syscall(
        "syscalls_exit_sendmmsg",
        "sys_exit_sendmmsg",
        BatchedMessages,
    ),
    tls_uprobe(TLS_ENTRY_PROBES[0].1, TlsOpenssl),
    tls_uprobe(TLS_ENTRY_PROBES[1].1, TlsOpenssl),
    tls_uprobe(TLS_ENTRY_PROBES[2].1, TlsOpenssl),
    tls_uprobe(TLS_ENTRY_PROBES[3].1, TlsOpenssl),
    tls_uprobe(TLS_ENTRY_PROBES[4].1, TlsOpenssl),
    tls_uprobe(TLS_EXIT_PROGRAM, TlsOpenssl),
    tls_uprobe(GO_TLS_ENTRY_PROGRAM, TlsGo),
    tls_uprobe(GO_TLS_RETURN_PROGRAM, TlsGo),
    Probe {
        program: "handshake_copy",
        hook: Hook::TailCall {
            slot: tail_calls::HANDSHAKE_COPY,
        },
        group: ProbeGroup::TlsHandshake,
        only_with: None,
    },
    syscall("syscalls_enter_dup", "sys_enter_dup", Stdio),
    syscall("syscalls_enter_dup2", "sys_enter_dup2", Stdio),
    syscall("syscalls_enter_dup3", "sys_enter_dup3", Stdio),
    syscall("syscalls_enter_fcntl", "sys_enter_fcntl", Stdio),
    syscall("syscalls_exit_dup", "sys_exit_dup", Stdio),
    syscall("syscalls_exit_dup2", "sys_exit_dup2", Stdio),
    syscall("syscalls_exit_dup3", "sys_exit_dup3", Stdio),
    syscall("syscalls_exit_fcntl", "sys_exit_fcntl", Stdio),
    // The exit first: an entry's note is never left without one to take it.
    syscall("syscalls_exit_mmap", "sys_exit_mmap", LibraryHold),
    syscall("syscalls_enter_mmap", "sys_enter_mmap", LibraryHold),
];

/// The OpenSSL functions hooked in every library that exports them, with the entry program of
/// each. One return program (`TLS_EXIT_PROGRAM`) serves them all.
pub const TLS_ENTRY_PROBES: [(&str, &str); 5] = [
    ("SSL_read", "openssl_enter_ssl_read"),
    ("SSL_write", "openssl_enter_ssl_write"),
    ("SSL_read_ex", "openssl_enter_ssl_read_ex"),
    ("SSL_write_ex", "openssl_enter_ssl_write_ex"),
    ("SSL_do_handshake", "openssl_enter_ssl_do_handshake"),
];

/// GnuTLS's functions, with the OpenSSL entry program of the same shape: `(session, buffer,
/// length)` for reads and writes, `(session)` for the handshake.
pub const GNUTLS_ENTRY_PROBES: [(&str, &str); 3] = [
    ("gnutls_record_recv", "openssl_enter_ssl_read"),
    ("gnutls_record_send", "openssl_enter_ssl_write"),
    ("gnutls_handshake", "openssl_enter_ssl_do_handshake"),
];

/// Return program of the OpenSSL (and GnuTLS) calls.
pub const TLS_EXIT_PROGRAM: &str = "openssl_exit_ssl_io";

/// Entry program of Go's `crypto/tls.(*Conn).Write` and `.Read`; its cookie says which.
pub const GO_TLS_ENTRY_PROGRAM: &str = "go_tls_enter";

/// Program at each return instruction of those two functions.
pub const GO_TLS_RETURN_PROGRAM: &str = "go_tls_return";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_has_programs_and_names_are_unique() {
        for group in ProbeGroup::ALL {
            assert!(
                PROBES.iter().any(|probe| probe.group == group),
                "group {} has no program",
                group.name()
            );
        }
        let mut names: Vec<_> = PROBES.iter().map(|probe| probe.program).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PROBES.len(), "a program is listed twice");
    }

    #[test]
    fn attach_points_name_the_hook_in_bpftrace_notation() {
        let point = |program: &str| {
            PROBES
                .iter()
                .find(|probe| probe.program == program)
                .map(|probe| probe.hook.attach_point(probe.program))
                .unwrap_or_default()
        };
        assert_eq!(
            point("syscalls_enter_read"),
            "tracepoint:syscalls:sys_enter_read"
        );
        assert_eq!(point("sock_enter_send_length"), "tp_btf:sock_send_length");
        assert_eq!(
            point("openssl_enter_ssl_read"),
            "uprobe:SSL_read,gnutls_record_recv"
        );
        assert_eq!(
            point(TLS_EXIT_PROGRAM),
            "uretprobe:SSL_read,SSL_write,SSL_read_ex,SSL_write_ex,SSL_do_handshake,\
             gnutls_record_recv,gnutls_record_send,gnutls_handshake"
        );
        assert_eq!(
            point(GO_TLS_RETURN_PROGRAM),
            "uprobe:crypto/tls.(*Conn).Write+RET,crypto/tls.(*Conn).Read+RET"
        );
    }

    #[test]
    fn only_core_is_required() {
        let required: Vec<_> = ProbeGroup::ALL
            .into_iter()
            .filter(|group| group.is_required())
            .collect();
        assert_eq!(required, [ProbeGroup::Core]);
    }
}
