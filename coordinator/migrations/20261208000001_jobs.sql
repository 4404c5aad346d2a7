-- Idempotency keys of locate runs (issue 11). A run asked with a key (LocateRequest.job_key,
-- scoped to the caller) stores it here: asking again with the key returns that run instead of
-- measuring again, and in cluster mode another replica finishes a keyed run whose replica
-- died. NULL = a run without a key (the unique index ignores them).
ALTER TABLE results ADD COLUMN job_key TEXT;
-- What was asked (kept so another replica can run it again): JSON, see core::jobs::JobSpec.
ALTER TABLE results ADD COLUMN job_json TEXT;
CREATE UNIQUE INDEX results_job_key ON results (job_key) WHERE job_key IS NOT NULL;
-- Keyed runs another replica may have to finish (cluster sweeper, `Storage::claim_orphan_jobs`).
CREATE INDEX results_open_jobs ON results (created_at_unix_ms)
    WHERE job_key IS NOT NULL AND status IN ('running', 'interrupted');
