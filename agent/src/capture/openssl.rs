//! Finding every OpenSSL copy on the host and attaching the TLS uprobes once per file.
//!
//! Candidates: the `libssl` the dynamic loader knows (`ldconfig -p`), every `libssl` mapped by
//! a running process (through `/proc/PID/root`, so copies inside containers count), and
//! executables that export `SSL_write` themselves (OpenSSL linked in statically, as in Node).
//! A uprobe on a file applies to every process that maps it, so each distinct file (device,
//! inode) is attached once. A file no process maps any more (its containers gone) is detached
//! by [`TlsAttacher::retire_unmapped`], so that image churn on a node neither grows the agent
//! nor keeps deleted files' inodes alive in the kernel; the loader cache's copies stay.

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
};

use aya::{
    Ebpf,
    programs::{UProbe, uprobe::UProbeScope},
};
use log::{debug, info, warn};
use object::{Object, ObjectSymbol};

use super::{
    CaptureError,
    links::ProbeLink,
    probes::{TLS_ENTRY_PROBES, TLS_EXIT_PROGRAM},
    running_pids,
};

/// What is known of one file (by device and inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileVerdict {
    /// The uprobes are attached to it.
    Attached,
    /// It exports none of the OpenSSL functions, or attaching failed; not tried again.
    Skipped,
}

/// A file, by device and inode.
type FileId = (u64, u64);

/// What the attacher holds for one file.
#[derive(Debug)]
struct FileEntry {
    verdict: FileVerdict,
    /// The file's uprobes; none when it was skipped.
    links: Vec<ProbeLink>,
    /// Found in the loader cache: stays attached while no process maps it, since the next
    /// program started will.
    permanent: bool,
}

/// Attaches the TLS uprobes to OpenSSL copies as they are found, and detaches them from the
/// copies no process maps any more.
#[derive(Debug, Default)]
pub struct TlsAttacher {
    /// Every file considered (executables included), with the uprobes attached to it, owned
    /// here so that stopping can detach them all at once.
    files: HashMap<FileId, FileEntry>,
}

impl TlsAttacher {
    /// Number of distinct files the uprobes are attached to.
    pub fn attached(&self) -> usize {
        self.files
            .values()
            .filter(|entry| entry.verdict == FileVerdict::Attached)
            .count()
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
        for path in loader_cache_libssl() {
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
    /// uprobes of those that had them, for detaching.
    pub fn retire_unmapped(&mut self) -> Vec<ProbeLink> {
        let mapped: HashSet<FileId> = running_pids()
            .flat_map(candidate_files)
            .filter_map(|path| file_id(&path))
            .collect();
        let mut links = Vec::new();
        self.files.retain(|id, entry| {
            let keep = entry.permanent || mapped.contains(id);
            if !keep {
                links.append(&mut entry.links);
            }
            keep
        });
        links
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
        let verdict = match exported_tls_functions(path) {
            Some(symbols) if !symbols.is_empty() => {
                match attach(ebpf, path, &symbols, &mut links) {
                    Ok(()) => {
                        info!(
                            "TLS capture attached to {} ({})",
                            path.display(),
                            symbols.join(", ")
                        );
                        FileVerdict::Attached
                    }
                    Err(error) => {
                        warn!("TLS capture not attached to {}: {error}", path.display());
                        FileVerdict::Skipped
                    }
                }
            }
            _ => FileVerdict::Skipped,
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
}

/// The files of process `pid` that may hold OpenSSL: its executable and the `libssl` copies
/// it maps, as paths seen through its root (so copies inside containers resolve).
fn candidate_files(pid: u32) -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from(format!("/proc/{pid}/exe"))];
    if let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) {
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        files.extend(
            mapped_libssl(&maps)
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

/// The OpenSSL functions `path` exports, in probe-table order; `None` if it is not a readable
/// ELF file.
fn exported_tls_functions(path: &Path) -> Option<Vec<&'static str>> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: read-only private mapping. A file truncated under us could fault; executables in
    // use cannot be written (ETXTBSY) and libraries are replaced by rename, not rewritten. Mapping
    // instead of reading keeps start-up cheap: only the symbol tables are paged in.
    let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let file = object::File::parse(&*data).ok()?;
    let exported: Vec<&'static str> = TLS_ENTRY_PROBES
        .iter()
        .map(|(symbol, _)| *symbol)
        .filter(|wanted| {
            file.dynamic_symbols()
                .any(|s| s.is_definition() && s.name() == Ok(*wanted))
        })
        .collect();
    Some(exported)
}

/// Attaches the entry and return programs to each of `symbols` in `path`, adding their links to
/// `links`; on failure the links made so far stay there (attached) until the file is retired
/// or the agent stops.
fn attach(
    ebpf: &mut Ebpf,
    path: &Path,
    symbols: &[&str],
    links: &mut Vec<ProbeLink>,
) -> Result<(), CaptureError> {
    for (symbol, program) in &TLS_ENTRY_PROBES {
        if !symbols.contains(symbol) {
            continue;
        }
        for name in [*program, TLS_EXIT_PROGRAM] {
            let uprobe: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or(CaptureError::MissingProgram(name))?
                .try_into()
                .map_err(|source| CaptureError::Program { name, source })?;
            let failed = |source| CaptureError::Program { name, source };
            let link = uprobe
                .attach(*symbol, path, UProbeScope::AllProcesses)
                .map_err(failed)?;
            links.push(ProbeLink::UProbe(uprobe.take_link(link).map_err(failed)?));
            debug!("{name} attached to {symbol} in {}", path.display());
        }
    }
    Ok(())
}

/// `libssl` paths from the dynamic loader's cache.
fn loader_cache_libssl() -> Vec<PathBuf> {
    let Ok(output) = Command::new("ldconfig").arg("-p").output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.trim_start().starts_with("libssl.so"))
        .filter_map(|line| line.rsplit(" => ").next())
        .map(|path| PathBuf::from(path.trim()))
        .collect()
}

/// Distinct `libssl` paths in the text of a `/proc/PID/maps` file.
fn mapped_libssl(maps: &str) -> Vec<&Path> {
    let mut paths: Vec<&Path> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| {
            Path::new(path)
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("libssl.so") || name.starts_with("libssl-"))
        })
        .map(Path::new)
        .collect();
    paths.dedup();
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_libssl_in_maps_once() {
        let maps = "\
7f00-7f10 r--p 00000000 fe:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f10-7f20 r-xp 00010000 fe:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f20-7f30 r-xp 00000000 fe:01 124 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7f30-7f40 rw-p 00000000 00:00 0
7f40-7f50 r-xp 00000000 fe:01 125 /opt/app/lib/libssl-abc123.so.1.1";
        assert_eq!(
            mapped_libssl(maps),
            vec![
                Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3"),
                Path::new("/opt/app/lib/libssl-abc123.so.1.1")
            ]
        );
    }

    #[test]
    fn system_libssl_exports_every_probed_function() {
        let libs = loader_cache_libssl();
        let lib = libs
            .first()
            .expect("the host has a libssl in the loader cache");
        let exported = exported_tls_functions(lib).expect("libssl is an ELF file");
        assert_eq!(
            exported,
            [
                "SSL_read",
                "SSL_write",
                "SSL_read_ex",
                "SSL_write_ex",
                "SSL_do_handshake"
            ]
        );
    }

    #[test]
    fn a_plain_file_exports_nothing() {
        assert_eq!(exported_tls_functions(Path::new("/etc/hostname")), None);
    }
}
