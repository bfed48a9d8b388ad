-- The change feed on providers for the fleet's reconcile (see the PostgreSQL
-- migration of the same name). SQLite has one writer at a time, so a counter
-- bumped inside the writing transaction commits in revision order: a reader's
-- high-water mark is simply the largest revision it has read.
ALTER TABLE providers ADD COLUMN revision integer NOT NULL DEFAULT 0;
CREATE INDEX providers_revision ON providers (revision);

CREATE TABLE provider_revision (
    id   integer PRIMARY KEY CHECK (id = 1),
    last integer NOT NULL
);
INSERT INTO provider_revision (id, last) VALUES (1, 0);

CREATE TRIGGER providers_revision_on_insert AFTER INSERT ON providers
BEGIN
    UPDATE provider_revision SET last = last + 1 WHERE id = 1;
    UPDATE providers SET revision = (SELECT last FROM provider_revision WHERE id = 1)
     WHERE id = NEW.id;
END;

-- Only what the fleet acts on; status, error_message and updated_at (written
-- after every attempt) do not bump it. The trigger's own write sets revision,
-- which is not in the column list, so it does not fire again.
CREATE TRIGGER providers_revision_on_change
AFTER UPDATE OF enabled, deleted_at, lease_token, tenant_id, kind, display_name, resource,
                credentials_id, credentials_version ON providers
WHEN OLD.enabled IS NOT NEW.enabled
  OR OLD.deleted_at IS NOT NEW.deleted_at
  OR OLD.lease_token IS NOT NEW.lease_token
  OR OLD.tenant_id IS NOT NEW.tenant_id
  OR OLD.kind IS NOT NEW.kind
  OR OLD.display_name IS NOT NEW.display_name
  OR OLD.resource IS NOT NEW.resource
  OR OLD.credentials_id IS NOT NEW.credentials_id
  OR OLD.credentials_version IS NOT NEW.credentials_version
BEGIN
    UPDATE provider_revision SET last = last + 1 WHERE id = 1;
    UPDATE providers SET revision = (SELECT last FROM provider_revision WHERE id = 1)
     WHERE id = NEW.id;
END;
