//! The Google adapters' pure parts: classification of Google's error answers and
//! the wire shapes. Round trips against the simulator live in `tests/it/google.rs`.

use super::*;
use subkeeper_actors::domain::{ErrorClass, ProviderId, TenantId};

fn provider(kind: ProviderKind) -> Provider {
    Provider {
        id: ProviderId(uuid::Uuid::new_v4()),
        tenant: TenantId::parse("acme").unwrap(),
        kind,
        display_name: "test".into(),
        resource: "team@example.com".into(),
        credentials_id: Some(uuid::Uuid::new_v4()),
        enabled: true,
        credentials_version: 0,
    }
}

fn status(call: Call, status: u16, body: &str, retry: Option<i64>) -> ApiError {
    GoogleError::Status {
        call,
        status,
        body: GoogleErrorBody::parse(body.as_bytes()),
        retry_after: retry.map(TimeDelta::seconds),
    }
    .classify(&provider(ProviderKind::GoogleCalendar))
}

fn google_error(code: u16, domain: &str, reason: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": "m", "errors": [{"domain": domain, "reason": reason, "message": "m"}]}}).to_string()
}

#[test]
fn rate_limits_are_throttled_and_other_refusals_permanent() {
    let rate = status(
        Call::EventsWatch,
        403,
        &google_error(403, "usageLimits", "rateLimitExceeded"),
        Some(7),
    );
    assert_eq!(rate.class, ErrorClass::Throttled);
    assert_eq!(rate.retry_after, Some(TimeDelta::seconds(7)));
    let user = status(
        Call::EventsWatch,
        403,
        &google_error(403, "usageLimits", "userRateLimitExceeded"),
        None,
    );
    assert_eq!(user.class, ErrorClass::Throttled);
    assert_eq!(
        status(Call::UsersWatch, 429, "", None).class,
        ErrorClass::Throttled
    );
    let forbidden = status(
        Call::EventsWatch,
        403,
        &google_error(403, "global", "forbidden"),
        None,
    );
    assert_eq!(forbidden.class, ErrorClass::Permanent);
    assert!(
        forbidden.message.contains("calendar.readonly"),
        "{}",
        forbidden.message
    );
    let missing = status(
        Call::EventsWatch,
        404,
        &google_error(404, "global", "notFound"),
        None,
    );
    assert_eq!(missing.class, ErrorClass::Permanent);
    assert!(
        missing.message.contains("team@example.com"),
        "{}",
        missing.message
    );
    assert_eq!(
        status(Call::EventsWatch, 400, "", None).class,
        ErrorClass::Permanent
    );
    assert_eq!(
        status(Call::EventsWatch, 500, "", None).class,
        ErrorClass::Transient
    );
    assert_eq!(
        status(Call::EventsWatch, 503, "", None).class,
        ErrorClass::Transient
    );
    assert_eq!(
        status(Call::EventsWatch, 503, "", Some(3)).class,
        ErrorClass::Throttled
    );
    let p = provider(ProviderKind::GoogleCalendar);
    assert_eq!(
        GoogleError::Unauthorized {
            call: Call::EventsWatch,
            body: GoogleErrorBody::default()
        }
        .classify(&p)
        .class,
        ErrorClass::Auth
    );
    assert_eq!(
        GoogleError::Timeout {
            call: Call::EventsWatch,
            timeout: Duration::from_secs(1)
        }
        .classify(&p)
        .class,
        ErrorClass::Transient
    );
}

#[test]
fn expirations_are_unix_milliseconds() {
    assert_eq!(
        parse_millis("1426325213000"),
        DateTime::parse_from_rfc3339("2015-03-14T09:26:53Z")
            .ok()
            .map(|d| d.with_timezone(&Utc))
    );
    assert_eq!(parse_millis("soon"), None);
}

#[test]
fn watch_bodies_have_googles_field_names() {
    let body = serde_json::to_value(WatchChannelBody {
        id: "c1",
        kind: WEB_HOOK,
        address: "https://x/webhooks/google",
        token: "t",
        params: BTreeMap::from([("ttl", "60".to_owned())]),
    })
    .unwrap();
    assert_eq!(body["type"], "web_hook");
    assert_eq!(body["params"]["ttl"], "60");
    let stop = serde_json::to_value(StopChannelBody {
        id: "c1",
        resource_id: "r1",
    })
    .unwrap();
    assert_eq!(stop, serde_json::json!({"id": "c1", "resourceId": "r1"}));
    let gmail = serde_json::to_value(GmailWatchBody {
        topic_name: "projects/p/topics/t",
        label_ids: vec!["INBOX"],
        label_filter_behavior: "include",
    })
    .unwrap();
    assert_eq!(gmail["topicName"], "projects/p/topics/t");
    assert_eq!(gmail["labelIds"][0], "INBOX");
}
