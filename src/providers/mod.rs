//! Provider adapters: the reqwest implementations of the core's `SubscriptionApi`
//! port, one folder per provider family (`graph/`, `google/`), the port over both
//! ([`ByFamily`]), plus the
//! OAuth token handling (`oauth`), the authenticated call (`call`) and the
//! providers' request limits (`limits`) they share.
//!
//! Owns everything that speaks a provider's wire protocol and the classification of
//! its failures into the core's `ErrorClass`. It must not touch the store, the bus
//! or the actors: credentials come in through [`oauth::CredentialSource`], results
//! go out as `ProviderSubscription` / `ApiError`, and nothing here schedules or
//! retries beyond the single token refresh after a 401.

mod by_family;
mod call;
pub mod google;
pub mod graph;
pub mod limits;
pub mod oauth;
#[cfg(test)]
pub(crate) mod test_support;

pub use by_family::ByFamily;

use chrono::{DateTime, TimeDelta, Utc};
use std::time::Duration;

/// `User-Agent` sent on every provider call, so Microsoft support can find our
/// requests in their logs.
pub const USER_AGENT: &str = concat!("subkeeper/", env!("CARGO_PKG_VERSION"));

/// Builds the HTTP client the provider adapters share.
///
/// `request_timeout` bounds a whole call (connect, send, read the body);
/// `connect_timeout` bounds the TCP + TLS handshake alone. Redirects are refused:
/// no provider endpoint we call redirects, and following one could carry a bearer
/// token somewhere unexpected.
pub fn http_client(
    request_timeout: Duration,
    connect_timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    // reqwest is built without a default crypto provider. The first caller installs
    // ring; an `Err` only means someone already installed one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(request_timeout)
        .connect_timeout(connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .build()
}

/// Parses a `Retry-After` header: delta-seconds (`"120"`) or an HTTP date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`), the latter measured from `now`.
///
/// A date in the past means "now" (zero); an unparseable value means no hint.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<TimeDelta> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return i64::try_from(seconds).ok().and_then(TimeDelta::try_seconds);
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).max(TimeDelta::zero()))
}

/// The `Retry-After` of a response, if present and parseable.
pub(crate) fn retry_after_of(
    headers: &reqwest::header::HeaderMap,
    now: DateTime<Utc>,
) -> Option<TimeDelta> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now))
}

/// At most `max` characters of `text`, trimmed, with an ellipsis when cut: what
/// is kept of a provider's error message.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:30Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap();
        assert_eq!(parse_retry_after("120", now), Some(TimeDelta::seconds(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(TimeDelta::zero()));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(TimeDelta::seconds(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(TimeDelta::zero())
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn truncation_counts_characters_and_marks_the_cut() {
        assert_eq!(truncate("  short  ", 10), "short");
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("ééééé", 3), "ééé…");
        assert_eq!(truncate("   ", 3), "");
    }
}
