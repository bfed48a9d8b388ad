-- subkeeper's schema: providers and their OAuth credentials, subscriptions (with the
-- ids they replaced, so late notifications still route), per-provider health, one
-- row per renewal attempt, and an audit trail of admin changes.

CREATE TABLE oauth_credentials (
    id                uuid PRIMARY KEY,
    tenant_id         text NOT NULL,
    -- client_credentials: app-only per Azure AD tenant; refresh_token: delegated.
    flow              text NOT NULL CHECK (flow IN ('client_credentials', 'refresh_token')),
    authority_tenant  text NOT NULL,
    client_id         text NOT NULL,
    client_secret     text,
    refresh_token     text,
    scope             text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_credentials_tenant ON oauth_credentials (tenant_id);

CREATE TABLE providers (
    id                  uuid PRIMARY KEY,
    tenant_id           text NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('graph_mail', 'graph_calendar', 'google_calendar', 'gmail')),
    display_name        text NOT NULL,
    -- The provider-side resource watched, e.g. users/{id}/messages. One provider
    -- watches one resource and owns one subscription.
    resource            text NOT NULL,
    credentials_id      uuid REFERENCES oauth_credentials (id),
    -- Bumped when credentials change; a provider in needs_reauth resumes on a new version.
    credentials_version bigint NOT NULL DEFAULT 1,
    enabled             boolean NOT NULL DEFAULT true,
    status              text NOT NULL DEFAULT 'connected'
                        CHECK (status IN ('connected', 'error', 'needs_reauth', 'disabled')),
    error_message       text,
    -- Soft delete: the fleet deletes the subscription at the provider, then the row stays for audit.
    deleted_at          timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX providers_tenant_status ON providers (tenant_id, status) WHERE deleted_at IS NULL;
CREATE INDEX providers_enabled ON providers (enabled) WHERE deleted_at IS NULL;

CREATE TABLE subscriptions (
    id            bigserial PRIMARY KEY,
    provider_id   uuid NOT NULL REFERENCES providers (id),
    tenant_id     text NOT NULL,
    resource      text NOT NULL,
    -- The provider's id (Graph subscription id, Google channel id).
    external_id   text NOT NULL UNIQUE,
    -- Google's resourceId, needed to stop a channel.
    resource_id   text,
    client_state  text NOT NULL,
    expires_at    timestamptz NOT NULL,
    created_at    timestamptz NOT NULL,
    renewed_at    timestamptz,
    -- active: the live one; replaced/gone: superseded but still routable for late
    -- notifications; deleted: removed at the provider by us.
    state         text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'replaced', 'gone', 'deleted')),
    retired_at    timestamptz
);
CREATE UNIQUE INDEX subscriptions_one_active ON subscriptions (provider_id) WHERE state = 'active';
CREATE INDEX subscriptions_active_expiry ON subscriptions (expires_at) WHERE state = 'active';

CREATE TABLE provider_health (
    provider_id               uuid PRIMARY KEY REFERENCES providers (id),
    tenant_id                 text NOT NULL,
    subscription_status       text NOT NULL DEFAULT 'healthy'
                              CHECK (subscription_status IN ('healthy', 'renewing', 'failing', 'error', 'needs_reauth')),
    subscription_expires_at   timestamptz,
    last_renewal_attempt_at   timestamptz,
    last_renewal_result       text CHECK (last_renewal_result IN ('registered', 'renewed', 'recreated', 'failed')),
    failure_reason            text,
    last_webhook_received_at  timestamptz,
    consecutive_failure_count integer NOT NULL DEFAULT 0 CHECK (consecutive_failure_count >= 0),
    next_renewal_at           timestamptz,
    silent_since              timestamptz,
    updated_at                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provider_health_tenant_status ON provider_health (tenant_id, subscription_status);
CREATE INDEX provider_health_expiry ON provider_health (subscription_expires_at);

CREATE TABLE renewal_attempts (
    id               bigserial PRIMARY KEY,
    provider_id      uuid NOT NULL REFERENCES providers (id),
    tenant_id        text NOT NULL,
    attempted_at     timestamptz NOT NULL,
    attempt          text NOT NULL CHECK (attempt IN ('register', 'renew', 'recreate')),
    action           text NOT NULL CHECK (action IN ('registered', 'renewed', 'recreated', 'failed')),
    outcome          text NOT NULL CHECK (outcome IN ('success', 'failure')),
    error_class      text,
    error_message    text,
    http_status      integer,
    duration_ms      bigint NOT NULL,
    new_expiration   timestamptz,
    subscription_id  text,
    status_after     text NOT NULL
);
CREATE INDEX renewal_attempts_provider ON renewal_attempts (provider_id, attempted_at DESC);

CREATE TABLE audit_log (
    id            bigserial PRIMARY KEY,
    tenant_id     text NOT NULL,
    at            timestamptz NOT NULL DEFAULT now(),
    action        text NOT NULL,
    target        text NOT NULL,
    -- SHA-256 of the request body: proves what was asked without keeping secrets.
    request_hash  text NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, at DESC);
