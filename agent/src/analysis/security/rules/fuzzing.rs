//! What the `rules` fuzz target (`agent/fuzz`) runs: arbitrary bytes as a user's rule pack.

use super::ActiveRules;

/// `data` as the text of a rule pack file (bytes that are not UTF-8 never get past reading the
/// file), merged into a rule set, whose summary or error is then written as the agent logs
/// it. The default pack is left out: rules a pack repeats take the same override path, at a
/// fraction of the cost per input.
pub fn rule_pack(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let said = match ActiveRules::from_sources(&[("fuzz.yaml".to_owned(), text.to_owned())]) {
        Ok(rules) => rules.summary(),
        Err(error) => error.to_string(),
    };
    // Kept from the optimiser, which would otherwise drop the formatting.
    std::hint::black_box(said);
}
