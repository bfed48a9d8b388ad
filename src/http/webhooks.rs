//! Provider webhooks. Today: Microsoft Graph's validation handshake on the change
//! and lifecycle notification URLs, which must succeed for a subscription to be
//! created. Notification intake itself answers 503 until it is built, so Graph keeps
//! retrying instead of us acknowledging what we cannot yet keep.

use actix_web::{HttpRequest, HttpResponse, web};
use std::time::Instant;
use subkeeper_actors::telemetry::names;

/// Longest validation token we echo, in bytes. Graph's tokens are far shorter; the
/// cap keeps the endpoint from reflecting arbitrary input.
const MAX_VALIDATION_TOKEN: usize = 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/microsoft", web::post().to(microsoft))
        .route(
            "/webhooks/microsoft/lifecycle",
            web::post().to(microsoft_lifecycle),
        );
}

/// The `validationToken` query parameter, URL-decoded.
fn validation_token(req: &HttpRequest) -> Option<Result<String, ()>> {
    let query = web::Query::<Vec<(String, String)>>::from_query(req.query_string()).ok()?;
    let token = query.0.into_iter().find(|(k, _)| k == "validationToken")?.1;
    Some(if token.is_empty() || token.len() > MAX_VALIDATION_TOKEN {
        Err(())
    } else {
        Ok(token)
    })
}

/// Answers Graph's handshake: 200, text/plain, the decoded token — or `None` when
/// this is not a handshake.
fn handshake(req: &HttpRequest, kind: &'static str) -> Option<HttpResponse> {
    let token = validation_token(req)?;
    let response = match token {
        Ok(token) => HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(token),
        Err(()) => HttpResponse::BadRequest()
            .content_type("text/plain; charset=utf-8")
            .body("validationToken must be 1-1024 bytes"),
    };
    metrics::counter!(names::WEBHOOKS_RECEIVED, "kind" => kind, "result" => "validation")
        .increment(1);
    Some(response)
}

fn not_yet(kind: &'static str) -> HttpResponse {
    metrics::counter!(names::WEBHOOKS_RECEIVED, "kind" => kind, "result" => "rejected")
        .increment(1);
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", "60"))
        .json(serde_json::json!({"error": {"code": "unavailable", "message": "notification intake is not enabled on this instance"}}))
}

async fn microsoft(req: HttpRequest) -> HttpResponse {
    let started = Instant::now();
    let response = handshake(&req, "microsoft").unwrap_or_else(|| not_yet("microsoft"));
    metrics::histogram!(names::WEBHOOK_RESPONSE, "kind" => "microsoft")
        .record(started.elapsed().as_secs_f64());
    response
}

async fn microsoft_lifecycle(req: HttpRequest) -> HttpResponse {
    let started = Instant::now();
    let response =
        handshake(&req, "microsoft_lifecycle").unwrap_or_else(|| not_yet("microsoft_lifecycle"));
    metrics::histogram!(names::WEBHOOK_RESPONSE, "kind" => "microsoft_lifecycle")
        .record(started.elapsed().as_secs_f64());
    response
}
