//! Broken authentication (OWASP API2:2023): bursts of rejected credentials, per principal
//! (one identity being guessed at) or per source (one client guessing at many).

use serde::{Deserialize, Serialize};

use super::{
    AbuseDetector, Detection, MAX_WINDOW_SECS, Observation, check_range,
    table::{KeyRef, KeyTable, Weigh},
    window::{KeyClock, Quiet, SlidingCount, Tick},
    window_ms,
};

/// What authentication failures are counted per.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthFailureScope {
    /// The caller's principal id (the default): one identity failing again and again.
    #[default]
    Principal,
    /// The client address: one client failing, whatever identities it tries.
    Source,
}

/// Parameters of the authentication failure burst detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthFailureParams {
    /// 401/403 responses in the window at which it fires (1 to 1 000 000).
    pub failures: u32,
    /// The sliding window, in seconds (1 to 86 400).
    pub window_secs: u64,
    /// What failures are counted per.
    pub per: AuthFailureScope,
}

impl Default for AuthFailureParams {
    fn default() -> Self {
        Self {
            failures: 20,
            window_secs: 60,
            per: AuthFailureScope::Principal,
        }
    }
}

impl AuthFailureParams {
    /// Rejects out-of-range values, saying which and why.
    pub fn validate(&self) -> Result<(), String> {
        check_range("failures", self.failures.into(), 1, 1_000_000)?;
        check_range("window_secs", self.window_secs, 1, MAX_WINDOW_SECS)
    }
}

/// Finds bursts of authentication failures: at least `failures` responses 401 or 403 per
/// principal or per source in a sliding window. Other responses are not counted and do not
/// reset the count (a guesser's occasional success does not hide its failures).
pub struct AuthFailureDetector {
    params: AuthFailureParams,
    window_ms: u64,
    keys: KeyTable<CountKey>,
}

/// A key of a detector that counts events in a sliding window.
struct CountKey {
    clock: KeyClock,
    count: SlidingCount,
    quiet: Quiet,
}

impl Weigh for CountKey {
    fn weight(&self) -> usize {
        0
    }
}

impl AuthFailureDetector {
    /// A detector with no keys yet. `params` should have passed
    /// [`AuthFailureParams::validate`]; out of range values are clamped, never a panic.
    pub fn new(params: &AuthFailureParams) -> Self {
        Self {
            params: params.clone(),
            window_ms: window_ms(params.window_secs),
            keys: KeyTable::new(),
        }
    }
}

impl AbuseDetector for AuthFailureDetector {
    fn observe(&mut self, obs: &Observation<'_>) -> Option<Detection> {
        if !matches!(obs.status, 401 | 403) {
            return None;
        }
        let window_ms = self.window_ms;
        let bucket_ms = SlidingCount::bucket_ms(window_ms);
        let threshold = u64::from(self.params.failures.max(1));
        let window_secs = window_ms / 1000;
        let (key_ref, label) = match self.params.per {
            AuthFailureScope::Principal => (KeyRef::Principal(obs.principal), None),
            AuthFailureScope::Source => (KeyRef::Source(obs.source), Some(obs.source)),
        };
        self.keys.observe(
            key_ref,
            || CountKey {
                clock: KeyClock::new(obs.now_ms),
                count: SlidingCount::new(),
                quiet: Quiet::new(),
            },
            |key| {
                let now = match key.clock.tick(obs.now_ms, window_ms) {
                    Tick::At(now) => now,
                    Tick::Restart(now) => {
                        key.count = SlidingCount::new();
                        key.quiet.reset();
                        now
                    }
                };
                let failures = key.count.add(now, bucket_ms);
                (failures >= threshold && key.quiet.fire(now, window_ms)).then(|| Detection {
                    evidence: format!(
                        "{failures} authentication failures (401/403) in {window_secs} s (threshold {threshold})"
                    ),
                    key: match label {
                        Some(source) => format!("source {source}"),
                        None => obs.principal.to_owned(),
                    },
                })
            },
        )
    }

    fn tracked_keys(&self) -> usize {
        self.keys.len()
    }
}
