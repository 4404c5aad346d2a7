-- Operations (issue 8): the speed-of-light checks and the calibration read an index of the
-- landmark measurements instead of re-reading and re-parsing every raw row.
--
-- One row per landmark measurement (measurements.purpose = 'landmark' with a measured
-- landmark), written with it; rows stored before this table existed are added at start.
-- `rtt_ms` is the echo RTT of the answer (ping or TCP handshake; NULL when it had none).
CREATE TABLE landmark_rtts (
    measurement_id      TEXT PRIMARY KEY,
    probe_id            TEXT NOT NULL,
    landmark            TEXT NOT NULL,
    -- Declared positions of the measuring probe and of the landmark at measurement time.
    from_lat            DOUBLE PRECISION NOT NULL,
    from_lon            DOUBLE PRECISION NOT NULL,
    to_lat              DOUBLE PRECISION NOT NULL,
    to_lon              DOUBLE PRECISION NOT NULL,
    rtt_ms              DOUBLE PRECISION,
    created_unix_ms     BIGINT NOT NULL
);
-- The check takes, per (probe, landmark, positions), the fastest RTT newer than both flag
-- epochs: this index holds every column it reads, in the order it groups and sorts them.
CREATE INDEX landmark_rtts_pair ON landmark_rtts
    (probe_id, landmark, from_lat, from_lon, to_lat, to_lon, rtt_ms, created_unix_ms, measurement_id);
CREATE INDEX landmark_rtts_created ON landmark_rtts (created_unix_ms);
-- Retention deletes old rows that belong to no result.
CREATE INDEX measurements_created ON measurements (created_unix_ms);
