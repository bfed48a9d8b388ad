-- Tenant-scoped API tokens, a readable audit trail, and what retention and
-- tenant offboarding need.
--
-- A token is shown once when created; only its SHA-256 is kept (hex), so a leaked
-- database names no usable token. A revoked token stays (revoked_at set) so the
-- audit trail's actor ids keep meaning something.
CREATE TABLE api_tokens (
    id          uuid PRIMARY KEY,
    tenant_id   text NOT NULL,
    name        text NOT NULL,
    token_hash  text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX api_tokens_created ON api_tokens (created_at, id);
CREATE INDEX api_tokens_tenant ON api_tokens (tenant_id, created_at, id);

-- Who acted (`admin`, `token:<id>`, `cli`, `session:<token id>`; never a token)
-- and how it ended. Rows from before this migration were all the admin's, and
-- only successes were written.
ALTER TABLE audit_log ADD COLUMN actor text NOT NULL DEFAULT 'admin';
ALTER TABLE audit_log ADD COLUMN outcome text NOT NULL DEFAULT 'ok';
-- Retention deletes the oldest rows first, in batches.
CREATE INDEX audit_log_at ON audit_log (at, id);
CREATE INDEX renewal_attempts_at ON renewal_attempts (attempted_at, id);
-- Cursor pagination of a tenant's providers, oldest first.
CREATE INDEX providers_tenant_created ON providers (tenant_id, created_at, id) WHERE deleted_at IS NULL;

-- A tenant being offboarded: its providers are retired (their subscriptions
-- deleted at the providers by the fleet), its tokens revoked, then its rows
-- removed in batches. The row outlives an interrupted run, so the work resumes.
CREATE TABLE tenant_offboardings (
    tenant_id     text PRIMARY KEY,
    requested_at  timestamptz NOT NULL,
    actor         text NOT NULL,
    finished_at   timestamptz
);
