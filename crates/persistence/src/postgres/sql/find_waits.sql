-- A batch of wait lookups by correlation id in one statement (see finds.rs).
-- $1: JSON array of lookups numbered `n`; $2: their count. Each wait found comes back with
-- the `batch_n` of the lookup it answers.
SELECT i.n AS batch_n, w.*
FROM (SELECT * FROM json_to_recordset($1::json) AS t(n int, tenant_id text, correlation_id text)
      LIMIT $2) i
JOIN waits w ON w.tenant_id = i.tenant_id AND w.correlation_id = i.correlation_id
