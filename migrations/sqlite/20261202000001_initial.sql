-- subkeeper's embedded schema (SQLite): the same tables and rules as the
-- PostgreSQL schema in migrations/postgres, in SQLite's types. Timestamps are
-- RFC 3339 text in UTC (as sqlx writes them; they sort as they compare), ids are
-- 16-byte UUID blobs, booleans 0/1.

CREATE TABLE oauth_credentials (
    id                blob PRIMARY KEY,
    tenant_id         text NOT NULL,
    flow              text NOT NULL CHECK (flow IN ('client_credentials', 'refresh_token')),
    authority_tenant  text NOT NULL,
    client_id         text NOT NULL,
    client_secret     text,
    refresh_token     text,
    scope             text NOT NULL,
    created_at        text NOT NULL,
    updated_at        text NOT NULL
);
CREATE INDEX oauth_credentials_tenant ON oauth_credentials (tenant_id);

CREATE TABLE providers (
    id                  blob PRIMARY KEY,
    tenant_id           text NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('graph_mail', 'graph_calendar', 'google_calendar', 'gmail')),
    display_name        text NOT NULL,
    resource            text NOT NULL,
    credentials_id      blob REFERENCES oauth_credentials (id),
    credentials_version integer NOT NULL DEFAULT 1,
    enabled             boolean NOT NULL DEFAULT 1,
    status              text NOT NULL DEFAULT 'connected'
                        CHECK (status IN ('connected', 'error', 'needs_reauth', 'disabled')),
    error_message       text,
    deleted_at          text,
    created_at          text NOT NULL,
    updated_at          text NOT NULL,
    lease_token         integer NOT NULL DEFAULT 1
);
CREATE INDEX providers_tenant_status ON providers (tenant_id, status) WHERE deleted_at IS NULL;
CREATE INDEX providers_enabled ON providers (enabled) WHERE deleted_at IS NULL;
CREATE INDEX providers_gmail_mailbox ON providers (lower(resource)) WHERE kind = 'gmail';

CREATE TABLE subscriptions (
    id            integer PRIMARY KEY AUTOINCREMENT,
    provider_id   blob NOT NULL REFERENCES providers (id),
    tenant_id     text NOT NULL,
    resource      text NOT NULL,
    external_id   text NOT NULL UNIQUE,
    resource_id   text,
    client_state  text NOT NULL,
    expires_at    text NOT NULL,
    created_at    text NOT NULL,
    renewed_at    text,
    state         text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'replaced', 'gone', 'deleted')),
    retired_at    text,
    history_id    text
);
CREATE UNIQUE INDEX subscriptions_one_active ON subscriptions (provider_id) WHERE state = 'active';
CREATE INDEX subscriptions_active_expiry ON subscriptions (expires_at) WHERE state = 'active';
CREATE INDEX subscriptions_provider_state ON subscriptions (provider_id, state);

CREATE TABLE provider_health (
    provider_id               blob PRIMARY KEY REFERENCES providers (id),
    tenant_id                 text NOT NULL,
    subscription_status       text NOT NULL DEFAULT 'healthy'
                              CHECK (subscription_status IN ('healthy', 'renewing', 'failing', 'error', 'needs_reauth')),
    subscription_expires_at   text,
    last_renewal_attempt_at   text,
    last_renewal_result       text CHECK (last_renewal_result IN ('registered', 'renewed', 'recreated', 'failed')),
    failure_reason            text,
    last_webhook_received_at  text,
    consecutive_failure_count integer NOT NULL DEFAULT 0 CHECK (consecutive_failure_count >= 0),
    next_renewal_at           text,
    silent_since              text,
    updated_at                text NOT NULL
);
CREATE INDEX provider_health_tenant_status ON provider_health (tenant_id, subscription_status);
CREATE INDEX provider_health_expiry ON provider_health (subscription_expires_at);

CREATE TABLE renewal_attempts (
    id               integer PRIMARY KEY AUTOINCREMENT,
    provider_id      blob NOT NULL REFERENCES providers (id),
    tenant_id        text NOT NULL,
    attempted_at     text NOT NULL,
    attempt          text NOT NULL CHECK (attempt IN ('register', 'renew', 'recreate')),
    action           text NOT NULL CHECK (action IN ('registered', 'renewed', 'recreated', 'failed')),
    outcome          text NOT NULL CHECK (outcome IN ('success', 'failure')),
    error_class      text,
    error_message    text,
    http_status      integer,
    duration_ms      integer NOT NULL,
    new_expiration   text,
    subscription_id  text,
    status_after     text NOT NULL
);
CREATE INDEX renewal_attempts_provider ON renewal_attempts (provider_id, attempted_at DESC);

CREATE TABLE audit_log (
    id            integer PRIMARY KEY AUTOINCREMENT,
    tenant_id     text NOT NULL,
    at            text NOT NULL,
    action        text NOT NULL,
    target        text NOT NULL,
    request_hash  text NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, at DESC);

CREATE TABLE webhook_outbox (
    id          integer PRIMARY KEY AUTOINCREMENT,
    subject     text NOT NULL,
    msg_id      text NOT NULL UNIQUE,
    payload     blob NOT NULL,
    created_at  text NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text
);
CREATE INDEX webhook_outbox_created ON webhook_outbox (created_at);

CREATE TABLE bus_messages (
    seq           integer PRIMARY KEY AUTOINCREMENT,
    stream        text NOT NULL,
    subject       text NOT NULL,
    msg_id        text,
    payload       blob NOT NULL,
    published_at  text NOT NULL
);
CREATE UNIQUE INDEX bus_messages_dedup ON bus_messages (stream, msg_id);
CREATE INDEX bus_messages_stream_time ON bus_messages (stream, published_at);

CREATE TABLE bus_pending (
    consumer       text NOT NULL,
    seq            integer NOT NULL REFERENCES bus_messages (seq) ON DELETE CASCADE,
    deliver_after  text NOT NULL,
    delivered      integer NOT NULL DEFAULT 0,
    PRIMARY KEY (consumer, seq)
);
CREATE INDEX bus_pending_due ON bus_pending (consumer, deliver_after, seq);
