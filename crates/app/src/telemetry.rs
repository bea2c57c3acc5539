//! Logs: `tracing` to stderr, human-readable by default or JSON, filtered by `RUST_LOG` or the
//! configured level. Only the app installs a subscriber.

use anyhow::Result;
use tracing_subscriber::EnvFilter;

use crate::config::TelemetrySection;

/// Installs the global subscriber. Call once, from `main`.
pub fn init(config: &TelemetrySection) -> Result<()> {
    let filter =
        EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&config.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if config.log_format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}
