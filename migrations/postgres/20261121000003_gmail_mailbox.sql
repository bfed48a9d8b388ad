-- Gmail Pub/Sub pushes name the mailbox, not a subscription: route them by the
-- provider's resource (the mailbox address), case-insensitively.
CREATE INDEX providers_gmail_mailbox ON providers (lower(resource)) WHERE kind = 'gmail';
