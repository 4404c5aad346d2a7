-- PostgreSQL for a geoloc cluster: one role and one database shared by every replica.
-- Run once as the PostgreSQL superuser:  sudo -u postgres psql -f postgres.sql
-- Then put the password in each replica's /etc/geoloc/coordinator.env as
--   GEOLOC_COORDINATOR_DATABASE=postgres://geoloc:PASSWORD@db.example.net:5432/geoloc
-- (the environment keeps it out of the config file and out of `ps`).
CREATE ROLE geoloc LOGIN PASSWORD 'change-me';
CREATE DATABASE geoloc OWNER geoloc;
-- The replicas apply the schema themselves at start (migrations, under an advisory lock, so
-- starting them together is safe). Each replica holds up to 8 pooled connections plus one
-- for LISTEN/NOTIFY: keep max_connections above 10 per replica.
