//! apiscope's kernel programs.
//!
//! - `probes::syscalls`: tracepoints on the socket data-path syscalls and the connection
//!   lifecycle (connect, accept, close).
//! - `probes::sock`: BTF tracepoints inside `sock_sendmsg`/`sock_recvmsg` that tell a socket
//!   syscall from a file or pipe one and hand over the kernel socket.
//! - `probes::openssl`: uprobes on `SSL_read`/`SSL_write` and their `_ex` forms for TLS plaintext.
//! - `probes::go_tls`: uprobes on Go's `crypto/tls.(*Conn).Write` and `.Read`, at entry and at
//!   each return instruction.
//! - `probes::process`: exec and exit, so userspace can attach to new OpenSSL copies and drop
//!   state of dead processes.
//! - `stdio`: the standard input and output of the processes selected for stdio capture.
//!
//! Every map is defined once, in `maps`. Records go through the one ring buffer `EVENTS`.
#![no_std]
#![no_main]

mod conn;
mod exec_hold;
mod fd_table;
mod filter;
mod handshake;
mod maps;
mod plaintext;
mod probes;
mod record;
mod stdio;
mod syscall_args;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program in which a panic is reachable, so this never runs.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
