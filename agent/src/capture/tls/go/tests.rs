//! Inspection of real Go binaries, built here by Debian's Go (`golang-go`, set up by
//! `cargo xtask setup`) from the end-to-end tests' peer: plain, stripped, and
//! position-independent and stripped.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use super::*;

/// The peer's source, shared with the end-to-end tests.
const PEER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/go_tls/main.go"
);

/// The builds, by name: `plain`, `stripped`, `pie-stripped`, `no-tls`.
fn build(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("apiscope-go-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let hello = dir.join("hello.go");
        std::fs::write(
            &hello,
            "package main\n\nfunc main() { println(\"hello\") }\n",
        )
        .expect("source written");
        let builds: [(&str, &[&str], &Path); 4] = [
            ("plain", &[], Path::new(PEER)),
            ("stripped", &["-ldflags=-s -w"], Path::new(PEER)),
            (
                "pie-stripped",
                &["-buildmode=pie", "-ldflags=-s -w"],
                Path::new(PEER),
            ),
            ("no-tls", &[], &hello),
        ];
        for (name, flags, source) in builds {
            let status = Command::new("go")
                .arg("build")
                .args(flags)
                .arg("-o")
                .arg(dir.join(name))
                .arg(source)
                .status()
                .expect("`go` runs (Debian's golang-go; `cargo xtask setup` installs it)");
            assert!(status.success(), "go build {name} failed");
        }
        dir
    });
    dir.join(name)
}

fn inspect_file(path: &Path) -> GoInspection {
    let data = std::fs::read(path).expect("binary readable");
    let file = object::File::parse(&*data).expect("an ELF file");
    inspect(&file)
}

fn probes(name: &str) -> GoTlsProbes {
    match inspect_file(&build(name)) {
        GoInspection::Probe(probes) => probes,
        other => panic!("{name}: expected probes, got {other:?}"),
    }
}

#[test]
fn a_go_tls_binary_gets_both_functions_with_their_returns() {
    let plain = probes("plain");
    assert!(plain.version.starts_with("go1."), "{}", plain.version);
    assert_eq!(plain.layout, layout::KNOWN_LAYOUT);
    let names: Vec<_> = plain
        .functions
        .iter()
        .map(|f| (f.name, f.direction))
        .collect();
    assert_eq!(
        names,
        [
            ("crypto/tls.(*Conn).Write", Direction::Egress),
            ("crypto/tls.(*Conn).Read", Direction::Ingress)
        ]
    );
    let data = std::fs::read(build("plain")).expect("binary readable");
    assert!(
        plain.functions[0].returns.is_empty(),
        "Write is sent at its entry"
    );
    for function in &plain.functions {
        assert_eq!(
            function.returns.is_empty(),
            function.direction == Direction::Egress,
            "{}",
            function.name
        );
        for offset in &function.returns {
            assert!(*offset > function.entry, "{}", function.name);
            assert_eq!(
                data[*offset as usize], 0xc3,
                "{} has no RET at {offset:#x}",
                function.name
            );
        }
    }
}

#[test]
fn stripped_binaries_are_probed_at_the_same_places_through_gos_function_table() {
    assert_eq!(probes("stripped").functions, probes("plain").functions);
    let pie = probes("pie-stripped");
    let data = std::fs::read(build("pie-stripped")).expect("binary readable");
    for function in &pie.functions {
        for offset in &function.returns {
            assert_eq!(
                data[*offset as usize], 0xc3,
                "{} at {offset:#x}",
                function.name
            );
        }
    }
}

#[test]
fn the_layout_table_agrees_with_the_binarys_dwarf() {
    let data = std::fs::read(build("plain")).expect("binary readable");
    let file = object::File::parse(&*data).expect("an ELF file");
    let release = buildinfo::go_version(&file)
        .and_then(|version| GoRelease::parse(&version))
        .expect("a release");
    assert_eq!(layout::from_dwarf(&file), layout::known(release));
    assert!(layout::known(release).is_some());
    // A stripped binary has no DWARF to read.
    let data = std::fs::read(build("stripped")).expect("binary readable");
    let file = object::File::parse(&*data).expect("an ELF file");
    assert_eq!(layout::from_dwarf(&file), None);
}

#[test]
fn other_binaries_are_not_probed() {
    assert!(matches!(
        inspect_file(&build("no-tls")),
        GoInspection::WithoutTls
    ));
    assert!(matches!(
        inspect_file(Path::new("/bin/true")),
        GoInspection::NotGo
    ));
}

/// The binary `name` claiming to be built by Go 1.99, a release the layout table does not know.
fn from_the_future(name: &str) -> Vec<u8> {
    let mut data = std::fs::read(build(name)).expect("binary readable");
    let file = object::File::parse(&*data).expect("an ELF file");
    let (start, len) = file
        .section_by_name(".go.buildinfo")
        .and_then(|section| section.file_range())
        .expect("build information");
    let section = start as usize..(start + len) as usize;
    let at = data[section.clone()]
        .windows(6)
        .position(|window| window == b"go1.19")
        .expect("Debian's Go 1.19 built it")
        + section.start;
    data[at..at + 6].copy_from_slice(b"go1.99");
    data
}

#[test]
fn an_unknown_release_is_probed_with_the_layout_its_dwarf_gives() {
    let data = from_the_future("plain");
    let file = object::File::parse(&*data).expect("an ELF file");
    match inspect(&file) {
        GoInspection::Probe(probes) => {
            assert!(probes.version.starts_with("go1.99"), "{}", probes.version);
            assert_eq!(probes.layout, layout::KNOWN_LAYOUT);
        }
        other => panic!("expected probes from DWARF, got {other:?}"),
    }
}

#[test]
fn an_unknown_stripped_release_is_not_probed_and_says_why() {
    let data = from_the_future("stripped");
    let file = object::File::parse(&*data).expect("an ELF file");
    match inspect(&file) {
        GoInspection::Unsupported(why) => assert!(why.starts_with("go1.99"), "{why}"),
        other => panic!("expected unsupported, got {other:?}"),
    }
}
