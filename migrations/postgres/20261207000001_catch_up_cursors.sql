-- Each provider's change cursor for catch-ups after gaps (Graph delta link,
-- Calendar nextSyncToken, Gmail historyId), the page a read in progress has
-- reached (so a read cut short by a crash resumes there), and its proof of
-- life from catch-ups and silence checks. Delta links and sync tokens are
-- positions, not credentials: using one needs the provider's bearer token.
CREATE TABLE provider_cursors (
    provider_id    uuid PRIMARY KEY REFERENCES providers (id) ON DELETE CASCADE,
    cursor         text,
    page           text,
    cursor_at      timestamptz,
    checked_at     timestamptz,
    push_broken    integer NOT NULL DEFAULT 0 CHECK (push_broken >= 0),
    push_broken_at timestamptz,
    updated_at     timestamptz NOT NULL
);
