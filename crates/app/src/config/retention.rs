//! `[retention]`: how long finished rows are kept before the periodic purge deletes them.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// `[retention]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSection {
    /// Whether finished rows are purged at all.
    pub enabled: bool,
    /// How long decided waits (with their inbox rows, acknowledged resume and settled call),
    /// applied and expired early events and quarantined events are kept after they finished.
    #[serde(with = "duration::positive")]
    pub keep_for: Duration,
    /// How often each instance purges.
    #[serde(with = "duration::positive")]
    pub interval: Duration,
    /// Most rows of each kind one purge transaction deletes.
    pub batch: NonZeroU32,
}

impl Default for RetentionSection {
    fn default() -> Self {
        Self {
            enabled: true,
            keep_for: Duration::from_secs(7 * 86_400),
            interval: Duration::from_secs(3600),
            batch: const { NonZeroU32::new(1000).unwrap() },
        }
    }
}
