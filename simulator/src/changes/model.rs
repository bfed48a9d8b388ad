//! The change log as pure state: per feed, the ordered changes the simulator
//! made, the items as they stand now (deleted ones kept as tombstones), and the
//! opaque cursors the catch-up endpoints hand out over them (Graph delta and
//! skip tokens, Calendar sync and page tokens, Gmail page tokens).
//!
//! Decides what a catch-up call returns and whether a cursor still holds; the
//! HTTP layers render that in each vendor's shape and `announce.rs` sends the
//! webhooks. No I/O, no locking, no clock of its own: every function takes
//! provider time. It must not touch subscriptions, channels or watches, and it
//! gets Gmail's historyIds from Google's state (one counter) rather than
//! counting its own.

use crate::changes::feed::{FeedKey, FeedProvider};
use crate::changes::{ChangeError, ChangeType};
use crate::graph::model::random_token;
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Cursors a feed keeps; the oldest are forgotten first. Graph documents this
/// for Outlook resources: the delta token cache has a capacity and old tokens
/// are evicted, not aged out on a fixed schedule.
pub const TOKEN_CACHE_CAPACITY: usize = 1_000;

/// Length of Graph message and event ids the simulator makes up, in characters
/// after the `AAMkAG`/`AAMkAD` prefix.
const GRAPH_ID_CHARS: usize = 64;

/// How a change's webhook is (to be) delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Announce it now, as the provider does.
    #[default]
    Announce,
    /// Make and log it, send nothing: a missed delivery.
    Drop,
    /// Make and log it, send its webhook when released.
    Hold,
}

/// What became of a change's webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeDelivery {
    /// Sent when made (to every live subscription, channel or watch; possibly
    /// none).
    Announced,
    /// Not sent: the caller asked for a missed delivery.
    Dropped,
    /// Not sent: the feed was muted when it was made.
    Muted,
    /// Waiting for a release.
    Held,
    /// Held, then sent on release.
    Released,
}

/// One change the simulator made, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimChange {
    /// Unique across the simulator; increases with every change.
    pub id: u64,
    /// Whose feed.
    pub provider: FeedProvider,
    /// The feed's canonical resource (Graph path, calendarId, mailbox).
    pub resource: String,
    /// Created, updated or deleted.
    pub kind: ChangeType,
    /// The item changed (message, event).
    pub item_id: String,
    /// The item's version after the change: Graph `changeKey`, Calendar
    /// `etag`, Gmail historyId (decimal).
    pub version: String,
    /// Graph `@odata.etag` (`W/"{changeKey}"`) or Calendar `etag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Gmail: the mailbox historyId this change produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_id: Option<u64>,
    /// Gmail: the message's thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// Gmail: the message's labels after the change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Gmail: labels this change added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels_added: Vec<String>,
    /// Gmail: labels this change removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels_removed: Vec<String>,
    /// Provider time it was made.
    pub at: DateTime<Utc>,
    /// What became of its webhook.
    pub delivery: ChangeDelivery,
}

/// What to change, as the model needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChangeSpec {
    /// Created, updated or deleted.
    pub(crate) kind: ChangeType,
    /// The item; made up for a create, the newest live item otherwise.
    pub(crate) item_id: Option<String>,
    /// Subject (message) or summary (event); made up when absent.
    pub(crate) subject: Option<String>,
    /// Events: new start time; on create, an hour from the next full hour
    /// when absent.
    pub(crate) start: Option<DateTime<Utc>>,
    /// Webhook handling.
    pub(crate) delivery: Delivery,
}

/// An item of a feed as the provider holds it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    /// Provider id.
    pub(crate) id: String,
    /// Provider time of the create.
    pub(crate) created_at: DateTime<Utc>,
    /// Provider time of the latest change.
    pub(crate) updated_at: DateTime<Utc>,
    /// Id of the change that created it.
    pub(crate) created_change: u64,
    /// Id of the latest change to it.
    pub(crate) last_change: u64,
    /// Deleted: kept so catch-up can report the removal.
    pub(crate) deleted: bool,
    /// Graph `changeKey`, Calendar etag digits, Gmail historyId.
    pub(crate) version: String,
    /// Message subject or event summary.
    pub(crate) subject: String,
    /// Events: start.
    pub(crate) start: DateTime<Utc>,
    /// Events: end (start + 1 h).
    pub(crate) end: DateTime<Utc>,
    /// Graph messages: `isRead` (every update flips it).
    pub(crate) read: bool,
    /// Calendar: `sequence` (every update bumps it).
    pub(crate) sequence: u32,
    /// Gmail: labels.
    pub(crate) labels: Vec<String>,
    /// Gmail: thread id.
    pub(crate) thread_id: String,
}

/// A time range items are read through. An event is in it when it overlaps
/// it (ends after `start`, starts before `end`), as both Graph's calendarView
/// and Calendar's timeMin/timeMax define it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Lower bound on an event's end (exclusive); none: unbounded.
    pub(crate) start: Option<DateTime<Utc>>,
    /// Upper bound on an event's start (exclusive); none: unbounded.
    pub(crate) end: Option<DateTime<Utc>>,
}

impl Window {
    fn holds(&self, item: &Item) -> bool {
        self.start.is_none_or(|start| item.end > start)
            && self.end.is_none_or(|end| item.start < end)
    }
}

/// What a round of reads is restricted to, fixed by its first request and
/// carried by every cursor of the round.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct RoundRules {
    /// Events only: the time range (Graph calendarView, Calendar
    /// timeMin/timeMax on a full sync).
    pub(crate) window: Option<Window>,
    /// Graph messages: only this kind of change in incremental rounds.
    pub(crate) change_type: Option<ChangeType>,
    /// Calendar: full syncs include deleted events as `cancelled`.
    pub(crate) show_deleted: bool,
}

/// A cursor argument on a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CursorArg {
    /// Graph `$skiptoken`, Calendar `pageToken`: the rest of a round.
    Page(String),
    /// Graph `$deltatoken`, Calendar `syncToken`: a new incremental round.
    Sync(String),
}

/// One read of a Graph or Calendar feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageRequest {
    /// None: a full round from the current state.
    pub(crate) cursor: Option<CursorArg>,
    /// Rules of a new full round (a cursor carries its own).
    pub(crate) rules: RoundRules,
    /// Entries per page, at least one.
    pub(crate) page_size: usize,
    /// Answer an incremental round that found nothing with the sync token it
    /// was given (Calendar), rather than a new one (Graph).
    pub(crate) reuse_unchanged_sync_token: bool,
}

/// One entry of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The item as it stands now.
    pub(crate) item: Item,
    /// Report it as removed (deleted, or moved out of the round's window).
    pub(crate) removed: bool,
}

/// Where a page leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// More of this round: Graph `@odata.nextLink`, Calendar `nextPageToken`.
    Page(String),
    /// Round complete: Graph `@odata.deltaLink`, Calendar `nextSyncToken`.
    Sync(String),
}

/// One page of a Graph or Calendar feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    /// Entries in change order (full rounds: creation order).
    pub(crate) entries: Vec<Entry>,
    /// The continuation.
    pub(crate) next: Next,
    /// Provider time of the feed's latest change.
    pub(crate) updated: Option<DateTime<Utc>>,
}

/// A cursor that no longer holds (expired, evicted, never issued, or for
/// another feed). Graph answers 410 `SyncStateNotFound`, Calendar 410
/// `fullSyncRequired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CursorRefused;

/// Which Gmail history records a read wants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct HistoryFilter {
    /// `labelId`: only records whose message carries (or gained, or lost) it.
    pub(crate) label_id: Option<String>,
    /// `historyTypes`: `messageAdded`, `messageDeleted`, `labelAdded`,
    /// `labelRemoved`; empty: all.
    pub(crate) history_types: Vec<String>,
}

/// One read of a Gmail mailbox's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HistoryRequest {
    /// `startHistoryId`.
    pub(crate) start: u64,
    /// `pageToken`, continuing an earlier read.
    pub(crate) page_token: Option<String>,
    /// Filters of a first read (a page token carries its own).
    pub(crate) filter: HistoryFilter,
    /// Records per page, at least one.
    pub(crate) page_size: usize,
    /// The mailbox's current historyId (Google's counter).
    pub(crate) current: u64,
    /// The mailbox's first historyId: nothing before it was ever retained.
    pub(crate) birth: u64,
}

/// One page of Gmail history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HistoryPage {
    /// Records (changes) in historyId order.
    pub(crate) records: Vec<SimChange>,
    /// More records follow.
    pub(crate) next_page_token: Option<String>,
}

/// A start before the retained history: Gmail's 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HistoryGone;

/// What a cursor stands for.
#[derive(Debug, Clone)]
enum CursorKind {
    /// The start of the next incremental round: changes after `position`.
    Sync {
        /// Id of the last change the round covered (0: none).
        position: u64,
        /// The rules of the round it ended.
        rules: RoundRules,
    },
    /// The rest of a round.
    Page {
        /// The round.
        round: Arc<Round>,
        /// Entries already served.
        offset: usize,
    },
    /// Gmail: the rest of a history read.
    History {
        /// Records after this historyId.
        after: u64,
        /// The read's filters.
        filter: HistoryFilter,
    },
}

/// A cursor as issued.
#[derive(Debug, Clone)]
struct Cursor {
    /// The feed it reads.
    feed: FeedKey,
    /// The feed's epoch at issue; an expiry moves the epoch on.
    epoch: u64,
    /// Provider time of issue, for the maximum token age.
    issued_at: DateTime<Utc>,
    /// What it continues.
    kind: CursorKind,
}

/// A round of reads: the item ids it returns, fixed when it starts.
#[derive(Debug)]
struct Round {
    /// In order.
    ids: Vec<String>,
    /// Id of the last change the round covers: the next round starts after it.
    end_position: u64,
    /// Its rules.
    rules: RoundRules,
    /// An incremental round (items outside the window are reported removed).
    incremental: bool,
}

/// One feed's log and state.
#[derive(Debug)]
struct Feed {
    /// Changes in the order made.
    changes: Vec<SimChange>,
    /// Item id → item, tombstones included.
    items: HashMap<String, Item>,
    /// Item ids in creation order.
    order: Vec<String>,
    /// Moves on with every expiry; cursors of an older epoch are refused.
    epoch: u64,
    /// Every webhook is dropped while set.
    muted: bool,
    /// Gmail: history up to this id was forgotten by an expiry (0: none).
    history_floor: u64,
    /// Cursors issued for this feed, oldest first, for eviction.
    tokens: VecDeque<String>,
}

impl Feed {
    fn new() -> Self {
        Self {
            changes: Vec::new(),
            items: HashMap::new(),
            order: Vec::new(),
            epoch: 0,
            muted: false,
            history_floor: 0,
            tokens: VecDeque::new(),
        }
    }

    fn last_change(&self) -> u64 {
        self.changes.last().map_or(0, |c| c.id)
    }

    /// The newest item not deleted.
    fn newest_live(&self) -> Option<&Item> {
        self.order
            .iter()
            .rev()
            .filter_map(|id| self.items.get(id))
            .find(|item| !item.deleted)
    }

    fn full_round(&self, rules: RoundRules) -> Round {
        let ids = self
            .order
            .iter()
            .filter_map(|id| self.items.get(id))
            .filter(|item| !item.deleted || rules.show_deleted)
            .filter(|item| rules.window.is_none_or(|w| w.holds(item)))
            .map(|item| item.id.clone())
            .collect();
        Round {
            ids,
            end_position: self.last_change(),
            rules,
            incremental: false,
        }
    }

    fn incremental_round(&self, position: u64, rules: RoundRules) -> Round {
        let mut changed: Vec<&Item> = self
            .items
            .values()
            .filter(|item| item.last_change > position)
            .filter(|item| {
                rules
                    .change_type
                    .is_none_or(|wanted| net_change(item, position) == wanted)
            })
            .collect();
        changed.sort_by_key(|item| item.last_change);
        Round {
            ids: changed.into_iter().map(|item| item.id.clone()).collect(),
            end_position: self.last_change(),
            rules,
            incremental: true,
        }
    }

    fn entry(&self, round: &Round, id: &str) -> Option<Entry> {
        let item = self.items.get(id)?;
        let outside = round.incremental && round.rules.window.is_some_and(|w| !w.holds(item));
        Some(Entry {
            item: item.clone(),
            removed: item.deleted || outside,
        })
    }
}

/// What happened to an item since `position`, as one change: created if it
/// was created after it, deleted if it is gone, updated otherwise.
fn net_change(item: &Item, position: u64) -> ChangeType {
    if item.deleted {
        ChangeType::Deleted
    } else if item.created_change > position {
        ChangeType::Created
    } else {
        ChangeType::Updated
    }
}

/// Every feed's log, and the cursors over them.
#[derive(Debug, Default)]
pub(crate) struct ChangeLog {
    /// Feed key → feed.
    feeds: HashMap<FeedKey, Feed>,
    /// Token → cursor, for every feed.
    cursors: HashMap<String, Cursor>,
    /// Id of the latest change made anywhere (0: none yet).
    last_id: u64,
    /// Cursors older than this are refused, and Gmail history older than
    /// this is forgotten; none: no age limit.
    max_age: Option<TimeDelta>,
}

impl ChangeLog {
    /// Makes a change on `key` at `now`. `next_history_id` is asked for
    /// Gmail's new historyId once the change is known to be valid.
    pub(crate) fn record(
        &mut self,
        key: &FeedKey,
        spec: &ChangeSpec,
        now: DateTime<Utc>,
        next_history_id: impl FnOnce() -> u64,
    ) -> Result<SimChange, ChangeError> {
        let provider = key.provider();
        let feed = self.feeds.entry(key.clone()).or_insert_with(Feed::new);
        let item_id = match (spec.kind, &spec.item_id) {
            (ChangeType::Created, Some(id)) => {
                if feed.items.contains_key(id) {
                    return Err(ChangeError::ItemExists {
                        item_id: id.clone(),
                    });
                }
                id.clone()
            }
            (ChangeType::Created, None) => new_item_id(key),
            (_, Some(id)) => match feed.items.get(id) {
                Some(item) if !item.deleted => id.clone(),
                _ => {
                    return Err(ChangeError::ItemNotFound {
                        item_id: id.clone(),
                    });
                }
            },
            (_, None) => feed
                .newest_live()
                .map(|item| item.id.clone())
                .ok_or(ChangeError::NoLiveItem)?,
        };
        let history_id = (provider == FeedProvider::Gmail).then(next_history_id);
        self.last_id += 1;
        let id = self.last_id;
        let version = match (provider, history_id) {
            (FeedProvider::Gmail, Some(history_id)) => history_id.to_string(),
            (FeedProvider::GoogleCalendar, _) => {
                // Google's event etags are quoted decimal strings that grow.
                format!(
                    "{}",
                    now.timestamp_micros()
                        .saturating_mul(2)
                        .saturating_add(id as i64 % 1000)
                )
            }
            _ => graph_change_key(key),
        };

        let number = feed.order.len() + 1;
        let item = match spec.kind {
            ChangeType::Created => {
                let start = spec.start.unwrap_or_else(|| next_full_hour(now));
                let item = Item {
                    id: item_id.clone(),
                    created_at: now,
                    updated_at: now,
                    created_change: id,
                    last_change: id,
                    deleted: false,
                    version: version.clone(),
                    subject: spec
                        .subject
                        .clone()
                        .unwrap_or_else(|| format!("Simulated item {number}")),
                    start,
                    end: start + TimeDelta::hours(1),
                    read: false,
                    sequence: 0,
                    labels: vec!["UNREAD".to_owned(), "INBOX".to_owned()],
                    thread_id: item_id.clone(),
                };
                feed.order.push(item_id.clone());
                feed.items.insert(item_id.clone(), item.clone());
                item
            }
            ChangeType::Updated | ChangeType::Deleted => {
                let Some(item) = feed.items.get_mut(&item_id) else {
                    return Err(ChangeError::ItemNotFound { item_id });
                };
                item.updated_at = now;
                item.last_change = id;
                item.version = version.clone();
                if spec.kind == ChangeType::Deleted {
                    item.deleted = true;
                } else {
                    if let Some(subject) = &spec.subject {
                        item.subject = subject.clone();
                    }
                    if let Some(start) = spec.start {
                        item.start = start;
                        item.end = start + TimeDelta::hours(1);
                    }
                    item.read = !item.read;
                    item.sequence += 1;
                }
                item.clone()
            }
        };

        let (labels_added, labels_removed) = match (provider, spec.kind) {
            (FeedProvider::Gmail, ChangeType::Updated) => {
                // An update stars or unstars the message.
                let starred = item.labels.iter().any(|l| l == "STARRED");
                let entry = feed.items.get_mut(&item_id);
                if starred {
                    if let Some(entry) = entry {
                        entry.labels.retain(|l| l != "STARRED");
                    }
                    (Vec::new(), vec!["STARRED".to_owned()])
                } else {
                    if let Some(entry) = entry {
                        entry.labels.push("STARRED".to_owned());
                    }
                    (vec!["STARRED".to_owned()], Vec::new())
                }
            }
            _ => (Vec::new(), Vec::new()),
        };
        let labels = feed
            .items
            .get(&item_id)
            .map(|i| i.labels.clone())
            .unwrap_or_default();

        let delivery = match spec.delivery {
            Delivery::Drop => ChangeDelivery::Dropped,
            Delivery::Hold => ChangeDelivery::Held,
            Delivery::Announce if feed.muted => ChangeDelivery::Muted,
            Delivery::Announce => ChangeDelivery::Announced,
        };
        let gmail = provider == FeedProvider::Gmail;
        let change = SimChange {
            id,
            provider,
            resource: key.resource(),
            kind: spec.kind,
            item_id,
            etag: match provider {
                FeedProvider::Graph => Some(format!("W/\"{version}\"")),
                FeedProvider::GoogleCalendar => Some(format!("\"{version}\"")),
                FeedProvider::Gmail => None,
            },
            version,
            history_id,
            thread_id: gmail.then(|| item.thread_id.clone()),
            labels: if gmail { labels } else { Vec::new() },
            labels_added,
            labels_removed,
            at: now,
            delivery,
        };
        feed.changes.push(change.clone());
        Ok(change)
    }

    /// Reads one page of a Graph or Calendar feed.
    pub(crate) fn read_page(
        &mut self,
        key: &FeedKey,
        request: PageRequest,
        now: DateTime<Utc>,
    ) -> Result<Page, CursorRefused> {
        let page_size = request.page_size.max(1);
        let (round, offset, given_sync) = match &request.cursor {
            None => {
                let feed = self.feeds.entry(key.clone()).or_insert_with(Feed::new);
                (Arc::new(feed.full_round(request.rules.clone())), 0, None)
            }
            Some(CursorArg::Page(token)) => match self.cursor(token, key, now)? {
                CursorKind::Page { round, offset } => (Arc::clone(round), *offset, None),
                _ => return Err(CursorRefused),
            },
            Some(CursorArg::Sync(token)) => match self.cursor(token, key, now)? {
                CursorKind::Sync { position, rules } => {
                    let (position, rules) = (*position, rules.clone());
                    let feed = self.feeds.get(key).ok_or(CursorRefused)?;
                    (
                        Arc::new(feed.incremental_round(position, rules)),
                        0,
                        Some(token.clone()),
                    )
                }
                _ => return Err(CursorRefused),
            },
        };
        let feed = self.feeds.get(key).ok_or(CursorRefused)?;
        let end = (offset + page_size).min(round.ids.len());
        let entries: Vec<Entry> = round
            .ids
            .get(offset..end)
            .unwrap_or_default()
            .iter()
            .filter_map(|id| feed.entry(&round, id))
            .collect();
        let updated = feed.changes.last().map(|c| c.at);
        let next = if end < round.ids.len() {
            Next::Page(self.issue(
                key,
                CursorKind::Page {
                    round: Arc::clone(&round),
                    offset: end,
                },
                now,
            ))
        } else {
            match given_sync {
                Some(token) if round.ids.is_empty() && request.reuse_unchanged_sync_token => {
                    Next::Sync(token)
                }
                _ => Next::Sync(self.issue(
                    key,
                    CursorKind::Sync {
                        position: round.end_position,
                        rules: round.rules.clone(),
                    },
                    now,
                )),
            }
        };
        Ok(Page {
            entries,
            next,
            updated,
        })
    }

    /// Reads one page of a Gmail mailbox's history.
    pub(crate) fn read_history(
        &mut self,
        key: &FeedKey,
        request: HistoryRequest,
        now: DateTime<Utc>,
    ) -> Result<HistoryPage, HistoryGone> {
        let (after, filter) = match &request.page_token {
            Some(token) => match self.cursor(token, key, now) {
                Ok(CursorKind::History { after, filter }) => (*after, filter.clone()),
                _ => return Err(HistoryGone),
            },
            None => (request.start, request.filter.clone()),
        };
        let floor = self.history_floor(key, now).max(request.birth);
        if after < floor || request.start < floor {
            return Err(HistoryGone);
        }
        let feed = self.feeds.entry(key.clone()).or_insert_with(Feed::new);
        let mut matching = feed
            .changes
            .iter()
            .filter(|c| {
                c.history_id
                    .is_some_and(|h| h > after && h <= request.current)
            })
            .filter(|c| history_matches(c, &filter));
        let records: Vec<SimChange> = matching
            .by_ref()
            .take(request.page_size.max(1))
            .cloned()
            .collect();
        let more = matching.next().is_some();
        let next_page_token = match (more, records.last().and_then(|c| c.history_id)) {
            (true, Some(last)) => Some(self.issue(
                key,
                CursorKind::History {
                    after: last,
                    filter,
                },
                now,
            )),
            _ => None,
        };
        Ok(HistoryPage {
            records,
            next_page_token,
        })
    }

    /// The newest historyId Gmail no longer has history after: an explicit
    /// expiry's, or the last record older than the maximum age.
    fn history_floor(&self, key: &FeedKey, now: DateTime<Utc>) -> u64 {
        let Some(feed) = self.feeds.get(key) else {
            return 0;
        };
        let aged = self.max_age.and_then(|age| {
            feed.changes
                .iter()
                .filter(|c| now - c.at > age)
                .filter_map(|c| c.history_id)
                .max()
        });
        feed.history_floor.max(aged.unwrap_or(0))
    }

    /// Expires every cursor of `key`; for Gmail, forgets its history up to
    /// `gmail_current` (the mailbox's current historyId).
    pub(crate) fn expire(&mut self, key: &FeedKey, gmail_current: Option<u64>) {
        let feed = self.feeds.entry(key.clone()).or_insert_with(Feed::new);
        feed.epoch += 1;
        if let Some(current) = gmail_current {
            feed.history_floor = feed.history_floor.max(current);
        }
        for token in feed.tokens.drain(..) {
            self.cursors.remove(&token);
        }
    }

    /// Mutes (every webhook dropped) or resumes `key`.
    pub(crate) fn set_muted(&mut self, key: &FeedKey, muted: bool) {
        self.feeds
            .entry(key.clone())
            .or_insert_with(Feed::new)
            .muted = muted;
    }

    /// Whether `key` is muted.
    pub(crate) fn is_muted(&self, key: &FeedKey) -> bool {
        self.feeds.get(key).is_some_and(|f| f.muted)
    }

    /// Sets (or lifts) the maximum cursor age.
    pub(crate) fn set_max_age(&mut self, max_age: Option<TimeDelta>) {
        self.max_age = max_age;
    }

    /// The maximum cursor age.
    pub(crate) fn max_age(&self) -> Option<TimeDelta> {
        self.max_age
    }

    /// The changes made on `key`, oldest first.
    pub(crate) fn changes(&self, key: &FeedKey) -> Vec<SimChange> {
        self.feeds
            .get(key)
            .map(|f| f.changes.clone())
            .unwrap_or_default()
    }

    /// Held changes, oldest first, with their feeds.
    pub(crate) fn held(&self) -> Vec<(FeedKey, SimChange)> {
        let mut held: Vec<(FeedKey, SimChange)> = self
            .feeds
            .iter()
            .flat_map(|(key, feed)| {
                feed.changes
                    .iter()
                    .filter(|c| c.delivery == ChangeDelivery::Held)
                    .map(move |c| (key.clone(), c.clone()))
            })
            .collect();
        held.sort_by_key(|(_, c)| c.id);
        held
    }

    /// Marks a held change released; returns it as released, or none when it
    /// was not held.
    pub(crate) fn release(&mut self, key: &FeedKey, change_id: u64) -> Option<SimChange> {
        let change = self
            .feeds
            .get_mut(key)?
            .changes
            .iter_mut()
            .find(|c| c.id == change_id && c.delivery == ChangeDelivery::Held)?;
        change.delivery = ChangeDelivery::Released;
        Some(change.clone())
    }

    /// The cursor `token` stands for, if it still holds for `key` at `now`.
    fn cursor(
        &self,
        token: &str,
        key: &FeedKey,
        now: DateTime<Utc>,
    ) -> Result<&CursorKind, CursorRefused> {
        let cursor = self.cursors.get(token).ok_or(CursorRefused)?;
        let feed = self.feeds.get(key).ok_or(CursorRefused)?;
        let young = self.max_age.is_none_or(|age| now - cursor.issued_at <= age);
        if cursor.feed == *key && cursor.epoch == feed.epoch && young {
            Ok(&cursor.kind)
        } else {
            Err(CursorRefused)
        }
    }

    /// Issues a cursor on `key`, evicting the feed's oldest beyond the cache
    /// capacity.
    fn issue(&mut self, key: &FeedKey, kind: CursorKind, now: DateTime<Utc>) -> String {
        let feed = self.feeds.entry(key.clone()).or_insert_with(Feed::new);
        let token = random_token(48);
        feed.tokens.push_back(token.clone());
        while feed.tokens.len() > TOKEN_CACHE_CAPACITY {
            if let Some(old) = feed.tokens.pop_front() {
                self.cursors.remove(&old);
            }
        }
        self.cursors.insert(
            token.clone(),
            Cursor {
                feed: key.clone(),
                epoch: feed.epoch,
                issued_at: now,
                kind,
            },
        );
        token
    }
}

/// Whether a Gmail history record passes a read's filters.
fn history_matches(change: &SimChange, filter: &HistoryFilter) -> bool {
    let history_type = match change.kind {
        ChangeType::Created => "messageAdded",
        ChangeType::Deleted => "messageDeleted",
        ChangeType::Updated if change.labels_added.is_empty() => "labelRemoved",
        ChangeType::Updated => "labelAdded",
    };
    let type_ok = filter.history_types.is_empty()
        || filter
            .history_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(history_type));
    let label_ok = filter.label_id.as_ref().is_none_or(|label| {
        change
            .labels
            .iter()
            .chain(&change.labels_added)
            .chain(&change.labels_removed)
            .any(|l| l == label)
    });
    type_ok && label_ok
}

/// An id for a new item of `key`, in the provider's alphabet.
fn new_item_id(key: &FeedKey) -> String {
    match key {
        FeedKey::GraphMessages { .. } => format!("AAMkAG{}AAA=", random_token(GRAPH_ID_CHARS)),
        FeedKey::GraphEvents { .. } => format!("AAMkAD{}AAA=", random_token(GRAPH_ID_CHARS)),
        // Calendar event ids are base32hex (a-v, 0-9), 5 to 1024 characters.
        FeedKey::CalendarEvents { .. } => random_from("abcdefghijklmnopqrstuv0123456789", 26),
        // Gmail message ids are 16 lower-case hex digits.
        FeedKey::GmailHistory { .. } => random_from("0123456789abcdef", 16),
    }
}

/// A Graph `changeKey`: base64-looking, new on every change.
fn graph_change_key(key: &FeedKey) -> String {
    match key {
        FeedKey::GraphEvents { .. } => format!("{}==", random_token(30)),
        _ => format!("CQAAABYAAAA{}", random_token(29)),
    }
}

fn random_from(alphabet: &str, len: usize) -> String {
    let chars: Vec<char> = alphabet.chars().collect();
    let mut rng = rand::rng();
    (0..len)
        .filter_map(|_| chars.get(rng.random_range(0..chars.len())))
        .collect()
}

/// The next full hour after `now`: where a made-up event starts.
fn next_full_hour(now: DateTime<Utc>) -> DateTime<Utc> {
    let truncated = now
        .with_nanosecond(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_minute(0))
        .unwrap_or(now);
    truncated + TimeDelta::hours(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::FeedRef;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T10:15:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn spec(kind: ChangeType, item_id: Option<&str>) -> ChangeSpec {
        ChangeSpec {
            kind,
            item_id: item_id.map(str::to_owned),
            subject: None,
            start: None,
            delivery: Delivery::Announce,
        }
    }

    fn read(log: &mut ChangeLog, key: &FeedKey, cursor: Option<CursorArg>, size: usize) -> Page {
        log.read_page(
            key,
            PageRequest {
                cursor,
                rules: RoundRules::default(),
                page_size: size,
                reuse_unchanged_sync_token: false,
            },
            now(),
        )
        .unwrap()
    }

    #[test]
    fn a_round_pages_the_items_and_the_next_returns_each_change_once() {
        let key = FeedKey::parse(&FeedRef::graph("users/u1/mailFolders/inbox/messages")).unwrap();
        let mut log = ChangeLog::default();
        let ids: Vec<String> = (0..3)
            .map(|_| {
                log.record(&key, &spec(ChangeType::Created, None), now(), || 0)
                    .unwrap()
                    .item_id
            })
            .collect();
        let first = read(&mut log, &key, None, 2);
        assert_eq!(first.entries.len(), 2);
        let Next::Page(skip) = first.next else {
            panic!("{:?}", first.next)
        };
        let second = read(&mut log, &key, Some(CursorArg::Page(skip)), 2);
        assert_eq!(second.entries[0].item.id, ids[2]);
        let Next::Sync(delta) = second.next else {
            panic!()
        };

        log.record(&key, &spec(ChangeType::Updated, Some(&ids[0])), now(), || 0)
            .unwrap();
        log.record(&key, &spec(ChangeType::Updated, Some(&ids[0])), now(), || 0)
            .unwrap();
        log.record(&key, &spec(ChangeType::Deleted, Some(&ids[1])), now(), || 0)
            .unwrap();
        let changes = read(&mut log, &key, Some(CursorArg::Sync(delta)), 10);
        let seen: Vec<(&str, bool)> = changes
            .entries
            .iter()
            .map(|e| (e.item.id.as_str(), e.removed))
            .collect();
        assert_eq!(seen, [(ids[0].as_str(), false), (ids[1].as_str(), true)]);
        let Next::Sync(again) = changes.next else {
            panic!()
        };
        assert!(
            read(&mut log, &key, Some(CursorArg::Sync(again)), 10)
                .entries
                .is_empty()
        );

        assert_eq!(
            log.record(&key, &spec(ChangeType::Deleted, Some(&ids[1])), now(), || 0),
            Err(ChangeError::ItemNotFound {
                item_id: ids[1].clone()
            })
        );
    }

    #[test]
    fn expiry_and_age_refuse_cursors() {
        let key = FeedKey::parse(&FeedRef::google_calendar("c@example.com")).unwrap();
        let mut log = ChangeLog::default();
        log.record(&key, &spec(ChangeType::Created, None), now(), || 0)
            .unwrap();
        let Next::Sync(token) = read(&mut log, &key, None, 10).next else {
            panic!()
        };
        log.expire(&key, None);
        assert_eq!(
            log.read_page(
                &key,
                PageRequest {
                    cursor: Some(CursorArg::Sync(token)),
                    rules: RoundRules::default(),
                    page_size: 10,
                    reuse_unchanged_sync_token: true,
                },
                now()
            ),
            Err(CursorRefused)
        );
        let Next::Sync(token) = read(&mut log, &key, None, 10).next else {
            panic!()
        };
        log.set_max_age(Some(TimeDelta::hours(1)));
        let later = now() + TimeDelta::hours(2);
        let request = PageRequest {
            cursor: Some(CursorArg::Sync(token)),
            rules: RoundRules::default(),
            page_size: 10,
            reuse_unchanged_sync_token: true,
        };
        assert_eq!(log.read_page(&key, request, later), Err(CursorRefused));
    }

    #[test]
    fn gmail_history_is_after_the_start_and_forgotten_by_expiry() {
        let key = FeedKey::parse(&FeedRef::gmail("bob@example.com")).unwrap();
        let mut log = ChangeLog::default();
        let mut counter = 100;
        let mut next = || {
            counter += 7;
            counter
        };
        let added = log
            .record(&key, &spec(ChangeType::Created, None), now(), &mut next)
            .unwrap();
        let starred = log
            .record(&key, &spec(ChangeType::Updated, None), now(), &mut next)
            .unwrap();
        assert_eq!(added.history_id, Some(107));
        assert_eq!(starred.labels_added, ["STARRED"]);
        let request = |start| HistoryRequest {
            start,
            page_token: None,
            filter: HistoryFilter::default(),
            page_size: 1,
            current: 114,
            birth: 100,
        };
        let page = log.read_history(&key, request(100), now()).unwrap();
        assert_eq!(page.records[0].id, added.id);
        let token = page.next_page_token.unwrap();
        let rest = log
            .read_history(
                &key,
                HistoryRequest {
                    page_token: Some(token),
                    ..request(100)
                },
                now(),
            )
            .unwrap();
        assert_eq!(rest.records[0].id, starred.id);
        assert!(rest.next_page_token.is_none());
        assert!(
            log.read_history(&key, request(107), now())
                .unwrap()
                .records
                .len()
                == 1
        );
        assert_eq!(log.read_history(&key, request(99), now()), Err(HistoryGone));
        log.expire(&key, Some(114));
        assert_eq!(
            log.read_history(&key, request(107), now()),
            Err(HistoryGone)
        );
        assert!(
            log.read_history(&key, request(114), now())
                .unwrap()
                .records
                .is_empty()
        );
    }
}
