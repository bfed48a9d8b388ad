-- The status page: sign-in sessions and the indexes its list needs (see the
-- PostgreSQL migration of the same name).
CREATE TABLE page_sessions (
    id_hash     text PRIMARY KEY,
    token_id    blob,
    tenant_id   text,
    created_at  text NOT NULL,
    expires_at  text NOT NULL
);
CREATE INDEX page_sessions_expiry ON page_sessions (expires_at);

CREATE INDEX providers_page_all ON providers (created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX providers_page_status ON providers (status, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX providers_page_tenant_status ON providers (tenant_id, status, created_at, id) WHERE deleted_at IS NULL;
