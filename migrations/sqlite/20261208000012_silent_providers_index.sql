-- The silent providers (`silent_providers`, read by every silence sweep, each
-- minute): a handful at most, found by index instead of reading every health
-- row.
CREATE INDEX provider_health_silent ON provider_health (provider_id) WHERE silent_since IS NOT NULL;
