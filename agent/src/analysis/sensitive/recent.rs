//! The classes of texts scanned lately. Most calls repeat the same header values (the host,
//! the user agent, `accept`), and each of them costs a pass of every pattern; a verdict depends
//! on the text alone (the patterns are built in), so it is kept.

use std::hash::BuildHasher as _;

use super::ClassSet;

/// Slots of the cache. Direct-mapped: a text takes its slot from whatever was there, so the
/// memory is bounded (at most `SLOTS` x [`MAX_TEXT`] bytes per thread) and a flood of new
/// values only costs misses.
const SLOTS: usize = 1024;

/// Longer texts are scanned every time: rarely repeated, and dear to keep.
pub(super) const MAX_TEXT: usize = 256;

/// Recent texts and their classes.
pub(super) struct RecentVerdicts {
    /// Seeded at random, so which texts share a slot cannot be chosen from outside.
    hasher: foldhash::fast::RandomState,
    slots: Vec<Option<(Box<str>, ClassSet)>>,
}

impl Default for RecentVerdicts {
    fn default() -> Self {
        Self {
            hasher: foldhash::fast::RandomState::default(),
            slots: vec![None; SLOTS],
        }
    }
}

impl RecentVerdicts {
    /// The classes of `text` (at most [`MAX_TEXT`] bytes), from the cache or from `scan`.
    pub(super) fn classes(&mut self, text: &str, scan: impl FnOnce() -> ClassSet) -> ClassSet {
        let slot = self.hasher.hash_one(text) as usize % SLOTS;
        if let Some(Some((seen, classes))) = self.slots.get(slot)
            && **seen == *text
        {
            return *classes;
        }
        let classes = scan();
        if let Some(entry) = self.slots.get_mut(slot) {
            *entry = Some((text.into(), classes));
        }
        classes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_is_scanned_once_and_a_different_one_again() {
        let mut recent = RecentVerdicts::default();
        let mut scans = 0;
        for text in ["api.local", "api.local", "curl/8.5", "api.local"] {
            recent.classes(text, || {
                scans += 1;
                ClassSet::default()
            });
        }
        assert!((2..=3).contains(&scans), "{scans} scans");
        // Whatever shared its slot, the text just scanned is kept.
        recent.classes("curl/8.5", ClassSet::default);
        let mut again = false;
        recent.classes("curl/8.5", || {
            again = true;
            ClassSet::default()
        });
        assert!(!again, "a text just scanned is scanned again");
    }
}
