-- The health row is re-stamped when a subscription's state or creation time
-- changes, not on every write of the row. `UPDATE OF state, created_at` fires
-- when those columns are in the SET list, and the store's upsert names them on
-- every renewal, so each renewal paid an extra UPDATE of provider_health (and
-- its index entries) that changed nothing. An INSERT always re-stamps; an
-- UPDATE only when a value the stamp reads changed.
DROP TRIGGER provider_health_restamp_subscription ON subscriptions;
CREATE TRIGGER provider_health_restamp_subscription_insert
    AFTER INSERT ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION provider_health_restamp();
CREATE TRIGGER provider_health_restamp_subscription_update
    AFTER UPDATE OF state, created_at ON subscriptions
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state
          OR OLD.created_at IS DISTINCT FROM NEW.created_at)
    EXECUTE FUNCTION provider_health_restamp();
