-- Per-probe identity (issue 8): one-time enrolment tokens and per-probe credentials.
-- Only SHA-256 hashes (hex) of tokens and credentials are stored.

-- A probe enrolled by an administrator (`geoloc-coordinator probes enroll`): its credential
-- once the agent exchanged its token, its revocation, and the position an administrator
-- approved (the enrolled one, or the first registration's) with a change awaiting approval.
CREATE TABLE probe_identities (
    probe_id            TEXT PRIMARY KEY,
    -- SHA-256 of the per-probe credential; NULL until the enrolment token is exchanged.
    credential_hash     TEXT,
    created_unix_ms     BIGINT NOT NULL,
    -- When the agent exchanged its enrolment token; NULL before.
    enrolled_unix_ms    BIGINT,
    -- Set by `probes revoke`: the credential is refused from then on.
    revoked_unix_ms     BIGINT,
    approved_lat        DOUBLE PRECISION,
    approved_lon        DOUBLE PRECISION,
    approved_unix_ms    BIGINT,
    -- A declared position more than 1 km from the approved one, awaiting approval.
    pending_lat         DOUBLE PRECISION,
    pending_lon         DOUBLE PRECISION,
    pending_unix_ms     BIGINT
);
CREATE UNIQUE INDEX probe_identities_credential ON probe_identities (credential_hash);
CREATE INDEX probe_identities_revoked ON probe_identities (revoked_unix_ms);

-- One-time enrolment tokens (SHA-256 hex); `used_unix_ms` is set when exchanged.
CREATE TABLE probe_enrolments (
    token_hash          TEXT PRIMARY KEY,
    probe_id            TEXT NOT NULL,
    created_unix_ms     BIGINT NOT NULL,
    expires_unix_ms     BIGINT NOT NULL,
    used_unix_ms        BIGINT
);
CREATE INDEX probe_enrolments_probe ON probe_enrolments (probe_id);
