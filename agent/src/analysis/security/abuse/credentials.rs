//! Credentials abused at scale (OWASP API2:2023): many user names tried from one source
//! (credential stuffing, password spraying) and one credential used from many sources (a
//! leaked or shared token).

use serde::{Deserialize, Serialize};

use super::{
    AbuseDetector, Detection, MAX_DISTINCT, MAX_WINDOW_SECS, Observation, check_range,
    table::{KeyRef, KeyTable, Weigh},
    window::{KeyClock, Quiet, SlidingSet, Tick},
    window_ms,
};

/// Parameters of the credential stuffing detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CredentialStuffingParams {
    /// Distinct login user names from one source in the window at which it fires (2 to 1024).
    pub distinct_users: u32,
    /// The sliding window, in seconds (1 to 86 400).
    pub window_secs: u64,
}

impl Default for CredentialStuffingParams {
    fn default() -> Self {
        Self {
            distinct_users: 10,
            window_secs: 300,
        }
    }
}

impl CredentialStuffingParams {
    /// Rejects out-of-range values, saying which and why.
    pub fn validate(&self) -> Result<(), String> {
        check_range(
            "distinct_users",
            self.distinct_users.into(),
            2,
            MAX_DISTINCT as u64,
        )?;
        check_range("window_secs", self.window_secs, 1, MAX_WINDOW_SECS)
    }
}

/// Parameters of the token spread detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenSpreadParams {
    /// Distinct sources presenting one credential in the window at which it fires (2 to 1024).
    pub distinct_sources: u32,
    /// The sliding window, in seconds (1 to 86 400).
    pub window_secs: u64,
}

impl Default for TokenSpreadParams {
    fn default() -> Self {
        Self {
            distinct_sources: 5,
            window_secs: 300,
        }
    }
}

impl TokenSpreadParams {
    /// Rejects out-of-range values, saying which and why.
    pub fn validate(&self) -> Result<(), String> {
        check_range(
            "distinct_sources",
            self.distinct_sources.into(),
            2,
            MAX_DISTINCT as u64,
        )?;
        check_range("window_secs", self.window_secs, 1, MAX_WINDOW_SECS)
    }
}

/// A key of a detector that counts distinct values in a sliding window against a fixed
/// threshold.
struct DistinctKey {
    clock: KeyClock,
    values: SlidingSet,
    quiet: Quiet,
}

impl DistinctKey {
    fn new(now: u64) -> Self {
        Self {
            clock: KeyClock::new(now),
            values: SlidingSet::new(),
            quiet: Quiet::new(),
        }
    }

    /// Records `value` at `now`, keeping at most `threshold` values (enough to see it reached),
    /// and returns the distinct count when it reaches `threshold` and the key may fire.
    fn record(&mut self, now: u64, value: u64, threshold: usize, window_ms: u64) -> Option<usize> {
        let now = match self.clock.tick(now, window_ms) {
            Tick::At(now) => now,
            Tick::Restart(now) => {
                self.values.clear();
                self.quiet.reset();
                now
            }
        };
        self.values.expire(now, window_ms);
        self.values.insert(value, now, threshold);
        let distinct = self.values.len();
        (distinct >= threshold && self.quiet.fire(now, window_ms)).then_some(distinct)
    }
}

impl Weigh for DistinctKey {
    fn weight(&self) -> usize {
        self.values.capacity()
    }
}

/// Finds credential stuffing: at least `distinct_users` distinct login user names (hashed by
/// the caller) from one source in a sliding window, whatever the responses said; calls without
/// a login user name are not counted.
pub struct CredentialStuffingDetector {
    params: CredentialStuffingParams,
    window_ms: u64,
    keys: KeyTable<DistinctKey>,
}

impl CredentialStuffingDetector {
    /// A detector with no keys yet. `params` should have passed
    /// [`CredentialStuffingParams::validate`]; out of range values are clamped, never a panic.
    pub fn new(params: &CredentialStuffingParams) -> Self {
        Self {
            params: params.clone(),
            window_ms: window_ms(params.window_secs),
            keys: KeyTable::new(),
        }
    }
}

impl AbuseDetector for CredentialStuffingDetector {
    fn observe(&mut self, obs: &Observation<'_>) -> Option<Detection> {
        let user = obs.login_user?;
        let window_ms = self.window_ms;
        let threshold = distinct_threshold(self.params.distinct_users);
        self.keys.observe(
            KeyRef::Source(obs.source),
            || DistinctKey::new(obs.now_ms),
            |key| {
                let distinct = key.record(obs.now_ms, user, threshold, window_ms)?;
                Some(Detection {
                    evidence: format!(
                        "{distinct} distinct login user names from one source in {} s (threshold {threshold})",
                        window_ms / 1000
                    ),
                    key: format!("source {}", obs.source),
                })
            },
        )
    }

    fn tracked_keys(&self) -> usize {
        self.keys.len()
    }
}

/// Finds token spread: one credential (token, API key, cookie; hashed by the caller) presented
/// from at least `distinct_sources` distinct sources in a sliding window. The detection's key is
/// the principal of the call that reached the threshold, never the credential.
pub struct TokenSpreadDetector {
    params: TokenSpreadParams,
    window_ms: u64,
    keys: KeyTable<DistinctKey>,
}

impl TokenSpreadDetector {
    /// A detector with no keys yet. `params` should have passed
    /// [`TokenSpreadParams::validate`]; out of range values are clamped, never a panic.
    pub fn new(params: &TokenSpreadParams) -> Self {
        Self {
            params: params.clone(),
            window_ms: window_ms(params.window_secs),
            keys: KeyTable::new(),
        }
    }
}

impl AbuseDetector for TokenSpreadDetector {
    fn observe(&mut self, obs: &Observation<'_>) -> Option<Detection> {
        let credential = obs.credential?;
        let window_ms = self.window_ms;
        let threshold = distinct_threshold(self.params.distinct_sources);
        let source = self.keys.hash_str(obs.source);
        self.keys.observe(
            KeyRef::Credential(credential),
            || DistinctKey::new(obs.now_ms),
            |key| {
                let distinct = key.record(obs.now_ms, source, threshold, window_ms)?;
                Some(Detection {
                    evidence: format!(
                        "one credential presented from {distinct} distinct sources in {} s (threshold {threshold})",
                        window_ms / 1000
                    ),
                    key: obs.principal.to_owned(),
                })
            },
        )
    }

    fn tracked_keys(&self) -> usize {
        self.keys.len()
    }
}

/// A configured distinct count as a set size, within the range validation allows.
fn distinct_threshold(configured: u32) -> usize {
    (configured as usize).clamp(1, MAX_DISTINCT)
}
