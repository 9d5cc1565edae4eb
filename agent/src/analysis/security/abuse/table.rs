//! The keys a detector counts per, in bounded memory: at most [`MAX_KEYS`] of them and at most
//! [`MAX_STORED_VALUES`] remembered values (object ids, user names, sources) across them; beyond
//! either the least recently seen key is forgotten.

use std::{hash::BuildHasher, num::NonZeroUsize};

use foldhash::fast::RandomState;
use lru::LruCache;

use super::{Detection, MAX_KEYS};

/// Values remembered in the distinct sets of one detector's keys (16 bytes each, so 4 MiB),
/// whatever their thresholds: with the default thresholds the key cap binds first, this keeps
/// a pack with high thresholds from holding thousands of values for each of 16 384 keys.
pub(super) const MAX_STORED_VALUES: usize = 262_144;

const KEY_CAP: NonZeroUsize = match NonZeroUsize::new(MAX_KEYS) {
    Some(cap) => cap,
    None => NonZeroUsize::MIN,
};

/// What a key counts per, borrowed from an observation.
#[derive(Clone, Copy, Hash)]
pub(super) enum KeyRef<'a> {
    Principal(&'a str),
    Source(&'a str),
    Endpoint(&'a str, &'a str),
    PrincipalEndpoint(&'a str, &'a str, &'a str),
    Credential(u64),
}

/// A key as stored, to tell it from another one with the same 64-bit hash.
enum Key {
    Principal(Box<str>),
    Source(Box<str>),
    Endpoint(Box<str>, Box<str>),
    PrincipalEndpoint(Box<str>, Box<str>, Box<str>),
    Credential(u64),
}

impl Key {
    fn new(key: &KeyRef<'_>) -> Self {
        match *key {
            KeyRef::Principal(p) => Self::Principal(p.into()),
            KeyRef::Source(s) => Self::Source(s.into()),
            KeyRef::Endpoint(s, e) => Self::Endpoint(s.into(), e.into()),
            KeyRef::PrincipalEndpoint(p, s, e) => {
                Self::PrincipalEndpoint(p.into(), s.into(), e.into())
            }
            KeyRef::Credential(c) => Self::Credential(c),
        }
    }

    fn is(&self, key: &KeyRef<'_>) -> bool {
        match (self, *key) {
            (Self::Principal(a), KeyRef::Principal(b)) | (Self::Source(a), KeyRef::Source(b)) => {
                **a == *b
            }
            (Self::Endpoint(s, e), KeyRef::Endpoint(s2, e2)) => **s == *s2 && **e == *e2,
            (Self::PrincipalEndpoint(p, s, e), KeyRef::PrincipalEndpoint(p2, s2, e2)) => {
                **p == *p2 && **s == *s2 && **e == *e2
            }
            (Self::Credential(a), KeyRef::Credential(b)) => *a == b,
            _ => false,
        }
    }
}

/// The state of one key: how many remembered values it holds memory for.
pub(super) trait Weigh {
    fn weight(&self) -> usize;
}

struct Slot<S> {
    key: Key,
    state: S,
}

/// Per-key states, least recently seen evicted first.
pub(super) struct KeyTable<S> {
    slots: LruCache<u64, Slot<S>, RandomState>,
    /// Keys are found by a keyed hash of their parts (seeded per table, so nobody can aim
    /// collisions at it), then compared, so an observation allocates only for a new key.
    hasher: RandomState,
    weight: usize,
}

impl<S: Weigh> KeyTable<S> {
    pub(super) fn new() -> Self {
        Self {
            slots: LruCache::with_hasher(KEY_CAP, RandomState::default()),
            hasher: RandomState::default(),
            weight: 0,
        }
    }

    /// Keys tracked.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// A keyed 64-bit hash of `value` (a source address, say), for distinct sets.
    pub(super) fn hash_str(&self, value: &str) -> u64 {
        self.hasher.hash_one(value)
    }

    /// Runs `f` on the state of `key`, made by `make` when the key is new (evicting the least
    /// recently seen key when the table is full), then evicts more keys while the table holds
    /// more than [`MAX_STORED_VALUES`] values.
    pub(super) fn observe(
        &mut self,
        key: KeyRef<'_>,
        make: impl FnOnce() -> S,
        f: impl FnOnce(&mut S) -> Option<Detection>,
    ) -> Option<Detection> {
        let hash = self.hasher.hash_one(key);
        if !self
            .slots
            .get_mut(&hash)
            .is_some_and(|slot| slot.key.is(&key))
        {
            // A new key, or (with odds of 2^-64 per pair) another key with the same hash,
            // which it replaces.
            let slot = Slot {
                key: Key::new(&key),
                state: make(),
            };
            self.weight += slot.state.weight();
            if let Some((_, old)) = self.slots.push(hash, slot) {
                self.weight = self.weight.saturating_sub(old.state.weight());
            }
        }
        let slot = self.slots.get_mut(&hash)?;
        let before = slot.state.weight();
        let detection = f(&mut slot.state);
        self.weight = (self.weight + slot.state.weight()).saturating_sub(before);
        // The key just seen is the most recent one, so it goes last (never while others remain).
        while self.weight > MAX_STORED_VALUES && self.slots.len() > 1 {
            match self.slots.pop_lru() {
                Some((_, old)) => self.weight = self.weight.saturating_sub(old.state.weight()),
                None => break,
            }
        }
        detection
    }
}
