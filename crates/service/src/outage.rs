//! One warning per outage: a loop that retries (the sweeper, the dispatcher's claims, a resume
//! stream's claims) logs its first failure as a warning, the following ones only at debug,
//! and the recovery once, with how many attempts failed — not a warning per retry.

use std::fmt::Display;

/// The failure state of one retrying loop.
#[derive(Debug)]
pub struct Outage {
    what: &'static str,
    failures: u64,
}

impl Outage {
    /// A loop doing `what` (e.g. "sweeping due waits"), working so far.
    pub fn new(what: &'static str) -> Self {
        Self { what, failures: 0 }
    }

    /// An attempt failed: a warning the first time, debug after.
    pub fn failed(&mut self, error: &dyn Display) {
        self.failures += 1;
        if self.failures == 1 {
            tracing::warn!(error = %error, "{} failed; retrying (logged again when it works)", self.what);
        } else {
            tracing::debug!(error = %error, failures = self.failures, "{} failed again", self.what);
        }
    }

    /// An attempt worked: after an outage, one line saying so.
    pub fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(failed_attempts = self.failures, "{} works again", self.what);
            self.failures = 0;
        }
    }

    /// Failed attempts since the last success.
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_until_a_success() {
        let mut outage = Outage::new("sweeping");
        outage.failed(&"down");
        outage.failed(&"down");
        assert_eq!(outage.failures(), 2);
        outage.succeeded();
        assert_eq!(outage.failures(), 0);
    }
}
