-- Locate rows (nearly all rows) no longer update an index that only the landmark reads
-- use: `measurements_purpose (purpose, created_unix_ms)` becomes a partial index of the
-- landmark rows. Retention keeps `measurements_created`; runs keep `measurements_result`.
DROP INDEX measurements_purpose;
CREATE INDEX measurements_landmark ON measurements (created_unix_ms) WHERE purpose = 'landmark';
