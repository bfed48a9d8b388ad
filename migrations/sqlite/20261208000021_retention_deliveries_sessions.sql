-- Retention of the delivery log and of expired status-page sessions (see the
-- PostgreSQL migration of the same name).
CREATE INDEX deliveries_received ON deliveries (received_at, id);
DROP INDEX page_sessions_expiry;
CREATE INDEX page_sessions_expiry ON page_sessions (expires_at, id_hash);
