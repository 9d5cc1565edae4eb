//! Time per key: a clock that tolerates skew, sliding counts and distinct sets, the learned
//! baseline of completed windows, and the quiet period that makes a key fire once per window.

use std::collections::VecDeque;

/// Sub-buckets of a sliding count: the window is `SUB_BUCKETS` buckets of `window / SUB_BUCKETS`
/// each, so the count covers between 9/10 and all of the window (the newest bucket is partly
/// elapsed) and costs a fixed 40 bytes per key.
pub(super) const SUB_BUCKETS: usize = 10;

/// Weight of the newest completed window in a baseline (an exponentially weighted moving
/// average): a window's influence halves after about five windows, so a baseline follows a
/// change of normal traffic within a few minutes at the default windows without being moved
/// much by one odd window.
pub(super) const WINDOW_WEIGHT: f64 = 0.125;

/// What a key's clock made of an observation's time.
pub(super) enum Tick {
    /// The time to count the observation at: its own, or the latest seen when it went back a
    /// little (so windows and sets stay ordered).
    At(u64),
    /// The clock went back by more than a window (a step, e.g. after NTP or a restart of the
    /// source of timestamps): the key's windows start over at this time, its baseline is kept.
    Restart(u64),
}

/// The latest time a key saw.
pub(super) struct KeyClock {
    last: u64,
}

impl KeyClock {
    pub(super) fn new(now: u64) -> Self {
        Self { last: now }
    }

    /// Places `now`: a time going back by at most `tolerance` ms is counted at the latest time
    /// seen; further back restarts the key.
    pub(super) fn tick(&mut self, now: u64, tolerance: u64) -> Tick {
        if now >= self.last {
            self.last = now;
            Tick::At(now)
        } else if self.last - now <= tolerance {
            Tick::At(self.last)
        } else {
            self.last = now;
            Tick::Restart(now)
        }
    }
}

/// Events in a sliding window, as a ring of sub-bucket counters.
pub(super) struct SlidingCount {
    buckets: [u32; SUB_BUCKETS],
    /// The absolute index (time / bucket width) of the newest bucket.
    head: u64,
}

impl SlidingCount {
    pub(super) fn new() -> Self {
        Self {
            buckets: [0; SUB_BUCKETS],
            head: 0,
        }
    }

    /// The width of a sub-bucket of a window of `window_ms`, at least 1 ms.
    pub(super) fn bucket_ms(window_ms: u64) -> u64 {
        (window_ms / SUB_BUCKETS as u64).max(1)
    }

    /// Counts one event at `now` (never before the last one counted: see [`KeyClock`]) and
    /// returns the events in the window ending there.
    pub(super) fn add(&mut self, now: u64, bucket_ms: u64) -> u64 {
        let slot = now / bucket_ms;
        if slot > self.head {
            // Clear the buckets that fell out of the window: at most all of them, however long
            // the key was idle.
            let stale = (slot - self.head).min(SUB_BUCKETS as u64);
            for step in 1..=stale {
                if let Some(bucket) = self.buckets.get_mut(ring_index(self.head + step)) {
                    *bucket = 0;
                }
            }
            self.head = slot;
        }
        if let Some(bucket) = self.buckets.get_mut(ring_index(self.head)) {
            *bucket = bucket.saturating_add(1);
        }
        self.buckets.iter().copied().map(u64::from).sum()
    }
}

fn ring_index(slot: u64) -> usize {
    // The remainder is below SUB_BUCKETS, so it fits.
    (slot % SUB_BUCKETS as u64) as usize
}

/// Distinct values (hashes) seen in a sliding window, at most a given number of them: the
/// values with the time each was last seen, oldest first, so expired ones are a prefix.
pub(super) struct SlidingSet {
    items: VecDeque<(u64, u64)>,
}

impl SlidingSet {
    pub(super) fn new() -> Self {
        Self {
            items: VecDeque::new(),
        }
    }

    /// The values remembered (all within the window after [`Self::expire`]).
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    /// The entries this set holds memory for, which the key table budgets.
    pub(super) fn capacity(&self) -> usize {
        self.items.capacity()
    }

    /// Forgets everything (the key's clock restarted).
    pub(super) fn clear(&mut self) {
        self.items = VecDeque::new();
    }

    /// Forgets the values last seen a window or more before `now`.
    pub(super) fn expire(&mut self, now: u64, window_ms: u64) {
        while self
            .items
            .front()
            .is_some_and(|&(_, seen)| now.saturating_sub(seen) >= window_ms)
        {
            self.items.pop_front();
        }
        if self.items.is_empty() {
            // An idle key keeps no buffer.
            self.clear();
        }
    }

    /// Records `value` seen at `now` (never before the last one: see [`KeyClock`]), keeping at
    /// most `cap` values: beyond that the least recently seen are forgotten, so the set holds
    /// the newest ones and its length stays at the cap while values keep coming.
    pub(super) fn insert(&mut self, value: u64, now: u64, cap: usize) {
        match self.items.back_mut() {
            // The common repeat (the same id again) costs nothing.
            Some(last) if last.0 == value => last.1 = now,
            _ => {
                if let Some(at) = self.items.iter().position(|&(v, _)| v == value) {
                    self.items.remove(at);
                }
                while self.items.len() >= cap.max(1) {
                    self.items.pop_front();
                }
                self.items.push_back((value, now));
            }
        }
    }

    /// Shrinks the set to at most `cap` values, the newest kept.
    pub(super) fn truncate(&mut self, cap: usize) {
        while self.items.len() > cap {
            self.items.pop_front();
        }
    }

    /// The values last seen at or after `since`: when called before anything of a new window
    /// is recorded, the distinct values of the window that began at `since` and its successors.
    pub(super) fn seen_since(&self, since: u64) -> usize {
        self.items
            .iter()
            .filter(|&&(_, seen)| seen >= since)
            .count()
    }
}

/// The baseline of a key: a moving average of its completed (tumbling) windows, each
/// `window_ms` long from time 0, learned only from windows in which the key was seen and never
/// went above its threshold, so an attack does not teach itself as normal and an idle period
/// does not lower the bar.
pub(super) struct Baseline {
    /// The window in progress (time / window).
    window: u64,
    /// The key was seen in it.
    active: bool,
    /// The key went above its threshold in it.
    over: bool,
    /// The window in progress is watched from its start: the key's first window, begun
    /// part-way, holds only part of a window's calls (a burst's first seconds), which must
    /// not be learned as a whole window.
    whole: bool,
    /// The moving average; none before the first learned window.
    mean: Option<f64>,
}

impl Baseline {
    pub(super) fn new(now: u64, window_ms: u64) -> Self {
        Self {
            window: now / window_ms.max(1),
            active: false,
            over: false,
            whole: now.is_multiple_of(window_ms.max(1)),
            mean: None,
        }
    }

    /// Moves to the window holding `now` (never before the last one: see [`KeyClock`]). When
    /// that completes the window in progress, `value(start)` gives what it counted (called with
    /// the window's start time) and is learned if the window qualifies. Returns whether a
    /// window completed.
    pub(super) fn advance(
        &mut self,
        now: u64,
        window_ms: u64,
        value: impl FnOnce(u64) -> u64,
    ) -> bool {
        let window = now / window_ms.max(1);
        if window <= self.window {
            return false;
        }
        if self.whole && self.active && !self.over {
            let x = value(self.window.saturating_mul(window_ms)) as f64;
            self.mean = Some(match self.mean {
                None => x,
                Some(mean) => mean + WINDOW_WEIGHT * (x - mean),
            });
        }
        self.window = window;
        self.active = false;
        self.over = false;
        self.whole = true;
        true
    }

    /// Starts over at `now` (the clock went back), keeping what was learned.
    pub(super) fn restart(&mut self, now: u64, window_ms: u64) {
        let mean = self.mean;
        *self = Self::new(now, window_ms);
        self.mean = mean;
    }

    /// Notes that the key was seen in the window in progress.
    pub(super) fn seen(&mut self) {
        self.active = true;
    }

    /// Notes that the key went above its threshold in the window in progress.
    pub(super) fn went_over(&mut self) {
        self.over = true;
    }

    /// The threshold to exceed: `max(floor, factor × mean)`, rounded down since counts are
    /// whole (a count above 6.3 is a count above 6).
    pub(super) fn threshold(&self, floor: u64, factor: f64) -> u64 {
        let learned = self.mean.map_or(0.0, |mean| (factor * mean).floor());
        // `as` saturates: an infinite or huge product gives u64::MAX, NaN gives 0.
        floor.max(learned as u64)
    }

    /// The baseline for evidence: `baseline 2.1` or `no baseline yet`.
    pub(super) fn describe(&self) -> String {
        match self.mean {
            Some(mean) => format!("baseline {mean:.1}"),
            None => "no baseline yet".to_owned(),
        }
    }
}

/// When a key may fire again: once it fired, not before a window has passed.
pub(super) struct Quiet {
    fired_at: Option<u64>,
}

impl Quiet {
    pub(super) fn new() -> Self {
        Self { fired_at: None }
    }

    /// Whether the key may fire at `now`; if so, it stays quiet for `window_ms`.
    pub(super) fn fire(&mut self, now: u64, window_ms: u64) -> bool {
        if self
            .fired_at
            .is_some_and(|at| now.saturating_sub(at) < window_ms)
        {
            return false;
        }
        self.fired_at = Some(now);
        true
    }

    /// Re-arms at once (the clock went back, so the old time is meaningless).
    pub(super) fn reset(&mut self) {
        self.fired_at = None;
    }
}
