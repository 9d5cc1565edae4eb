//! Empty on purpose: the agent names this crate as a build-dependency so cargo rebuilds it when
//! the kernel programs change. The programs themselves are the `apiscope-ebpf` binary.
#![no_std]
