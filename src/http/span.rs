//! The root span of every HTTP request. It names the route and the path but never
//! the query string: `/webhooks/gmail?token=…` carries the Pub/Sub push secret, and
//! every event logged while handling a request carries its span's fields.
//!
//! Owns what a request span records; what a handler logs is the handler's.

use actix_web::Error;
use actix_web::HttpMessage as _;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};

/// What stands in a span for a request's query string.
pub const REDACTED_QUERY: &str = "?[redacted]";

/// Builds request spans with the query string redacted.
pub struct RedactedSpan;

/// The request target as logged: the path, and [`REDACTED_QUERY`] if it had one.
pub fn logged_target(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}{REDACTED_QUERY}")
    }
}

impl RootSpanBuilder for RedactedSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let route = request.match_pattern().unwrap_or_else(|| "default".into());
        let method = request.method().as_str().to_owned();
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        let connection = request.connection_info();
        tracing::info_span!(
            "HTTP request",
            http.method = %method,
            http.route = %route,
            http.target = %logged_target(request.path(), request.query_string()),
            http.client_ip = %connection.realip_remote_addr().unwrap_or(""),
            http.status_code = tracing::field::Empty,
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            request_id = %request_id,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_string_never_reaches_the_span() {
        assert_eq!(
            logged_target("/webhooks/gmail", "token=s3cret&x=1"),
            "/webhooks/gmail?[redacted]"
        );
        assert_eq!(logged_target("/healthz", ""), "/healthz");
    }
}
