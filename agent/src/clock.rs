//! Kernel timestamps (`CLOCK_MONOTONIC`) turned into wall-clock time for output.

/// Offset between the monotonic clock the kernel stamps records with and Unix time.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    offset_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl WallClock {
    /// Measures the offset now. Wall-clock steps after this are not followed, which keeps the
    /// output times of one run consistent with each other.
    pub fn measure() -> Self {
        Self {
            offset_ns: now_ns(libc::CLOCK_REALTIME) - now_ns(libc::CLOCK_MONOTONIC),
        }
    }

    /// A clock with a fixed offset, for tests.
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// The current `CLOCK_MONOTONIC` time, as the kernel stamps records.
    pub fn monotonic_now_ns() -> u64 {
        u64::try_from(now_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
    }

    /// Unix time in nanoseconds of a monotonic timestamp.
    pub fn unix_ns(&self, monotonic_ns: u64) -> u64 {
        u64::try_from(monotonic_ns as i128 + self.offset_ns).unwrap_or(0)
    }
}
