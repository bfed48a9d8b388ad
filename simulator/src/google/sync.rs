//! Google's catch-up reads over the change log: Calendar v3 `events.list`
//! (`GET /calendar/v3/calendars/{calendarId}/events`, full sync and `syncToken`
//! incremental sync) and Gmail v1 `users.history.list`
//! (`GET /gmail/v1/users/{userId}/history?startHistoryId=..`).
//!
//! As Google documents them: Calendar pages with `nextPageToken`, the last page
//! carries `nextSyncToken`; an incremental sync returns changed events, deleted
//! ones as `"status": "cancelled"`; a sync token that no longer holds is 410
//! `fullSyncRequired` ("Synchronize resources efficiently", "Handle API
//! errors"). Gmail returns the history records after `startHistoryId` with
//! the mailbox's current `historyId`, and 404 for a start older than the
//! history it keeps ("Synchronize clients with Gmail", `users.history.list`).
//!
//! Owns the request reading and the vendor shapes; what a page holds is
//! decided by `changes::model`. Follows the shared `exchange.rs` order
//! (authenticate, faults, act) and journals as `change_feed`. Never holds a
//! lock across an await.

use crate::Simulator;
use crate::changes::feed::FeedKey;
use crate::changes::model::{
    CursorArg, Entry, HistoryFilter, HistoryRequest, Next, PageRequest, RoundRules, Window,
};
use crate::changes::{ChangeType, SimChange};
use crate::google::http::Exchange;
use crate::google::model::GoogleError;
use crate::journal::{Operation, lock};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

/// `maxResults` of `events.list` when absent (documented default).
pub const CALENDAR_DEFAULT_PAGE_SIZE: usize = 250;

/// Largest `events.list` page: "The page size can never be larger than 2500
/// events"; larger requests are capped.
pub const CALENDAR_MAX_PAGE_SIZE: usize = 2_500;

/// `maxResults` of `users.history.list` when absent (documented default).
pub const GMAIL_DEFAULT_PAGE_SIZE: usize = 100;

/// Largest `users.history.list` page (documented maximum).
pub const GMAIL_MAX_PAGE_SIZE: usize = 500;

/// `events.list` parameters that cannot go with `syncToken`.
const SYNC_TOKEN_RESTRICTIONS: &[&str] = &[
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
];

/// `historyTypes` values Gmail knows.
const HISTORY_TYPES: &[&str] = &[
    "messageAdded",
    "messageDeleted",
    "labelAdded",
    "labelRemoved",
];

/// Mounts `events.list` and `users.history.list`.
pub(crate) fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/calendar/v3/calendars/{calendar_id}/events")
                .route(web::get().to(events_list)),
        )
        .service(
            web::resource("/gmail/v1/users/{user_id}/history").route(web::get().to(history_list)),
        )
        .service(
            web::resource("/gmail/v1/users/{user_id}/profile").route(web::get().to(get_profile)),
        );
}

/// `GET /gmail/v1/users/{userId}/profile` (`users.getProfile`): the mailbox's
/// address and current `historyId` — where a client starts reading history
/// from ("Synchronize clients with Gmail": keep the latest historyId).
async fn get_profile(
    sim: web::Data<Simulator>,
    req: HttpRequest,
    user_id: web::Path<String>,
) -> HttpResponse {
    let user_id = user_id.into_inner();
    let ex = Exchange::begin(&sim, &req, Operation::ChangeFeed, None, &[]);
    let (ex, _caller, email) = match ex.admit_mailbox(&user_id).await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let (current, _) = lock(&sim.shared.google).history_span(&email);
    let key = FeedKey::GmailHistory {
        email: email.clone(),
    };
    let live = lock(&sim.shared.changes)
        .changes(&key)
        .iter()
        .filter(|c| c.kind == ChangeType::Created)
        .count();
    ex.json(
        200,
        &json!({
            "emailAddress": email,
            "messagesTotal": live,
            "threadsTotal": live,
            "historyId": current.to_string(),
        }),
    )
}

/// A query string's pairs, in order.
struct Query(Vec<(String, String)>);

impl Query {
    fn of(req: &HttpRequest) -> Self {
        Self(
            url::form_urlencoded::parse(req.query_string().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// A Calendar error in the shape the Calendar docs show, with the parameter
/// it is about.
fn calendar_error(status: u16, reason: &str, message: &str, parameter: &str) -> Value {
    json!({
        "error": {
            "errors": [{
                "domain": "calendar",
                "reason": reason,
                "message": message,
                "locationType": "parameter",
                "location": parameter,
            }],
            "code": status,
            "message": message,
        }
    })
}

/// `maxResults` within `1..`, capped at `max`; `default` when absent.
fn page_size(
    query: &Query,
    default: usize,
    max: usize,
    invalid: impl Fn(&str) -> GoogleError,
) -> Result<usize, GoogleError> {
    match query.get("maxResults") {
        None => Ok(default),
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n >= 1 => Ok(usize::try_from(n).unwrap_or(max).min(max)),
            _ => Err(invalid(text)),
        },
    }
}

/// `GET /calendar/v3/calendars/{calendarId}/events`.
async fn events_list(
    sim: web::Data<Simulator>,
    req: HttpRequest,
    calendar_id: web::Path<String>,
) -> HttpResponse {
    let calendar_id = calendar_id.into_inner();
    let mut ex = Exchange::begin(&sim, &req, Operation::ChangeFeed, None, &[]);
    ex.resource = Some(calendar_id.clone());
    let (ex, _caller) = match ex.admit().await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let query = Query::of(&req);
    let page_size = match page_size(
        &query,
        CALENDAR_DEFAULT_PAGE_SIZE,
        CALENDAR_MAX_PAGE_SIZE,
        |text| {
            GoogleError::new(
                400,
                "invalid",
                format!("Invalid value '{text}'. Values must be within the range: [1, 2500]"),
            )
        },
    ) {
        Ok(size) => size,
        Err(error) => return ex.fail(error),
    };
    let sync_token = query.get("syncToken");
    let show_deleted = query.get("showDeleted");
    if sync_token.is_some()
        && (SYNC_TOKEN_RESTRICTIONS
            .iter()
            .any(|p| query.get(p).is_some())
            || show_deleted == Some("false"))
    {
        return ex.fail(GoogleError::new(
            400,
            "syncTokenWithRequestRestrictions",
            "Sync token cannot be used with other request restrictions.",
        ));
    }
    let rules = if sync_token.is_some() {
        RoundRules::default()
    } else {
        let bound = |name: &str| -> Result<Option<DateTime<Utc>>, GoogleError> {
            query
                .get(name)
                .map(|text| {
                    DateTime::parse_from_rfc3339(text)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|_| {
                            GoogleError::new(400, "invalid", format!("Invalid value for: {name}"))
                        })
                })
                .transpose()
        };
        let (start, end) = match (bound("timeMin"), bound("timeMax")) {
            (Ok(start), Ok(end)) => (start, end),
            (Err(error), _) | (_, Err(error)) => return ex.fail(error),
        };
        if let (Some(start), Some(end)) = (start, end)
            && start >= end
        {
            let body = calendar_error(
                400,
                "timeRangeEmpty",
                "The specified time range is empty.",
                "timeMax",
            );
            return ex.json(400, &body);
        }
        RoundRules {
            window: (start.is_some() || end.is_some()).then_some(Window { start, end }),
            show_deleted: show_deleted == Some("true"),
            ..RoundRules::default()
        }
    };
    // Within a round the page token leads (Google's own pages carry both).
    let cursor = match (query.get("pageToken"), sync_token) {
        (Some(token), _) => Some(CursorArg::Page(token.to_owned())),
        (None, Some(token)) => Some(CursorArg::Sync(token.to_owned())),
        (None, None) => None,
    };
    let key = FeedKey::CalendarEvents {
        calendar_id: calendar_id.clone(),
    };
    let now = sim.now();
    let page = lock(&sim.shared.changes).read_page(
        &key,
        PageRequest {
            cursor,
            rules,
            page_size,
            reuse_unchanged_sync_token: true,
        },
        now,
    );
    let Ok(page) = page else {
        let body = calendar_error(
            410,
            "fullSyncRequired",
            "Sync token is no longer valid, a full sync is required.",
            "syncToken",
        );
        return ex.json(410, &body);
    };
    let items: Vec<Value> = page
        .entries
        .iter()
        .map(|entry| event_json(&calendar_id, entry))
        .collect();
    let updated = page.updated.unwrap_or(now);
    let mut body = json!({
        "kind": "calendar#events",
        "etag": format!("\"p3{}\"", updated.timestamp_micros()),
        "summary": calendar_id,
        "description": "",
        "updated": google_time(updated),
        "timeZone": "UTC",
        "accessRole": "owner",
        "defaultReminders": [],
        "items": items,
    });
    match page.next {
        Next::Page(token) => body["nextPageToken"] = json!(token),
        Next::Sync(token) => body["nextSyncToken"] = json!(token),
    }
    ex.json(200, &body)
}

/// RFC 3339 with milliseconds and `Z`, as Google writes `created`/`updated`.
fn google_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One event of `items`; a deleted one carries only what Google guarantees
/// for it ("Deleted events are only guaranteed to have the id field
/// populated") plus its kind, etag and status.
fn event_json(calendar_id: &str, entry: &Entry) -> Value {
    let item = &entry.item;
    let etag = format!("\"{}\"", item.version);
    if entry.removed {
        return json!({
            "kind": "calendar#event",
            "etag": etag,
            "id": item.id,
            "status": "cancelled",
        });
    }
    let eid = base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(format!("{} {calendar_id}", item.id));
    json!({
        "kind": "calendar#event",
        "etag": etag,
        "id": item.id,
        "status": "confirmed",
        "htmlLink": format!("https://www.google.com/calendar/event?eid={eid}"),
        "created": google_time(item.created_at),
        "updated": google_time(item.updated_at),
        "summary": item.subject,
        "creator": { "email": calendar_id, "self": true },
        "organizer": { "email": calendar_id, "self": true },
        "start": { "dateTime": item.start.to_rfc3339_opts(SecondsFormat::Secs, true), "timeZone": "UTC" },
        "end": { "dateTime": item.end.to_rfc3339_opts(SecondsFormat::Secs, true), "timeZone": "UTC" },
        "iCalUID": format!("{}@google.com", item.id),
        "sequence": item.sequence,
        "reminders": { "useDefault": true },
        "eventType": "default",
    })
}

/// `GET /gmail/v1/users/{userId}/history`.
async fn history_list(
    sim: web::Data<Simulator>,
    req: HttpRequest,
    user_id: web::Path<String>,
) -> HttpResponse {
    let user_id = user_id.into_inner();
    let ex = Exchange::begin(&sim, &req, Operation::ChangeFeed, None, &[]);
    let (ex, _caller, email) = match ex.admit_mailbox(&user_id).await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let query = Query::of(&req);
    let Some(start) = query
        .get("startHistoryId")
        .and_then(|text| text.parse::<u64>().ok())
    else {
        return ex.fail(GoogleError::new(
            400,
            "invalidArgument",
            "Missing/invalid parameter: startHistoryId",
        ));
    };
    let page_size = match page_size(&query, GMAIL_DEFAULT_PAGE_SIZE, GMAIL_MAX_PAGE_SIZE, |_| {
        GoogleError::new(400, "invalidArgument", "Invalid maxResults")
    }) {
        Ok(size) => size,
        Err(error) => return ex.fail(error),
    };
    let history_types = query.all("historyTypes");
    if let Some(unknown) = history_types.iter().find(|t| {
        !HISTORY_TYPES
            .iter()
            .any(|known| known.eq_ignore_ascii_case(t))
    }) {
        return ex.fail(GoogleError::new(
            400,
            "invalidArgument",
            format!("Invalid value at 'history_types' (type.googleapis.com/google.apps.gmail.v1.ListHistoryRequest.HistoryType), \"{unknown}\""),
        ));
    }
    let (current, birth) = lock(&sim.shared.google).history_span(&email);
    let key = FeedKey::GmailHistory {
        email: email.clone(),
    };
    let now = sim.now();
    let page = lock(&sim.shared.changes).read_history(
        &key,
        HistoryRequest {
            start,
            page_token: query.get("pageToken").map(str::to_owned),
            filter: HistoryFilter {
                label_id: query.get("labelId").map(str::to_owned),
                history_types,
            },
            page_size,
            current,
            birth,
        },
        now,
    );
    let Ok(page) = page else {
        return ex.fail(GoogleError::new(
            404,
            "notFound",
            "Requested entity was not found.",
        ));
    };
    // Google leaves empty repeated fields out.
    let mut body = json!({ "historyId": current.to_string() });
    if !page.records.is_empty() {
        body["history"] = Value::Array(page.records.iter().map(history_json).collect());
    }
    if let Some(token) = page.next_page_token {
        body["nextPageToken"] = json!(token);
    }
    ex.json(200, &body)
}

/// One History record: the message it touched and what happened to it.
fn history_json(change: &SimChange) -> Value {
    let thread = change
        .thread_id
        .clone()
        .unwrap_or_else(|| change.item_id.clone());
    let message = json!({
        "id": change.item_id,
        "threadId": thread,
        "labelIds": change.labels,
    });
    let mut record = json!({
        "id": change.history_id.unwrap_or_default().to_string(),
        "messages": [{ "id": change.item_id, "threadId": thread }],
    });
    match change.kind {
        ChangeType::Created => record["messagesAdded"] = json!([{ "message": message }]),
        ChangeType::Deleted => record["messagesDeleted"] = json!([{ "message": message }]),
        ChangeType::Updated if !change.labels_added.is_empty() => {
            record["labelsAdded"] =
                json!([{ "message": message, "labelIds": change.labels_added }]);
        }
        ChangeType::Updated => {
            record["labelsRemoved"] =
                json!([{ "message": message, "labelIds": change.labels_removed }]);
        }
    }
    record
}
