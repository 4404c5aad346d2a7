-- geoloc coordinator schema, v1. The same file is applied to SQLite and PostgreSQL, so it
-- uses only types both understand (TEXT, BIGINT, DOUBLE PRECISION, BOOLEAN) and ids made by
-- the application (no AUTOINCREMENT / SERIAL).

-- Probes ever registered, with their declared position and speed-of-light flag.
CREATE TABLE probes (
    probe_id            TEXT PRIMARY KEY,
    lat                 DOUBLE PRECISION NOT NULL,
    lon                 DOUBLE PRECISION NOT NULL,
    ipv4                TEXT NOT NULL DEFAULT '',
    ipv6                TEXT NOT NULL DEFAULT '',
    agent_version       TEXT NOT NULL DEFAULT '',
    flagged             BOOLEAN NOT NULL DEFAULT FALSE,
    flag_reason         TEXT NOT NULL DEFAULT '',
    -- Landmark measurements older than this are ignored by the speed-of-light check
    -- (set when the position changes or the flag is cleared).
    flag_epoch_unix_ms  BIGINT NOT NULL DEFAULT 0,
    first_seen_unix_ms  BIGINT NOT NULL,
    last_seen_unix_ms   BIGINT NOT NULL
);

-- One row per located address (per locate run).
CREATE TABLE results (
    result_id           TEXT PRIMARY KEY,
    ip                  TEXT NOT NULL,
    mode                TEXT NOT NULL,
    -- 'running' | 'done' | 'failed' | 'interrupted'
    status              TEXT NOT NULL,
    solution_json       TEXT,
    error_code          TEXT NOT NULL DEFAULT '',
    error               TEXT NOT NULL DEFAULT '',
    -- GeoIP record used for the MaxMind comparison (JSON), kept so recomputing is exact.
    geoip_json          TEXT,
    probes_asked        BIGINT NOT NULL DEFAULT 0,
    probes_used         BIGINT NOT NULL DEFAULT 0,
    packets_sent        BIGINT NOT NULL DEFAULT 0,
    min_rtt_ms          DOUBLE PRECISION,
    nearest_probe       TEXT NOT NULL DEFAULT '',
    created_at_unix_ms  BIGINT NOT NULL,
    finished_unix_ms    BIGINT
);
CREATE INDEX results_ip_created ON results (ip, created_at_unix_ms);

-- Every raw answer of a probe to a measurement request.
CREATE TABLE measurements (
    measurement_id      TEXT PRIMARY KEY,
    -- NULL for landmark (probe-to-landmark) measurements.
    result_id           TEXT,
    -- 'locate' | 'landmark'
    purpose             TEXT NOT NULL,
    stage               BIGINT NOT NULL DEFAULT 1,
    request_id          TEXT NOT NULL,
    probe_id            TEXT NOT NULL,
    probe_lat           DOUBLE PRECISION NOT NULL,
    probe_lon           DOUBLE PRECISION NOT NULL,
    target              TEXT NOT NULL,
    -- For landmark measurements: the landmark measured and its declared position.
    target_landmark     TEXT,
    target_lat          DOUBLE PRECISION,
    target_lon          DOUBLE PRECISION,
    -- 'answered' | 'no-reply' | 'timeout' | 'disconnected' | 'probe-error'
    outcome             TEXT NOT NULL,
    error               TEXT NOT NULL DEFAULT '',
    -- Why this row was left out of the solution (e.g. the probe was flagged); '' = used.
    excluded            TEXT NOT NULL DEFAULT '',
    packets_sent        BIGINT NOT NULL DEFAULT 0,
    -- The probe's MeasurementResult as JSON (see coordinator/README.md).
    raw_json            TEXT NOT NULL,
    created_unix_ms     BIGINT NOT NULL
);
CREATE INDEX measurements_result ON measurements (result_id);
CREATE INDEX measurements_purpose ON measurements (purpose, created_unix_ms);
