//! Broken object level authorization (OWASP API1:2023): one principal naming many distinct
//! objects of one endpoint in a short time, the trace of enumerating ids it was not given.

use serde::{Deserialize, Serialize};

use super::{
    AbuseDetector, Detection, MAX_DISTINCT, MAX_WINDOW_SECS, Observation, check_factor,
    check_range,
    table::{KeyRef, KeyTable, Weigh},
    window::{Baseline, KeyClock, Quiet, SlidingSet, Tick},
    window_ms,
};

/// Object ids of one call that are counted; the caller sends a few, this bounds a call's work.
const MAX_IDS_PER_CALL: usize = 16;

/// Parameters of the BOLA / enumeration detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BolaParams {
    /// Distinct object ids per principal and endpoint in the window above which it fires (the
    /// floor of the threshold), 1 to 1024.
    pub distinct_ids: u32,
    /// The sliding window, in seconds (1 to 86 400).
    pub window_secs: u64,
    /// The threshold is at least this multiple of the principal's own learned distinct ids per
    /// window on the endpoint (at least 1; the threshold is capped at 1024).
    pub baseline_factor: f64,
}

impl Default for BolaParams {
    fn default() -> Self {
        Self {
            distinct_ids: 20,
            window_secs: 60,
            baseline_factor: 3.0,
        }
    }
}

impl BolaParams {
    /// Rejects out-of-range values, saying which and why.
    pub fn validate(&self) -> Result<(), String> {
        check_range(
            "distinct_ids",
            self.distinct_ids.into(),
            1,
            MAX_DISTINCT as u64,
        )?;
        check_range("window_secs", self.window_secs, 1, MAX_WINDOW_SECS)?;
        check_factor("baseline_factor", self.baseline_factor, 1.0)
    }
}

/// Finds BOLA / enumeration: more distinct object ids (path parameters) per (principal,
/// service, endpoint) in a sliding window than `max(distinct_ids, baseline_factor × baseline)`,
/// the baseline being that key's distinct ids per completed window. Only 2xx and 404 responses
/// count: an enumeration probes ids, finding some and missing others, while 401/403 mean the
/// authorization worked.
pub struct BolaDetector {
    params: BolaParams,
    window_ms: u64,
    keys: KeyTable<BolaKey>,
}

struct BolaKey {
    clock: KeyClock,
    ids: SlidingSet,
    baseline: Baseline,
    quiet: Quiet,
}

impl Weigh for BolaKey {
    fn weight(&self) -> usize {
        self.ids.capacity()
    }
}

impl BolaDetector {
    /// A detector with no keys yet. `params` should have passed [`BolaParams::validate`]; out
    /// of range values are clamped, never a panic.
    pub fn new(params: &BolaParams) -> Self {
        Self {
            params: params.clone(),
            window_ms: window_ms(params.window_secs),
            keys: KeyTable::new(),
        }
    }
}

impl AbuseDetector for BolaDetector {
    fn observe(&mut self, obs: &Observation<'_>) -> Option<Detection> {
        if obs.object_ids.is_empty() || !((200..300).contains(&obs.status) || obs.status == 404) {
            return None;
        }
        let window_ms = self.window_ms;
        let floor = u64::from(self.params.distinct_ids).clamp(1, MAX_DISTINCT as u64);
        let factor = self.params.baseline_factor;
        let window_secs = window_ms / 1000;
        self.keys.observe(
            KeyRef::PrincipalEndpoint(obs.principal, obs.service, obs.endpoint),
            || BolaKey {
                clock: KeyClock::new(obs.now_ms),
                ids: SlidingSet::new(),
                baseline: Baseline::new(obs.now_ms, window_ms),
                quiet: Quiet::new(),
            },
            |key| {
                let now = match key.clock.tick(obs.now_ms, window_ms) {
                    Tick::At(now) => now,
                    Tick::Restart(now) => {
                        key.ids.clear();
                        key.baseline.restart(now, window_ms);
                        key.quiet.reset();
                        now
                    }
                };
                let ids = &key.ids;
                key.baseline.advance(now, window_ms, |start| ids.seen_since(start) as u64);
                // Capped, so remembering one id past the threshold is enough to know it is
                // exceeded.
                let threshold = key.baseline.threshold(floor, factor).min(MAX_DISTINCT as u64);
                let cap = threshold as usize + 1;
                key.ids.expire(now, window_ms);
                key.ids.truncate(cap);
                for &id in obs.object_ids.iter().take(MAX_IDS_PER_CALL) {
                    key.ids.insert(id, now, cap);
                }
                key.baseline.seen();
                let distinct = key.ids.len() as u64;
                if distinct <= threshold {
                    return None;
                }
                key.baseline.went_over();
                key.quiet.fire(now, window_ms).then(|| Detection {
                    evidence: format!(
                        "{distinct} distinct object ids in {window_secs} s (threshold {threshold}, {})",
                        key.baseline.describe()
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
