//! The providers' request limits as a client meets them over HTTP: Outlook's
//! concurrent requests per app per mailbox, Graph's subscription writes per app
//! per tenant, Calendar's and Gmail's per-user quotas, forced throttling of a
//! tenant for hours of simulated time — and the journal that proves it.
//!
//! Requests are kept in flight by a subscriber that holds its validation
//! handshakes until the test lets them go, never by sleeping.

use super::support::{CLIENT_ID, Harness, INBOX, OTHER_TENANT, TENANT, reply};
use crate::{ForcedThrottle, LimitKind, Operation, RecordedRequest, RequestFilter, busiest_window};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use chrono::TimeDelta;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::TcpListener;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The mailbox [`INBOX`] names.
const MAILBOX: &str = "5d3c1f7e-aaaa-bbbb-cccc-111122223333";
/// Another app registration in the same tenant.
const OTHER_APP: &str = "99999999-8888-7777-6666-555555555555";
/// A Google OAuth client.
const GOOGLE_CLIENT: &str = "123456789012-limits.apps.googleusercontent.com";
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
/// Guard against a hung test if a request never reaches the subscriber; the
/// test never waits for it to pass.
const GUARD: Duration = Duration::from_secs(10);

/// What the holding subscriber shares with its handler.
struct HoldState {
    /// Paths of held handshakes, as they arrive.
    arrived: mpsc::UnboundedSender<String>,
    /// Becomes `true` when held handshakes may be answered.
    released: watch::Receiver<bool>,
}

/// A subscriber that answers validation handshakes on `/hold/...` only once
/// released, and every other handshake at once.
struct HoldingSubscriber {
    /// `http://127.0.0.1:PORT`.
    base_url: String,
    /// Paths of held handshakes as they arrive.
    arrivals: mpsc::UnboundedReceiver<String>,
    /// Send `true` to answer every held handshake.
    release: watch::Sender<bool>,
    /// Stops the server.
    handle: actix_web::dev::ServerHandle,
}

impl HoldingSubscriber {
    fn start() -> Self {
        let (arrived, arrivals) = mpsc::unbounded_channel();
        let (release, released) = watch::channel(false);
        let data = web::Data::new(HoldState { arrived, released });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(answer_handshake))
        })
        .workers(1)
        .shutdown_timeout(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            base_url,
            arrivals,
            release,
            handle,
        }
    }

    fn held_url(&self, n: usize) -> String {
        format!("{}/hold/{n}", self.base_url)
    }

    fn prompt_url(&self) -> String {
        format!("{}/prompt", self.base_url)
    }

    /// Waits until `n` held handshakes have arrived.
    async fn held(&mut self, n: usize) {
        for _ in 0..n {
            tokio::time::timeout(GUARD, self.arrivals.recv())
                .await
                .expect("a held handshake never arrived")
                .unwrap();
        }
    }
}

async fn answer_handshake(state: web::Data<HoldState>, req: HttpRequest) -> HttpResponse {
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    if req.path().starts_with("/hold") {
        state.arrived.send(req.path().to_owned()).unwrap();
        let mut released = state.released.clone();
        released.wait_for(|go| *go).await.unwrap();
    }
    HttpResponse::Ok()
        .content_type("text/plain")
        .body(query.get("validationToken").cloned().unwrap_or_default())
}

/// A create body for `resource` with only a notification URL (one handshake).
fn create_body(h: &Harness, resource: &str, notification_url: &str) -> Value {
    json!({
        "changeType": "created",
        "notificationUrl": notification_url,
        "resource": resource,
        "expirationDateTime": (h.sim.now() + TimeDelta::minutes(60)).to_rfc3339(),
    })
}

fn renew_body(h: &Harness) -> Value {
    json!({"expirationDateTime": (h.sim.now() + TimeDelta::minutes(90)).to_rfc3339()})
}

/// The `Retry-After` of an answer, in seconds.
fn retry_after(reply: &super::support::Reply) -> u64 {
    reply
        .header("retry-after")
        .expect("no Retry-After")
        .parse()
        .unwrap()
}

impl Harness {
    async fn google_post(&self, path: &str, token: &str, body: &Value) -> super::support::Reply {
        let url = format!("{}{path}", self.server.google_base_url());
        reply(
            self.http
                .post(url)
                .bearer_auth(token)
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }
}

#[actix_web::test]
async fn a_fifth_concurrent_request_on_a_mailbox_is_throttled_and_other_mailboxes_and_apps_are_not()
{
    let h = Harness::start().await;
    let mut subscriber = HoldingSubscriber::start();
    let token = h.app_token(TENANT).await;
    let other_app = h.sim.issue_access_token(TENANT, OTHER_APP);
    let existing = h
        .create_ok(&token, &create_body(&h, INBOX, &subscriber.prompt_url()))
        .await;
    let existing = format!("/subscriptions/{}", existing["id"].as_str().unwrap());

    // Four creates on the mailbox, each held in its validation handshake.
    let held: Vec<_> = (0..4)
        .map(|n| {
            let request = h
                .http
                .post(h.graph("/subscriptions"))
                .bearer_auth(&token)
                .json(&create_body(&h, INBOX, &subscriber.held_url(n)));
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    subscriber.held(4).await;
    assert_eq!(
        h.sim.mailbox_requests_in_flight(TENANT, CLIENT_ID, MAILBOX),
        4
    );

    // A fifth request on that mailbox by that app is refused, a create as a renew.
    let fifth = h
        .call(
            Method::POST,
            "/subscriptions",
            Some(&token),
            Some(&create_body(&h, INBOX, &subscriber.prompt_url())),
        )
        .await;
    assert_eq!(fifth.status, 429, "{:?}", fifth.body);
    assert_eq!(fifth.code(), "ApplicationThrottled");
    assert_eq!(
        fifth.message(),
        "Application is over its MailboxConcurrency limit."
    );
    assert_eq!(retry_after(&fifth), 1);
    let renew = h
        .call(
            Method::PATCH,
            &existing,
            Some(&token),
            Some(&renew_body(&h)),
        )
        .await;
    assert_eq!(renew.status, 429);
    assert_eq!(renew.code(), "ApplicationThrottled");

    // Another mailbox, another app on the same mailbox, and a request on no
    // mailbox at all are served.
    let elsewhere = "users/another-user/mailFolders('Inbox')/messages";
    h.create_ok(
        &token,
        &create_body(&h, elsewhere, &subscriber.prompt_url()),
    )
    .await;
    h.create_ok(
        &other_app,
        &create_body(&h, INBOX, &subscriber.prompt_url()),
    )
    .await;
    let listed = h
        .call(Method::GET, "/subscriptions", Some(&token), None)
        .await;
    assert_eq!(listed.status, 200);

    // Once the four are answered, their slots are free again.
    subscriber.release.send(true).unwrap();
    for request in held {
        assert_eq!(request.await.unwrap(), 201);
    }
    assert_eq!(
        h.sim.mailbox_requests_in_flight(TENANT, CLIENT_ID, MAILBOX),
        0
    );
    let renewed = h
        .call(
            Method::PATCH,
            &existing,
            Some(&token),
            Some(&renew_body(&h)),
        )
        .await;
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);

    // The journal names who was refused, by which limit, with which Retry-After.
    let refused = h.sim.requests_where(&RequestFilter {
        status: Some(429),
        ..RequestFilter::default()
    });
    assert_eq!(refused.len(), 2);
    for r in &refused {
        assert_eq!(r.throttled_by, Some(LimitKind::MailboxConcurrency));
        assert_eq!(r.tenant.as_deref(), Some(TENANT));
        assert_eq!(r.app.as_deref(), Some(CLIENT_ID));
        assert_eq!(r.user.as_deref(), Some(MAILBOX));
        assert_eq!(r.retry_after_seconds, Some(1));
    }
    subscriber.handle.stop(false).await;
    h.stop().await;
}

#[actix_web::test]
async fn the_1001st_subscription_write_in_20_seconds_is_throttled_until_the_window_has_passed() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    let created = h.create_ok(&token, &h.subscription_body(INBOX, 60)).await;
    let path = format!("/subscriptions/{}", created["id"].as_str().unwrap());
    // The create was write 1; 999 renews make 1,000 (on one kept-alive
    // connection, to keep the test quick).
    let pooled = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..999 {
        let renewed = pooled
            .patch(h.graph(&path))
            .bearer_auth(&token)
            .json(&renew_body(&h))
            .send()
            .await
            .unwrap();
        assert_eq!(renewed.status(), 200);
    }

    let refused = h
        .call(Method::PATCH, &path, Some(&token), Some(&renew_body(&h)))
        .await;
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    assert_eq!(refused.code(), "TooManyRequests");
    let wait = retry_after(&refused);
    assert!((1..=20).contains(&wait), "{wait}");
    // Writes only: a read of the same app is served; so is another tenant.
    assert_eq!(
        h.call(Method::GET, &path, Some(&token), None).await.status,
        200
    );
    let other = h.app_token(OTHER_TENANT).await;
    h.create_ok(&other, &h.subscription_body(INBOX, 60)).await;
    // A write that does not wait is refused again (and counted: Graph keeps
    // counting while it throttles).
    let impatient = h.call(Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(impatient.status, 429);
    let wait = wait.max(retry_after(&impatient));

    h.sim
        .advance(TimeDelta::seconds(i64::try_from(wait).unwrap()));
    let renewed = h
        .call(Method::PATCH, &path, Some(&token), Some(&renew_body(&h)))
        .await;
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);

    // The journal proves both sides: never more than 1,000 writes served in
    // any 20 s, and the one request that did not wait for Retry-After.
    let writes: Vec<RecordedRequest> = h
        .sim
        .requests_where(&RequestFilter {
            tenant: Some(TENANT.into()),
            writes: Some(true),
            ..RequestFilter::default()
        })
        .into_iter()
        .filter(|r| r.status < 400)
        .collect();
    assert_eq!(writes.len(), 1_001);
    assert_eq!(busiest_window(&writes, TimeDelta::seconds(20)), 1_000);
    let refusals = h.sim.requests_where(&RequestFilter {
        tenant: Some(TENANT.into()),
        status: Some(429),
        ..RequestFilter::default()
    });
    assert_eq!(refusals.len(), 2);
    assert!(
        refusals
            .iter()
            .all(|r| r.throttled_by == Some(LimitKind::SubscriptionWritesPerApp))
    );
    let early = h.sim.early_retries();
    assert_eq!(early.len(), 1, "{early:#?}");
    assert_eq!(early[0].early.operation, Operation::Delete);
    h.stop().await;
}

#[actix_web::test]
async fn calendar_and_gmail_over_the_per_user_quota_get_googles_403_and_other_users_are_served() {
    let h = Harness::start().await;
    let alice = h.sim.issue_google_access_token(GOOGLE_CLIENT, ALICE);
    let bob = h.sim.issue_google_access_token(GOOGLE_CLIENT, BOB);
    let stop = |n: usize| json!({"id": format!("no-such-channel-{n}"), "resourceId": "r"});

    // 600 Calendar requests a minute per user; failed ones count too.
    for n in 0..600 {
        let answered = h
            .google_post("/calendar/v3/channels/stop", &alice, &stop(n))
            .await;
        assert_eq!(answered.status, 404, "{:?}", answered.body);
    }
    let over = h
        .google_post("/calendar/v3/channels/stop", &alice, &stop(600))
        .await;
    assert_eq!(over.status, 403, "{:?}", over.body);
    let error = &over.body["error"];
    assert_eq!(error["code"], 403);
    assert_eq!(error["message"], "User Rate Limit Exceeded");
    assert_eq!(error["errors"][0]["domain"], "usageLimits");
    assert_eq!(error["errors"][0]["reason"], "userRateLimitExceeded");
    assert!(over.header("retry-after").is_none());
    let other_user = h
        .google_post("/calendar/v3/channels/stop", &bob, &stop(0))
        .await;
    assert_eq!(other_user.status, 404);

    // Gmail counts quota units: a watch is 100 of the 15,000 a minute.
    let watch = json!({"topicName": "projects/sim-project/topics/gmail"});
    for _ in 0..150 {
        let watched = h
            .google_post("/gmail/v1/users/me/watch", &alice, &watch)
            .await;
        assert_eq!(watched.status, 200, "{:?}", watched.body);
    }
    let over = h
        .google_post("/gmail/v1/users/me/watch", &alice, &watch)
        .await;
    assert_eq!(over.status, 403);
    assert_eq!(
        over.body["error"]["errors"][0]["reason"],
        "userRateLimitExceeded"
    );
    let other_user = h
        .google_post("/gmail/v1/users/me/watch", &bob, &watch)
        .await;
    assert_eq!(other_user.status, 200);

    // A minute later, the window has moved on.
    h.sim.advance(TimeDelta::seconds(60));
    let again = h
        .google_post("/calendar/v3/channels/stop", &alice, &stop(601))
        .await;
    assert_eq!(again.status, 404);
    let again = h
        .google_post("/gmail/v1/users/me/watch", &alice, &watch)
        .await;
    assert_eq!(again.status, 200);

    let refused = h.sim.requests_where(&RequestFilter {
        user: Some(ALICE.into()),
        status: Some(403),
        ..RequestFilter::default()
    });
    let kinds: Vec<_> = refused.iter().map(|r| r.throttled_by).collect();
    assert_eq!(
        kinds,
        [
            Some(LimitKind::CalendarPerUser),
            Some(LimitKind::GmailPerUser)
        ]
    );
    assert!(
        refused
            .iter()
            .all(|r| r.app.as_deref() == Some(GOOGLE_CLIENT))
    );
    h.stop().await;
}

#[actix_web::test]
async fn a_tenant_throttled_for_three_simulated_hours_gets_429_throughout_and_is_served_after() {
    let h = Harness::start().await;
    let token = h.app_token(TENANT).await;
    let created = h
        .create_ok(&token, &h.subscription_body(INBOX, 24 * 60))
        .await;
    let path = format!("/subscriptions/{}", created["id"].as_str().unwrap());
    let other = h.app_token(OTHER_TENANT).await;

    let window = h
        .sim
        .force_throttle(ForcedThrottle::graph_tenant(TENANT, TimeDelta::hours(3)));
    assert_eq!(window.until - window.from, TimeDelta::hours(3));
    assert_eq!(h.sim.throttle_windows(), std::slice::from_ref(&window));

    let every_call = [
        (Method::GET, path.as_str(), None),
        (Method::PATCH, path.as_str(), Some(renew_body(&h))),
        (Method::DELETE, path.as_str(), None),
        (Method::GET, "/subscriptions", None),
        (
            Method::POST,
            "/subscriptions",
            Some(h.subscription_body(INBOX, 60)),
        ),
    ];
    for (method, path, body) in &every_call {
        let answered = h
            .call(method.clone(), path, Some(&token), body.as_ref())
            .await;
        assert_eq!(answered.status, 429, "{method} {path}: {:?}", answered.body);
        assert_eq!(answered.code(), "TooManyRequests");
        // Without a fixed Retry-After, the time left in the window.
        assert_eq!(retry_after(&answered), 3 * 3600);
    }
    // Another tenant is served.
    h.create_ok(&other, &h.subscription_body(INBOX, 60)).await;

    // Two hours on (access tokens last one): the token endpoint is not Graph
    // and still answers; Graph still refuses, for the hour that is left.
    h.sim.advance(TimeDelta::hours(2));
    let token = h.app_token(TENANT).await;
    let later = h.call(Method::GET, &path, Some(&token), None).await;
    assert_eq!(later.status, 429);
    assert_eq!(retry_after(&later), 3600);

    h.sim.advance(TimeDelta::hours(1));
    assert!(h.sim.throttle_windows().is_empty());
    let token = h.app_token(TENANT).await;
    assert_eq!(
        h.call(Method::GET, &path, Some(&token), None).await.status,
        200
    );
    let renewed = h
        .call(Method::PATCH, &path, Some(&token), Some(&renew_body(&h)))
        .await;
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);

    // The journal shows it: every Graph request of the tenant inside the window
    // was refused by the forced throttle, every one after it served.
    let graph_calls: Vec<RecordedRequest> = h
        .sim
        .requests_for_tenant(TENANT)
        .into_iter()
        .filter(|r| r.operation != Operation::Token)
        .collect();
    let (inside, after): (Vec<_>, Vec<_>) = graph_calls
        .iter()
        .filter(|r| r.at >= window.from)
        .partition(|r| r.at < window.until);
    assert_eq!(inside.len(), every_call.len() + 1);
    assert!(inside.iter().all(|r| r.status == 429
        && r.throttled_by == Some(LimitKind::ForcedTenant)
        && r.retry_after_seconds.is_some()));
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|r| r.status < 400));
    // This test kept calling while told to wait: the journal catches it; the
    // calls after the window were not early.
    let early = h.sim.early_retries();
    assert!(!early.is_empty());
    assert!(early.iter().all(|e| e.early.at < window.until));
    h.stop().await;
}

#[actix_web::test]
async fn control_api_throttles_google_users_and_queries_the_journal() {
    let h = Harness::start().await;
    let alice = h.sim.issue_google_access_token(GOOGLE_CLIENT, ALICE);
    let bob = h.sim.issue_google_access_token(GOOGLE_CLIENT, BOB);
    let watch = |id: &str| {
        json!({
            "id": id,
            "type": "web_hook",
            "address": format!("{}/webhooks/google", h.receiver.base_url),
        })
    };
    let calendar = "/calendar/v3/calendars/primary/events/watch";

    let bad = h
        .sim_control(
            Method::POST,
            "/throttles",
            Some(json!({"scope": {"google_users": []}, "duration_seconds": 60})),
        )
        .await;
    assert_eq!(bad.status, 400);
    let set = h
        .sim_control(
            Method::POST,
            "/throttles",
            Some(json!({
                "scope": {"google_users": [ALICE]},
                "duration_seconds": 3600,
                "retry_after_seconds": 120,
            })),
        )
        .await;
    assert_eq!(set.status, 201, "{:?}", set.body);
    assert_eq!(set.body["retry_after_seconds"], 120);
    let listed = h.sim_control(Method::GET, "/throttles", None).await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);

    for id in ["c1", "c2"] {
        let throttled = h.google_post(calendar, &alice, &watch(id)).await;
        assert_eq!(throttled.status, 429, "{:?}", throttled.body);
        assert_eq!(
            throttled.body["error"]["errors"][0]["reason"],
            "rateLimitExceeded"
        );
        assert_eq!(throttled.body["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(retry_after(&throttled), 120);
    }
    let served = h.google_post(calendar, &bob, &watch("c3")).await;
    assert_eq!(served.status, 200, "{:?}", served.body);

    let alices = h
        .sim_control(
            Method::GET,
            &format!("/requests?user={ALICE}&status=429"),
            None,
        )
        .await;
    let alices: Vec<RecordedRequest> = serde_json::from_value(alices.body).unwrap();
    assert_eq!(alices.len(), 2);
    assert!(
        alices
            .iter()
            .all(|r| r.throttled_by == Some(LimitKind::ForcedUser))
    );
    let early = h
        .sim_control(Method::GET, "/requests/early-retries", None)
        .await;
    assert_eq!(early.body.as_array().unwrap().len(), 1, "{:?}", early.body);
    let busiest = h
        .sim_control(
            Method::GET,
            &format!("/requests/busiest-window?seconds=60&tenant={GOOGLE_CLIENT}&writes=true"),
            None,
        )
        .await;
    assert_eq!(busiest.body["requests"], 3);
    let config = h.sim_control(Method::GET, "/config", None).await;
    assert_eq!(
        config.body["limits"]["graph_subscription_writes_per_app"],
        json!({"max": 1000, "window_seconds": 20})
    );

    let cleared = h.sim_control(Method::DELETE, "/throttles", None).await;
    assert_eq!(cleared.status, 204);
    let served = h.google_post(calendar, &alice, &watch("c4")).await;
    assert_eq!(served.status, 200, "{:?}", served.body);
    h.stop().await;
}
