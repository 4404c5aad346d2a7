-- Cluster mode (issue 11): several coordinator replicas on one PostgreSQL database.
-- The tables exist on SQLite too (one schema for both backends) but only a PostgreSQL
-- coordinator with `cluster = true` writes them.

-- Which replica started a run: a replica that dies leaves its `running` results to the
-- others, who mark them interrupted once its heartbeat is stale. '' = single node.
ALTER TABLE results ADD COLUMN owner_replica TEXT NOT NULL DEFAULT '';

-- Live replicas: each writes its heartbeat every second.
CREATE TABLE replicas (
    replica_id          TEXT PRIMARY KEY,
    started_unix_ms     BIGINT NOT NULL,
    heartbeat_unix_ms   BIGINT NOT NULL
);

-- Which replica holds each probe's session (a probe that moved is overwritten by its new
-- replica; rows of a dead replica are removed by the others).
CREATE TABLE probe_sessions (
    probe_id            TEXT PRIMARY KEY,
    replica_id          TEXT NOT NULL,
    since_unix_ms       BIGINT NOT NULL
);
CREATE INDEX probe_sessions_replica ON probe_sessions (replica_id);

-- One measurement request for a probe held by another replica: written by the replica
-- that needs it (`origin_replica`), taken with a lease by the replica holding the probe
-- (`SELECT ... FOR UPDATE SKIP LOCKED`), answered once (`state` = 'done' is final).
-- The request id is the key: a request is measured and answered at most once per lease.
CREATE TABLE work_items (
    request_id          TEXT PRIMARY KEY,
    probe_id            TEXT NOT NULL,
    origin_replica      TEXT NOT NULL,
    request_json        TEXT NOT NULL,
    -- queued | leased | done
    state               TEXT NOT NULL,
    lease_owner         TEXT NOT NULL DEFAULT '',
    lease_until_unix_ms BIGINT NOT NULL DEFAULT 0,
    -- Nobody waits for the answer after this.
    deadline_unix_ms    BIGINT NOT NULL,
    outcome_json        TEXT,
    created_unix_ms     BIGINT NOT NULL,
    finished_unix_ms    BIGINT
);
CREATE INDEX work_items_open ON work_items (probe_id, created_unix_ms) WHERE state <> 'done';
CREATE INDEX work_items_created ON work_items (created_unix_ms);
