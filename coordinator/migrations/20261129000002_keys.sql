-- Client API keys (issue 8, "keys"): the key itself is never stored, only the SHA-256 of
-- its secret (hex). `scopes` is a comma-separated list of read, locate, admin.
CREATE TABLE api_keys (
    name                TEXT PRIMARY KEY,
    key_hash            TEXT NOT NULL UNIQUE,
    scopes              TEXT NOT NULL,
    addresses_per_hour  BIGINT NOT NULL,
    concurrent          BIGINT NOT NULL,
    created_unix_ms     BIGINT NOT NULL,
    last_used_unix_ms   BIGINT,
    revoked_unix_ms     BIGINT
);

-- Abuse-limit counters per fixed hour window, kept in the database so that a restart (or
-- another replica on the same PostgreSQL) does not reset them. kind: 'key-addresses'
-- (subject = key name) or 'target-packets' (subject = canonical target address).
CREATE TABLE usage_counters (
    kind                TEXT NOT NULL,
    subject             TEXT NOT NULL,
    window_unix_ms      BIGINT NOT NULL,
    used                BIGINT NOT NULL,
    PRIMARY KEY (kind, subject, window_unix_ms)
);
CREATE INDEX usage_counters_window ON usage_counters (window_unix_ms);

-- Which API key asked for a result ('' for runs made before keys existed or with auth off).
ALTER TABLE results ADD COLUMN requested_by TEXT NOT NULL DEFAULT '';
