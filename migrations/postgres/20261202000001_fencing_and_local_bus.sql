-- Fencing: the token of the claim under which an instance writes a provider's
-- state. Every state write a supervisor makes names the token it was handed and
-- changes nothing once the provider was claimed anew (a higher token).
ALTER TABLE providers ADD COLUMN lease_token bigint NOT NULL DEFAULT 1;

-- The in-process bus's durable streams, used when no NATS URL is configured: every
-- message published (webhook notifications, renewal results, alerts, domain
-- events), deduplicated on msg_id within the stream's window, and what each
-- durable consumer has still to settle. A message is deleted once it is older than
-- its stream's age and no consumer still owes it.
CREATE TABLE bus_messages (
    seq           bigserial PRIMARY KEY,
    stream        text NOT NULL,
    subject       text NOT NULL,
    -- The de-duplication key; cleared once the stream's duplicate window has passed.
    msg_id        text,
    payload       bytea NOT NULL,
    published_at  timestamptz NOT NULL
);
CREATE UNIQUE INDEX bus_messages_dedup ON bus_messages (stream, msg_id);
CREATE INDEX bus_messages_stream_time ON bus_messages (stream, published_at);

CREATE TABLE bus_pending (
    consumer       text NOT NULL,
    seq            bigint NOT NULL REFERENCES bus_messages (seq) ON DELETE CASCADE,
    deliver_after  timestamptz NOT NULL,
    delivered      integer NOT NULL DEFAULT 0,
    PRIMARY KEY (consumer, seq)
);
CREATE INDEX bus_pending_due ON bus_pending (consumer, deliver_after, seq);
