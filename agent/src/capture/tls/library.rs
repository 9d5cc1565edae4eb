//! TLS libraries whose read and write functions take (session, buffer, length) and return the
//! bytes moved, so that one set of programs serves them all: OpenSSL, and GnuTLS
//! (`gnutls_record_recv`/`gnutls_record_send`, whose `ssize_t` results fit the `int` the
//! return program reads, as a record is at most 16 KiB). Which functions a file exports,
//! attaching their uprobes, and where the libraries' shared copies are (the loader cache, the
//! processes' mappings).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use agent_common::maps::{GNUTLS_FILE_PREFIXES, OPENSSL_FILE_PREFIXES};
use aya::Ebpf;
use log::debug;
use object::{Object, ObjectSymbol};

use super::{TlsStack, attach_uprobe};
use crate::capture::{
    CaptureError,
    links::ProbeLink,
    probes::{GNUTLS_ENTRY_PROBES, TLS_ENTRY_PROBES, TLS_EXIT_PROGRAM},
};

/// A TLS library the shared programs probe.
#[derive(Debug)]
pub(super) struct Library {
    /// Its stack.
    pub stack: TlsStack,
    /// The file names of its shared copies start with one of these.
    file_prefixes: &'static [&'static str],
    /// Its functions, each with its entry program; one return program serves them all.
    probes: &'static [(&'static str, &'static str)],
}

/// Every library, in the order a file is tried against them (an executable that exports
/// OpenSSL's functions is OpenSSL's, whatever else it carries).
pub(super) const LIBRARIES: [Library; 2] = [
    Library {
        stack: TlsStack::Openssl,
        file_prefixes: &OPENSSL_FILE_PREFIXES,
        probes: &TLS_ENTRY_PROBES,
    },
    Library {
        stack: TlsStack::Gnutls,
        file_prefixes: &GNUTLS_FILE_PREFIXES,
        probes: &GNUTLS_ENTRY_PROBES,
    },
];

impl Library {
    /// The functions of this library that `file` exports, in probe-table order.
    pub(super) fn exported_functions(&self, file: &object::File) -> Vec<&'static str> {
        self.probes
            .iter()
            .map(|(symbol, _)| *symbol)
            .filter(|wanted| {
                file.dynamic_symbols()
                    .any(|s| s.is_definition() && s.name() == Ok(*wanted))
            })
            .collect()
    }

    /// Attaches the entry and return programs to each of `symbols` in `path`, adding their
    /// links to `links`; on failure the links made so far stay there (attached) until the file
    /// is retired or the agent stops.
    pub(super) fn attach(
        &self,
        ebpf: &mut Ebpf,
        path: &Path,
        symbols: &[&str],
        links: &mut Vec<ProbeLink>,
    ) -> Result<(), CaptureError> {
        for (symbol, program) in self.probes {
            if !symbols.contains(symbol) {
                continue;
            }
            for name in [*program, TLS_EXIT_PROGRAM] {
                attach_uprobe(ebpf, name, (*symbol).into(), path, links)?;
                debug!("{name} attached to {symbol} in {}", path.display());
            }
        }
        Ok(())
    }

    /// Whether `name` is a file name of one of this library's shared copies.
    fn names(&self, name: &str) -> bool {
        self.file_prefixes
            .iter()
            .any(|prefix| name.starts_with(prefix))
    }
}

/// The libraries' paths in the dynamic loader's cache.
pub(super) fn loader_cache_libraries() -> Vec<PathBuf> {
    let Ok(output) = Command::new("ldconfig").arg("-p").output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| {
            let name = line.trim_start();
            LIBRARIES.iter().any(|library| library.names(name))
        })
        .filter_map(|line| line.rsplit(" => ").next())
        .map(|path| PathBuf::from(path.trim()))
        .collect()
}

/// Distinct paths of the libraries' copies in the text of a `/proc/PID/maps` file.
pub(super) fn mapped_libraries(maps: &str) -> Vec<&Path> {
    let mut paths: Vec<&Path> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| {
            Path::new(path)
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| LIBRARIES.iter().any(|library| library.names(name)))
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
    fn finds_the_libraries_in_maps_once() {
        let maps = "\
7f00-7f10 r--p 00000000 fe:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f10-7f20 r-xp 00010000 fe:01 123 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f20-7f30 r-xp 00000000 fe:01 124 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7f30-7f40 rw-p 00000000 00:00 0
7f40-7f50 r-xp 00000000 fe:01 125 /opt/app/lib/libssl-abc123.so.1.1
7f50-7f60 r-xp 00000000 fe:01 126 /usr/lib/x86_64-linux-gnu/libgnutls.so.30.34.3";
        assert_eq!(
            mapped_libraries(maps),
            vec![
                Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3"),
                Path::new("/opt/app/lib/libssl-abc123.so.1.1"),
                Path::new("/usr/lib/x86_64-linux-gnu/libgnutls.so.30.34.3"),
            ]
        );
    }

    #[test]
    fn the_system_libraries_export_every_probed_function() {
        let libraries = loader_cache_libraries();
        for (library, expected) in LIBRARIES.iter().zip([
            &[
                "SSL_read",
                "SSL_write",
                "SSL_read_ex",
                "SSL_write_ex",
                "SSL_do_handshake",
            ][..],
            &[
                "gnutls_record_recv",
                "gnutls_record_send",
                "gnutls_handshake",
            ][..],
        ]) {
            let path = libraries
                .iter()
                .find(|path| {
                    path.file_name()
                        .and_then(|name| name.to_str())
                        .is_some_and(|name| library.names(name))
                })
                .unwrap_or_else(|| panic!("no {:?} in the loader cache", library.stack));
            let data = std::fs::read(path).expect("library readable");
            let file = object::File::parse(&*data).expect("an ELF file");
            assert_eq!(
                library.exported_functions(&file),
                expected,
                "{}",
                path.display()
            );
        }
    }
}
