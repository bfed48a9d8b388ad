-- Accepted webhook notifications that could not be published to JetStream while
-- the HTTP request was open. A relay publishes them (with the same Nats-Msg-Id, so
-- a partial earlier publish is deduplicated by the stream) and deletes them once
-- JetStream acknowledged: nothing acknowledged to a provider is ever lost.
CREATE TABLE webhook_outbox (
    id          bigserial PRIMARY KEY,
    subject     text NOT NULL,
    msg_id      text NOT NULL UNIQUE,
    payload     bytea NOT NULL,
    created_at  timestamptz NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text
);
CREATE INDEX webhook_outbox_created ON webhook_outbox (created_at);

-- Webhook routing looks subscriptions up by provider-side id, including replaced ones.
CREATE INDEX subscriptions_provider_state ON subscriptions (provider_id, state);
