//! OpenSSL: which of its functions a file exports, attaching their uprobes, and where its
//! shared copies are (the loader cache, the processes' mappings).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use aya::Ebpf;
use log::debug;
use object::{Object, ObjectSymbol};

use super::attach_uprobe;
use crate::capture::{
    CaptureError,
    links::ProbeLink,
    probes::{TLS_ENTRY_PROBES, TLS_EXIT_PROGRAM},
};

/// The OpenSSL functions `file` exports, in probe-table order.
pub(super) fn exported_functions(file: &object::File) -> Vec<&'static str> {
    TLS_ENTRY_PROBES
        .iter()
        .map(|(symbol, _)| *symbol)
        .filter(|wanted| {
            file.dynamic_symbols()
                .any(|s| s.is_definition() && s.name() == Ok(*wanted))
        })
        .collect()
}

/// Attaches the entry and return programs to each of `symbols` in `path`, adding their links to
/// `links`; on failure the links made so far stay there (attached) until the file is retired
/// or the agent stops.
pub(super) fn attach(
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
            attach_uprobe(ebpf, name, (*symbol).into(), path, links)?;
            debug!("{name} attached to {symbol} in {}", path.display());
        }
    }
    Ok(())
}

/// `libssl` paths from the dynamic loader's cache.
pub(super) fn loader_cache_libssl() -> Vec<PathBuf> {
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
pub(super) fn mapped_libssl(maps: &str) -> Vec<&Path> {
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
        let data = std::fs::read(lib).expect("libssl readable");
        let file = object::File::parse(&*data).expect("libssl is an ELF file");
        let exported = exported_functions(&file);
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
}
