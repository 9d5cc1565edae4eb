//! What the `config` fuzz target (`agent/fuzz`) runs: arbitrary bytes as the configuration
//! file.

use std::path::Path;

use super::Config;

/// `data` as the text of a configuration file (bytes that are not UTF-8 never get past
/// reading the file), parsed and validated, its error then written as the agent reports it.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = Config::parse(text, Path::new("apiscope.yaml")) {
        // Kept from the optimiser, which would otherwise drop the formatting.
        std::hint::black_box(error.to_string());
    }
}
