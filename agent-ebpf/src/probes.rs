//! The programs, one file per area. Program names follow `<area>_<enter|exit>_<hook>`; the
//! userspace probe table (`agent/src/capture/probes.rs`) attaches each by that name.

mod go_tls;
pub(crate) mod openssl;
mod own_traffic;
mod process;
mod sock;
pub(crate) mod syscalls;
