-- Gmail's historyId as of the last users.watch: the mailbox's position when the
-- watch was (re)set; pushes cover changes after it. Not a consumer's sync cursor.
-- NULL for Graph subscriptions and Calendar channels.
ALTER TABLE subscriptions ADD COLUMN history_id text;
