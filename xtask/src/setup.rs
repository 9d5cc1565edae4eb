//! `cargo xtask setup [--for-tests]`: checks what building and testing apiscope need and installs
//! what is missing, one line per step ("ok: ..." or "installing: ..."). Idempotent, and fast when
//! everything is present. It never downloads a toolchain: the eBPF build uses the nightly already
//! installed (`$EBPF_TOOLCHAIN`, default `nightly`), and bpf-linker is linked to its libLLVM.

use std::{
    env, fs,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{ebpf_toolchain, run};

/// The bpf-linker release that works with the nightly's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Where bpf-linker finds the nightly's libLLVM: `LLVM_PREFIX` at build time, its RUNPATH at run time.
const LLVM_PREFIX: &str = "/opt/rustllvm";

/// Debian packages the tests need. `a|b` means either will do; `a` is installed if neither is.
/// (In Debian 12 `nginx-light` is only a transitional package that pulls in `nginx`.)
pub const TEST_PACKAGES: &[&str] = &[
    "curl",
    "openssl",
    "python3",
    "nginx|nginx-light",
    "wrk",
    "iproute2",
    "libcap2-bin",
    "bpftool",
    // `cargo xtask bench`: the floor's empty programs on the agent's hooks.
    "bpftrace",
    "nodejs",
    // Go's crypto/tls peers of tests/tls_stacks.rs and the Go binaries of the capture unit tests
    // (Debian's Go 1.19; the standard library only, as the Go module proxy is out of reach).
    "golang-go",
    // GnuTLS's own server (`gnutls-serv --http`), for tests/tls_stacks.rs.
    "gnutls-bin",
    // `cargo xtask vm-test`: the emulator, the guest's init, module dependencies, and the
    // decompressor of 6.12's modules.
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "xz-utils",
];

/// PyPI packages the tests need, installed with `python3 -m pip`.
/// `rotel`: a real OpenTelemetry collector (its `rotel-agent` binary ships inside the package)
/// that the OTLP end-to-end tests put between the agent and their receiver. `grpcio`: the real
/// gRPC client and server of tests/grpc.rs (manylinux wheels, no compiler needed).
/// `graphql-core`: the reference GraphQL implementation's Python port, which executes the
/// queries of tests/graphql.rs (pure Python). `hypercorn`: an ASGI server that accepts HTTP/1.1
/// `Upgrade: h2c` (nginx does not), for tests/http2.rs. `helm-python-sdk`: Helm 4's Go SDK as a
/// shared library (`libhelm_c.so` inside the wheel, no helm binary), which lints and renders the
/// chart in tests/helm.rs; `kubernetes-validate`: the Kubernetes API schemas, per version, that
/// the rendered objects are validated against there. `openai`: the official OpenAI client, whose
/// chat calls tests/genai.rs watches.
pub const PIP_PACKAGES: &[&str] = &[
    "rotel==0.0.1a15",
    "grpcio==1.85.1",
    "graphql-core==3.2.8",
    "hypercorn==0.18.0",
    "helm-python-sdk==0.2.2",
    "kubernetes-validate==1.37.0",
    "openapi-spec-validator==0.9.0",
    "openai==3.60.0",
    "mcp==2.3.0",
];

/// The Node fixtures (a @grpc/grpc-js server and client, tests/grpc.rs), whose npm packages are
/// installed from their lock file into their own `node_modules`.
const NODE_FIXTURES: &str = "tests/fixtures/grpc_node";

/// Written into `node_modules` after a successful install: a copy of the lock file it came from.
const NODE_INSTALL_STAMP: &str = "node_modules/.apiscope-installed-lock.json";

/// Policy file consulted by `invoke-rc.d`: while ours is there, installed services do not start.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// The line that marks a `policy-rc.d` as written by this module (and so ours to remove).
const POLICY_MARKER: &str = "# written by `cargo xtask setup`";

/// Runs every setup step; with `for_tests`, also installs the test packages and cargo-fuzz.
pub fn setup(for_tests: bool) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "cargo xtask must run as root: it mounts tracefs, may install packages, and the agent \
             loads eBPF programs"
        );
    }
    let toolchain = ebpf_toolchain();
    check_toolchain(&toolchain)?;
    ensure_rust_src(&toolchain)?;
    ensure_bpf_linker(&toolchain)?;
    ensure_mount("tracefs", "nodev", "/sys/kernel/tracing")?;
    if let Err(error) = ensure_mount("bpf", "bpf", "/sys/fs/bpf") {
        println!("warning: {error:#} (bpffs is only needed to pin maps)");
    }
    if for_tests {
        ensure_debian_packages()?;
        ensure_pip_packages()?;
        ensure_node_packages()?;
        ensure_cargo_fuzz()?;
    }
    Ok(())
}

/// Fails unless rustup has `toolchain`: only the preinstalled nightly can be used here.
fn check_toolchain(toolchain: &str) -> Result<()> {
    let list = stdout_of(Command::new("rustup").args(["toolchain", "list"]))?;
    let with_host = format!("{toolchain}-{}-", env::consts::ARCH);
    let found = list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|name| name == toolchain || name.starts_with(&with_host));
    if !found {
        bail!(
            "rustup toolchain `{toolchain}` (EBPF_TOOLCHAIN) is not installed. Set EBPF_TOOLCHAIN \
             to an installed nightly with rust-src and LLVM 22, or install that toolchain yourself: \
             setup never downloads toolchains, because a new nightly breaks bpf-linker"
        );
    }
    println!("ok: toolchain {toolchain}");
    Ok(())
}

/// Adds the `rust-src` component to `toolchain` (for `-Z build-std=core`) unless it is there.
fn ensure_rust_src(toolchain: &str) -> Result<()> {
    let installed = stdout_of(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        toolchain,
    ]))?;
    if installed.lines().any(|line| line.trim() == "rust-src") {
        println!("ok: rust-src on {toolchain}");
        return Ok(());
    }
    println!("installing: rust-src on {toolchain}");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", toolchain]))
}

/// Makes sure bpf-linker 0.13.0 starts: fixes its libLLVM symlinks, or installs it against the
/// libLLVM of `toolchain`.
fn ensure_bpf_linker(toolchain: &str) -> Result<()> {
    let linker = bpf_linker_path();
    match bpf_linker_version(&linker) {
        Ok(version) if version == BPF_LINKER_VERSION => {
            println!("ok: bpf-linker {version}");
            return Ok(());
        }
        Ok(version) => println!("found bpf-linker {version}, need {BPF_LINKER_VERSION}"),
        Err(error) if linker.exists() => {
            // Typically "error while loading shared libraries": the soname symlink is missing.
            println!("installing: libLLVM symlinks in {LLVM_PREFIX}/lib (bpf-linker: {error:#})");
            link_libllvm(toolchain)?;
            if bpf_linker_version(&linker).is_ok_and(|version| version == BPF_LINKER_VERSION) {
                println!("ok: bpf-linker {BPF_LINKER_VERSION}");
                return Ok(());
            }
        }
        Err(_) => {}
    }

    let verbose = stdout_of(rustc(toolchain).arg("-vV"))?;
    let llvm_major = verbose
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .and_then(|version| version.split('.').next())
        .with_context(|| format!("no `LLVM version` in `rustc +{toolchain} -vV`"))?;
    println!(
        "installing: bpf-linker {BPF_LINKER_VERSION} with llvm-{llvm_major}, linked to the libLLVM \
         of {toolchain} (about a minute)"
    );
    link_libllvm(toolchain)?;
    run(Command::new("cargo")
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--locked", "--force", "--no-default-features", "--features"])
        .arg(format!("llvm-{llvm_major}")))?;
    let installed = cargo_home().join("bin").join("bpf-linker");
    let version = bpf_linker_version(&installed)?;
    if version != BPF_LINKER_VERSION {
        bail!(
            "{} is {version} after installing {BPF_LINKER_VERSION}",
            installed.display()
        );
    }
    println!("ok: bpf-linker {version}");
    Ok(())
}

/// The bpf-linker that builds will use: the first on `PATH`, else `$CARGO_HOME/bin/bpf-linker`.
fn bpf_linker_path() -> PathBuf {
    env::var_os("PATH")
        .iter()
        .flat_map(env::split_paths)
        .chain([cargo_home().join("bin")])
        .map(|dir| dir.join("bpf-linker"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("bpf-linker"))
}

/// The version `linker --version` prints ("bpf-linker 0.13.0" gives "0.13.0").
fn bpf_linker_version(linker: &Path) -> Result<String> {
    let output = stdout_of(Command::new(linker).arg("--version"))?;
    output
        .split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "unexpected `{} --version` output: {output}",
                linker.display()
            )
        })
}

/// Links `toolchain`'s libLLVM into `$LLVM_PREFIX/lib`, both as `libLLVM.so` (to link
/// bpf-linker) and under its soname (to start it: its RUNPATH is `$LLVM_PREFIX/lib`).
fn link_libllvm(toolchain: &str) -> Result<()> {
    let sysroot = stdout_of(rustc(toolchain).args(["--print", "sysroot"]))?;
    let sysroot_lib = Path::new(sysroot.trim()).join("lib");
    let soname = fs::read_dir(&sysroot_lib)
        .with_context(|| format!("cannot list {}", sysroot_lib.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .find(|name| name.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", sysroot_lib.display()))?;
    let target = sysroot_lib.join(&soname);
    let dir = Path::new(LLVM_PREFIX).join("lib");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for name in ["libLLVM.so", soname.as_str()] {
        let link = dir.join(name);
        match fs::remove_file(&link) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(error).with_context(|| format!("cannot replace {}", link.display()));
            }
            _ => {}
        }
        symlink(&target, &link).with_context(|| format!("cannot create {}", link.display()))?;
        println!("  {} -> {}", link.display(), target.display());
    }
    Ok(())
}

/// Mounts a `fstype` filesystem at `target` unless something is mounted there already.
fn ensure_mount(fstype: &str, source: &str, target: &str) -> Result<()> {
    let mounts =
        fs::read_to_string("/proc/self/mounts").context("cannot read /proc/self/mounts")?;
    if mounts
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(target))
    {
        println!("ok: {fstype} mounted at {target}");
        return Ok(());
    }
    println!("installing: {fstype} mount at {target}");
    run(Command::new("mount").args(["-t", fstype, source, target]))
}

/// Installs the missing [`TEST_PACKAGES`] with apt-get, starting no services.
fn ensure_debian_packages() -> Result<()> {
    let names: Vec<&str> = TEST_PACKAGES
        .iter()
        .flat_map(|entry| entry.split('|'))
        .collect();
    // Exits non-zero when a package is unknown to dpkg, but still prints the known ones.
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${Status}\n"])
        .args(&names)
        .output()
        .context("cannot start dpkg-query")?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let installed = |name: &str| {
        listing.lines().any(|line| {
            let mut words = line.split_whitespace();
            words.next() == Some(name) && words.nth(2) == Some("installed")
        })
    };
    let (mut present, mut missing) = (Vec::new(), Vec::new());
    for entry in TEST_PACKAGES {
        match entry.split('|').find(|name| installed(name)) {
            Some(name) => present.push(name),
            None => missing.extend(entry.split('|').next()),
        }
    }
    if missing.is_empty() {
        println!("ok: Debian packages {}", present.join(" "));
        return Ok(());
    }
    println!("installing: Debian packages {}", missing.join(" "));
    let _no_service_starts = NoServiceStarts::new()?;
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing))
}

/// While alive, makes `invoke-rc.d` refuse to start services (so installing nginx leaves no
/// daemon running). An existing `policy-rc.d` that is not ours is left as it is.
struct NoServiceStarts {
    /// Whether this guard wrote the policy file, and so removes it when dropped.
    wrote: bool,
}

impl NoServiceStarts {
    /// Writes a `policy-rc.d` that exits 101 ("action forbidden"), unless another one exists.
    fn new() -> Result<Self> {
        match fs::read_to_string(POLICY_RC_D) {
            Ok(text) if !text.contains(POLICY_MARKER) => return Ok(Self { wrote: false }),
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(error).with_context(|| format!("cannot read {POLICY_RC_D}"));
            }
            _ => {}
        }
        fs::write(
            POLICY_RC_D,
            format!("#!/bin/sh\n{POLICY_MARKER}: start no services\nexit 101\n"),
        )
        .and_then(|()| fs::set_permissions(POLICY_RC_D, fs::Permissions::from_mode(0o755)))
        .with_context(|| format!("cannot write {POLICY_RC_D}"))?;
        Ok(Self { wrote: true })
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if self.wrote
            && let Err(error) = fs::remove_file(POLICY_RC_D)
        {
            println!("warning: cannot remove {POLICY_RC_D}: {error}");
        }
    }
}

/// Installs the missing [`PIP_PACKAGES`] with `python3 -m pip`.
fn ensure_pip_packages() -> Result<()> {
    let mut missing = Vec::new();
    for package in PIP_PACKAGES {
        // `pip show` takes a bare name; a pin (`name==version`) is compared with its answer.
        let (name, version) = package.split_once("==").unwrap_or((package, ""));
        let shown = Command::new("python3")
            .args(["-m", "pip", "show", name])
            .output()
            .context("cannot start python3")?;
        let installed = String::from_utf8_lossy(&shown.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("Version:").map(|v| v.trim().to_owned()));
        let wanted = match installed {
            Some(installed) => !version.is_empty() && installed != version,
            None => true,
        };
        if wanted {
            missing.push(*package);
        }
    }
    if missing.is_empty() {
        let listed = if PIP_PACKAGES.is_empty() {
            "(none listed)".to_owned()
        } else {
            PIP_PACKAGES.join(" ")
        };
        println!("ok: PyPI packages {listed}");
        return Ok(());
    }
    println!("installing: PyPI packages {}", missing.join(" "));
    run(Command::new("python3")
        .args(["-m", "pip", "install", "--quiet"])
        .args(&missing))
}

/// Installs the Node fixtures' packages with `npm ci` unless the lock file is the one last
/// installed. npm comes with NodeSource's `nodejs`; Debian's own `nodejs` needs the `npm` package.
fn ensure_node_packages() -> Result<()> {
    let dir = crate::workspace_root().join(NODE_FIXTURES);
    let lock = fs::read(dir.join("package-lock.json"))
        .with_context(|| format!("cannot read {NODE_FIXTURES}/package-lock.json"))?;
    let stamp = dir.join(NODE_INSTALL_STAMP);
    if fs::read(&stamp).is_ok_and(|installed| installed == lock) {
        println!("ok: npm packages of {NODE_FIXTURES}");
        return Ok(());
    }
    if Command::new("npm").arg("--version").output().is_err() {
        println!("installing: Debian package npm");
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends", "npm"]))?;
    }
    println!("installing: npm packages of {NODE_FIXTURES}");
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(&dir))?;
    fs::write(&stamp, lock).with_context(|| format!("cannot write {}", stamp.display()))
}

/// Installs cargo-fuzz (which builds and runs the fuzz targets of `agent/fuzz`) unless
/// `cargo fuzz --version` answers. The default toolchain builds it, from its lock file: only
/// the targets need the nightly.
pub fn ensure_cargo_fuzz() -> Result<()> {
    if let Ok(version) = stdout_of(Command::new("cargo").args(["fuzz", "--version"])) {
        println!("ok: {}", version.trim());
        return Ok(());
    }
    println!("installing: cargo-fuzz (about a minute)");
    run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

/// `rustc +toolchain`, never letting rustup download a missing toolchain.
fn rustc(toolchain: &str) -> Command {
    let mut cmd = Command::new("rustc");
    cmd.arg(format!("+{toolchain}"))
        .env("RUSTUP_AUTO_INSTALL", "0");
    cmd
}

/// `$CARGO_HOME`, by default `~/.cargo`.
fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME").map_or_else(
        || PathBuf::from(env::var_os("HOME").unwrap_or_default()).join(".cargo"),
        PathBuf::from,
    )
}

/// Runs `cmd` quietly and returns its stdout; fails with its stderr unless it exits with 0.
fn stdout_of(cmd: &mut Command) -> Result<String> {
    let shown = crate::display(cmd);
    let output = cmd
        .output()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).with_context(|| format!("`{shown}` printed non-UTF-8"))
}
