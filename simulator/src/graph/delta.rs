//! Graph's delta queries over the change log:
//! `GET /v1.0/{users/{id}|me}/mailFolders/{folder}/messages/delta` and
//! `GET /v1.0/{users/{id}|me}/calendarView/delta?startDateTime=..&endDateTime=..`.
//!
//! As Microsoft documents them ("Use delta query to track changes", "message:
//! delta", "event: delta"): the first call returns the folder's messages (or
//! the events in the window) in pages linked by `@odata.nextLink`
//! (`$skiptoken`), sized by `Prefer: odata.maxpagesize`; the last page carries
//! `@odata.deltaLink` (`$deltatoken`), which returns only what changed since —
//! deleted items, and events that left the window, as `{"@odata.type", "id",
//! "@removed": {"reason": "deleted"}}`. A token that no longer holds answers
//! 410 `SyncStateNotFound`, as Outlook resources do.
//!
//! Owns the request reading and the vendor shapes; what a page holds is
//! decided by `changes::model`. Follows the shared `exchange.rs` order
//! (authenticate, faults, act) and journals as `change_feed`. Never holds a
//! lock across an await.

use crate::Simulator;
use crate::changes::ChangeType;
use crate::changes::feed::{FeedKey, GraphPath, GraphScope};
use crate::changes::model::{CursorArg, Entry, Item, Next, PageRequest, RoundRules, Window};
use crate::graph::http::Exchange;
use crate::graph::model::GraphError;
use crate::graph::wire::graph_datetime;
use crate::journal::{Operation, lock};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, guard, web};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Value, json};

/// Entries per page without `Prefer: odata.maxpagesize` (Outlook's default).
pub const DEFAULT_PAGE_SIZE: usize = 10;

/// Largest page served, whatever the client prefers (Outlook's `$top` limit).
pub const MAX_PAGE_SIZE: usize = 1_000;

/// `@odata.context` of a message delta page.
const MESSAGES_CONTEXT: &str = "https://graph.microsoft.com/v1.0/$metadata#Collection(message)";

/// `@odata.context` of an event delta page.
const EVENTS_CONTEXT: &str = "https://graph.microsoft.com/v1.0/$metadata#Collection(event)";

/// Mounts the delta paths ahead of the `/v1.0` scope: a path that is not a
/// delta query falls through to it.
pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/v1.0/{tail:.*}")
            .guard(guard::fn_guard(|ctx| {
                delta_target(ctx.head().uri.path()).is_some()
            }))
            .to(delta),
    );
}

/// The delta query a request path names: a folder's messages or a calendar
/// view.
fn delta_target(path: &str) -> Option<GraphPath> {
    let decoded = percent_decode(path.strip_prefix("/v1.0/")?);
    GraphPath::parse(&decoded).filter(|p| {
        p.delta
            && matches!(
                p.scope,
                GraphScope::Messages { folder: Some(_) } | GraphScope::CalendarView
            )
    })
}

/// `GET .../messages/delta`, `GET .../calendarView/delta`.
async fn delta(sim: web::Data<Simulator>, req: HttpRequest) -> HttpResponse {
    let mut ex = Exchange::begin(&sim, &req, Operation::ChangeFeed, None, &[]);
    let Some(target) = delta_target(req.path()) else {
        // The guard only lets delta paths in.
        return ex.fail(GraphError::new(400, "BadRequest", "Unsupported request."));
    };
    let key = match &target.scope {
        GraphScope::Messages {
            folder: Some(folder),
        } => FeedKey::GraphMessages {
            user: target.user.clone(),
            folder: folder.clone(),
        },
        _ => FeedKey::GraphEvents {
            user: target.user.clone(),
        },
    };
    ex.resource = Some(key.resource());
    if req.method() != Method::GET {
        return ex.fail(GraphError::new(
            405,
            "BadRequest",
            "Specified HTTP method is not allowed for the request uri.",
        ));
    }
    let (ex, caller) = match ex.admit().await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    if target.user == "me" && caller.app_only {
        return ex.fail(GraphError::me_requires_delegated());
    }

    let query = Query::of(&req);
    let cursor = match (query.get("$skiptoken"), query.get("$deltatoken")) {
        (Some(token), _) => Some(CursorArg::Page(token.to_owned())),
        (None, Some(token)) => Some(CursorArg::Sync(token.to_owned())),
        (None, None) => None,
    };
    let rules = if cursor.is_some() {
        // The token carries the round's parameters.
        RoundRules::default()
    } else {
        match first_round_rules(&key, &query) {
            Ok(rules) => rules,
            Err(error) => return ex.fail(error),
        }
    };
    let page_size = max_page_size(&req)
        .unwrap_or(DEFAULT_PAGE_SIZE)
        .min(MAX_PAGE_SIZE);
    let now = sim.now();
    let page = lock(&sim.shared.changes).read_page(
        &key,
        PageRequest {
            cursor,
            rules,
            page_size,
            reuse_unchanged_sync_token: false,
        },
        now,
    );
    let Ok(page) = page else {
        return ex.fail(sync_state_not_found());
    };

    let base = {
        let info = req.connection_info();
        format!("{}://{}/v1.0", info.scheme(), info.host())
    };
    let (context, collection) = match &key {
        FeedKey::GraphMessages { user, folder } => (
            MESSAGES_CONTEXT,
            format!(
                "{base}/{}/mailFolders('{folder}')/messages/delta",
                prefix(user)
            ),
        ),
        FeedKey::GraphEvents { user } => (
            EVENTS_CONTEXT,
            format!("{base}/{}/calendarView/delta", prefix(user)),
        ),
        _ => (MESSAGES_CONTEXT, base),
    };
    let value: Vec<Value> = page
        .entries
        .iter()
        .map(|entry| entry_json(&key, entry))
        .collect();
    let mut body = json!({ "@odata.context": context, "value": value });
    match page.next {
        Next::Page(token) => {
            body["@odata.nextLink"] = json!(format!("{collection}?$skiptoken={token}"));
        }
        Next::Sync(token) => {
            body["@odata.deltaLink"] = json!(format!("{collection}?$deltatoken={token}"));
        }
    }
    let mut response = ex.json(200, &body);
    response.headers_mut().insert(
        HeaderName::from_static("preference-applied"),
        HeaderValue::from_static("odata.track-changes"),
    );
    response
}

/// 410 as Outlook answers a delta or skip token it no longer has (seen on
/// `calendarView/delta`; the docs list the code as `syncStateNotFound`).
fn sync_state_not_found() -> GraphError {
    GraphError::new(
        410,
        "SyncStateNotFound",
        "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
    )
}

/// The parameters of a first request, which the tokens then carry: the
/// calendar view's window (required), a messages `changeType` filter.
fn first_round_rules(key: &FeedKey, query: &Query) -> Result<RoundRules, GraphError> {
    match key {
        FeedKey::GraphEvents { .. } => {
            let (Some(start), Some(end)) = (query.get("startdatetime"), query.get("enddatetime"))
            else {
                return Err(GraphError::new(
                    400,
                    "ErrorInvalidParameter",
                    "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
                ));
            };
            let start = parse_time("StartDateTime", start)?;
            let end = parse_time("EndDateTime", end)?;
            Ok(RoundRules {
                window: Some(Window {
                    start: Some(start),
                    end: Some(end),
                }),
                ..RoundRules::default()
            })
        }
        _ => {
            let change_type = match query.get("changetype") {
                None => None,
                Some("created") => Some(ChangeType::Created),
                Some("updated") => Some(ChangeType::Updated),
                Some("deleted") => Some(ChangeType::Deleted),
                Some(other) => {
                    return Err(GraphError::new(
                        400,
                        "ErrorInvalidParameter",
                        format!(
                            "The value '{other}' of parameter 'changeType' is invalid. Supported values are created, updated or deleted."
                        ),
                    ));
                }
            };
            Ok(RoundRules {
                change_type,
                ..RoundRules::default()
            })
        }
    }
}

/// An ISO 8601 date-time as Graph takes it: with an offset, or without one
/// (read as UTC).
fn parse_time(name: &str, value: &str) -> Result<DateTime<Utc>, GraphError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc())
        })
        .map_err(|_| {
            GraphError::new(
                400,
                "ErrorInvalidParameter",
                format!("The value '{value}' of parameter '{name}' is invalid."),
            )
        })
}

/// `odata.maxpagesize` from `Prefer`, when it is a positive number.
fn max_page_size(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|pref| {
            let (name, value) = pref.trim().split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("odata.maxpagesize")
                .then(|| value.trim().trim_matches('"').parse::<usize>().ok())
                .flatten()
        })
        .find(|size| *size > 0)
}

/// `users/{id}` or `me`, as links name the mailbox.
fn prefix(user: &str) -> String {
    if user == "me" {
        "me".to_owned()
    } else {
        format!("users/{user}")
    }
}

/// One entry of `value`.
fn entry_json(key: &FeedKey, entry: &Entry) -> Value {
    let odata_type = match key {
        FeedKey::GraphEvents { .. } => "#microsoft.graph.event",
        _ => "#microsoft.graph.message",
    };
    if entry.removed {
        return json!({
            "@odata.type": odata_type,
            "id": entry.item.id,
            "@removed": { "reason": "deleted" },
        });
    }
    match key {
        FeedKey::GraphMessages { user, folder } => message_json(&entry.item, user, folder),
        FeedKey::GraphEvents { user } => event_json(&entry.item, user),
        _ => Value::Null,
    }
}

/// A mailbox address for `user` (an id is not one).
fn address(user: &str) -> String {
    if user.contains('@') {
        user.to_owned()
    } else {
        format!("{user}@example.com")
    }
}

/// Graph writes message times to the second, with a `Z`.
fn seconds(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Event start and end: seven fraction digits, no zone (`timeZone` says it).
fn event_time(at: DateTime<Utc>) -> Value {
    let text = graph_datetime(at);
    json!({
        "dateTime": text.trim_end_matches('Z'),
        "timeZone": "UTC",
    })
}

fn message_json(item: &Item, user: &str, folder: &str) -> Value {
    let sender =
        json!({ "emailAddress": { "name": "Simulated Sender", "address": "sender@example.com" } });
    json!({
        "@odata.type": "#microsoft.graph.message",
        "@odata.etag": format!("W/\"{}\"", item.version),
        "id": item.id,
        "createdDateTime": seconds(item.created_at),
        "lastModifiedDateTime": seconds(item.updated_at),
        "changeKey": item.version,
        "categories": [],
        "receivedDateTime": seconds(item.created_at),
        "sentDateTime": seconds(item.created_at),
        "hasAttachments": false,
        "internetMessageId": format!("<sim-{}@mail.example.com>", item.created_change),
        "subject": item.subject,
        "bodyPreview": format!("Body of {}", item.subject),
        "importance": "normal",
        "parentFolderId": folder,
        "conversationId": format!("AAQkAG{}", item.created_change),
        "isDeliveryReceiptRequested": false,
        "isReadReceiptRequested": false,
        "isRead": item.read,
        "isDraft": false,
        "inferenceClassification": "focused",
        "body": { "contentType": "text", "content": format!("Body of {}", item.subject) },
        "sender": sender,
        "from": sender,
        "toRecipients": [{ "emailAddress": { "name": user, "address": address(user) } }],
        "ccRecipients": [],
        "bccRecipients": [],
        "replyTo": [],
        "flag": { "flagStatus": "notFlagged" },
    })
}

fn event_json(item: &Item, user: &str) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.event",
        "@odata.etag": format!("W/\"{}\"", item.version),
        "id": item.id,
        "createdDateTime": graph_datetime(item.created_at),
        "lastModifiedDateTime": graph_datetime(item.updated_at),
        "changeKey": item.version,
        "categories": [],
        "transactionId": null,
        "originalStartTimeZone": "UTC",
        "originalEndTimeZone": "UTC",
        "iCalUId": format!("040000008200E00074C5B7101A82E008{:032X}", item.created_change),
        "reminderMinutesBeforeStart": 15,
        "isReminderOn": true,
        "hasAttachments": false,
        "subject": item.subject,
        "bodyPreview": "",
        "importance": "normal",
        "sensitivity": "normal",
        "isAllDay": false,
        "isCancelled": false,
        "isOrganizer": true,
        "responseRequested": true,
        "showAs": "busy",
        "type": "singleInstance",
        "body": { "contentType": "html", "content": "" },
        "start": event_time(item.start),
        "end": event_time(item.end),
        "location": { "displayName": "" },
        "attendees": [],
        "organizer": { "emailAddress": { "name": user, "address": address(user) } },
    })
}

/// The query string, keys lower-cased (Graph's are case-insensitive).
struct Query(Vec<(String, String)>);

impl Query {
    fn of(req: &HttpRequest) -> Self {
        Self(
            url::form_urlencoded::parse(req.query_string().as_bytes())
                .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name` (lower case).
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `%XX` sequences decoded (clients may encode `'`, `(`, `)` in
/// `mailFolders('Inbox')`); anything malformed is kept as is.
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let decoded = (b == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_delta_paths_are_taken() {
        assert!(delta_target("/v1.0/users/u1/mailFolders('Inbox')/messages/delta").is_some());
        assert!(
            delta_target("/v1.0/me/mailfolders/inbox/messages/microsoft.graph.delta()").is_some()
        );
        assert!(
            delta_target("/v1.0/users/u1/mailFolders%28%27Inbox%27%29/messages/delta").is_some()
        );
        assert!(delta_target("/v1.0/users/u1/calendarView/delta").is_some());
        assert!(delta_target("/v1.0/subscriptions").is_none());
        assert!(delta_target("/v1.0/users/u1/messages/delta").is_none());
        assert!(delta_target("/v1.0/users/u1/mailFolders/inbox/messages").is_none());
    }
}
