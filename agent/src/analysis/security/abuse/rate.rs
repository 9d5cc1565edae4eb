//! Unrestricted resource consumption (OWASP API4:2023): request rates far above normal, per
//! principal (one caller hammering) or per endpoint (a layer-7 flood, optionally required to
//! come from many sources).

use serde::{Deserialize, Serialize};

use super::{
    AbuseDetector, Detection, MAX_DISTINCT, MAX_WINDOW_SECS, Observation, check_factor,
    check_range,
    table::{KeyRef, KeyTable, Weigh},
    window::{Baseline, KeyClock, Quiet, SlidingCount, SlidingSet, Tick},
    window_ms,
};

/// What requests are counted per.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateScope {
    /// The caller's principal id (the default).
    #[default]
    Principal,
    /// The service and endpoint, whoever calls it.
    Endpoint,
}

/// Parameters of the rate anomaly / flood detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateParams {
    /// What requests are counted per.
    pub per: RateScope,
    /// Requests in the window above which it fires (the floor of the threshold), 1 to 10^9.
    pub min_requests: u32,
    /// The sliding window, in seconds (1 to 86 400).
    pub window_secs: u64,
    /// The threshold is at least this multiple of the key's learned requests per window (at
    /// least 1).
    pub baseline_factor: f64,
    /// With `per: endpoint` only: a flood must also come from at least this many distinct
    /// sources in the window (2 to 1024).
    pub distinct_sources: Option<u32>,
}

impl Default for RateParams {
    fn default() -> Self {
        Self {
            per: RateScope::Principal,
            min_requests: 100,
            window_secs: 10,
            baseline_factor: 5.0,
            distinct_sources: None,
        }
    }
}

impl RateParams {
    /// Rejects out-of-range values, saying which and why.
    pub fn validate(&self) -> Result<(), String> {
        check_range("min_requests", self.min_requests.into(), 1, 1_000_000_000)?;
        check_range("window_secs", self.window_secs, 1, MAX_WINDOW_SECS)?;
        check_factor("baseline_factor", self.baseline_factor, 1.0)?;
        if let Some(sources) = self.distinct_sources {
            if self.per != RateScope::Endpoint {
                return Err(
                    "distinct_sources applies to `per: endpoint` only (a flood spread over many sources)"
                        .to_owned(),
                );
            }
            check_range("distinct_sources", sources.into(), 2, MAX_DISTINCT as u64)?;
        }
        Ok(())
    }
}

/// Finds rate anomalies: more requests per principal or endpoint in a sliding window than
/// `max(min_requests, baseline_factor × baseline)`, the baseline being the key's requests per
/// completed window; with `distinct_sources`, only when the window's requests also came from at
/// least that many sources.
pub struct RateDetector {
    params: RateParams,
    window_ms: u64,
    keys: KeyTable<RateKey>,
}

struct RateKey {
    clock: KeyClock,
    count: SlidingCount,
    /// Requests in the baseline's window in progress.
    window_requests: u64,
    baseline: Baseline,
    /// Sources in the sliding window, when the flood must be spread; empty otherwise.
    sources: SlidingSet,
    quiet: Quiet,
}

impl Weigh for RateKey {
    fn weight(&self) -> usize {
        self.sources.capacity()
    }
}

impl RateDetector {
    /// A detector with no keys yet. `params` should have passed [`RateParams::validate`]; out
    /// of range values are clamped, never a panic.
    pub fn new(params: &RateParams) -> Self {
        Self {
            params: params.clone(),
            window_ms: window_ms(params.window_secs),
            keys: KeyTable::new(),
        }
    }
}

impl AbuseDetector for RateDetector {
    fn observe(&mut self, obs: &Observation<'_>) -> Option<Detection> {
        let window_ms = self.window_ms;
        let bucket_ms = SlidingCount::bucket_ms(window_ms);
        let floor = u64::from(self.params.min_requests.max(1));
        let factor = self.params.baseline_factor;
        let min_sources = match self.params.per {
            RateScope::Endpoint => self
                .params
                .distinct_sources
                .map(|n| (n as usize).clamp(1, MAX_DISTINCT)),
            RateScope::Principal => None,
        };
        let source = min_sources.map(|_| self.keys.hash_str(obs.source));
        let key_ref = match self.params.per {
            RateScope::Principal => KeyRef::Principal(obs.principal),
            RateScope::Endpoint => KeyRef::Endpoint(obs.service, obs.endpoint),
        };
        let per = self.params.per;
        self.keys.observe(
            key_ref,
            || RateKey {
                clock: KeyClock::new(obs.now_ms),
                count: SlidingCount::new(),
                window_requests: 0,
                baseline: Baseline::new(obs.now_ms, window_ms),
                sources: SlidingSet::new(),
                quiet: Quiet::new(),
            },
            |key| {
                let now = match key.clock.tick(obs.now_ms, window_ms) {
                    Tick::At(now) => now,
                    Tick::Restart(now) => {
                        key.count = SlidingCount::new();
                        key.window_requests = 0;
                        key.baseline.restart(now, window_ms);
                        key.sources.clear();
                        key.quiet.reset();
                        now
                    }
                };
                let completed = key.window_requests;
                if key.baseline.advance(now, window_ms, |_| completed) {
                    key.window_requests = 0;
                }
                let threshold = key.baseline.threshold(floor, factor);
                let requests = key.count.add(now, bucket_ms);
                key.window_requests = key.window_requests.saturating_add(1);
                key.baseline.seen();
                let spread = match (min_sources, source) {
                    (Some(min), Some(source)) => {
                        key.sources.expire(now, window_ms);
                        key.sources.insert(source, now, min);
                        Some((key.sources.len(), min))
                    }
                    _ => None,
                };
                if requests <= threshold {
                    return None;
                }
                // Above the threshold, spread or not: such a window does not teach the baseline.
                key.baseline.went_over();
                if spread.is_some_and(|(sources, min)| sources < min)
                    || !key.quiet.fire(now, window_ms)
                {
                    return None;
                }
                let mut evidence = format!(
                    "{requests} requests in {} s (threshold {threshold}, {})",
                    window_ms / 1000,
                    key.baseline.describe()
                );
                if let Some((_, min)) = spread {
                    // The set stops at the minimum: there may be more.
                    evidence.push_str(&format!(" from at least {min} distinct sources"));
                }
                Some(Detection {
                    evidence,
                    key: match per {
                        RateScope::Principal => obs.principal.to_owned(),
                        RateScope::Endpoint => format!("{} {}", obs.service, obs.endpoint),
                    },
                })
            },
        )
    }

    fn tracked_keys(&self) -> usize {
        self.keys.len()
    }
}
