-- The delivery log: what each provider sent and what subkeeper did with it.
-- Hashes only, never a payload (see the PostgreSQL migration of the same name).
CREATE TABLE deliveries (
    id              integer PRIMARY KEY AUTOINCREMENT,
    tenant_id       text NOT NULL,
    provider_id     blob NOT NULL,
    received_at     text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('change', 'lifecycle', 'google_message', 'gmail_push')),
    outcome         text NOT NULL CHECK (outcome IN ('accepted', 'duplicate', 'rejected')),
    reason          text NOT NULL,
    message_id      text,
    payload_sha256  text NOT NULL
);
CREATE INDEX deliveries_provider ON deliveries (tenant_id, provider_id, received_at DESC, id DESC);
CREATE UNIQUE INDEX deliveries_accepted_once ON deliveries (provider_id, message_id) WHERE outcome = 'accepted';
