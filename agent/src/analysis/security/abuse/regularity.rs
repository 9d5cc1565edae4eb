//! Bot-like clients (OWASP API6:2023, unrestricted access to sensitive business flows): a
//! principal calling one endpoint at intervals too regular for a person. Scripts sleep a fixed
//! time between calls; people, and programs reacting to people, do not.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{
    AbuseDetector, Detection, Observation, check_range,
    table::{KeyRef, KeyTable, Weigh},
    window::Quiet,
};

/// The most calls one key remembers (the largest `min_requests`).
const MAX_REQUESTS: u32 = 256;

/// Parameters of the automated-client detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegularityParams {
    /// Consecutive calls of one principal to one endpoint that are judged together (5 to 256).
    pub min_requests: u32,
    /// The largest coefficient of variation (standard deviation / mean) of the gaps between
    /// them that counts as machine-regular, in thousandths (1 to 500: 100 is 10 %).
    pub max_variation_permille: u32,
    /// Gaps longer than this (seconds, 1 to 3600) start the count over: a daily job is not a
    /// bot on the API.
    pub max_interval_secs: u64,
}

impl Default for RegularityParams {
    fn default() -> Self {
        Self {
            min_requests: 20,
            max_variation_permille: 100,
            max_interval_secs: 60,
        }
    }
}

impl RegularityParams {
    /// Rejects out-of-range values, saying which and why.
    pub fn validate(&self) -> Result<(), String> {
        check_range(
            "min_requests",
            self.min_requests.into(),
            5,
            MAX_REQUESTS.into(),
        )?;
        check_range(
            "max_variation_permille",
            self.max_variation_permille.into(),
            1,
            500,
        )?;
        check_range("max_interval_secs", self.max_interval_secs, 1, 3600)
    }
}

/// Finds principals whose last `min_requests` calls of one endpoint came at near-constant
/// intervals (coefficient of variation of the gaps at most `max_variation_permille` / 1000).
pub struct RegularityDetector {
    params: RegularityParams,
    keys: KeyTable<Arrivals>,
}

/// The last arrival times of one principal at one endpoint.
struct Arrivals {
    times: VecDeque<u64>,
    quiet: Quiet,
}

impl Weigh for Arrivals {
    fn weight(&self) -> usize {
        self.times.len()
    }
}

impl RegularityDetector {
    /// A detector with no keys yet; out-of-range parameters are clamped, never a panic.
    pub fn new(params: &RegularityParams) -> Self {
        Self {
            params: params.clone(),
            keys: KeyTable::new(),
        }
    }
}

impl AbuseDetector for RegularityDetector {
    fn observe(&mut self, obs: &Observation<'_>) -> Option<Detection> {
        let needed = self.params.min_requests.clamp(5, MAX_REQUESTS) as usize;
        let max_gap = self.params.max_interval_secs.clamp(1, 3600) * 1000;
        let max_variation = f64::from(self.params.max_variation_permille.clamp(1, 500)) / 1000.0;
        self.keys.observe(
            KeyRef::PrincipalEndpoint(obs.principal, obs.service, obs.endpoint),
            || Arrivals {
                times: VecDeque::with_capacity(needed),
                quiet: Quiet::new(),
            },
            |key| {
                let last = key.times.back().copied();
                // A long pause, or time going back, starts a new run.
                if last.is_some_and(|last| obs.now_ms < last || obs.now_ms - last > max_gap) {
                    key.times.clear();
                }
                if key.times.len() >= needed {
                    key.times.pop_front();
                }
                key.times.push_back(obs.now_ms);
                if key.times.len() < needed {
                    return None;
                }
                let variation = variation(&key.times)?;
                let span_ms = key.times.back()?.saturating_sub(*key.times.front()?);
                (variation <= max_variation && key.quiet.fire(obs.now_ms, span_ms.max(1))).then(
                    || Detection {
                        evidence: format!(
                            "{needed} calls {:.0} ms apart with {:.1} % variation (at most {:.1} %)",
                            span_ms as f64 / (needed - 1) as f64,
                            variation * 100.0,
                            max_variation * 100.0
                        ),
                        key: obs.principal.to_owned(),
                    },
                )
            },
        )
    }

    fn tracked_keys(&self) -> usize {
        self.keys.len()
    }
}

/// The coefficient of variation of the gaps between `times`; `None` when they all came at once
/// (a burst is the rate detectors' business, not a rhythm).
fn variation(times: &VecDeque<u64>) -> Option<f64> {
    let gaps: Vec<f64> = times
        .iter()
        .zip(times.iter().skip(1))
        .map(|(a, b)| b.saturating_sub(*a) as f64)
        .collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len().max(1) as f64;
    if mean < 1.0 {
        return None;
    }
    let variance = gaps.iter().map(|gap| (gap - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
    Some(variance.sqrt() / mean)
}
