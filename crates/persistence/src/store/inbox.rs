//! The inbox (`processed_events`): the event keys each wait has processed, so that a
//! redelivered event is recognised and never applied twice.

use rendezvous_domain::{EventKey, SourceName, Timestamp, WaitId};
use rendezvous_ports::StoreError;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};

use crate::entities::processed_events;
use crate::rows::db_err;

/// Records that a wait processed an event key; `false` if it already had.
pub(super) async fn record_processed(
    conn: &impl ConnectionTrait,
    wait_id: WaitId,
    key: &EventKey,
    source: &SourceName,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let row = processed_events::ActiveModel {
        wait_id: Set(wait_id.as_uuid()),
        event_key: Set(key.to_string()),
        source: Set(source.to_string()),
        processed_at: Set(now.as_millis()),
    };
    let inserted = processed_events::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([
                processed_events::Column::WaitId,
                processed_events::Column::EventKey,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(conn)
        .await
        .map_err(db_err)?;
    Ok(inserted == 1)
}
