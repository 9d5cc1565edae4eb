//! The kernel file and socket behind an fd, found by walking the current task's file table,
//! with field offsets userspace read from the kernel's BTF. The socket is looked up this way at
//! syscall exit on kernels without the `sock_send_length`/`sock_recv_length` tracepoints
//! (before Linux 6.3); the file, for the library a process maps as code (`exec_hold`).

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

use crate::maps::CONFIG;

/// `S_IFMT` and `S_IFSOCK` of an inode's mode.
const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;

/// Reads a value of kernel memory at `base + offset`.
#[inline(always)]
pub fn read<T>(base: u64, offset: u64) -> Option<T> {
    // SAFETY: kernel read through the helper, which tolerates bad addresses.
    unsafe { bpf_probe_read_kernel((base + offset) as *const T) }.ok()
}

/// The `struct sock *` of `fd` in the current task, or 0 when the fd is not a socket (a file,
/// a pipe, closed).
#[inline(always)]
pub fn socket_of(fd: i32) -> u64 {
    socket(fd).unwrap_or(0)
}

/// The `struct file *` of `fd` in the current task.
#[inline(always)]
pub fn file_of(fd: i32) -> Option<u64> {
    if fd < 0 {
        return None;
    }
    let offsets = CONFIG.get(0)?.fd_table;
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, offsets.task_files.into())?;
    let fdt: u64 = read(files, offsets.files_fdt.into())?;
    let max_fds: u32 = read(fdt, offsets.fdt_max_fds.into())?;
    if fd as u32 >= max_fds {
        return None;
    }
    let fds: u64 = read(fdt, offsets.fdt_fd.into())?;
    let file: u64 = read(fds, fd as u64 * 8)?;
    (file != 0).then_some(file)
}

#[inline(always)]
fn socket(fd: i32) -> Option<u64> {
    let offsets = CONFIG.get(0)?.fd_table;
    let file = file_of(fd)?;
    let inode: u64 = read(file, offsets.file_inode.into())?;
    let mode: u16 = read(inode, offsets.inode_mode.into())?;
    if mode & S_IFMT != S_IFSOCK {
        return None;
    }
    let socket: u64 = read(file, offsets.file_private_data.into())?;
    read(socket, offsets.socket_sk.into())
}
