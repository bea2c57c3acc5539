-- The second statement of a batch of fresh registrations (see fresh.rs), in a new snapshot
-- that sees whatever committed before the locks were taken. The conformance suite is the
-- contract: per row this must do what `rendezvous_ports::insert_fresh_wait_steps` does.
-- $1: JSON array of locked registrations numbered `n`; $2: their count. `resumes` counts the
-- resumes written (announced by the caller after the commit).
-- Each is inserted with its call and resume only if no wait has its idempotency identity and
-- no early event is pending for its correlation id (a wait with its correlation id makes the
-- insert do nothing); one notification when any resume was written.
WITH input AS (
       SELECT * FROM json_to_recordset($1::json) AS t(
         n int, id uuid, tenant_id text, correlation_id text, execution_id text,
         node_id text, idempotency_key text, workflow_id text, status text, spec text,
         progress text, deadline bigint, created_at bigint, decided_at bigint,
         call text, resume_id uuid, resume text) LIMIT $2),
     fresh AS (
       SELECT i.* FROM input i
       WHERE NOT EXISTS (SELECT 1 FROM waits w WHERE w.tenant_id = i.tenant_id
           AND w.execution_id = i.execution_id AND w.node_id = i.node_id
           AND w.idempotency_key = i.idempotency_key)
         AND NOT EXISTS (SELECT 1 FROM early_events e WHERE e.tenant_id = i.tenant_id
           AND e.correlation_id = i.correlation_id AND e.status = 'pending'
           AND e.expires_at > i.created_at)),
     ins AS (
       INSERT INTO waits (id, tenant_id, correlation_id, execution_id, node_id,
         idempotency_key, workflow_id, status, spec, progress, deadline, created_at,
         updated_at, decided_at, version)
       SELECT id, tenant_id, correlation_id, execution_id, node_id, idempotency_key,
         workflow_id, status, spec, progress, deadline, created_at, created_at,
         decided_at, 1 FROM fresh
       ON CONFLICT DO NOTHING RETURNING id),
     calls AS (
       INSERT INTO api_calls (wait_id, request, status, attempts, next_attempt_at,
         created_at, updated_at)
       SELECT f.id, f.call, 'pending', 0, f.created_at, f.created_at, f.created_at
       FROM fresh f JOIN ins ON ins.id = f.id WHERE f.call IS NOT NULL),
     outbox AS (
       INSERT INTO resume_outbox (resume_id, wait_id, tenant_id, resume, created_at, attempts)
       SELECT f.resume_id, f.id, f.tenant_id, f.resume, f.decided_at, 0
       FROM fresh f JOIN ins ON ins.id = f.id WHERE f.resume IS NOT NULL
       ON CONFLICT (wait_id) DO NOTHING RETURNING 1)
SELECT i.n, ins.id IS NOT NULL AS inserted, (SELECT count(*) FROM outbox) AS resumes
FROM input i LEFT JOIN ins ON ins.id = i.id
