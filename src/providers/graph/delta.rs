//! Graph's delta queries, the catch-up read of the `SubscriptionApi` port:
//! `GET {resource folder}/messages/delta` for mail and `GET
//! users/{id}/calendarView/delta?startDateTime&endDateTime` for calendars,
//! paged by `@odata.nextLink` and ending with `@odata.deltaLink` (the cursor),
//! page size asked with `Prefer: odata.maxpagesize`.
//!
//! Owns the delta URLs and the page shape. A 410 (`SyncStateNotFound`: the
//! token expired) is the cursor expiring; everything else is classified as any
//! Graph failure. Follows only links under the configured Graph base (they
//! carry our bearer token).

use super::client::parse_graph_datetime;
use super::{GraphApi, GraphError, Operation, charge_of, failed};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use subkeeper_actors::domain::{Provider, ProviderKind};
use subkeeper_actors::ports::{
    ChangeKind, ChangePage, ChangesError, ChangesFrom, ChangesNext, ItemChange,
};

/// The calendar view a Graph calendar's delta covers, around the time the
/// cursor is first taken: events that start in it are tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalendarWindow {
    /// How far back from now the window starts.
    pub past: TimeDelta,
    /// How far ahead of now it ends.
    pub future: TimeDelta,
}

impl Default for CalendarWindow {
    fn default() -> Self {
        Self {
            past: TimeDelta::days(30),
            future: TimeDelta::days(365),
        }
    }
}

/// One delta page as Graph sends it.
#[derive(Debug, Deserialize)]
struct DeltaPage {
    #[serde(default)]
    value: Vec<DeltaItem>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<String>,
}

/// The fields of a message or event the catch-up reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeltaItem {
    id: String,
    #[serde(rename = "@removed")]
    removed: Option<serde_json::Value>,
    change_key: Option<String>,
    created_date_time: Option<String>,
    last_modified_date_time: Option<String>,
}

/// The delta path of a provider's resource: a mail folder's messages (the
/// Inbox when the resource names all messages) or the user's calendar view.
pub fn delta_segments(provider: &Provider) -> Result<Vec<String>, GraphError> {
    let resource = provider.resource.trim().trim_matches('/');
    let parts: Vec<&str> = resource.split('/').collect();
    let invalid = || {
        GraphError::Config(format!(
            "resource '{resource}' names no mail folder or calendar a delta query can read"
        ))
    };
    // `users/{id}/...` or `me/...`.
    let user_len = match parts.first().map(|p| p.to_ascii_lowercase()) {
        Some(p) if p == "me" => 1,
        Some(p) if p == "users" && parts.len() > 2 => 2,
        _ => return Err(invalid()),
    };
    let user = &parts[..user_len];
    let rest: Vec<String> = parts[user_len..]
        .iter()
        .map(|p| p.to_ascii_lowercase())
        .collect();
    let mut segments: Vec<String> = user.iter().map(|s| (*s).to_owned()).collect();
    match provider.kind {
        ProviderKind::GraphMail => {
            let folder = match rest
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice()
            {
                ["messages"] => "inbox".to_owned(),
                [folder, "messages"] => {
                    // `mailFolders('Inbox')` as one segment.
                    let raw = parts[user_len];
                    folder
                        .strip_prefix("mailfolders('")
                        .and_then(|_| raw.get(13..raw.len().saturating_sub(2)))
                        .map(str::to_owned)
                        .ok_or_else(invalid)?
                }
                ["mailfolders", _, "messages"] => parts[user_len + 1].to_owned(),
                _ => return Err(invalid()),
            };
            segments.extend(["mailFolders".to_owned(), folder, "messages".to_owned()]);
        }
        ProviderKind::GraphCalendar => segments.push("calendarView".to_owned()),
        _ => return Err(GraphError::WrongKind(provider.kind)),
    }
    segments.push("delta".to_owned());
    Ok(segments)
}

impl GraphApi {
    /// One delta page for `provider` from `from`.
    pub(super) async fn delta_page(
        &self,
        provider: &Provider,
        from: ChangesFrom<'_>,
        page_size: u32,
    ) -> Result<ChangePage, ChangesError> {
        let fail = |e: GraphError| ChangesError::Api(failed(provider, &e));
        let charge = charge_of(provider).map_err(fail)?;
        let url = match from {
            ChangesFrom::Start => {
                let segments = delta_segments(provider).map_err(fail)?;
                let refs: Vec<&str> = segments.iter().map(String::as_str).collect();
                let mut url = self.client.url(&refs).map_err(fail)?;
                if provider.kind == ProviderKind::GraphCalendar {
                    let now = self.clock.now();
                    url.query_pairs_mut()
                        .append_pair(
                            "startDateTime",
                            &window_time(now - self.calendar_window.past),
                        )
                        .append_pair(
                            "endDateTime",
                            &window_time(now + self.calendar_window.future),
                        );
                }
                url
            }
            ChangesFrom::Cursor(link) | ChangesFrom::Page(link) => {
                self.client.link(link).map_err(fail)?
            }
        };
        let answer = self
            .client
            .call_with_headers(
                &charge,
                Operation::Delta,
                reqwest::Method::GET,
                url,
                None,
                &[],
                &[("prefer", format!("odata.maxpagesize={page_size}"))],
            )
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(GraphError::Status { status: 410, .. }) => {
                return Err(ChangesError::CursorExpired {
                    reason: "graph_sync_state_not_found".to_owned(),
                });
            }
            Err(e) => return Err(fail(e)),
        };
        let page: DeltaPage = serde_json::from_slice(&answer.body).map_err(|e| {
            fail(GraphError::InvalidResponse {
                operation: Operation::Delta,
                status: answer.status,
                reason: format!("the body is not a delta page ({e})"),
            })
        })?;
        let next = match (page.next_link, page.delta_link) {
            (Some(next), _) => ChangesNext::Page(next),
            (None, Some(delta)) => ChangesNext::Done(delta),
            (None, None) => {
                return Err(fail(GraphError::InvalidResponse {
                    operation: Operation::Delta,
                    status: answer.status,
                    reason: "neither @odata.nextLink nor @odata.deltaLink".to_owned(),
                }));
            }
        };
        let changes = page.value.into_iter().map(item_change).collect();
        Ok(ChangePage { changes, next })
    }
}

fn item_change(item: DeltaItem) -> ItemChange {
    let time = |raw: &Option<String>| raw.as_deref().and_then(parse_graph_datetime);
    if item.removed.is_some() {
        return ItemChange {
            kind: ChangeKind::Deleted,
            item_id: item.id,
            version: None,
            changed_at: None,
            created_at: None,
        };
    }
    ItemChange {
        kind: ChangeKind::Updated,
        version: item.change_key,
        changed_at: time(&item.last_modified_date_time),
        created_at: time(&item.created_date_time),
        item_id: item.id,
    }
}

/// A calendar view bound as Graph takes it.
fn window_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use subkeeper_actors::domain::{ProviderId, TenantId};

    fn provider(kind: ProviderKind, resource: &str) -> Provider {
        Provider {
            id: ProviderId::new(),
            tenant: TenantId::parse("acme").unwrap(),
            kind,
            display_name: "x".into(),
            resource: resource.into(),
            credentials_id: None,
            enabled: true,
            credentials_version: 1,
        }
    }

    #[test]
    fn delta_paths_follow_the_subscribed_resource() {
        let path = |kind, r| delta_segments(&provider(kind, r)).unwrap().join("/");
        assert_eq!(
            path(ProviderKind::GraphMail, "users/u1/messages"),
            "users/u1/mailFolders/inbox/messages/delta"
        );
        assert_eq!(
            path(
                ProviderKind::GraphMail,
                "users/u1/mailFolders('Archive')/messages"
            ),
            "users/u1/mailFolders/Archive/messages/delta"
        );
        assert_eq!(
            path(ProviderKind::GraphMail, "me/mailFolders/inbox/messages"),
            "me/mailFolders/inbox/messages/delta"
        );
        assert_eq!(
            path(ProviderKind::GraphCalendar, "users/u1/events"),
            "users/u1/calendarView/delta"
        );
        assert!(delta_segments(&provider(ProviderKind::GraphMail, "subscriptions")).is_err());
    }
}
