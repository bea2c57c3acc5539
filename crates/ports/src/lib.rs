//! The traits the Rendezvous core needs from the outside world, in domain types.
//!
//! Adapters implement them (`rendezvous-persistence` the stores, the app the clock); the
//! service crate is generic over them. No adapter type (`sea_orm::Model`, `tonic::Status`,
//! `rdkafka::Message`) appears in a signature here. In-memory fakes live behind the
//! `test-util` feature.

use rendezvous_domain::Timestamp;

/// The wall clock. The domain takes time as a parameter; the service asks this port for it,
/// so tests can drive time by hand.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

#[cfg(feature = "test-util")]
pub mod fakes {
    //! In-memory fakes of the ports, for tests of the service and adapters.

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
}
