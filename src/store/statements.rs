//! The PostgreSQL text of the statements that must stay index-only at any
//! fleet size — the group commit's writes, the change feed, the silence
//! sweeps — in one place: the store runs exactly these, and
//! `tests/it/plans.rs` explains exactly these at 100,000 providers (a copy in
//! the test drifts from what runs). `owner` is the instance whose leases a
//! store lists (`None`: every provider is this instance's).

pub use super::attempts::statements::*;
use super::rows::{PROVIDER_COLUMNS, SUBSCRIPTION_COLUMNS};

/// ` AND p.owner = <instance>` when a store lists one instance's leases. (The
/// id is the process's own, an integer, never outside input.)
pub(super) fn owner_filter(owner: Option<i64>) -> String {
    owner
        .map(|owner| format!(" AND p.owner = {owner}"))
        .unwrap_or_default()
}

/// Whether this instance owns the row `p`, as SQL: always, without leases.
pub(super) fn owned_here(owner: Option<i64>) -> String {
    owner
        .map(|owner| format!("COALESCE(p.owner = {owner}, false)"))
        .unwrap_or_else(|| "true".into())
}

/// Whether any provider was stamped at or after `$1`: a lease heartbeat's
/// probe before it counts the fleet again (leases.rs).
pub const STAMPED_SINCE: &str = "SELECT EXISTS (SELECT 1 FROM providers WHERE revision >= $1)";

/// The change feed: every provider stamped at or after `$1`, as it is now
/// (both databases).
pub fn change_feed(owner: Option<i64>) -> String {
    format!(
        "SELECT {PROVIDER_COLUMNS}, p.deleted_at IS NOT NULL AS deleted, {} AS owned_here \
         FROM providers p WHERE p.revision >= $1",
        owned_here(owner)
    )
}

/// The live subscriptions of this instance's retired providers stamped at or
/// after `$1` (orphans to delete; both databases).
pub fn change_feed_orphans(owner: Option<i64>) -> String {
    format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM providers p \
         JOIN subscriptions s ON s.provider_id = p.id AND s.state = 'active' \
         WHERE p.revision >= $1 \
           AND (NOT p.enabled OR p.deleted_at IS NOT NULL){}",
        owner_filter(owner)
    )
}

/// Marks silent every provider past its kind's cutoff (`$1` kinds, `$2`
/// cutoffs, `$3` now, `$4` the latest cutoff as a plain value the planner can
/// see), by the partial index on (kind, heard_at).
pub const MARK_SILENT: &str = "WITH t AS (SELECT * FROM unnest($1::text[], $2::timestamptz[]) AS t(kind, cutoff)), \
                      candidates AS MATERIALIZED ( \
                        SELECT h.provider_id FROM provider_health h \
                        WHERE h.kind = ANY($1) AND h.silent_since IS NULL AND h.heard_at < $4), \
                      due AS ( \
                        SELECT h.provider_id, p.kind, h.heard_at AS since \
                        FROM candidates c \
                        JOIN provider_health h ON h.provider_id = c.provider_id \
                        JOIN t ON t.kind = h.kind AND h.heard_at < t.cutoff \
                        JOIN providers p ON p.id = h.provider_id AND p.enabled AND p.deleted_at IS NULL \
                        JOIN subscriptions s ON s.provider_id = h.provider_id AND s.state = 'active' AND s.expires_at > $3 \
                        WHERE h.silent_since IS NULL \
                        ORDER BY h.provider_id FOR UPDATE OF h SKIP LOCKED) \
                 UPDATE provider_health h SET silent_since = due.since, updated_at = $3 FROM due \
                 WHERE h.provider_id = due.provider_id AND h.silent_since IS NULL \
                 RETURNING h.provider_id, h.tenant_id, due.kind, due.since, NULL::timestamptz AS ended_at";

/// The catch-up's due providers: those of this instance whose proof of life
/// is older than their kind's cutoff (`$1` kinds, `$2` cutoffs, `$3` the
/// latest cutoff), the due rows planned apart (MATERIALIZED) so that no plan
/// walks every provider.
pub fn silence_due(owner: Option<i64>) -> String {
    format!(
        "WITH due AS MATERIALIZED ( \
                       SELECT h.provider_id, h.kind, h.alive_at, h.last_webhook_received_at FROM provider_health h \
                       WHERE h.kind = ANY($1) AND h.alive_at <= $3 \
                         AND h.subscription_status <> 'needs_reauth') \
                     SELECT p.id, p.kind, due.last_webhook_received_at AS last_webhook, c.checked_at, \
                            s.created_at AS subscribed_at \
                     FROM due \
                     JOIN unnest($1::text[], $2::timestamptz[]) AS t(kind, cutoff) \
                          ON t.kind = due.kind AND due.alive_at <= t.cutoff \
                     JOIN providers p ON p.id = due.provider_id AND p.enabled AND p.deleted_at IS NULL{} \
                     JOIN subscriptions s ON s.provider_id = p.id AND s.state = 'active' \
                     LEFT JOIN provider_cursors c ON c.provider_id = p.id",
        owner_filter(owner)
    )
}

/// Per kind (`$1`), the oldest proof of life in the whole fleet, from the
/// index's first row.
pub const OLDEST_ALIVE: &str = "SELECT t.kind, o.alive_at FROM unnest($1::text[]) AS t(kind) \
                     CROSS JOIN LATERAL ( \
                       SELECT h.alive_at FROM provider_health h \
                       WHERE h.kind = t.kind AND h.alive_at IS NOT NULL \
                         AND h.subscription_status <> 'needs_reauth' \
                       ORDER BY h.alive_at LIMIT 1) o";
