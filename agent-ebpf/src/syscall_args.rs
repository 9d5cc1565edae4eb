//! The arguments of the current syscall, read from the user registers the kernel saved at
//! syscall entry: how a call whose entry the programs missed (it was already blocked when the
//! agent attached) is rebuilt.

use aya_ebpf::helpers::{
    bpf_probe_read_kernel,
    generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
};

/// Offsets in x86_64 `struct pt_regs` (uapi, stable) of the syscall arguments, in order: rdi,
/// rsi, rdx, r10.
const PT_REGS_ARGS: [u64; 4] = [112, 104, 96, 56];
/// Offset of `orig_ax`, the syscall number.
const PT_REGS_ORIG_AX: u64 = 120;

/// The saved user registers of the current task.
#[derive(Clone, Copy)]
pub struct SyscallArgs {
    regs: u64,
}

impl SyscallArgs {
    /// The current task's saved registers.
    #[inline(always)]
    pub fn current() -> Self {
        // SAFETY: helpers without preconditions in tracing programs; the result is only used
        // as an address for bpf_probe_read_kernel.
        let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
        Self { regs }
    }

    /// Argument `n` (0 to 3) of the syscall.
    #[inline(always)]
    pub fn arg(self, n: usize) -> Option<u64> {
        self.read(*PT_REGS_ARGS.get(n)?)
    }

    /// The syscall's number.
    #[inline(always)]
    pub fn number(self) -> Option<u64> {
        self.read(PT_REGS_ORIG_AX)
    }

    #[inline(always)]
    fn read(self, offset: u64) -> Option<u64> {
        // SAFETY: kernel read through the helper.
        unsafe { bpf_probe_read_kernel((self.regs + offset) as *const u64) }.ok()
    }
}
