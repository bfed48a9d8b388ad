-- Tenant-scoped API tokens, a readable audit trail, and what retention and
-- tenant offboarding need (the same tables as the Postgres migration of this
-- name; comments there).
CREATE TABLE api_tokens (
    id          blob PRIMARY KEY,
    tenant_id   text NOT NULL,
    name        text NOT NULL,
    token_hash  text NOT NULL UNIQUE,
    created_at  text NOT NULL,
    revoked_at  text
);
CREATE INDEX api_tokens_created ON api_tokens (created_at, id);
CREATE INDEX api_tokens_tenant ON api_tokens (tenant_id, created_at, id);

ALTER TABLE audit_log ADD COLUMN actor text NOT NULL DEFAULT 'admin';
ALTER TABLE audit_log ADD COLUMN outcome text NOT NULL DEFAULT 'ok';
CREATE INDEX audit_log_at ON audit_log (at, id);
CREATE INDEX renewal_attempts_at ON renewal_attempts (attempted_at, id);
CREATE INDEX providers_tenant_created ON providers (tenant_id, created_at, id) WHERE deleted_at IS NULL;

CREATE TABLE tenant_offboardings (
    tenant_id     text PRIMARY KEY,
    requested_at  text NOT NULL,
    actor         text NOT NULL,
    finished_at   text
);
