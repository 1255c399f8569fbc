//! The one clock. Protocol logic (state TTL, checkpoint decisions, restart backoff) takes a
//! [`Clock`] so tests move time by hand ([`ManualClock`]); code at the edge that only stamps a
//! record with the time reads [`unix_millis`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as some clock tells them.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_millis(&self) -> i64;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        i64::try_from(unix_millis()).unwrap_or(i64::MAX)
    }
}

/// A clock moved by hand, for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_millis: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(now_millis)))
    }

    pub fn set(&self, now_millis: i64) {
        self.0.store(now_millis, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Time since the Unix epoch by the wall clock (zero if the clock is set before 1970).
pub fn since_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Milliseconds since the Unix epoch by the wall clock.
pub fn unix_millis() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// Nanoseconds since the Unix epoch by the wall clock: to tell runs and instances apart.
pub fn unix_nanos() -> u128 {
    since_epoch().as_nanos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_by_hand() {
        let clock = ManualClock::new(5);
        assert_eq!(clock.now_millis(), 5);
        clock.advance(Duration::from_secs(2));
        assert_eq!(clock.now_millis(), 2_005);
        clock.set(1);
        assert_eq!(clock.now_millis(), 1);
        assert!(SystemClock.now_millis() > 1_700_000_000_000);
    }
}
