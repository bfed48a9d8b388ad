-- Idle cost that follows the work that is due, not the size of the fleet.
--
-- 1. A change feed on providers for the fleet's reconcile. `revision` is the
--    64-bit id of the transaction that last changed something the fleet acts on
--    (enabled, deleted, what is watched and with which credentials, who owns it
--    under which claim). It is not bumped by what the lifecycle writes after
--    every attempt (status, error_message, updated_at). A reader takes
--    `pg_snapshot_xmin(pg_current_snapshot())` as its high-water mark: every
--    transaction with a smaller id has ended, so no row with a smaller revision
--    can still appear (see src/store/lifecycle.rs). Rows from before this
--    migration keep revision 0: the fleet's start-up load reads them all anyway.
ALTER TABLE providers ADD COLUMN revision bigint NOT NULL DEFAULT 0;
CREATE INDEX providers_revision ON providers (revision);

CREATE FUNCTION providers_stamp_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.revision := pg_current_xact_id()::text::bigint;
    RETURN NEW;
END
$$;

CREATE TRIGGER providers_revision_on_insert BEFORE INSERT ON providers
    FOR EACH ROW EXECUTE FUNCTION providers_stamp_revision();
CREATE TRIGGER providers_revision_on_change BEFORE UPDATE ON providers
    FOR EACH ROW
    WHEN (OLD.enabled IS DISTINCT FROM NEW.enabled
          OR OLD.deleted_at IS DISTINCT FROM NEW.deleted_at
          OR OLD.owner IS DISTINCT FROM NEW.owner
          OR OLD.lease_token IS DISTINCT FROM NEW.lease_token
          OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id
          OR OLD.kind IS DISTINCT FROM NEW.kind
          OR OLD.display_name IS DISTINCT FROM NEW.display_name
          OR OLD.resource IS DISTINCT FROM NEW.resource
          OR OLD.credentials_id IS DISTINCT FROM NEW.credentials_id
          OR OLD.credentials_version IS DISTINCT FROM NEW.credentials_version)
    EXECUTE FUNCTION providers_stamp_revision();

-- 2. When each provider was last heard from, kept on its health row so that the
--    silence sweeps read only the providers that are due, by index:
--    heard_at = GREATEST(last webhook, live subscription's creation): a silence
--               begins there (mark_silent);
--    alive_at = GREATEST(heard_at, last successful catch-up or check): its
--               proof of life (the catch-up's silence checks and freshness).
--    Both are NULL while the provider has no live subscription. `kind` is the
--    provider's (it never changes), so each kind's threshold is a range.
ALTER TABLE provider_health ADD COLUMN kind text;
ALTER TABLE provider_health ADD COLUMN heard_at timestamptz;
ALTER TABLE provider_health ADD COLUMN alive_at timestamptz;

UPDATE provider_health h SET kind = p.kind FROM providers p WHERE p.id = h.provider_id;
UPDATE provider_health h
   SET heard_at = GREATEST(h.last_webhook_received_at, s.created_at),
       alive_at = GREATEST(h.last_webhook_received_at, s.created_at, c.checked_at)
  FROM subscriptions s LEFT JOIN provider_cursors c ON c.provider_id = s.provider_id
 WHERE s.provider_id = h.provider_id AND s.state = 'active';

CREATE INDEX provider_health_silence_due ON provider_health (kind, heard_at)
    WHERE silent_since IS NULL;
CREATE INDEX provider_health_alive ON provider_health (kind, alive_at)
    WHERE subscription_status <> 'needs_reauth';

-- A health row's kind, heard_at and alive_at from its own last webhook and the
-- provider's live subscription and cursor (the rows as this transaction sees them).
CREATE FUNCTION provider_health_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    subscribed timestamptz;
    checked timestamptz;
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.kind := (SELECT kind FROM providers WHERE id = NEW.provider_id);
    END IF;
    SELECT created_at INTO subscribed FROM subscriptions
     WHERE provider_id = NEW.provider_id AND state = 'active';
    SELECT checked_at INTO checked FROM provider_cursors WHERE provider_id = NEW.provider_id;
    IF subscribed IS NULL THEN
        NEW.heard_at := NULL;
        NEW.alive_at := NULL;
    ELSE
        NEW.heard_at := GREATEST(NEW.last_webhook_received_at, subscribed);
        NEW.alive_at := GREATEST(NEW.heard_at, checked);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER provider_health_stamp BEFORE INSERT OR UPDATE OF last_webhook_received_at
    ON provider_health FOR EACH ROW EXECUTE FUNCTION provider_health_stamp();

-- A subscription or cursor change re-stamps the provider's health row (touching
-- last_webhook_received_at fires the trigger above; the value stays).
CREATE FUNCTION provider_health_restamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE provider_health SET last_webhook_received_at = last_webhook_received_at
     WHERE provider_id = NEW.provider_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER provider_health_restamp_subscription
    AFTER INSERT OR UPDATE OF state, created_at ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION provider_health_restamp();
CREATE TRIGGER provider_health_restamp_cursor
    AFTER INSERT OR UPDATE OF checked_at ON provider_cursors
    FOR EACH ROW EXECUTE FUNCTION provider_health_restamp();
