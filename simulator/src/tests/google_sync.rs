//! Calendar `events.list` (full sync, `syncToken`) and Gmail
//! `users.history.list` as a client sees them over HTTP: pages, each later
//! change once, cancelled events, history records after a start on the same
//! historyId counter `users.watch` and pushes use, and the vendors' refusals
//! (410 `fullSyncRequired`, 404 for history no longer kept).
//!
//! No vendor schema covers these bodies; the documented examples (Google for
//! Developers: the Events resource, "Handle API errors" for Calendar, the
//! History resource for Gmail) are written out below and held against ours.

use super::support::{Harness, assert_same_shape, reply};
use crate::{ChangeRequest, ChangeType, Delivery, FeedRef, Operation, SimChange};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

const CLIENT: &str = "123456789012-sim.apps.googleusercontent.com";
const CALENDAR: &str = "alice@example.com";
const MAILBOX: &str = "bob@example.com";

/// An event of `items`, the fields the Events resource documents that a
/// synced event carries.
fn vendor_event() -> Value {
    json!({
        "kind": "calendar#event",
        "etag": "\"3181161784712000\"",
        "id": "2d4bstmd5bj1p4bqvd0j7m9p1c",
        "status": "confirmed",
        "htmlLink": "https://www.google.com/calendar/event?eid=MmQ0YnN0bWQ1YmoxcDRicXZkMGo3bTlwMWMgYWxpY2VAZXhhbXBsZS5jb20",
        "created": "2024-05-21T09:15:26.000Z",
        "updated": "2024-05-21T09:15:26.356Z",
        "summary": "Team sync",
        "creator": { "email": "alice@example.com", "self": true },
        "organizer": { "email": "alice@example.com", "self": true },
        "start": { "dateTime": "2024-05-22T10:00:00Z", "timeZone": "UTC" },
        "end": { "dateTime": "2024-05-22T11:00:00Z", "timeZone": "UTC" },
        "iCalUID": "2d4bstmd5bj1p4bqvd0j7m9p1c@google.com",
        "sequence": 0,
        "reminders": { "useDefault": true },
        "eventType": "default"
    })
}

/// The `events.list` envelope (the Events list resource).
fn vendor_events() -> Value {
    json!({
        "kind": "calendar#events",
        "etag": "\"p33ccjdst1m3ec0o\"",
        "summary": "alice@example.com",
        "updated": "2024-05-21T09:15:26.356Z",
        "timeZone": "UTC",
        "accessRole": "owner",
        "defaultReminders": [],
        "items": []
    })
}

/// Calendar's documented 410 for a sync token it no longer takes.
fn vendor_full_sync_required() -> Value {
    json!({
        "error": {
            "errors": [{
                "domain": "calendar",
                "reason": "fullSyncRequired",
                "message": "Sync token is no longer valid, a full sync is required.",
                "locationType": "parameter",
                "location": "syncToken"
            }],
            "code": 410,
            "message": "Sync token is no longer valid, a full sync is required."
        }
    })
}

/// Gmail's 404 for a `startHistoryId` it no longer has history after, as
/// clients report receiving it.
fn vendor_history_not_found() -> Value {
    json!({
        "error": {
            "code": 404,
            "message": "Requested entity was not found.",
            "errors": [{
                "message": "Requested entity was not found.",
                "domain": "global",
                "reason": "notFound"
            }],
            "status": "NOT_FOUND"
        }
    })
}

/// A History record with a message added (the History resource).
fn vendor_history_added() -> Value {
    json!({
        "id": "9876543",
        "messages": [{ "id": "18f2e295d49bfbb5", "threadId": "18f2e295d49bfbb5" }],
        "messagesAdded": [{
            "message": {
                "id": "18f2e295d49bfbb5",
                "threadId": "18f2e295d49bfbb5",
                "labelIds": ["UNREAD", "INBOX"]
            }
        }]
    })
}

impl Harness {
    fn events_url(&self, query: &str) -> String {
        format!(
            "{}/calendar/v3/calendars/{CALENDAR}/events{query}",
            self.server.base_url
        )
    }

    fn history_url(&self, query: &str) -> String {
        format!("{}/gmail/v1/users/me/history{query}", self.server.base_url)
    }

    async fn google_get(&self, url: &str, token: &str) -> super::support::Reply {
        reply(self.http.get(url).bearer_auth(token).send().await.unwrap()).await
    }
}

async fn change(h: &Harness, request: ChangeRequest) -> SimChange {
    h.sim.make_change(request).await.unwrap().change
}

fn ids(body: &Value, field: &str) -> Vec<String> {
    body[field]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[actix_web::test]
async fn calendar_full_sync_pages_then_sync_token_returns_each_change_once() {
    let h = Harness::start().await;
    let token = h.sim.issue_google_access_token(CLIENT, CALENDAR);
    let calendar = FeedRef::google_calendar(CALENDAR);
    let mut made = Vec::new();
    for _ in 0..3 {
        made.push(
            change(
                &h,
                ChangeRequest::new(calendar.clone(), ChangeType::Created),
            )
            .await,
        );
    }

    let first = h.google_get(&h.events_url("?maxResults=2"), &token).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_same_shape(&vendor_events(), &first.body);
    assert!(
        first.body["nextSyncToken"].is_null(),
        "only the last page has it"
    );
    let page_token = first.body["nextPageToken"].as_str().unwrap();
    let second = h
        .google_get(
            &h.events_url(&format!("?maxResults=2&pageToken={page_token}")),
            &token,
        )
        .await;
    assert!(second.body["nextPageToken"].is_null());
    let sync_token = second.body["nextSyncToken"].as_str().unwrap().to_owned();
    let mut listed = ids(&first.body, "items");
    listed.extend(ids(&second.body, "items"));
    let made_ids: Vec<String> = made.iter().map(|c| c.item_id.clone()).collect();
    assert_eq!(listed, made_ids);
    for (event, made) in first.body["items"].as_array().unwrap().iter().zip(&made) {
        assert_same_shape(&vendor_event(), event);
        assert_eq!(event["etag"].as_str(), made.etag.as_deref());
        assert!(DateTime::parse_from_rfc3339(event["updated"].as_str().unwrap()).is_ok());
    }

    change(
        &h,
        ChangeRequest::new(calendar.clone(), ChangeType::Updated).item(&made_ids[0]),
    )
    .await;
    let renamed = change(
        &h,
        ChangeRequest::new(calendar.clone(), ChangeType::Updated)
            .item(&made_ids[0])
            .subject("Renamed"),
    )
    .await;
    change(
        &h,
        ChangeRequest::new(calendar.clone(), ChangeType::Deleted).item(&made_ids[1]),
    )
    .await;
    let added = change(
        &h,
        ChangeRequest::new(calendar.clone(), ChangeType::Created),
    )
    .await;

    let incremental = h
        .google_get(&h.events_url(&format!("?syncToken={sync_token}")), &token)
        .await;
    assert_eq!(incremental.status, 200);
    let items = incremental.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "each changed event once: {items:#?}");
    assert_eq!(items[0]["summary"], "Renamed");
    assert_eq!(items[0]["sequence"], 2);
    assert_eq!(items[0]["etag"].as_str(), renamed.etag.as_deref());
    assert_eq!(items[1]["status"], "cancelled");
    assert_eq!(items[1]["id"], made_ids[1].as_str());
    assert_eq!(items[2]["id"], added.item_id.as_str());
    let next = incremental.body["nextSyncToken"]
        .as_str()
        .unwrap()
        .to_owned();

    // Nothing new: no items, and the same sync token back.
    let quiet = h
        .google_get(&h.events_url(&format!("?syncToken={next}")), &token)
        .await;
    assert_eq!(quiet.body["items"], json!([]));
    assert_eq!(quiet.body["nextSyncToken"], next.as_str());

    // A full sync hides the deleted event unless asked to show it.
    let full = h.google_get(&h.events_url(""), &token).await;
    assert_eq!(ids(&full.body, "items").len(), 3);
    let with_deleted = h
        .google_get(&h.events_url("?showDeleted=true"), &token)
        .await;
    assert_eq!(ids(&with_deleted.body, "items").len(), 4);

    // A window restricts a full sync; an empty one is refused.
    let now = h.sim.now();
    let stamp = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let windowed = h
        .google_get(
            &h.events_url(&format!(
                "?timeMin={}&timeMax={}",
                stamp(now + TimeDelta::days(2)),
                stamp(now + TimeDelta::days(3))
            )),
            &token,
        )
        .await;
    assert_eq!(windowed.body["items"], json!([]));
    let empty = h
        .google_get(
            &h.events_url(&format!("?timeMin={0}&timeMax={0}", stamp(now))),
            &token,
        )
        .await;
    assert_eq!(empty.status, 400);
    assert_eq!(empty.body["error"]["errors"][0]["reason"], "timeRangeEmpty");

    let restricted = h
        .google_get(
            &h.events_url(&format!("?syncToken={next}&timeMin={}", stamp(now))),
            &token,
        )
        .await;
    assert_eq!(restricted.status, 400);
    assert_eq!(
        restricted.body["error"]["errors"][0]["reason"],
        "syncTokenWithRequestRestrictions"
    );
    let zero = h.google_get(&h.events_url("?maxResults=0"), &token).await;
    assert_eq!(zero.status, 400);

    let reads: Vec<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.operation == Operation::ChangeFeed)
        .collect();
    assert!(reads.iter().all(|r| r.resource.as_deref() == Some(CALENDAR)
        && r.tenant.as_deref() == Some(CLIENT)));
    h.stop().await;
}

#[actix_web::test]
async fn an_expired_sync_token_is_410_full_sync_required() {
    let h = Harness::start().await;
    let token = h.sim.issue_google_access_token(CLIENT, CALENDAR);
    let calendar = FeedRef::google_calendar(CALENDAR);
    change(
        &h,
        ChangeRequest::new(calendar.clone(), ChangeType::Created),
    )
    .await;
    let full = h.google_get(&h.events_url(""), &token).await;
    let sync_token = full.body["nextSyncToken"].as_str().unwrap().to_owned();

    h.sim.expire_feed_tokens(&calendar).unwrap();
    let gone = h
        .google_get(&h.events_url(&format!("?syncToken={sync_token}")), &token)
        .await;
    assert_eq!(gone.status, 410);
    assert_eq!(gone.body, vendor_full_sync_required());

    // Aged out on the provider clock.
    let full = h.google_get(&h.events_url(""), &token).await;
    let sync_token = full.body["nextSyncToken"].as_str().unwrap().to_owned();
    let set = reply(
        h.http
            .post(format!("{}/_sim/changes/token-max-age", h.server.base_url))
            .json(&json!({"seconds": 600}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(set.body, json!({"seconds": 600}));
    h.sim.advance(TimeDelta::seconds(601));
    let aged = h
        .google_get(&h.events_url(&format!("?syncToken={sync_token}")), &token)
        .await;
    assert_eq!(aged.status, 410);
    let never = h
        .google_get(&h.events_url("?syncToken=made-up"), &token)
        .await;
    assert_eq!(never.status, 410);
    h.stop().await;
}

#[actix_web::test]
async fn gmail_history_lists_records_after_the_start_on_the_watch_counter() {
    let h = Harness::start().await;
    let token = h.sim.issue_google_access_token(CLIENT, MAILBOX);
    let watched = reply(
        h.http
            .post(format!("{}/gmail/v1/users/me/watch", h.server.base_url))
            .bearer_auth(&token)
            .json(&json!({"topicName": "projects/subkeeper/topics/gmail"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(watched.status, 200, "{:?}", watched.body);
    let start: u64 = watched.body["historyId"].as_str().unwrap().parse().unwrap();
    h.sim
        .set_gmail_push_endpoint(Some(format!("{}/webhooks/gmail", h.receiver.base_url)));

    let mailbox = FeedRef::gmail(MAILBOX);
    let added = h
        .sim
        .make_change(ChangeRequest::new(mailbox.clone(), ChangeType::Created))
        .await
        .unwrap();
    let pushed = added.change.history_id.unwrap();
    assert!(pushed > start);
    assert_eq!(h.sim.gmail_history_id(MAILBOX), Some(pushed));
    assert_eq!(added.deliveries.len(), 1);
    assert!(added.deliveries[0].all_accepted());
    assert_eq!(h.receiver.notifications().len(), 1);

    let second = change(
        &h,
        ChangeRequest::new(mailbox.clone(), ChangeType::Created).delivery(Delivery::Drop),
    )
    .await;
    let starred = change(&h, ChangeRequest::new(mailbox.clone(), ChangeType::Updated)).await;
    let deleted = change(
        &h,
        ChangeRequest::new(mailbox.clone(), ChangeType::Deleted).item(&added.change.item_id),
    )
    .await;
    assert_eq!(starred.item_id, second.item_id, "the newest live message");
    let current = h.sim.gmail_history_id(MAILBOX).unwrap();
    assert_eq!(deleted.history_id, Some(current));

    let first = h
        .google_get(
            &h.history_url(&format!("?startHistoryId={start}&maxResults=2")),
            &token,
        )
        .await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["historyId"], current.to_string());
    let page_token = first.body["nextPageToken"].as_str().unwrap();
    let rest = h
        .google_get(
            &h.history_url(&format!(
                "?startHistoryId={start}&maxResults=2&pageToken={page_token}"
            )),
            &token,
        )
        .await;
    assert!(rest.body["nextPageToken"].is_null());
    let mut records = first.body["history"].as_array().unwrap().clone();
    records.extend(rest.body["history"].as_array().unwrap().clone());
    let record_ids: Vec<u64> = records
        .iter()
        .map(|r| r["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        record_ids,
        [
            pushed,
            second.history_id.unwrap(),
            starred.history_id.unwrap(),
            current
        ]
    );
    assert_same_shape(&vendor_history_added(), &records[0]);
    assert_eq!(
        records[0]["messagesAdded"][0]["message"]["id"],
        added.change.item_id.as_str()
    );
    assert_eq!(records[2]["labelsAdded"][0]["labelIds"], json!(["STARRED"]));
    assert_eq!(
        records[3]["messagesDeleted"][0]["message"]["id"],
        added.change.item_id.as_str()
    );

    // From the push's historyId: only what came after it.
    let after_push = h
        .google_get(&h.history_url(&format!("?startHistoryId={pushed}")), &token)
        .await;
    assert_eq!(after_push.body["history"].as_array().unwrap().len(), 3);
    let deletions = h
        .google_get(
            &h.history_url(&format!(
                "?startHistoryId={start}&historyTypes=messageDeleted"
            )),
            &token,
        )
        .await;
    assert_eq!(ids(&deletions.body, "history"), [current.to_string()]);
    // Up to date: no `history` field at all, as Google leaves empty lists out.
    let caught_up = h
        .google_get(
            &h.history_url(&format!("?startHistoryId={current}")),
            &token,
        )
        .await;
    assert_eq!(caught_up.body, json!({"historyId": current.to_string()}));

    // The old push helper moves the same counter.
    h.sim.gmail_push(MAILBOX).await.unwrap();
    let moved = h.sim.gmail_history_id(MAILBOX).unwrap();
    assert!(moved > current);
    let after_helper = h
        .google_get(
            &h.history_url(&format!("?startHistoryId={current}")),
            &token,
        )
        .await;
    assert_eq!(after_helper.body["historyId"], moved.to_string());

    let missing = h.google_get(&h.history_url(""), &token).await;
    assert_eq!(missing.status, 400);
    assert_eq!(
        missing.body["error"]["errors"][0]["reason"],
        "invalidArgument"
    );
    let journal: Vec<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.operation == Operation::ChangeFeed)
        .collect();
    assert!(
        journal
            .iter()
            .all(|r| r.resource.as_deref() == Some(MAILBOX)
                && r.path == "/gmail/v1/users/me/history")
    );
    h.stop().await;
}

#[actix_web::test]
async fn gmail_history_older_than_kept_is_404() {
    let h = Harness::start().await;
    let token = h.sim.issue_google_access_token(CLIENT, MAILBOX);
    let mailbox = FeedRef::gmail(MAILBOX);
    let first = change(&h, ChangeRequest::new(mailbox.clone(), ChangeType::Created)).await;
    let first_id = first.history_id.unwrap();

    let before_everything = h
        .google_get(
            &h.history_url(&format!("?startHistoryId={}", first_id - 1000)),
            &token,
        )
        .await;
    assert_eq!(before_everything.status, 404);
    assert_eq!(before_everything.body, vendor_history_not_found());
    let zero = h
        .google_get(&h.history_url("?startHistoryId=0"), &token)
        .await;
    assert_eq!(zero.status, 404);

    // Aged out: history older than the maximum age on the provider clock.
    h.sim.set_feed_token_max_age(Some(TimeDelta::days(7)));
    h.sim.advance(TimeDelta::days(8));
    let token = h.sim.issue_google_access_token(CLIENT, MAILBOX);
    let fresh = change(&h, ChangeRequest::new(mailbox.clone(), ChangeType::Created)).await;
    let before_aged = h
        .google_get(
            &h.history_url(&format!("?startHistoryId={}", first_id - 1)),
            &token,
        )
        .await;
    assert_eq!(before_aged.status, 404);
    let from_aged = h
        .google_get(
            &h.history_url(&format!("?startHistoryId={first_id}")),
            &token,
        )
        .await;
    assert_eq!(from_aged.status, 200);
    assert_eq!(
        ids(&from_aged.body, "history"),
        [fresh.history_id.unwrap().to_string()]
    );

    // Forgotten by the control call: only the current historyId is good.
    h.sim.set_feed_token_max_age(None);
    h.sim.expire_feed_tokens(&mailbox).unwrap();
    let expired = h
        .google_get(
            &h.history_url(&format!("?startHistoryId={first_id}")),
            &token,
        )
        .await;
    assert_eq!(expired.status, 404);
    let current = h.sim.gmail_history_id(MAILBOX).unwrap();
    let now_ok = h
        .google_get(
            &h.history_url(&format!("?startHistoryId={current}")),
            &token,
        )
        .await;
    assert_eq!(now_ok.status, 200);
    h.stop().await;
}
