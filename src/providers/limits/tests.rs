//! The limiter on a scaled clock under paused tokio time: budgets refill on
//! domain time, scopes do not leak into each other, a rate limit blocks its whole
//! scope until `Retry-After` and then lets one probe through.

use super::window::Window;
use super::*;
use crate::providers::graph::{GraphError, Operation};
use chrono::TimeZone;
use subkeeper_actors::domain::{ErrorClass, TenantId};
use subkeeper_actors::ports::clock::ScaledClock;

/// Domain seconds per tokio second in these tests: waits are in domain time,
/// and the paused tokio clock runs 60× slower than it.
const SPEED: u32 = 60;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap()
}

fn settings(graph_writes: u32) -> LimitSettings {
    LimitSettings {
        graph_writes_per_window: graph_writes,
        graph_mailbox_concurrency: 2,
        calendar_requests_per_minute: 5,
        gmail_units_per_minute: 250,
        probe_timeout: Duration::from_secs(60),
    }
}

fn limits(settings: LimitSettings) -> (Arc<Limits>, SharedClock) {
    let clock: SharedClock = Arc::new(ScaledClock::new(t0(), SPEED));
    (
        Arc::new(Limits::new(settings, Share::default(), Arc::clone(&clock))),
        clock,
    )
}

fn provider(kind: ProviderKind, resource: &str) -> Provider {
    Provider {
        id: ProviderId::new(),
        tenant: TenantId::parse("acme").unwrap(),
        kind,
        display_name: resource.to_owned(),
        resource: resource.to_owned(),
        credentials_id: Some(Uuid::new_v4()),
        enabled: true,
        credentials_version: 1,
    }
}

fn graph(mailbox: &str) -> Provider {
    provider(
        ProviderKind::GraphMail,
        &format!("users/{mailbox}/messages"),
    )
}

fn charge(provider: &Provider) -> Charge<'_> {
    Charge {
        family: Family::of(provider.kind),
        provider,
        credentials: provider.credentials_id.unwrap(),
        units: 1,
    }
}

fn app(client: &str, tenant: &str) -> AppIdentity {
    AppIdentity {
        client_id: client.to_owned(),
        authority_tenant: tenant.to_owned(),
    }
}

/// Domain time since `t0`.
fn elapsed(clock: &SharedClock) -> TimeDelta {
    clock.now() - t0()
}

#[test]
fn bookings_never_put_more_than_max_in_any_span() {
    let span = TimeDelta::seconds(20);
    let mut window = Window::new(span);
    let mut booked = Vec::new();
    // 35 callers arrive over 5 s; at most 10 per 20 s.
    for i in 0..35 {
        let now = t0() + TimeDelta::milliseconds(i * 150);
        booked.push(window.book(now, 10, 1));
    }
    for (i, at) in booked.iter().enumerate() {
        let in_span = booked
            .iter()
            .filter(|b| **b <= *at && *at - **b < span)
            .count();
        assert!(
            in_span <= 10,
            "booking {i} at {at} has {in_span} in its span"
        );
    }
    // Evenly spaced, in arrival order: one every 2 s.
    assert_eq!(booked[0], t0());
    assert_eq!(booked[1], t0() + TimeDelta::seconds(2));
    assert_eq!(booked[34], t0() + TimeDelta::seconds(68));
    // An idle budget books at once again.
    let later = t0() + TimeDelta::seconds(100);
    assert_eq!(window.book(later, 10, 1), later);
    // Units: 100-unit bookings in a 250-unit budget are 24 s apart.
    let mut gmail = Window::new(TimeDelta::seconds(60));
    assert_eq!(gmail.book(t0(), 250, 100), t0());
    assert_eq!(gmail.book(t0(), 250, 100), t0() + TimeDelta::seconds(24));
    assert_eq!(gmail.book(t0(), 250, 100), t0() + TimeDelta::seconds(48));
}

#[test]
fn sends_are_counted_where_they_really_went() {
    let mut window = Window::new(TimeDelta::seconds(20));
    for i in 0..3 {
        window.record_send(t0() + TimeDelta::seconds(i), 1);
    }
    let now = t0() + TimeDelta::seconds(10);
    assert_eq!(window.send_wait(now, 4, 1), TimeDelta::zero());
    assert_eq!(window.send_wait(now, 3, 1), TimeDelta::seconds(10));
    assert_eq!(window.sent_in_window(t0() + TimeDelta::seconds(20)), 2);
    assert!(window.is_idle(t0() + TimeDelta::seconds(22)));
}

#[tokio::test(start_paused = true)]
async fn budget_refills_on_the_domain_clock() {
    let (limits, clock) = limits(settings(10));
    let acme = app("app-1", "acme-aad");
    let providers: Vec<Provider> = (0..11).map(|i| graph(&format!("u{i}"))).collect();
    let real = tokio::time::Instant::now();
    limits.admit(&charge(&providers[0]), &acme).await;
    assert_eq!(elapsed(&clock), TimeDelta::zero(), "the first goes at once");
    // Ten per 20 s: one every 2 s of domain time, which is 2/60 s of tokio
    // time on this clock. The eleventh goes 20 s after the first.
    for p in &providers[1..] {
        limits.admit(&charge(p), &acme).await;
    }
    let waited = elapsed(&clock);
    assert!(
        waited >= TimeDelta::seconds(20) && waited < TimeDelta::seconds(21),
        "{waited}"
    );
    let real = real.elapsed();
    assert!(
        real >= Duration::from_millis(333) && real < Duration::from_millis(400),
        "{real:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn scopes_do_not_share_budgets() {
    let (limits, clock) = limits(settings(1));
    let p = graph("alice");
    limits.admit(&charge(&p), &app("app-1", "acme-aad")).await;
    // Another tenant, another app in the same tenant (Graph's writes budget is
    // per app per tenant), and a Google account all go at once.
    limits.admit(&charge(&p), &app("app-1", "globex-aad")).await;
    limits.admit(&charge(&p), &app("app-2", "acme-aad")).await;
    let calendar = provider(ProviderKind::GoogleCalendar, "alice@example.com");
    limits
        .admit(&charge(&calendar), &app("google-client", "google"))
        .await;
    assert_eq!(elapsed(&clock), TimeDelta::zero());
    // The tenant's name is compared as Graph does, ignoring case.
    limits.admit(&charge(&p), &app("app-1", "ACME-AAD")).await;
    assert!(elapsed(&clock) >= TimeDelta::seconds(20));
}

#[tokio::test(start_paused = true)]
async fn sending_is_checked_against_what_went_out() {
    // Requests that never booked (an orphan's delete, a 401's second try) are
    // paced by the sends themselves.
    let (limits, clock) = limits(settings(2));
    let p = graph("alice");
    let acme = app("app-1", "acme-aad");
    for _ in 0..2 {
        limits
            .before_send(&charge(&p), &acme)
            .await
            .unwrap()
            .answered(None);
    }
    assert_eq!(elapsed(&clock), TimeDelta::zero());
    limits
        .before_send(&charge(&p), &acme)
        .await
        .unwrap()
        .answered(None);
    assert!(elapsed(&clock) >= TimeDelta::seconds(20));
}

#[tokio::test(start_paused = true)]
async fn retry_after_blocks_the_whole_tenant_then_one_probe_goes_first() {
    let (limits, clock) = limits(settings(100));
    let (alice, bob, carol) = (graph("alice"), graph("bob"), graph("carol"));
    let acme = app("app-1", "acme-aad");
    let ticket = limits.before_send(&charge(&alice), &acme).await.unwrap();
    ticket.answered(Some(RateLimited::Caller {
        retry_after: Some(TimeDelta::minutes(30)),
    }));

    // Every request for the tenant is held — another mailbox, another app —
    // with what is left of the wait; another tenant is not.
    let held = limits
        .before_send(&charge(&bob), &app("app-2", "acme-aad"))
        .await
        .unwrap_err();
    assert_eq!(held.until, t0() + TimeDelta::minutes(30));
    assert_eq!(held.retry_after, TimeDelta::minutes(30));
    limits
        .before_send(&charge(&bob), &app("app-1", "globex-aad"))
        .await
        .unwrap()
        .answered(None);
    assert_eq!(
        limits.blocked_until(&charge(&carol), &acme),
        Some(t0() + TimeDelta::minutes(30))
    );

    // `admit` does not sit out a wait that long: it returns at once and the
    // send is held (the lifecycle comes back when the wait is over).
    limits.admit(&charge(&carol), &acme).await;
    assert_eq!(elapsed(&clock), TimeDelta::zero());

    // Once it is over, one request probes; the others wait for its answer.
    tokio::time::sleep(clock.timer_delay(TimeDelta::minutes(30))).await;
    let probe = limits.before_send(&charge(&bob), &acme).await.unwrap();
    let waiting = {
        let limits = Arc::clone(&limits);
        let carol = carol.clone();
        let acme = acme.clone();
        tokio::spawn(async move {
            limits
                .before_send(&charge(&carol), &acme)
                .await
                .map(|t| t.answered(None))
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "carol went out while bob probed");
    // Still throttled: the tenant waits again and carol is held.
    probe.answered(Some(RateLimited::Caller {
        retry_after: Some(TimeDelta::minutes(10)),
    }));
    let held = waiting.await.unwrap().unwrap_err();
    assert!(held.until >= t0() + TimeDelta::minutes(40));

    // The next probe is answered: the tenant is open to everyone.
    tokio::time::sleep(clock.timer_delay(TimeDelta::minutes(10) + TimeDelta::seconds(1))).await;
    limits
        .before_send(&charge(&carol), &acme)
        .await
        .unwrap()
        .answered(None);
    limits
        .before_send(&charge(&alice), &acme)
        .await
        .unwrap()
        .answered(None);
    assert_eq!(limits.blocked_until(&charge(&alice), &acme), None);
}

#[tokio::test(start_paused = true)]
async fn a_short_wait_is_waited_out_before_the_permit() {
    let (limits, clock) = limits(settings(100));
    let (alice, bob) = (graph("alice"), graph("bob"));
    let acme = app("app-1", "acme-aad");
    limits
        .before_send(&charge(&alice), &acme)
        .await
        .unwrap()
        .answered(Some(RateLimited::Caller {
            retry_after: Some(TimeDelta::seconds(5)),
        }));
    limits.admit(&charge(&bob), &acme).await;
    assert!(elapsed(&clock) >= TimeDelta::seconds(5));
    limits
        .before_send(&charge(&bob), &acme)
        .await
        .unwrap()
        .answered(None);
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_probe_is_given_up() {
    let (limits, clock) = limits(settings(100));
    let (alice, bob) = (graph("alice"), graph("bob"));
    let acme = app("app-1", "acme-aad");
    limits
        .before_send(&charge(&alice), &acme)
        .await
        .unwrap()
        .answered(Some(RateLimited::Caller { retry_after: None }));
    // No Retry-After: Graph's default wait.
    assert_eq!(
        limits.blocked_until(&charge(&bob), &acme),
        Some(t0() + GRAPH_DEFAULT_RETRY_AFTER)
    );
    tokio::time::sleep(clock.timer_delay(GRAPH_DEFAULT_RETRY_AFTER)).await;
    // The probe's request times out (the ticket is dropped unanswered): the
    // next request probes instead of waiting for an answer that never comes.
    drop(limits.before_send(&charge(&alice), &acme).await.unwrap());
    limits
        .before_send(&charge(&bob), &acme)
        .await
        .unwrap()
        .answered(None);
}

#[tokio::test(start_paused = true)]
async fn google_rate_limits_reach_the_account_or_the_project() {
    let (limits, _clock) = limits(settings(100));
    let client = app("google-client", "google");
    let alice_calendar = provider(ProviderKind::GoogleCalendar, "alice@example.com");
    // The same account through another credentials row (its Gmail provider).
    let alice_gmail = provider(ProviderKind::Gmail, "Alice@Example.com");
    let bob = provider(ProviderKind::GoogleCalendar, "bob@example.com");
    limits
        .before_send(&charge(&alice_calendar), &client)
        .await
        .unwrap()
        .answered(Some(RateLimited::Caller {
            retry_after: Some(TimeDelta::minutes(5)),
        }));
    assert!(
        limits
            .before_send(&charge(&alice_gmail), &client)
            .await
            .is_err()
    );
    limits
        .before_send(&charge(&bob), &client)
        .await
        .unwrap()
        // The project's quota: every account of the client waits (Google
        // sends no Retry-After for it).
        .answered(Some(RateLimited::Project { retry_after: None }));
    let held = limits
        .before_send(&charge(&bob), &client)
        .await
        .unwrap_err();
    assert_eq!(held.retry_after, GOOGLE_DEFAULT_RETRY_AFTER);
    // Another OAuth client is another project.
    limits
        .before_send(&charge(&bob), &app("other-client", "google"))
        .await
        .unwrap()
        .answered(None);
}

#[tokio::test(start_paused = true)]
async fn gmail_is_charged_in_quota_units() {
    let (limits, clock) = limits(settings(100));
    let client = app("google-client", "google");
    let mailbox = provider(ProviderKind::Gmail, "carol@example.com");
    let watch = Charge {
        units: 100,
        ..charge(&mailbox)
    };
    // 250 units a minute: a 100-unit watch every 24 s.
    limits.admit(&watch, &client).await;
    limits.admit(&watch, &client).await;
    let waited = elapsed(&clock);
    assert!(
        waited >= TimeDelta::seconds(24) && waited < TimeDelta::seconds(25),
        "{waited}"
    );
    let one = Charge {
        units: 1,
        ..charge(&mailbox)
    };
    limits.admit(&one, &client).await;
    let waited = elapsed(&clock);
    assert!(
        waited >= TimeDelta::seconds(48) && waited < TimeDelta::seconds(49),
        "{waited}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_mailbox_takes_at_most_its_cap_of_requests_at_once() {
    let (limits, _clock) = limits(settings(100));
    let acme = app("app-1", "acme-aad");
    let (calendar, mail) = (
        provider(
            ProviderKind::GraphCalendar,
            "users/Dana@acme.example/events",
        ),
        graph("dana@acme.example"),
    );
    let first = limits.before_send(&charge(&calendar), &acme).await.unwrap();
    let second = limits.before_send(&charge(&mail), &acme).await.unwrap();
    let third = {
        let limits = Arc::clone(&limits);
        let mail = mail.clone();
        let acme = acme.clone();
        tokio::spawn(async move { limits.before_send(&charge(&mail), &acme).await.is_ok() })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !third.is_finished(),
        "a third request on the mailbox went out"
    );
    // Another mailbox is not held up.
    drop(
        limits
            .before_send(&charge(&graph("erin")), &acme)
            .await
            .unwrap(),
    );
    first.answered(None);
    assert!(third.await.unwrap());
    drop(second);
}

#[tokio::test(start_paused = true)]
async fn instances_share_one_budget() {
    let (limits, clock) = limits(settings(10));
    limits.share().set_instances(2);
    let p = graph("alice");
    let acme = app("app-1", "acme-aad");
    for _ in 0..6 {
        limits.admit(&charge(&p), &acme).await;
    }
    // Half of 10 per 20 s each: one every 4 s, the sixth 20 s after the first
    // (tokio's timers round up to the millisecond: 60 ms of domain time here).
    let waited = elapsed(&clock);
    assert!(
        waited >= TimeDelta::seconds(20) && waited < TimeDelta::seconds(21),
        "{waited}"
    );
    assert_eq!(Share::default().of(3), 3);
    let three = Share::default();
    three.set_instances(3);
    assert_eq!((three.of(2), three.of(0)), (1, 0));
}

#[test]
fn a_held_request_is_throttled_until_the_wait_ends() {
    let p = graph("alice");
    let error = GraphError::Held {
        operation: Operation::Renew,
        held: Held {
            until: t0() + TimeDelta::minutes(30),
            retry_after: TimeDelta::minutes(30),
            scope: "this Microsoft 365 tenant",
        },
    };
    let classified = error.classify(&p);
    assert_eq!(classified.class, ErrorClass::Throttled);
    assert_eq!(classified.retry_after, Some(TimeDelta::minutes(30)));
    assert_eq!(classified.http_status, None);
    assert!(
        classified.message.contains("not sent"),
        "{}",
        classified.message
    );
    assert!(!error.may_have_created());
}

#[test]
fn mailboxes_are_named_as_outlook_counts_them() {
    assert_eq!(
        outlook_mailbox("users/Alice@Contoso.com/messages").as_deref(),
        Some("alice@contoso.com")
    );
    assert_eq!(
        outlook_mailbox("/users('a1b2')/events").as_deref(),
        Some("a1b2")
    );
    assert_eq!(
        outlook_mailbox("me/mailFolders('Inbox')/messages").as_deref(),
        Some("me")
    );
    assert_eq!(
        outlook_mailbox("groups/G1/conversations").as_deref(),
        Some("g1")
    );
    assert_eq!(outlook_mailbox("communications/callRecords"), None);
    assert_eq!(outlook_mailbox("users"), None);
}
