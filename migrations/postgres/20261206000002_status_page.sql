-- The status page: sign-in sessions and the indexes its list needs.
--
-- A session is known by the SHA-256 of its cookie value (hex), never the value.
-- `token_id` NULL: signed in with the admin token; else the tenant token it was
-- made from (revoking the token ends the session).
CREATE TABLE page_sessions (
    id_hash     text PRIMARY KEY,
    token_id    uuid,
    tenant_id   text,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX page_sessions_expiry ON page_sessions (expires_at);

-- The page lists the providers that need a human (error, needs_reauth) first,
-- then the rest, each part oldest first, filtered by tenant and status.
CREATE INDEX providers_page_all ON providers (created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX providers_page_status ON providers (status, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX providers_page_tenant_status ON providers (tenant_id, status, created_at, id) WHERE deleted_at IS NULL;
