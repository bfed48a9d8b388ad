-- Retention of the delivery log and of expired status-page sessions: the
-- housekeeping job deletes the oldest rows first, a bounded batch per
-- statement (`... ORDER BY time, key LIMIT n`), which these indexes serve
-- without a sort of everything that is old.
CREATE INDEX deliveries_received ON deliveries (received_at, id);
DROP INDEX page_sessions_expiry;
CREATE INDEX page_sessions_expiry ON page_sessions (expires_at, id_hash);
