//! The store conformance suite: the same assertions about the store port, run on SQLite and on
//! PostgreSQL (one macro, two backends). It is the contract between the two implementations
//! of each batched operation: PostgreSQL's group-commit statements and the transactional
//! `StoreTx` path SQLite takes.
//!
//! Each module holds the tests of one concern as `async fn name(backend: Backend)`; the list at
//! the bottom runs every one of them on both backends (`sqlite::name`, `postgres::name`).

mod buffer;
mod calls;
mod database;
mod group_commit;
mod nul;
mod operators;
mod resumes;
mod retention;
mod signal;
mod support;
mod unreadable;
mod waits;

use rendezvous_persistence::testing::Backend;

/// For each `module::test`, a test `sqlite::test` and a test `postgres::test`.
macro_rules! conformance {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(super::Backend::Postgres).await
                }
            )*
        }
    };
}

conformance!(
    waits::waits_round_trip_and_update_by_compare_and_set,
    waits::uniqueness_rules_are_conflicts,
    waits::due_waits_are_claimed,
    waits::waits_are_listed_newest_first_in_pages,
    buffer::early_events_are_buffered_applied_and_expired,
    resumes::resumes_are_leased_acked_and_released,
    calls::api_calls_are_leased_retried_and_settled,
    group_commit::changes_are_compare_and_set_with_inbox_and_resume,
    group_commit::fresh_waits_are_inserted_only_when_nothing_came_before,
    group_commit::concurrent_requests_each_get_their_own_outcome,
    database::migrations_are_idempotent,
    nul::text_with_nul_is_stored_and_read_back,
    nul::json_with_nul_is_stored_and_read_back,
    operators::buffered_events_are_listed_by_tenant_newest_first,
    operators::a_resume_is_redelivered_with_its_id,
    operators::a_replay_settles_its_quarantined_row,
    retention::finished_rows_are_purged_and_nothing_else,
    retention::purging_goes_in_bounded_rounds,
    unreadable::an_unreadable_wait_stops_no_sweep,
    unreadable::an_unreadable_wait_stops_no_listing_or_lookup,
    unreadable::an_unreadable_resume_stops_no_feed,
    unreadable::an_unreadable_early_event_stops_no_registration,
    unreadable::unreadable_calls_and_topics_stop_nothing_else,
);
