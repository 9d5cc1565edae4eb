//! Every fuzz target of `agent/fuzz`: the protocols' (registered with each protocol in its
//! table) and the other stages' (stream assembly through the protocol stage, here in
//! [`streams`]; the rule-pack and configuration parsers; Go's tables in executables).
//! The seed corpus of every target runs through its harness in the unit tests, so the
//! harnesses are checked by every `cargo test`, and a target missing here or from the fuzz
//! crate fails them.

// The stream harness reads only the fuzzer's bytes, never captured ones.
#[allow(clippy::indexing_slicing)]
pub mod streams;

pub use crate::protocols::fuzzing::FuzzTarget;
use crate::protocols::{CONNECTION_PROTOCOLS, HTTP_LAYERS};

/// The targets of the stages other than the protocols.
const STAGE_TARGETS: &[FuzzTarget] = &[
    FuzzTarget {
        name: "streams",
        harness: streams::capture_events,
    },
    FuzzTarget {
        name: "rules",
        harness: crate::analysis::security::rules::fuzzing::rule_pack,
    },
    FuzzTarget {
        name: "config",
        harness: crate::config::fuzzing::config_file,
    },
    FuzzTarget {
        name: "go_binary",
        harness: crate::capture::fuzzing::go_binary_tables,
    },
];

/// Every fuzz target.
pub fn targets() -> Vec<FuzzTarget> {
    let protocols = CONNECTION_PROTOCOLS
        .iter()
        .flat_map(|protocol| protocol.fuzz);
    let layers = HTTP_LAYERS.iter().flat_map(|layer| layer.fuzz);
    protocols
        .chain(layers)
        .chain(STAGE_TARGETS)
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::{panic, path::Path};

    use super::*;

    /// Runs every file of `agent/fuzz/corpus/<target>` through `harness`.
    fn run_corpus(target: &str, harness: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("no seed corpus at {}: {e}", dir.display()));
        let mut seeds = 0;
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let seed = std::fs::read(&path).expect("corpus file");
            if panic::catch_unwind(|| harness(&seed)).is_err() {
                panic!("seed {} panicked", path.display());
            }
            seeds += 1;
        }
        assert!(seeds > 0, "empty seed corpus at {}", dir.display());
    }

    #[test]
    fn every_target_of_the_fuzz_crate_is_registered() {
        let manifest =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml"))
                .expect("agent/fuzz/Cargo.toml");
        let mut declared: Vec<&str> = manifest
            .split("[[bin]]")
            .skip(1)
            .filter_map(|bin| {
                bin.lines()
                    .find_map(|line| line.strip_prefix("name = "))
                    .map(|name| name.trim_matches('"'))
            })
            .collect();
        let mut known: Vec<&str> = targets().iter().map(|target| target.name).collect();
        declared.sort_unstable();
        known.sort_unstable();
        assert_eq!(declared, known);
    }

    #[test]
    fn every_seed_decodes_without_panic() {
        for target in targets() {
            run_corpus(target.name, target.harness);
        }
    }
}
