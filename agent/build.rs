//! Builds the kernel programs (`agent-ebpf`) for the BPF target with the nightly toolchain and
//! leaves the object in `OUT_DIR`, where `capture::loader` embeds it.

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=EBPF_TOOLCHAIN");
    let toolchain = std::env::var("EBPF_TOOLCHAIN").unwrap_or_else(|_| "nightly".to_owned());
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root_dir = std::path::Path::new(&manifest_dir)
        .parent()
        .context("agent/ has no parent directory")?
        .join("agent-ebpf");
    let root_dir = root_dir.to_str().context("non-UTF-8 workspace path")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-ebpf",
            root_dir,
            no_default_features: false,
            features: &[],
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
