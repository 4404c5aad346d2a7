-- The History listing (ListResults): every stored result, newest first, paged by
-- (created_at_unix_ms, result_id). Listings of one address use results_ip_created.
CREATE INDEX results_created_id ON results (created_at_unix_ms, result_id);
