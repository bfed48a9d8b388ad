-- The delivery log: what each provider sent and what subkeeper did with it.
-- Hashes only, never a payload: `message_id` is the JetStream de-duplication key
-- (Nats-Msg-Id) and `payload_sha256` the SHA-256 of the notification item as
-- received. No foreign key to providers: rows outlive a deleted provider until
-- retention removes them, and writing them never waits on a provider row lock.
CREATE TABLE deliveries (
    id              bigserial PRIMARY KEY,
    tenant_id       text NOT NULL,
    provider_id     uuid NOT NULL,
    received_at     timestamptz NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('change', 'lifecycle', 'google_message', 'gmail_push')),
    outcome         text NOT NULL CHECK (outcome IN ('accepted', 'duplicate', 'rejected')),
    reason          text NOT NULL,
    message_id      text,
    payload_sha256  text NOT NULL
);
-- The API's and the page's read: one provider's newest first, cursor (received_at, id).
CREATE INDEX deliveries_provider ON deliveries (tenant_id, provider_id, received_at DESC, id DESC);
-- A message redelivered by the stream is logged once.
CREATE UNIQUE INDEX deliveries_accepted_once ON deliveries (provider_id, message_id) WHERE outcome = 'accepted';
