//! `cargo xtask vm-test [--kernel 6.1|6.12|all]`: the agent built here, run on the kernels its
//! users' nodes run, under qemu.
//!
//! Debian's kernel packages (fetched with `apt-get download`, cached in [`CACHE`]) boot under
//! qemu's TCG (KVM does not boot a guest on these machines). There is no disk image: the guest
//! mounts this machine's root file system read-only over 9p, under a tmpfs overlay so that
//! what the tests write stays in the guest, and runs a smoke suite of the end-to-end tests
//! built here against the agent built here ([`SMOKE_TESTS`]). The guest reports on its serial
//! console, line by line, with [`MARK`] before each line meant for this side.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{
    agent_bin, build, run, setup,
    test::{TestBinary, build_binaries},
    workspace_root,
};

/// Where downloaded kernels are kept, across checkouts.
const CACHE: &str = "/var/cache/apiscope/kernels";

/// Printed by the guest before every line this side reads.
const MARK: &str = "APISCOPE-VM:";

/// How long one kernel's whole run may take before the guest is killed: boot, the agent's
/// start under emulation (a few seconds each), and the smoke tests.
const GUEST_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// The smoke suite: `(test binary, test)` of `tests/`, run one at a time in the guest. What
/// a node on an older kernel must do: load every program within budget, capture plain HTTP
/// and TLS (OpenSSL, and Go's crypto/tls through attach cookies) on both ends, export spans
/// over OTLP, keep the inventory across a restart, leave nothing attached after SIGTERM, and
/// stop a new executable at exec (`bpf_send_signal`) and continue it when the agent dies.
pub const SMOKE_TESTS: &[(&str, &str)] = &[
    ("cli", "check_reports_every_requirement_and_passes_as_root"),
    (
        "kernel",
        "every_program_verifies_within_its_budget_with_each_socket_lookup",
    ),
    ("capture", "plain_http_request_seen_once_on_each_side"),
    (
        "capture",
        "tls_plaintext_captured_on_both_sides_without_ciphertext",
    ),
    (
        "tls_stacks",
        "go_http2_calls_become_server_and_client_spans",
    ),
    ("otlp", "each_call_is_one_server_and_one_client_span"),
    (
        "inventory",
        "the_inventory_survives_a_restart_and_a_corrupt_database_is_refused",
    ),
    ("lifecycle", "sigterm_detaches_every_probe"),
    (
        "lifecycle",
        "a_crash_ends_every_hold_and_the_keeper_with_it",
    ),
];

/// Variables the guest's tests get from this side, beside those the script sets itself.
const PASSED_ENV: &[&str] = &["PATH", "HOME", "LANG", "PYENV_ROOT", "RUST_BACKTRACE"];

/// A kernel line of Debian's registry.
#[derive(Debug, Clone, Copy)]
pub struct KernelLine {
    /// How the command line names it.
    name: &'static str,
    /// Start of its package names; the newest package of the line is taken.
    package_prefix: &'static str,
    /// End of its package names.
    package_suffix: &'static str,
}

/// The kernels of the matrix: Debian 12's own (6.1 LTS, the generation of most cloud node
/// images) and the 6.12 line Debian 12 also carries.
pub const KERNELS: [KernelLine; 2] = [
    KernelLine {
        name: "6.1",
        package_prefix: "linux-image-6.1.0-",
        package_suffix: "-amd64-unsigned",
    },
    KernelLine {
        name: "6.12",
        package_prefix: "linux-image-6.12.",
        package_suffix: "+deb12-amd64-unsigned",
    },
];

/// The modules the guest needs to mount its root, where the kernel has them as modules.
const GUEST_MODULES: [&str; 4] = ["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// Flags of `cargo xtask vm-test`.
#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// Which kernel: 6.1, 6.12 or all.
    #[arg(long, default_value = "all")]
    kernel: String,
}

/// Sets up, builds the agent and runs the smoke suite on every kernel asked for.
pub fn vm_test(args: &VmArgs) -> Result<()> {
    let kernels: Vec<KernelLine> = KERNELS
        .into_iter()
        .filter(|kernel| args.kernel == "all" || args.kernel == kernel.name)
        .collect();
    if kernels.is_empty() {
        bail!("unknown kernel `{}`: use 6.1, 6.12 or all", args.kernel);
    }
    setup::setup(true)?;
    build::build_agent()?;
    run_matrix(&kernels, &build_binaries(None, &[])?)
}

/// Runs the smoke suite on each of `kernels` against the agent and test `binaries` already
/// built; fails naming each kernel and test that failed.
pub fn run_matrix(kernels: &[KernelLine], binaries: &[TestBinary]) -> Result<()> {
    let mut failures = Vec::new();
    for &kernel in kernels {
        let started = Instant::now();
        let image = KernelImage::fetch(kernel)?;
        let outcome = image.run_smoke(binaries)?;
        println!(
            "vm-test {} ({}): {} passed, {} failed, in {:.0?}",
            kernel.name,
            image.version,
            outcome.passed.len(),
            outcome.failed.len(),
            started.elapsed()
        );
        failures.extend(
            outcome
                .failed
                .into_iter()
                .map(|test| format!("{} ({}): {test}", kernel.name, image.version)),
        );
    }
    if !failures.is_empty() {
        bail!(
            "smoke tests failed on the kernel matrix:\n  {}",
            failures.join("\n  ")
        );
    }
    Ok(())
}

/// A kernel ready to boot: its image and its modules, unpacked from its package.
struct KernelImage {
    /// `uname -r` of the kernel.
    version: String,
    /// Where the package is unpacked.
    root: PathBuf,
}

impl KernelImage {
    /// The newest package of the line, downloaded and unpacked unless it is in the cache.
    fn fetch(line: KernelLine) -> Result<Self> {
        let package = newest_package(line)?;
        let root = Path::new(CACHE).join(&package);
        let done = root.join(".unpacked");
        if !done.exists() {
            println!("vm-test {}: fetching {package}", line.name);
            let download = Path::new(CACHE).join("download");
            let _ = fs::remove_dir_all(&download);
            fs::create_dir_all(&download)
                .with_context(|| format!("cannot create {}", download.display()))?;
            // apt's sandbox user cannot write here; the download is checked by apt as usual.
            run(Command::new("apt-get")
                .args(["-o", "APT::Sandbox::User=root", "download", &package])
                .current_dir(&download))?;
            let deb = only_file(&download)?;
            let _ = fs::remove_dir_all(&root);
            run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
            fs::remove_dir_all(&download)?;
            fs::write(&done, "")?;
        }
        let version = only_file(&root.join("lib/modules"))?
            .file_name()
            .and_then(|name| name.to_str())
            .context("unreadable module directory name")?
            .to_owned();
        if !root
            .join("lib/modules")
            .join(&version)
            .join("modules.dep")
            .exists()
        {
            run(Command::new("depmod").arg("-b").arg(&root).arg(&version))?;
        }
        Ok(Self { version, root })
    }

    fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.version))
    }

    fn modules(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.version)
    }

    /// Boots the kernel with the smoke suite and reads its results off the serial console.
    fn run_smoke(&self, binaries: &[TestBinary]) -> Result<SmokeOutcome> {
        let work = workspace_root().join("target/vm").join(&self.version);
        fs::create_dir_all(&work)?;
        let initrd = work.join("initrd.cpio");
        write_initramfs(&initrd, &self.module_files()?, &smoke_script(binaries)?)?;
        let mut qemu = Command::new("qemu-system-x86_64");
        // One host thread for both vCPUs: with a thread each (MTTCG), qemu 7.2 lets one vCPU run
        // kernel text the other is patching (an `int3` left by text_poke, at boot or when a
        // test attaches a tracepoint), and the guest's kernel dies with "Oops: int3" in about
        // one run of the suite in four. Taking turns costs nothing here: 6.12's suite ran in
        // 80 s, against 100 s with two threads.
        qemu.args([
            "-accel",
            "tcg,thread=single",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "4096",
        ])
        .args(["-nographic", "-no-reboot", "-monitor", "none"])
        .arg("-kernel")
        .arg(self.vmlinuz())
        .arg("-initrd")
        .arg(&initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet",
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        // SAFETY: only the async-signal-safe prctl runs between fork and exec; qemu dies with
        // this process, however it ends.
        unsafe {
            qemu.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = qemu.spawn().context("cannot start qemu-system-x86_64")?;
        let stdout = child.stdout.take().context("qemu's stdout")?;
        let (lines_tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + GUEST_TIMEOUT;
        let mut outcome = SmokeOutcome::default();
        let mut check = Vec::new();
        let mut finished = false;
        let mut panicked = false;
        while !finished {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    println!("[{}] {line}", self.version);
                    panicked |= line.contains("Kernel panic");
                    let Some(report) = line.split_once(MARK).map(|(_, rest)| rest.trim()) else {
                        continue;
                    };
                    if let Some(row) = report.strip_prefix("check ") {
                        check.push(row.to_owned());
                    } else if let Some(result) = report.strip_prefix("result ") {
                        outcome.record(result);
                    } else if report.starts_with("done") {
                        finished = true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "the {} guest did not finish within {GUEST_TIMEOUT:?}",
                        self.version
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        // The guest powers off after `done`; qemu exits with it.
        let waited = Instant::now();
        while child.try_wait()?.is_none() {
            if waited.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        ensure!(
            !panicked,
            "the {} guest kernel panicked (see its console above)",
            self.version
        );
        ensure!(
            finished,
            "the {} guest ended before its smoke suite did (see its console above)",
            self.version
        );
        let report = work.join("check-verbose.txt");
        fs::write(&report, check.join("\n") + "\n")?;
        println!(
            "vm-test {}: `apiscope check --verbose` saved in {}",
            self.version,
            report.display()
        );
        for (binary, test) in SMOKE_TESTS {
            let name = format!("{binary}::{test}");
            if !outcome.passed.contains(&name) && !outcome.failed.contains(&name) {
                outcome.failed.push(format!("{name} (no result)"));
            }
        }
        Ok(outcome)
    }

    /// The guest's modules, decompressed, in load order: each one after the modules it
    /// depends on (from `modules.dep`). Modules built into this kernel are skipped.
    fn module_files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let modules = self.modules();
        let dep = fs::read_to_string(modules.join("modules.dep"))?;
        let builtin = fs::read_to_string(modules.join("modules.builtin")).unwrap_or_default();
        let deps_of = |path: &str| -> Option<Vec<String>> {
            dep.lines().find_map(|line| {
                let (module, deps) = line.split_once(':')?;
                (module == path).then(|| deps.split_whitespace().map(str::to_owned).collect())
            })
        };
        let path_of = |name: &str, listing: &str| {
            listing
                .lines()
                .map(|line| line.split(':').next().unwrap_or(line))
                .find(|path| module_name(path) == name)
                .map(str::to_owned)
        };
        let mut order: Vec<String> = Vec::new();
        for name in GUEST_MODULES {
            let Some(path) = path_of(name, &dep) else {
                ensure!(
                    path_of(name, &builtin).is_some(),
                    "kernel {} has no module {name}",
                    self.version
                );
                continue;
            };
            // modules.dep lists every dependency, the deepest last.
            let mut needed = deps_of(&path).unwrap_or_default();
            needed.reverse();
            needed.push(path);
            for module in needed {
                if !order.contains(&module) {
                    order.push(module);
                }
            }
        }
        order
            .iter()
            .enumerate()
            .map(|(index, path)| {
                let file = modules.join(path);
                let bytes = if path.ends_with(".ko.xz") {
                    let output = Command::new("xz")
                        .arg("-dc")
                        .arg(&file)
                        .output()
                        .context("cannot start xz")?;
                    ensure!(output.status.success(), "xz cannot read {}", file.display());
                    output.stdout
                } else {
                    fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?
                };
                Ok((format!("{index:02}-{}.ko", module_name(path)), bytes))
            })
            .collect()
    }
}

/// `9pnet_virtio` for `kernel/net/9p/9pnet_virtio.ko.xz`.
fn module_name(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file)
}

/// The newest package of a kernel line in the registry (after `apt-get update` if the package
/// lists know none).
fn newest_package(line: KernelLine) -> Result<String> {
    for attempt in 0..2 {
        if attempt == 1 {
            run(Command::new("apt-get").arg("update"))?;
        }
        let output = Command::new("apt-cache")
            .args(["pkgnames", line.package_prefix])
            .output()
            .context("cannot start apt-cache")?;
        let newest = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|name| name.ends_with(line.package_suffix))
            .filter(|name| {
                let middle =
                    &name[line.package_prefix.len()..name.len() - line.package_suffix.len()];
                !middle.is_empty() && middle.bytes().all(|byte| byte.is_ascii_digit())
            })
            .max_by_key(|name| {
                name[line.package_prefix.len()..name.len() - line.package_suffix.len()]
                    .parse::<u32>()
                    .unwrap_or(0)
            })
            .map(str::to_owned);
        if let Some(package) = newest {
            return Ok(package);
        }
    }
    bail!(
        "no {}*{} package in the Debian package lists",
        line.package_prefix,
        line.package_suffix
    )
}

/// The one entry of `dir`.
fn only_file(dir: &Path) -> Result<PathBuf> {
    let entries: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| {
            !path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with('.'))
        })
        .collect();
    match entries.as_slice() {
        [only] => Ok(only.clone()),
        _ => bail!(
            "expected one entry in {}, found {}",
            dir.display(),
            entries.len()
        ),
    }
}

/// What the guest reported.
#[derive(Debug, Default)]
struct SmokeOutcome {
    passed: Vec<String>,
    failed: Vec<String>,
}

impl SmokeOutcome {
    /// Records a `result NAME STATUS` line.
    fn record(&mut self, result: &str) {
        match result.rsplit_once(' ') {
            Some((name, "0")) => self.passed.push(name.to_owned()),
            Some((name, _)) => self.failed.push(name.to_owned()),
            None => self.failed.push(format!("unreadable result `{result}`")),
        }
    }
}

/// The script the guest runs in this machine's root: `apiscope check --verbose` for the
/// record, then each smoke test, each reported by name and exit status.
fn smoke_script(binaries: &[TestBinary]) -> Result<String> {
    let mut script = String::from("#!/bin/sh\n# Written by `cargo xtask vm-test`.\n");
    for name in PASSED_ENV {
        if let Ok(value) = std::env::var(name) {
            script.push_str(&format!("export {name}={}\n", quote(&value)));
        }
    }
    let agent = agent_bin();
    script.push_str(&format!(
        "export E2E_AGENT_BIN={}\ncd {}\n",
        quote(&agent.to_string_lossy()),
        quote(&workspace_root().to_string_lossy())
    ));
    // The check's table is kept for the record; when the kernel refuses a program, the end
    // of the verifier's log is shown too, since this kernel cannot be asked again later.
    script.push_str(&format!(
        "log=/tmp/apiscope-verifier.log\n\
         {} check --verbose --verifier-log \"$log\" 2>&1 | while IFS= read -r row; do echo \"{MARK} check $row\"; done\n\
         [ -s \"$log\" ] && tail -n 80 \"$log\" | while IFS= read -r row; do echo \"{MARK} verifier $row\"; done\n",
        quote(&agent.to_string_lossy())
    ));
    for (binary, test) in SMOKE_TESTS {
        let found = binaries
            .iter()
            .find(|found| found.name == *binary)
            .with_context(|| format!("no executable for the smoke tests of {binary}"))?;
        script.push_str(&format!(
            "{} --exact {test} --test-threads=1\necho \"{MARK} result {binary}::{test} $?\"\n",
            quote(&found.executable.to_string_lossy())
        ));
    }
    script.push_str(&format!("echo \"{MARK} done\"\n"));
    Ok(script)
}

/// `text` in single quotes for `sh`.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The guest's `/init`: modules, the shared root under a tmpfs overlay (which also takes what is
/// written to `/tmp` and `/run`: the checkout may well be under `/tmp`), the file systems the
/// agent needs, loopback; then the smoke script in that root, and power off.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in /modules/*.ko; do
    insmod "$module" || echo "APISCOPE-VM: cannot load $module"
done
mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro hostroot /lower || echo "APISCOPE-VM: cannot mount the host root"
mount -t tmpfs -o size=2g tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || echo "APISCOPE-VM: cannot mount the overlay"
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mount -t tracefs nodev /newroot/sys/kernel/tracing
mount -t bpf bpf /newroot/sys/fs/bpf
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
ip link set lo up
echo "APISCOPE-VM: kernel $(uname -r)"
cp /smoke.sh /newroot/tmp/apiscope-smoke.sh
chroot /newroot /bin/sh /tmp/apiscope-smoke.sh 2>&1
echo "APISCOPE-VM: done"
poweroff -f
"#;

/// Writes the guest's initramfs: `/init`, a static busybox, the modules and the smoke script.
fn write_initramfs(path: &Path, modules: &[(String, Vec<u8>)], script: &str) -> Result<()> {
    /// File type bits of an inode mode.
    const DIRECTORY: u32 = 0o040000;
    const CHARACTER_DEVICE: u32 = 0o020000;
    const REGULAR: u32 = 0o100000;
    let busybox =
        fs::read("/bin/busybox").context("cannot read /bin/busybox (Debian's busybox-static)")?;
    let mut entries: Vec<(String, u32, Vec<u8>)> = vec![];
    for dir in ["bin", "dev", "proc", "sys", "modules"] {
        entries.push((dir.to_owned(), DIRECTORY | 0o755, Vec::new()));
    }
    // The kernel opens it for init's standard streams before init runs.
    entries.push((
        "dev/console".to_owned(),
        CHARACTER_DEVICE | 0o600,
        Vec::new(),
    ));
    entries.push(("init".to_owned(), REGULAR | 0o755, INIT.as_bytes().to_vec()));
    entries.push(("bin/busybox".to_owned(), REGULAR | 0o755, busybox));
    entries.push((
        "smoke.sh".to_owned(),
        REGULAR | 0o755,
        script.as_bytes().to_vec(),
    ));
    for (name, bytes) in modules {
        entries.push((format!("modules/{name}"), REGULAR | 0o644, bytes.clone()));
    }
    let mut out =
        fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    for (index, (name, mode, bytes)) in entries.iter().enumerate() {
        // /dev/console is character device 5:1.
        let console = name == "dev/console";
        let mut writer = cpio::NewcBuilder::new(name)
            .ino(index as u32 + 1)
            .mode(*mode)
            .nlink(1)
            .rdev_major(if console { 5 } else { 0 })
            .rdev_minor(if console { 1 } else { 0 })
            .write(&mut out, u32::try_from(bytes.len())?);
        writer.write_all(bytes)?;
        writer.finish()?;
    }
    cpio::newc::trailer(&mut out)?;
    out.flush()?;
    Ok(())
}
