-- Gmail's historyId as of the last users.watch (the point from which Gmail
-- pushes changes); downstream reads the mailbox's history from it after a gap.
-- NULL for Graph subscriptions and Calendar channels.
ALTER TABLE subscriptions ADD COLUMN history_id text;
