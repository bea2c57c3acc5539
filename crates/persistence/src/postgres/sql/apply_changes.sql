-- A batch of wait changes in one statement (see changes.rs). The conformance suite is the
-- contract: per row this must do what `rendezvous_ports::apply_change_steps` does.
-- $1: JSON array of change rows, each for a different wait, numbered `n`; $2: their count.
-- Per row: the compare-and-set UPDATE (refused when the version moved or the inbox already
-- has the event), and only where it happened the inbox row and the resume. `resumes` counts
-- the resumes written (the caller announces them after the commit: signal.rs says why not
-- here).
WITH input AS (
       SELECT * FROM json_to_recordset($1::json) AS t(
         n int, id uuid, expected bigint, status text, progress text, updated_at bigint,
         decided_at bigint, version bigint, event_key text, source text,
         resume_id uuid, tenant_id text, resume text) LIMIT $2),
     upd AS (
       UPDATE waits w SET status = i.status, progress = i.progress,
         updated_at = i.updated_at, decided_at = i.decided_at, version = i.version
       FROM input i
       WHERE w.id = i.id AND w.version = i.expected
         AND NOT EXISTS (SELECT 1 FROM processed_events p
                         WHERE p.wait_id = i.id AND p.event_key = i.event_key)
       RETURNING w.id),
     inbox AS (
       INSERT INTO processed_events (wait_id, event_key, source, processed_at)
       SELECT i.id, i.event_key, i.source, i.updated_at FROM input i JOIN upd ON upd.id = i.id
       WHERE i.event_key IS NOT NULL
       ON CONFLICT DO NOTHING RETURNING 1),
     outbox AS (
       INSERT INTO resume_outbox (resume_id, wait_id, tenant_id, resume, created_at, attempts)
       SELECT i.resume_id, i.id, i.tenant_id, i.resume, i.decided_at, 0
       FROM input i JOIN upd ON upd.id = i.id WHERE i.resume IS NOT NULL
       ON CONFLICT (wait_id) DO NOTHING RETURNING 1)
SELECT i.n, u.id IS NOT NULL AS updated,
       CASE WHEN u.id IS NULL THEN (SELECT true FROM processed_events p
         WHERE p.wait_id = i.id AND p.event_key = i.event_key LIMIT 1) IS NOT NULL
       ELSE false END AS already,
       (SELECT count(*) FROM outbox) AS resumes
FROM input i LEFT JOIN upd u ON u.id = i.id
