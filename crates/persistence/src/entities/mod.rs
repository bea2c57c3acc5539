//! SeaORM entities of the tables (see `migrations/`). Only this crate sees them.

pub(crate) mod api_calls;
pub(crate) mod early_events;
pub(crate) mod kafka_topics;
pub(crate) mod processed_events;
pub(crate) mod quarantined_events;
pub(crate) mod resume_outbox;
pub(crate) mod waits;
