//! Google's catch-up reads, the change feed of the `SubscriptionApi` port:
//! Calendar `events.list` (a full round to reach `nextSyncToken`, then
//! `syncToken` reads paged by `nextPageToken`) and Gmail `users.history.list`
//! from a `historyId` (the start taken from `users.getProfile`).
//!
//! Owns these calls' URLs and shapes. Calendar 410 (`fullSyncRequired`) and
//! Gmail 404 on `history.list` are the cursor expiring; everything else is
//! classified as any Google failure.

use super::client::parse_answer;
use super::{GmailApi, GoogleCalendarApi, GoogleError, call_span, charge_of, failed};
use crate::providers::graph::parse_graph_datetime;
use serde::Deserialize;
use subkeeper_actors::domain::{Provider, ProviderKind};
use subkeeper_actors::ports::{
    ChangeKind, ChangePage, ChangesError, ChangesFrom, ChangesNext, ItemChange,
};
use tracing::Instrument;

pub use super::error::Call;

/// Quota units of `users.history.list` (Gmail's published cost).
pub const HISTORY_LIST_UNITS: u32 = 2;

/// Quota units of `users.getProfile`.
pub const GET_PROFILE_UNITS: u32 = 1;

/// An `events.list` page.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventsPage {
    #[serde(default)]
    items: Vec<Event>,
    next_page_token: Option<String>,
    next_sync_token: Option<String>,
}

/// The fields of an event the catch-up reads.
#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    status: Option<String>,
    etag: Option<String>,
    created: Option<String>,
    updated: Option<String>,
}

/// A `users.history.list` page.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryPage {
    #[serde(default)]
    history: Vec<HistoryRecord>,
    next_page_token: Option<String>,
    history_id: Option<String>,
}

/// One history record: what happened to which messages.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryRecord {
    id: String,
    #[serde(default)]
    messages_added: Vec<MessageRef>,
    #[serde(default)]
    messages_deleted: Vec<MessageRef>,
    #[serde(default)]
    labels_added: Vec<MessageRef>,
    #[serde(default)]
    labels_removed: Vec<MessageRef>,
}

#[derive(Debug, Deserialize)]
struct MessageRef {
    message: MessageId,
}

#[derive(Debug, Deserialize)]
struct MessageId {
    id: String,
}

/// `users.getProfile`'s answer, as far as read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    history_id: String,
}

/// The round marker of a Calendar page position when the round is the full
/// one (no sync token yet).
const FULL_ROUND: &str = "full";

/// A Gmail page position: the start and Google's page token.
fn gmail_page(start: &str, token: &str) -> String {
    format!("{start} {token}")
}

impl GoogleCalendarApi {
    /// One `events.list` page for `provider` from `from`.
    pub(super) async fn events_page(
        &self,
        provider: &Provider,
        from: ChangesFrom<'_>,
        page_size: u32,
    ) -> Result<ChangePage, ChangesError> {
        let fail = |e: GoogleError| ChangesError::Api(failed(provider, &e));
        let charge = charge_of(provider, ProviderKind::GoogleCalendar, 1).map_err(fail)?;
        let mut url = self
            .client
            .url(&["calendar", "v3", "calendars", &provider.resource, "events"])
            .map_err(fail)?;
        // Later pages repeat the round's parameters with the page token, as
        // Google's sync guide does: `showDeleted` for the full round, the
        // `syncToken` for an incremental one (the position keeps which).
        let (round, page) = match from {
            ChangesFrom::Start => (FULL_ROUND.to_owned(), None),
            ChangesFrom::Cursor(token) => (token.to_owned(), None),
            ChangesFrom::Page(position) => match position.split_once(' ') {
                Some((round, page)) => (round.to_owned(), Some(page.to_owned())),
                None => (FULL_ROUND.to_owned(), Some(position.to_owned())),
            },
        };
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("maxResults", &page_size.clamp(1, 2500).to_string());
            if round == FULL_ROUND {
                // A full round must see deleted events too, so its sync token
                // reports their later changes.
                query.append_pair("showDeleted", "true");
            } else {
                query.append_pair("syncToken", &round);
            }
            if let Some(page) = &page {
                query.append_pair("pageToken", page);
            }
        }
        let answer = self
            .client
            .call(
                &charge,
                Call::EventsList,
                reqwest::Method::GET,
                url,
                None,
                &[],
            )
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(GoogleError::Status { status: 410, .. }) => {
                return Err(ChangesError::CursorExpired {
                    reason: "calendar_full_sync_required".to_owned(),
                });
            }
            Err(e) => return Err(fail(e)),
        };
        let page: EventsPage = parse_answer(Call::EventsList, &answer).map_err(fail)?;
        let next = match (page.next_page_token, page.next_sync_token) {
            (Some(token), _) => ChangesNext::Page(format!("{round} {token}")),
            (None, Some(sync)) => ChangesNext::Done(sync),
            (None, None) => {
                return Err(fail(GoogleError::InvalidResponse {
                    call: Call::EventsList,
                    status: answer.status,
                    reason: "neither nextPageToken nor nextSyncToken".to_owned(),
                }));
            }
        };
        let changes = page
            .items
            .into_iter()
            .map(|e| {
                let time = |raw: &Option<String>| raw.as_deref().and_then(parse_graph_datetime);
                let deleted = e.status.as_deref() == Some("cancelled");
                ItemChange {
                    kind: if deleted {
                        ChangeKind::Deleted
                    } else {
                        ChangeKind::Updated
                    },
                    version: e.etag.clone(),
                    changed_at: time(&e.updated),
                    created_at: if deleted { None } else { time(&e.created) },
                    item_id: e.id,
                }
            })
            .collect();
        Ok(ChangePage { changes, next })
    }

    /// [`Self::events_page`] in its span.
    pub(super) async fn changes(
        &self,
        provider: &Provider,
        from: ChangesFrom<'_>,
        page_size: u32,
    ) -> Result<ChangePage, ChangesError> {
        self.events_page(provider, from, page_size)
            .instrument(call_span(provider, Call::EventsList, None))
            .await
    }
}

impl GmailApi {
    /// One `history.list` page for `provider` from `from` (`users.getProfile`
    /// for a start).
    pub(super) async fn history_page(
        &self,
        provider: &Provider,
        from: ChangesFrom<'_>,
        page_size: u32,
    ) -> Result<ChangePage, ChangesError> {
        let fail = |e: GoogleError| ChangesError::Api(failed(provider, &e));
        let (start, token) = match from {
            ChangesFrom::Start => {
                let charge =
                    charge_of(provider, ProviderKind::Gmail, GET_PROFILE_UNITS).map_err(fail)?;
                let url = self
                    .client
                    .url(&["gmail", "v1", "users", &provider.resource, "profile"])
                    .map_err(fail)?;
                let answer = self
                    .client
                    .call(
                        &charge,
                        Call::GetProfile,
                        reqwest::Method::GET,
                        url,
                        None,
                        &[],
                    )
                    .await
                    .map_err(fail)?;
                let profile: Profile = parse_answer(Call::GetProfile, &answer).map_err(fail)?;
                return Ok(ChangePage {
                    changes: Vec::new(),
                    next: ChangesNext::Done(profile.history_id),
                });
            }
            ChangesFrom::Cursor(start) => (start.to_owned(), None),
            ChangesFrom::Page(position) => match position.split_once(' ') {
                Some((start, token)) => (start.to_owned(), Some(token.to_owned())),
                None => (position.to_owned(), None),
            },
        };
        let charge = charge_of(provider, ProviderKind::Gmail, HISTORY_LIST_UNITS).map_err(fail)?;
        let mut url = self
            .client
            .url(&["gmail", "v1", "users", &provider.resource, "history"])
            .map_err(fail)?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("startHistoryId", &start)
                .append_pair("maxResults", &page_size.clamp(1, 500).to_string());
            if let Some(token) = &token {
                query.append_pair("pageToken", token);
            }
        }
        let answer = self
            .client
            .call(
                &charge,
                Call::HistoryList,
                reqwest::Method::GET,
                url,
                None,
                &[],
            )
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(GoogleError::Status { status: 404, .. }) => {
                return Err(ChangesError::CursorExpired {
                    reason: "gmail_history_not_found".to_owned(),
                });
            }
            Err(e) => return Err(fail(e)),
        };
        let page: HistoryPage = parse_answer(Call::HistoryList, &answer).map_err(fail)?;
        let next = match (page.next_page_token, page.history_id) {
            (Some(token), _) => ChangesNext::Page(gmail_page(&start, &token)),
            (None, Some(current)) => ChangesNext::Done(current),
            (None, None) => {
                return Err(fail(GoogleError::InvalidResponse {
                    call: Call::HistoryList,
                    status: answer.status,
                    reason: "neither nextPageToken nor historyId".to_owned(),
                }));
            }
        };
        let mut changes = Vec::new();
        for record in page.history {
            let groups = [
                (ChangeKind::Created, "added", &record.messages_added),
                (ChangeKind::Deleted, "deleted", &record.messages_deleted),
                (ChangeKind::Updated, "labels_added", &record.labels_added),
                (
                    ChangeKind::Updated,
                    "labels_removed",
                    &record.labels_removed,
                ),
            ];
            for (kind, tag, refs) in groups {
                for r in refs {
                    changes.push(ItemChange {
                        kind,
                        item_id: r.message.id.clone(),
                        version: Some(format!("{}.{tag}", record.id)),
                        changed_at: None,
                        created_at: None,
                    });
                }
            }
        }
        Ok(ChangePage { changes, next })
    }

    /// [`Self::history_page`] in its span.
    pub(super) async fn changes(
        &self,
        provider: &Provider,
        from: ChangesFrom<'_>,
        page_size: u32,
    ) -> Result<ChangePage, ChangesError> {
        self.history_page(provider, from, page_size)
            .instrument(call_span(provider, Call::HistoryList, None))
            .await
    }
}
