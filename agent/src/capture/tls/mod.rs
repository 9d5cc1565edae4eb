//! TLS plaintext from the libraries that encrypt it: finding each copy on the host and
//! attaching uprobes to it once per file.
//!
//! Candidates: the `libssl` and `libgnutls` copies the dynamic loader knows (`ldconfig -p`),
//! those mapped by a running process (through `/proc/PID/root`, so copies inside containers
//! count), and every running executable, which may be a Go program ([`go`], Go's own
//! `crypto/tls`) or carry OpenSSL linked in statically, as Node does ([`library`]). A uprobe on a file applies to
//! every process that maps it, so each distinct file (device, inode) is inspected and attached
//! once. A file no process maps any more (its containers gone) is detached by
//! [`TlsAttacher::retire_unmapped`], so that image churn on a node neither grows the agent nor
//! keeps deleted files' inodes alive in the kernel; the loader cache's copies stay.

mod go;
mod library;

pub(super) use go::FUNCTIONS as GO_FUNCTIONS;

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{
        UProbe,
        uprobe::{UProbeAttachPoint, UProbeScope},
    },
};
use log::{info, warn};

use super::{CaptureError, links::ProbeLink, running_pids};

/// A TLS implementation the agent takes plaintext from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsStack {
    /// OpenSSL 1.1 and 3, as a shared library or inside an executable.
    Openssl,
    /// GnuTLS, as a shared library.
    Gnutls,
    /// Go's `crypto/tls`.
    Go,
}

impl TlsStack {
    /// Every stack.
    pub const ALL: [TlsStack; 3] = [TlsStack::Openssl, TlsStack::Gnutls, TlsStack::Go];

    /// Stable name, used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            TlsStack::Openssl => "openssl",
            TlsStack::Gnutls => "gnutls",
            TlsStack::Go => "go",
        }
    }
}

/// Files of one TLS stack: those with uprobes, and those found but not probed (a Go release or
/// layout the agent does not know).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackCoverage {
    /// Files with uprobes attached.
    pub attached: u64,
    /// Files found and not probed.
    pub unsupported: u64,
}

/// [`StackCoverage`] of every stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsCoverage {
    /// OpenSSL copies.
    pub openssl: StackCoverage,
    /// GnuTLS copies.
    pub gnutls: StackCoverage,
    /// Go programs.
    pub go: StackCoverage,
}

impl TlsCoverage {
    /// The coverage of `stack`.
    pub fn of(&self, stack: TlsStack) -> StackCoverage {
        match stack {
            TlsStack::Openssl => self.openssl,
            TlsStack::Gnutls => self.gnutls,
            TlsStack::Go => self.go,
        }
    }

    fn of_mut(&mut self, stack: TlsStack) -> &mut StackCoverage {
        match stack {
            TlsStack::Openssl => &mut self.openssl,
            TlsStack::Gnutls => &mut self.gnutls,
            TlsStack::Go => &mut self.go,
        }
    }
}

/// What is known of one file (by device and inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileVerdict {
    /// The uprobes of a stack are attached to it.
    Attached(TlsStack),
    /// It uses a stack the agent cannot probe safely in this file.
    Unsupported(TlsStack),
    /// It carries no TLS stack the agent knows, or attaching failed; not tried again.
    Skipped,
}

/// A file, by device and inode.
type FileId = (u64, u64);

/// What the attacher holds for one file.
#[derive(Debug)]
struct FileEntry {
    verdict: FileVerdict,
    /// The file's uprobes; none unless it is attached.
    links: Vec<ProbeLink>,
    /// Found in the loader cache: stays attached while no process maps it, since the next
    /// program started will.
    permanent: bool,
}

/// What to attach to a file.
enum Plan {
    Library(&'static library::Library, Vec<&'static str>),
    Go(go::GoTlsProbes),
    Unsupported(TlsStack, String),
    Nothing,
}

/// Attaches the TLS uprobes to the library copies and executables as they are found, and
/// detaches them from the files no process maps any more.
#[derive(Debug)]
pub struct TlsAttacher {
    /// The stacks whose kernel programs loaded.
    stacks_on: Vec<TlsStack>,
    /// Every file considered (executables included), with the uprobes attached to it, owned
    /// here so that stopping can detach them all at once.
    files: HashMap<FileId, FileEntry>,
}

impl TlsAttacher {
    /// An attacher for the stacks whose programs loaded.
    pub fn new(stacks_on: Vec<TlsStack>) -> Self {
        Self {
            stacks_on,
            files: HashMap::new(),
        }
    }

    /// Whether any stack can be attached.
    pub fn is_on(&self) -> bool {
        !self.stacks_on.is_empty()
    }

    /// Files attached and found unsupported, per stack.
    pub fn coverage(&self) -> TlsCoverage {
        let mut coverage = TlsCoverage::default();
        for entry in self.files.values() {
            match entry.verdict {
                FileVerdict::Attached(stack) => coverage.of_mut(stack).attached += 1,
                FileVerdict::Unsupported(stack) => coverage.of_mut(stack).unsupported += 1,
                FileVerdict::Skipped => {}
            }
        }
        coverage
    }

    /// Hands over the links of every uprobe attached so far, for detaching.
    pub fn take_links(&mut self) -> Vec<ProbeLink> {
        self.files
            .values_mut()
            .flat_map(|entry| std::mem::take(&mut entry.links))
            .collect()
    }

    /// Scans the loader cache and every running process.
    pub fn scan_host(&mut self, ebpf: &mut Ebpf) {
        for path in library::loader_cache_libraries() {
            self.consider(ebpf, &path, true);
        }
        for pid in running_pids() {
            self.scan_process(ebpf, pid);
        }
    }

    /// Scans one process: its executable and the libraries it maps.
    pub fn scan_process(&mut self, ebpf: &mut Ebpf, pid: u32) {
        for path in candidate_files(pid) {
            self.consider(ebpf, &path, false);
        }
    }

    /// Forgets every file no running process maps (but the loader cache's), handing over the
    /// uprobes of those that had them, for detaching, and the inode numbers of all.
    pub fn retire_unmapped(&mut self) -> (Vec<ProbeLink>, HashSet<u64>) {
        let mapped: HashSet<FileId> = running_pids()
            .flat_map(candidate_files)
            .filter_map(|path| file_id(&path))
            .collect();
        let mut links = Vec::new();
        let mut inodes = HashSet::new();
        self.files.retain(|id, entry| {
            let keep = entry.permanent || mapped.contains(id);
            if !keep {
                links.append(&mut entry.links);
                inodes.insert(id.1);
            }
            keep
        });
        (links, inodes)
    }

    /// Attaches to `path` unless this file was seen already; `permanent` for the loader
    /// cache's files.
    fn consider(&mut self, ebpf: &mut Ebpf, path: &Path, permanent: bool) {
        let Some(id) = file_id(path) else {
            return;
        };
        if self.files.contains_key(&id) {
            return;
        }
        let mut links = Vec::new();
        let verdict = match self.plan(path) {
            Plan::Library(library, symbols) => {
                let attached = library.attach(ebpf, path, &symbols, &mut links);
                verdict(attached, library.stack, path, || symbols.join(", "))
            }
            Plan::Go(probes) => {
                let attached = go::attach(ebpf, path, &probes, &mut links);
                verdict(attached, TlsStack::Go, path, || {
                    let returns: usize = probes.functions.iter().map(|f| f.returns.len()).sum();
                    format!(
                        "Go {}, crypto/tls with {returns} return points",
                        probes.version
                    )
                })
            }
            Plan::Unsupported(stack, why) => {
                warn!(
                    "TLS capture cannot probe {} ({}): {why}; its plaintext is not seen",
                    path.display(),
                    stack.name()
                );
                FileVerdict::Unsupported(stack)
            }
            Plan::Nothing => FileVerdict::Skipped,
        };
        self.files.insert(
            id,
            FileEntry {
                verdict,
                links,
                permanent,
            },
        );
    }

    /// What to attach to the file at `path`, among the stacks that are on.
    fn plan(&self, path: &Path) -> Plan {
        let Ok(file) = std::fs::File::open(path) else {
            return Plan::Nothing;
        };
        // SAFETY: read-only private mapping. A file truncated under us could fault; executables
        // in use cannot be written (ETXTBSY) and libraries are replaced by rename, not
        // rewritten. Mapping instead of reading keeps start-up cheap: only the tables looked
        // at are paged in.
        let Ok(data) = (unsafe { memmap2::Mmap::map(&file) }) else {
            return Plan::Nothing;
        };
        let Ok(file) = object::File::parse(&*data) else {
            return Plan::Nothing;
        };
        if self.stacks_on.contains(&TlsStack::Go) {
            match go::inspect(&file) {
                go::GoInspection::Probe(probes) => return Plan::Go(probes),
                go::GoInspection::Unsupported(why) => return Plan::Unsupported(TlsStack::Go, why),
                // A Go binary carries no OpenSSL either.
                go::GoInspection::WithoutTls => return Plan::Nothing,
                go::GoInspection::NotGo => {}
            }
        }
        library::LIBRARIES
            .iter()
            .filter(|library| self.stacks_on.contains(&library.stack))
            .map(|library| (library, library.exported_functions(&file)))
            .find(|(_, symbols)| !symbols.is_empty())
            .map_or(Plan::Nothing, |(library, symbols)| {
                Plan::Library(library, symbols)
            })
    }
}

/// The verdict on a file after attaching `stack` to it, logged; `what` describes the probes.
fn verdict(
    attached: Result<(), CaptureError>,
    stack: TlsStack,
    path: &Path,
    what: impl FnOnce() -> String,
) -> FileVerdict {
    match attached {
        Ok(()) => {
            info!("TLS capture attached to {} ({})", path.display(), what());
            FileVerdict::Attached(stack)
        }
        Err(error) => {
            warn!("TLS capture not attached to {}: {error}", path.display());
            FileVerdict::Skipped
        }
    }
}

/// Runs Go's parsers of foreign bytes on `data` (the fuzz harness's entry).
pub(super) fn fuzz_go_tables(data: &[u8]) {
    go::fuzz_tables(data);
}

/// Attaches the uprobe program `name` at `point` of the file at `path`, for every process,
/// adding its link to `links`.
fn attach_uprobe(
    ebpf: &mut Ebpf,
    name: &'static str,
    point: UProbeAttachPoint,
    path: &Path,
    links: &mut Vec<ProbeLink>,
) -> Result<(), CaptureError> {
    let uprobe: &mut UProbe = ebpf
        .program_mut(name)
        .ok_or(CaptureError::MissingProgram(name))?
        .try_into()
        .map_err(|source| CaptureError::Program { name, source })?;
    let failed = |source| CaptureError::Program { name, source };
    let link = uprobe
        .attach(point, path, UProbeScope::AllProcesses)
        .map_err(failed)?;
    links.push(ProbeLink::UProbe(uprobe.take_link(link).map_err(failed)?));
    Ok(())
}

/// The files of process `pid` that may hold a TLS stack: its executable and the TLS library
/// copies it maps, as paths seen through its root (so copies inside containers resolve).
fn candidate_files(pid: u32) -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from(format!("/proc/{pid}/exe"))];
    if let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) {
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        files.extend(
            library::mapped_libraries(&maps)
                .into_iter()
                .map(|path| root.join(path.strip_prefix("/").unwrap_or(path))),
        );
    }
    files
}

/// The device and inode of the regular file at `path`.
fn file_id(path: &Path) -> Option<FileId> {
    let meta = std::fs::metadata(path).ok()?;
    meta.is_file().then(|| (meta.dev(), meta.ino()))
}
