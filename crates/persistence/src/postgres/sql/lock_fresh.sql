-- The first statement of a batch of fresh registrations (see fresh.rs): the correlation
-- locks, taken with pg_try_advisory_xact_lock so that a batch never waits for (or deadlocks
-- with) another transaction; a registration whose lock is held elsewhere is not fresh.
-- $1: JSON array of lock keys (as `correlation_lock_key` makes them) numbered `n`.
SELECT i.n, pg_try_advisory_xact_lock(hashtextextended(i.k, 0)) AS locked
FROM json_to_recordset($1::json) AS i(n int, k text)
