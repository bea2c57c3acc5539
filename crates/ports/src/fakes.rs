//! Test doubles of the ports (feature `test-util`): a clock that moves only when told to.

use std::sync::atomic::{AtomicI64, Ordering};

use rendezvous_domain::Timestamp;

use crate::Clock;

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> Self {
        Self(AtomicI64::new(start.as_millis()))
    }

    /// Moves the clock forward by `millis`.
    pub fn advance(&self, millis: i64) {
        self.0.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp::from_millis(10));
        assert_eq!(clock.now(), Timestamp::from_millis(10));
        clock.advance(5);
        assert_eq!(clock.now(), Timestamp::from_millis(15));
    }
}
