//! Settings userspace writes into the `CONFIG` map before it attaches any program.

/// What the selection rules decided for a process (`PID_FILTER` values) or a port
/// (`PORT_FILTER` values).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not captured.
    Skip = 0,
    /// Captured.
    Trace = 1,
    /// Just exec'd: not captured until userspace has matched its new executable against the
    /// rules (an excluded program must not leak its first calls).
    Pending = 2,
}

/// What happens to processes (or ports) no filter map entry lists.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterMode {
    /// Unlisted ones are captured: the rules only exclude.
    TraceUnlisted = 0,
    /// Unlisted ones are not captured: the rules include.
    SkipUnlisted = 1,
}

/// Byte offsets of the `struct sock` fields the programs read, taken by userspace from the
/// running kernel's BTF. aya's eBPF side has no CO-RE field relocations, so this is how the
/// programs stay correct across kernel builds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    /// `sk->__sk_common.skc_family` (u16).
    pub family: u32,
    /// `sk->__sk_common.skc_num`: local port, host order (u16).
    pub local_port: u32,
    /// `sk->__sk_common.skc_dport`: peer port, network order (u16).
    pub peer_port: u32,
    /// `sk->__sk_common.skc_rcv_saddr`: local IPv4 address.
    pub local_addr4: u32,
    /// `sk->__sk_common.skc_daddr`: peer IPv4 address.
    pub peer_addr4: u32,
    /// `sk->__sk_common.skc_v6_rcv_saddr`: local IPv6 address.
    pub local_addr6: u32,
    /// `sk->__sk_common.skc_v6_daddr`: peer IPv6 address.
    pub peer_addr6: u32,
    /// `sk->sk_protocol` (u16).
    pub protocol: u32,
}

/// Byte offsets of the fields walked from the current task to the kernel socket behind an fd:
/// `task->files->fdt->fd[fd]`, its inode's mode (is it a socket?) and `file->private_data`
/// (`struct socket`) -> `sk`. Used where the `sock_send_length`/`sock_recv_length` tracepoints
/// do not exist (Linux before 6.3), and for the file a process maps as code (its walk stops at
/// the file); read from the running kernel's BTF like [`SockOffsets`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdTableOffsets {
    /// `task_struct.files` (`struct files_struct *`).
    pub task_files: u32,
    /// `files_struct.fdt` (`struct fdtable *`).
    pub files_fdt: u32,
    /// `fdtable.max_fds` (u32).
    pub fdt_max_fds: u32,
    /// `fdtable.fd` (`struct file **`).
    pub fdt_fd: u32,
    /// `file.f_inode` (`struct inode *`).
    pub file_inode: u32,
    /// `file.private_data`: the `struct socket *` of a socket's file.
    pub file_private_data: u32,
    /// `inode.i_mode` (u16).
    pub inode_mode: u32,
    /// `socket.sk` (`struct sock *`).
    pub socket_sk: u32,
}

/// Byte offsets of the fields the exec tracepoint walks from the current task to the file it
/// now runs (`task->mm->exe_file->f_inode`, then `i_ino` and `i_sb->s_dev`) and to its
/// controlling terminal (`task->signal->tty`), and that the `mmap` tracepoint walks from a
/// file to its name (`file->f_path.dentry->d_name.name`); read from the running kernel's BTF
/// like [`SockOffsets`]. Zero unless new executables are held
/// ([`CaptureConfig::hold_new_executables`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecOffsets {
    /// `task_struct.mm` (`struct mm_struct *`).
    pub task_mm: u32,
    /// `task_struct.signal` (`struct signal_struct *`).
    pub task_signal: u32,
    /// `signal_struct.tty` (`struct tty_struct *`).
    pub signal_tty: u32,
    /// `mm_struct.exe_file` (`struct file *`).
    pub mm_exe_file: u32,
    /// `file.f_inode` (`struct inode *`).
    pub file_inode: u32,
    /// `inode.i_ino` (unsigned long).
    pub inode_ino: u32,
    /// `inode.i_sb` (`struct super_block *`).
    pub inode_sb: u32,
    /// `super_block.s_dev` (`dev_t`, u32).
    pub super_dev: u32,
    /// `file.f_path.dentry` (`struct dentry *`).
    pub file_dentry: u32,
    /// `dentry.d_name.name` (`const unsigned char *`).
    pub dentry_name: u32,
}

/// Byte offsets of the `sched:sched_process_fork` record's fields, read from the tracepoint's
/// format file: they moved when the command names became `__data_loc` strings (after Linux 6.1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForkOffsets {
    /// `parent_pid`.
    pub parent_pid: u32,
    /// `child_pid`.
    pub child_pid: u32,
}

/// How a socket syscall's exit learns whether its fd is a socket, and which one: fixed at load
/// time for the whole object (the `SOCKET_LOOKUP` global), so the verifier only walks the path
/// in use.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketLookup {
    /// The BTF tracepoints `sock_send_length`/`sock_recv_length` (Linux 6.3+) fire inside the
    /// call for sockets only, with the kernel socket.
    Tracepoints = 0,
    /// The exit walks the task's file table (older kernels).
    FdTable = 1,
}

/// Name of the read-only global in the eBPF object that holds the [`SocketLookup`] in force.
pub const SOCKET_LOOKUP_GLOBAL: &str = "SOCKET_LOOKUP";

/// Bits of [`CaptureConfig::filters`].
pub mod filter_maps {
    /// `PID_FILTER` decides which processes are captured: forks inherit their parent's entry,
    /// exits remove theirs.
    pub const PIDS: u32 = 1 << 0;
    /// `PORT_FILTER` decides which connections are captured.
    pub const PORTS: u32 = 1 << 1;
    /// Every exec makes its process [`super::Verdict::Pending`] and is reported, whatever the
    /// process's verdict was, so that userspace matches its new executable.
    pub const EXEC_GATE: u32 = 1 << 2;
}

/// The single value of the `CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CaptureConfig {
    /// The agent's own process id: never traced, so the agent cannot capture itself.
    pub agent_tgid: u32,
    /// Payload bytes copied per call, at most [`crate::event::MAX_PAYLOAD`].
    pub capture_cap: u32,
    /// [`FilterMode`] of processes `PID_FILTER` does not list, as `u32`.
    pub filter_mode: u32,
    /// [`filter_maps`] bits: which filter maps hold entries. The probes skip the lookups (and
    /// the cgroup id helper) for empty maps, since they run on every read and write of the host.
    pub filters: u32,
    /// Where the socket fields are.
    pub sock: SockOffsets,
    /// Payload bytes copied per call on connections of a framed protocol
    /// ([`crate::conn_flags::FRAMED`]), in records of at most [`crate::event::MAX_PAYLOAD`].
    pub framed_cap: u32,
    /// [`FilterMode`] of connections neither of whose ports `PORT_FILTER` lists, as `u32`.
    pub port_mode: u32,
    /// Where the fd-table walk finds its fields (zero when the BTF lacks one, which is only
    /// allowed without [`SocketLookup::FdTable`] and without holds).
    pub fd_table: FdTableOffsets,
    /// Where the fork record's pids are.
    pub fork: ForkOffsets,
    /// 1: a process that execs a file userspace has not inspected yet (not in
    /// `KNOWN_EXECUTABLES`), or maps one as code, and has no controlling terminal is stopped
    /// (`SIGSTOP`) and recorded in `HELD`, so that the TLS uprobes of a new executable or
    /// library are attached before its first call; userspace, or its release keeper when it is
    /// late or gone, continues it.
    pub hold_new_executables: u32,
    /// Zero.
    pub reserved: u32,
    /// Where the exec tracepoint finds the executable's file and the terminal.
    pub exec: ExecOffsets,
}

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` integers, no padding, every bit pattern valid.
unsafe impl aya::Pod for CaptureConfig {}

const _: () = assert!(core::mem::size_of::<CaptureConfig>() == 144);
