-- Several instances share one fleet through leases. Each running instance has a
-- row here and renews `lease_until` on every heartbeat; an instance whose
-- `lease_until` has passed is dead, and the providers it owned may be adopted.
-- Lease times come from the database's own clock (clock_timestamp()), the one
-- clock every instance shares, so clock skew between machines cannot make a live
-- instance look dead.
CREATE TABLE instances (
    id            bigserial PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_until   timestamptz NOT NULL,
    -- Set when the instance shuts down gracefully: it takes nothing new and
    -- others may adopt what it released.
    leaving       boolean NOT NULL DEFAULT false
);

-- The instance that owns the provider (NULL: nobody; claimable). A provider is
-- (re)claimed with a new `lease_token` drawn from `lease_tokens`, so tokens only
-- grow and a write under an older claim is refused (see lease_token).
ALTER TABLE providers ADD COLUMN owner bigint;
CREATE SEQUENCE lease_tokens START WITH 2;
CREATE INDEX providers_owner ON providers (owner, id);
