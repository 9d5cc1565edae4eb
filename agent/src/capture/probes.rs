//! The probe table: which kernel program attaches where. Every entry is required; a probe that
//! fails to load or attach stops the agent with the probe's name and the kernel's reason.

/// Where a program attaches.
#[derive(Debug, Clone, Copy)]
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
}

/// One kernel program and its hook.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// Program name in the eBPF object.
    pub program: &'static str,
    /// Where it attaches.
    pub hook: Hook,
}

const fn syscall(program: &'static str, name: &'static str) -> Probe {
    Probe {
        program,
        hook: Hook::Tracepoint {
            category: "syscalls",
            name,
        },
    }
}

/// Every program except the OpenSSL uprobes, which attach per library file (see
/// `capture::openssl`).
pub const KERNEL_PROBES: &[Probe] = &[
    // The socket check must be in place before any syscall exit can look for it.
    Probe {
        program: "sock_enter_send_length",
        hook: Hook::BtfTracepoint {
            name: "sock_send_length",
        },
    },
    Probe {
        program: "sock_enter_recv_length",
        hook: Hook::BtfTracepoint {
            name: "sock_recv_length",
        },
    },
    // Before any connection's first I/O can look for the agent's own connections.
    Probe {
        program: "sock_enter_inet_set_state",
        hook: Hook::Tracepoint {
            category: "sock",
            name: "inet_sock_set_state",
        },
    },
    syscall("syscalls_enter_read", "sys_enter_read"),
    syscall("syscalls_exit_read", "sys_exit_read"),
    syscall("syscalls_enter_write", "sys_enter_write"),
    syscall("syscalls_exit_write", "sys_exit_write"),
    syscall("syscalls_enter_recvfrom", "sys_enter_recvfrom"),
    syscall("syscalls_exit_recvfrom", "sys_exit_recvfrom"),
    syscall("syscalls_enter_sendto", "sys_enter_sendto"),
    syscall("syscalls_exit_sendto", "sys_exit_sendto"),
    syscall("syscalls_enter_readv", "sys_enter_readv"),
    syscall("syscalls_exit_readv", "sys_exit_readv"),
    syscall("syscalls_enter_writev", "sys_enter_writev"),
    syscall("syscalls_exit_writev", "sys_exit_writev"),
    syscall("syscalls_enter_recvmsg", "sys_enter_recvmsg"),
    syscall("syscalls_exit_recvmsg", "sys_exit_recvmsg"),
    syscall("syscalls_enter_sendmsg", "sys_enter_sendmsg"),
    syscall("syscalls_exit_sendmsg", "sys_exit_sendmsg"),
    syscall("syscalls_enter_recvmmsg", "sys_enter_recvmmsg"),
    syscall("syscalls_exit_recvmmsg", "sys_exit_recvmmsg"),
    syscall("syscalls_enter_sendmmsg", "sys_enter_sendmmsg"),
    syscall("syscalls_exit_sendmmsg", "sys_exit_sendmmsg"),
    syscall("syscalls_enter_sendfile64", "sys_enter_sendfile64"),
    syscall("syscalls_exit_sendfile64", "sys_exit_sendfile64"),
    syscall("syscalls_enter_splice", "sys_enter_splice"),
    syscall("syscalls_exit_splice", "sys_exit_splice"),
    syscall("syscalls_enter_connect", "sys_enter_connect"),
    syscall("syscalls_exit_connect", "sys_exit_connect"),
    syscall("syscalls_exit_accept", "sys_exit_accept"),
    syscall("syscalls_exit_accept4", "sys_exit_accept4"),
    syscall("syscalls_enter_close", "sys_enter_close"),
    syscall("syscalls_enter_dup", "sys_enter_dup"),
    syscall("syscalls_enter_dup2", "sys_enter_dup2"),
    syscall("syscalls_enter_dup3", "sys_enter_dup3"),
    syscall("syscalls_enter_fcntl", "sys_enter_fcntl"),
    syscall("syscalls_exit_dup", "sys_exit_dup"),
    syscall("syscalls_exit_dup2", "sys_exit_dup2"),
    syscall("syscalls_exit_dup3", "sys_exit_dup3"),
    syscall("syscalls_exit_fcntl", "sys_exit_fcntl"),
    Probe {
        program: "process_enter_exec",
        hook: Hook::Tracepoint {
            category: "sched",
            name: "sched_process_exec",
        },
    },
    Probe {
        program: "process_enter_fork",
        hook: Hook::Tracepoint {
            category: "sched",
            name: "sched_process_fork",
        },
    },
    Probe {
        program: "process_enter_exit",
        hook: Hook::Tracepoint {
            category: "sched",
            name: "sched_process_exit",
        },
    },
];

/// The OpenSSL functions hooked in every library that exports them, with the entry program of
/// each. One return program (`TLS_EXIT_PROGRAM`) serves them all.
pub const TLS_ENTRY_PROBES: &[(&str, &str)] = &[
    ("SSL_read", "openssl_enter_ssl_read"),
    ("SSL_write", "openssl_enter_ssl_write"),
    ("SSL_read_ex", "openssl_enter_ssl_read_ex"),
    ("SSL_write_ex", "openssl_enter_ssl_write_ex"),
    ("SSL_do_handshake", "openssl_enter_ssl_do_handshake"),
];

/// Return program of the OpenSSL calls.
pub const TLS_EXIT_PROGRAM: &str = "openssl_exit_ssl_io";
