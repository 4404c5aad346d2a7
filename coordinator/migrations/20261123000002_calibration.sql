-- The per-probe delay model (engine Calibration, JSON) a result was solved with, fitted on
-- probe-to-landmark RTTs; NULL when none was used. Kept so recomputing is exact.
ALTER TABLE results ADD COLUMN calibration_json TEXT;
