//! Excessive data exposure (OWASP API3:2023): a response far larger than its endpoint's usual
//! ones, or carrying far more sensitive data, the mark of a dump or of a filter bypassed.

use serde::{Deserialize, Serialize};

use super::{
    AbuseDetector, Detection, Observation, check_factor, check_range,
    table::{KeyRef, KeyTable, Weigh},
    window::{KeyClock, Quiet, Tick},
};

/// How long an endpoint stays quiet after it fired: anomalous responses tend to come in runs
/// (a paginated dump), one detection a minute says enough.
const QUIET_MS: u64 = 60_000;

/// The smallest weight of a call in an endpoint's baselines: the first calls are averaged
/// equally (weight 1/n), from the 64th on each weighs 1/64, so a baseline follows a lasting
/// change over a few hundred calls.
const CALL_WEIGHT: f64 = 1.0 / 64.0;

/// Parameters of the excessive data exposure detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExposureParams {
    /// A response is oversized above this multiple of its endpoint's mean size (at least 1)...
    pub size_factor: f64,
    /// ...and at least this many bytes.
    pub min_bytes: u64,
    /// A response carries too much sensitive data above this multiple of its endpoint's mean
    /// sensitive findings (above 1)...
    pub sensitive_factor: f64,
    /// ...and at least this many findings (at least 1).
    pub min_sensitive: u32,
    /// Responses of an endpoint that build its baselines before it is judged (1 to 1 000 000).
    pub warmup_calls: u32,
}

impl Default for ExposureParams {
    fn default() -> Self {
        Self {
            size_factor: 10.0,
            min_bytes: 65_536,
            sensitive_factor: 5.0,
            min_sensitive: 10,
            warmup_calls: 20,
        }
    }
}

impl ExposureParams {
    /// Rejects out-of-range values, saying which and why.
    pub fn validate(&self) -> Result<(), String> {
        check_factor("size_factor", self.size_factor, 1.0)?;
        check_factor("sensitive_factor", self.sensitive_factor, 1.0)?;
        check_range(
            "min_sensitive",
            self.min_sensitive.into(),
            1,
            u32::MAX.into(),
        )?;
        check_range("warmup_calls", self.warmup_calls.into(), 1, 1_000_000)
    }
}

/// Finds excessive data exposure: once an endpoint (service and endpoint) has answered
/// `warmup_calls` times, a response of at least `min_bytes` bytes and more than `size_factor`
/// times its mean size, or with at least `min_sensitive` sensitive findings and more than
/// `sensitive_factor` times its mean findings. Calls without a response are ignored; anomalous
/// responses are not learned, so a dump does not become the norm. An endpoint fires at most
/// once a minute.
pub struct ExposureDetector {
    params: ExposureParams,
    keys: KeyTable<ExposureKey>,
}

struct ExposureKey {
    clock: KeyClock,
    /// Responses learned.
    calls: u64,
    mean_bytes: f64,
    mean_sensitive: f64,
    quiet: Quiet,
}

impl Weigh for ExposureKey {
    fn weight(&self) -> usize {
        0
    }
}

impl ExposureDetector {
    /// A detector with no keys yet. `params` should have passed [`ExposureParams::validate`];
    /// out of range values never panic.
    pub fn new(params: &ExposureParams) -> Self {
        Self {
            params: params.clone(),
            keys: KeyTable::new(),
        }
    }
}

impl AbuseDetector for ExposureDetector {
    fn observe(&mut self, obs: &Observation<'_>) -> Option<Detection> {
        if obs.status == 0 {
            return None;
        }
        let params = &self.params;
        self.keys.observe(
            KeyRef::Endpoint(obs.service, obs.endpoint),
            || ExposureKey {
                clock: KeyClock::new(obs.now_ms),
                calls: 0,
                mean_bytes: 0.0,
                mean_sensitive: 0.0,
                quiet: Quiet::new(),
            },
            |key| {
                let now = match key.clock.tick(obs.now_ms, QUIET_MS) {
                    Tick::At(now) => now,
                    Tick::Restart(now) => {
                        key.quiet.reset();
                        now
                    }
                };
                let bytes = obs.response_bytes as f64;
                let sensitive = f64::from(obs.response_sensitive);
                let mut findings = Vec::new();
                if key.calls >= u64::from(params.warmup_calls) {
                    let size_limit = params.size_factor * key.mean_bytes;
                    if obs.response_bytes >= params.min_bytes && bytes > size_limit {
                        findings.push(format!(
                            "response of {} bytes, endpoint mean {:.0} bytes (threshold {:.0})",
                            obs.response_bytes,
                            key.mean_bytes,
                            size_limit.max(params.min_bytes as f64)
                        ));
                    }
                    let sensitive_limit = params.sensitive_factor * key.mean_sensitive;
                    if obs.response_sensitive >= params.min_sensitive.max(1) && sensitive > sensitive_limit {
                        findings.push(format!(
                            "response with {} sensitive-data findings, endpoint mean {:.1} (threshold {:.1})",
                            obs.response_sensitive,
                            key.mean_sensitive,
                            sensitive_limit.max(f64::from(params.min_sensitive))
                        ));
                    }
                }
                if findings.is_empty() {
                    key.calls = key.calls.saturating_add(1);
                    let weight = (1.0 / key.calls as f64).max(CALL_WEIGHT);
                    key.mean_bytes += weight * (bytes - key.mean_bytes);
                    key.mean_sensitive += weight * (sensitive - key.mean_sensitive);
                    return None;
                }
                key.quiet.fire(now, QUIET_MS).then(|| Detection {
                    evidence: findings.join("; "),
                    key: format!("{} {}", obs.service, obs.endpoint),
                })
            },
        )
    }

    fn tracked_keys(&self) -> usize {
        self.keys.len()
    }
}
