//! Graph delta queries as a client sees them over HTTP: a round of pages
//! (`@odata.nextLink`) ending in `@odata.deltaLink`, later changes exactly once,
//! deletions as `@removed`, the calendar view's window, 410 for expired
//! tokens, and the exchange plumbing (auth, faults, journal).
//!
//! No vendor schema covers delta pages, so the vendor's own documented
//! examples (Microsoft Learn, "Get incremental changes to messages in a
//! folder" and "... to events in a calendar view") are written out below and
//! our pages are held to their fields.

use super::support::{
    CALENDAR, CLIENT_ID, CLIENT_SECRET, Harness, INBOX, TENANT, assert_same_shape, reply,
};
use crate::{
    ChangeRequest, ChangeType, Delivery, Fault, FaultOperation, FaultRule, FeedRef, Operation,
};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

/// A message of a delta page, as `delta-query-messages.md` shows one.
fn vendor_message() -> Value {
    json!({
        "@odata.type": "#microsoft.graph.message",
        "@odata.etag": "W/\"CQAAABYAAAARn2vdzPFjSbaPPxzjlzOTAAASsKZz\"",
        "subject": "Holiday hours update",
        "isRead": false,
        "sender": { "emailAddress": { "name": "Dana Swope", "address": "danas@contoso.com" } },
        "id": "AAMkADNkNAAASq35xAAA="
    })
}

/// A deleted message of a delta page, as the same article shows it.
fn vendor_removed_message() -> Value {
    json!({
        "@odata.type": "#microsoft.graph.message",
        "id": "AAMkADk0MGFkODE3LWE4MmYtNDRhOS0Dh_6qB-pB2Sa2pUum19a6YAAKnLuxoAAA=",
        "@removed": { "reason": "deleted" }
    })
}

/// An event of a calendarView delta page, as `delta-query-events.md` shows one.
fn vendor_event() -> Value {
    json!({
        "@odata.type": "#microsoft.graph.event",
        "@odata.etag": "W/\"EZ9r3czxY0m2jz8c45czkwAAFXcvIQ==\"",
        "subject": "Plan shopping list",
        "body": { "contentType": "html", "content": "" },
        "start": { "dateTime": "2016-12-09T20:30:00.0000000", "timeZone": "UTC" },
        "end": { "dateTime": "2016-12-09T22:00:00.0000000", "timeZone": "UTC" },
        "attendees": [],
        "organizer": { "emailAddress": { "name": "Samantha Booth", "address": "samanthab@contoso.onmicrosoft.com" } },
        "id": "AAMkADNVxRAAA="
    })
}

/// A deleted event, as the events article shows it.
fn vendor_removed_event() -> Value {
    json!({
        "@odata.type": "#microsoft.graph.event",
        "id": "AAMkADk0MGFkODE3LWE4MmYtNDRhOS04OGQLkRkXbBznTvAADb6ytyAAA=",
        "@removed": { "reason": "deleted" }
    })
}

/// The delta URL of the Inbox the tests watch.
fn inbox_delta(h: &Harness) -> String {
    h.graph("/users/5d3c1f7e-aaaa-bbbb-cccc-111122223333/mailFolders('Inbox')/messages/delta")
}

/// The calendarView delta URL for a window.
fn view_delta(h: &Harness, start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    let encode = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    h.graph(&format!(
        "/users/5d3c1f7e-aaaa-bbbb-cccc-111122223333/calendarView/delta?startDateTime={}&endDateTime={}",
        encode(start),
        encode(end)
    ))
}

/// One round: GETs `url` and follows `@odata.nextLink` until a page carries
/// `@odata.deltaLink`; returns the pages and that link.
async fn round(
    h: &Harness,
    token: &str,
    url: &str,
    page_size: Option<usize>,
) -> (Vec<Value>, String) {
    let mut pages = Vec::new();
    let mut next = url.to_owned();
    loop {
        let mut request = h.http.get(&next).bearer_auth(token);
        if let Some(size) = page_size {
            request = request.header("Prefer", format!("odata.maxpagesize={size}"));
        }
        let page = reply(request.send().await.unwrap()).await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        assert_eq!(
            page.header("preference-applied"),
            Some("odata.track-changes")
        );
        assert!(
            page.body["@odata.nextLink"].is_null() || page.body["@odata.deltaLink"].is_null(),
            "a page never carries both links"
        );
        if let Some(link) = page.body["@odata.nextLink"].as_str() {
            assert!(link.contains("?$skiptoken="), "{link}");
            next = link.to_owned();
            pages.push(page.body);
            continue;
        }
        let delta = page.body["@odata.deltaLink"].as_str().unwrap().to_owned();
        assert!(delta.contains("?$deltatoken="), "{delta}");
        pages.push(page.body);
        return (pages, delta);
    }
}

fn values(pages: &[Value]) -> Vec<Value> {
    pages
        .iter()
        .flat_map(|p| p["value"].as_array().unwrap().clone())
        .collect()
}

async fn change(h: &Harness, request: ChangeRequest) -> crate::SimChange {
    h.sim.make_change(request).await.unwrap().change
}

#[actix_web::test]
async fn message_delta_pages_the_folder_then_returns_each_later_change_once() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    let inbox = FeedRef::graph(INBOX);
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(change(&h, ChangeRequest::new(inbox.clone(), ChangeType::Created)).await);
    }

    let (pages, delta) = round(&h, &token, &inbox_delta(&h), Some(2)).await;
    assert_eq!(pages.len(), 3, "5 messages in pages of 2");
    for page in &pages {
        assert_eq!(
            page["@odata.context"],
            "https://graph.microsoft.com/v1.0/$metadata#Collection(message)"
        );
        assert!(page["value"].as_array().unwrap().len() <= 2);
    }
    let first = values(&pages);
    let ids: Vec<&str> = first.iter().map(|m| m["id"].as_str().unwrap()).collect();
    let made: Vec<&str> = created.iter().map(|c| c.item_id.as_str()).collect();
    assert_eq!(ids, made);
    for (message, made) in first.iter().zip(&created) {
        assert_same_shape(&vendor_message(), message);
        assert_eq!(message["@odata.etag"].as_str(), made.etag.as_deref());
        assert_eq!(message["changeKey"].as_str(), Some(made.version.as_str()));
    }

    // Nothing changed: an empty page and a fresh deltaLink.
    let (quiet, delta) = round(&h, &token, &delta, Some(2)).await;
    assert_eq!(values(&quiet), Vec::<Value>::new());

    // Two updates to one message, a deletion, a new message.
    change(
        &h,
        ChangeRequest::new(inbox.clone(), ChangeType::Updated).item(made[0]),
    )
    .await;
    let updated = change(
        &h,
        ChangeRequest::new(inbox.clone(), ChangeType::Updated).item(made[0]),
    )
    .await;
    change(
        &h,
        ChangeRequest::new(inbox.clone(), ChangeType::Deleted).item(made[1]),
    )
    .await;
    let new = change(&h, ChangeRequest::new(inbox.clone(), ChangeType::Created)).await;
    let (pages, delta) = round(&h, &token, &delta, Some(2)).await;
    assert_eq!(pages.len(), 2);
    let changes = values(&pages);
    assert_eq!(
        changes.len(),
        3,
        "each changed message exactly once: {changes:#?}"
    );
    assert_eq!(changes[0]["id"], made[0]);
    assert_eq!(changes[0]["@odata.etag"].as_str(), updated.etag.as_deref());
    assert_same_shape(&vendor_message(), &changes[0]);
    assert_eq!(
        changes[1],
        json!({"@odata.type": "#microsoft.graph.message", "id": made[1], "@removed": {"reason": "deleted"}})
    );
    assert_same_shape(&vendor_removed_message(), &changes[1]);
    assert_eq!(changes[2]["id"], new.item_id.as_str());

    // Without Prefer: Outlook's default page of 10 holds them all.
    let (all, _) = round(&h, &token, &inbox_delta(&h), None).await;
    assert_eq!(all.len(), 1);
    assert_eq!(values(&all).len(), 5);

    let (after, _) = round(&h, &token, &delta, None).await;
    assert!(values(&after).is_empty());

    let feed_reads: Vec<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.operation == Operation::ChangeFeed)
        .collect();
    assert_eq!(feed_reads.len(), 3 + 1 + 2 + 1 + 1);
    assert!(feed_reads.iter().all(|r| r.status == 200
        && r.method == "GET"
        && r.tenant.as_deref() == Some(TENANT)
        && r.resource.as_deref()
            == Some("users/5d3c1f7e-aaaa-bbbb-cccc-111122223333/mailFolders('inbox')/messages")));
    h.stop().await;
}

#[actix_web::test]
async fn calendar_view_delta_needs_a_window_and_reports_events_leaving_it_as_removed() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    let calendar = FeedRef::graph(CALENDAR);
    let now = h.sim.now();

    let no_window = h
        .call(
            reqwest::Method::GET,
            "/users/5d3c1f7e-aaaa-bbbb-cccc-111122223333/calendarView/delta",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(no_window.status, 400);
    assert_eq!(no_window.code(), "ErrorInvalidParameter");
    assert_eq!(
        no_window.message(),
        "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime."
    );

    let soon = change(
        &h,
        ChangeRequest::new(calendar.clone(), ChangeType::Created)
            .starting(now + TimeDelta::days(1)),
    )
    .await;
    let later = change(
        &h,
        ChangeRequest::new(calendar.clone(), ChangeType::Created)
            .starting(now + TimeDelta::days(2)),
    )
    .await;
    let far = change(
        &h,
        ChangeRequest::new(calendar.clone(), ChangeType::Created)
            .starting(now + TimeDelta::days(30)),
    )
    .await;

    let url = view_delta(&h, now, now + TimeDelta::days(7));
    let (pages, delta) = round(&h, &token, &url, Some(1)).await;
    assert_eq!(pages.len(), 2, "two events in the window, pages of one");
    let events = values(&pages);
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [soon.item_id.as_str(), later.item_id.as_str()]);
    for event in &events {
        assert_same_shape(&vendor_event(), event);
        let start = event["start"]["dateTime"].as_str().unwrap();
        assert_eq!(
            start.len(),
            27,
            "seven fraction digits and no zone: {start}"
        );
        assert!(!start.ends_with('Z'));
    }
    assert_eq!(
        pages[0]["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#Collection(event)"
    );

    // Renamed in the window; moved out of it; changed outside it.
    change(
        &h,
        ChangeRequest::new(calendar.clone(), ChangeType::Updated)
            .item(&soon.item_id)
            .subject("Moved up"),
    )
    .await;
    change(
        &h,
        ChangeRequest::new(calendar.clone(), ChangeType::Updated)
            .item(&later.item_id)
            .starting(now + TimeDelta::days(40)),
    )
    .await;
    change(
        &h,
        ChangeRequest::new(calendar.clone(), ChangeType::Updated).item(&far.item_id),
    )
    .await;
    let (pages, _) = round(&h, &token, &delta, None).await;
    let changes = values(&pages);
    assert_eq!(changes.len(), 3);
    assert_eq!(changes[0]["subject"], "Moved up");
    for removed in &changes[1..] {
        assert_same_shape(&vendor_removed_event(), removed);
        assert_eq!(removed["@removed"], json!({"reason": "deleted"}));
    }
    assert_eq!(changes[1]["id"], later.item_id.as_str());
    assert_eq!(changes[2]["id"], far.item_id.as_str());

    let bad = h
        .http
        .get(h.graph(
            "/users/5d3c1f7e-aaaa-bbbb-cccc-111122223333/calendarView/delta?startDateTime=soon&endDateTime=later",
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let bad = reply(bad).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.code(), "ErrorInvalidParameter");
    h.stop().await;
}

#[actix_web::test]
async fn expired_and_unknown_delta_tokens_answer_410_sync_state_not_found() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    let inbox = FeedRef::graph(INBOX);
    for _ in 0..2 {
        change(&h, ChangeRequest::new(inbox.clone(), ChangeType::Created)).await;
    }
    let (_, delta) = round(&h, &token, &inbox_delta(&h), None).await;
    let get = |url: String| {
        let request = h.http.get(url).bearer_auth(&token);
        async move { reply(request.send().await.unwrap()).await }
    };
    assert_eq!(get(delta.clone()).await.status, 200);

    // Expired by the control call.
    let expired = reply(
        h.http
            .post(format!("{}/_sim/changes/expire", h.server.base_url))
            .json(&json!({"provider": "graph", "resource": INBOX}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(expired.status, 204);
    let gone = get(delta).await;
    assert_eq!(gone.status, 410, "{:?}", gone.body);
    assert_eq!(gone.code(), "SyncStateNotFound");
    assert!(gone.body["error"]["innerError"]["request-id"].is_string());

    // A skip token mid-round, past the maximum token age on the provider clock.
    let first = reply(
        h.http
            .get(inbox_delta(&h))
            .bearer_auth(&token)
            .header("Prefer", "odata.maxpagesize=1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let next = first.body["@odata.nextLink"].as_str().unwrap().to_owned();
    h.sim.set_feed_token_max_age(Some(TimeDelta::minutes(10)));
    h.sim.advance(TimeDelta::minutes(11));
    let aged = get(next).await;
    assert_eq!(aged.status, 410);
    assert_eq!(aged.code(), "SyncStateNotFound");
    // A full round starts over.
    let (pages, delta) = round(&h, &token, &inbox_delta(&h), None).await;
    assert_eq!(values(&pages).len(), 2);

    // Never issued, and issued for another feed.
    let unknown = get(format!("{}?$deltatoken=made-up", inbox_delta(&h))).await;
    assert_eq!(unknown.status, 410);
    let token_only = delta.split("$deltatoken=").nth(1).unwrap();
    let elsewhere = get(h.graph(&format!(
        "/users/someone-else/mailFolders('Inbox')/messages/delta?$deltatoken={token_only}"
    )))
    .await;
    assert_eq!(elsewhere.status, 410);

    let statuses: Vec<u16> = h
        .sim
        .requests()
        .iter()
        .filter(|r| r.operation == Operation::ChangeFeed)
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [200, 200, 410, 200, 410, 200, 410, 410]);
    h.stop().await;
}

#[actix_web::test]
async fn delta_calls_authenticate_take_fault_rules_and_mind_whose_mailbox() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    change(
        &h,
        ChangeRequest::new(FeedRef::graph(INBOX), ChangeType::Created).delivery(Delivery::Drop),
    )
    .await;

    let anonymous = reply(h.http.get(inbox_delta(&h)).send().await.unwrap()).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.code(), "InvalidAuthenticationToken");
    assert!(anonymous.header("www-authenticate").is_some());

    let me = reply(
        h.http
            .get(h.graph("/me/mailFolders/inbox/messages/delta"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(me.status, 400);
    assert_eq!(
        me.message(),
        "/me request is only valid with delegated authentication flow."
    );

    h.sim.inject_fault(
        FaultRule::new(
            FaultOperation::ChangeFeed,
            Fault::Status {
                status: 503,
                code: "ServiceUnavailable".into(),
                retry_after_seconds: Some(4),
            },
        )
        .for_resource("INBOX")
        .times(1),
    );
    // Faults on other operations leave delta calls alone.
    h.sim.inject_fault(FaultRule::new(
        FaultOperation::Renew,
        Fault::Status {
            status: 500,
            code: "InternalServerError".into(),
            retry_after_seconds: None,
        },
    ));
    let down = reply(
        h.http
            .get(inbox_delta(&h))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(down.status, 503);
    assert_eq!(down.code(), "ServiceUnavailable");
    assert_eq!(down.header("retry-after"), Some("4"));
    let (pages, _) = round(&h, &token, &inbox_delta(&h), None).await;
    assert_eq!(values(&pages).len(), 1);

    // A non-delta path under /v1.0 still gets Graph's answer for it.
    let other = h
        .call(
            reqwest::Method::GET,
            "/users/x/messages/delta",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(other.status, 400);
    assert_eq!(
        other.message(),
        "Resource not found for the segment 'users'."
    );
    let post = reply(
        h.http
            .post(inbox_delta(&h))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(post.status, 405);

    let journal: Vec<(Operation, u16)> = h
        .sim
        .requests()
        .iter()
        .map(|r| (r.operation, r.status))
        .filter(|(op, _)| *op != Operation::Token)
        .collect();
    assert_eq!(
        journal,
        [
            (Operation::ChangeFeed, 401),
            (Operation::ChangeFeed, 400),
            (Operation::ChangeFeed, 503),
            (Operation::ChangeFeed, 200),
            (Operation::Other, 400),
            (Operation::ChangeFeed, 405),
        ]
    );

    // A delegated token reads the signed-in user's own folder through `me`.
    let delegated = h
        .token_request(
            TENANT,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("refresh_token", "0.A-user-consent"),
            ],
        )
        .await;
    let delegated = delegated.body["access_token"].as_str().unwrap().to_owned();
    let mine = change(
        &h,
        ChangeRequest::new(
            FeedRef::graph("me/mailFolders/inbox/messages"),
            ChangeType::Created,
        ),
    )
    .await;
    let (pages, delta) = round(
        &h,
        &delegated,
        &h.graph("/me/mailFolders('Inbox')/messages/delta"),
        None,
    )
    .await;
    assert_eq!(values(&pages)[0]["id"], mine.item_id.as_str());
    assert!(
        delta.contains("/v1.0/me/mailFolders('inbox')/messages/delta?$deltatoken="),
        "{delta}"
    );
    h.stop().await;
}
