//! Provider webhooks: Microsoft Graph change and lifecycle notifications, including
//! the validation handshake; Google Calendar channel messages; Gmail Pub/Sub
//! pushes. Handlers only translate HTTP: intake decides what is accepted. A 2xx
//! means JetStream or the outbox holds every accepted item (or it was dropped for
//! good); a 5xx makes the provider retry.

use super::{AppState, Body, HttpError};
use crate::intake::{ChannelMessage, IntakeError, PushAuth};
use crate::telemetry::events::{
    GmailPushUnauthorized, WebhookAnswered, WebhookRefused, WebhookValidated,
};
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use std::time::Instant;

/// Longest validation token we echo, in bytes. Graph's tokens are far shorter; the
/// cap keeps the endpoint from reflecting arbitrary input.
const MAX_VALIDATION_TOKEN: usize = 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/microsoft", web::post().to(microsoft))
        .route(
            "/webhooks/microsoft/lifecycle",
            web::post().to(microsoft_lifecycle),
        )
        .route("/webhooks/google", web::post().to(google))
        .route("/webhooks/gmail", web::post().to(gmail));
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
        Err(()) => HttpError::BadRequest(format!(
            "validationToken must be 1-{MAX_VALIDATION_TOKEN} bytes"
        ))
        .error_response(),
    };
    WebhookValidated { kind }.emit();
    Some(response)
}

/// The answer to a refused request, in the API's one error shape: 400 for
/// malformed input, 503 (retry in 30 s) when nothing could store it, 500 when what
/// we were to publish could not be encoded.
fn refused(kind: &'static str, e: &IntakeError) -> HttpResponse {
    WebhookRefused { kind, error: e }.emit();
    let error = match e {
        IntakeError::Malformed(message) => HttpError::BadRequest(message.clone()),
        IntakeError::Unavailable => HttpError::Unavailable(e.to_string()),
        IntakeError::Unencodable(_) => HttpError::Internal(e.to_string()),
    };
    let mut response = error.error_response();
    if matches!(e, IntakeError::Unavailable) {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("30"));
    }
    response
}

async fn microsoft(req: HttpRequest, state: web::Data<AppState>, Body(body): Body) -> HttpResponse {
    let started = Instant::now();
    let response = match handshake(&req, "microsoft") {
        Some(response) => response,
        None => match state.graph_intake.notifications(&body).await {
            Ok(_) => HttpResponse::Accepted().finish(),
            Err(e) => refused("microsoft", &e),
        },
    };
    WebhookAnswered {
        kind: "microsoft",
        seconds: started.elapsed().as_secs_f64(),
    }
    .emit();
    response
}

async fn microsoft_lifecycle(
    req: HttpRequest,
    state: web::Data<AppState>,
    Body(body): Body,
) -> HttpResponse {
    let started = Instant::now();
    let response = match handshake(&req, "microsoft_lifecycle") {
        Some(response) => response,
        None => match state.graph_intake.lifecycle(&body).await {
            Ok(_) => HttpResponse::Accepted().finish(),
            Err(e) => refused("microsoft_lifecycle", &e),
        },
    };
    WebhookAnswered {
        kind: "microsoft_lifecycle",
        seconds: started.elapsed().as_secs_f64(),
    }
    .emit();
    response
}

/// A Calendar channel message: everything is in the `X-Goog-*` headers. Answers
/// 200 to whatever was taken in or dropped for good (Google retries anything
/// else), 400 to missing headers, 503 when nothing could store it.
async fn google(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let started = Instant::now();
    let headers = req.headers();
    let response = match ChannelMessage::from_headers(|name| {
        headers.get(name).and_then(|v| v.to_str().ok())
    }) {
        Err(e) => refused("google", &e),
        Ok(message) => match state.google_intake.channel_message(&message).await {
            Ok(_) => HttpResponse::Ok().finish(),
            Err(e) => refused("google", &e),
        },
    };
    WebhookAnswered {
        kind: "google",
        seconds: started.elapsed().as_secs_f64(),
    }
    .emit();
    response
}

/// A Gmail Pub/Sub push. The push subscription's endpoint carries the deployment's
/// secret as `?token=`; without it 401, with a wrong one 403. A 204 acknowledges
/// the message to Pub/Sub (also when no provider watches the mailbox: redelivery
/// would not change that).
async fn gmail(req: HttpRequest, state: web::Data<AppState>, Body(body): Body) -> HttpResponse {
    let started = Instant::now();
    let token = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.0.into_iter().find(|(k, _)| k == "token").map(|(_, v)| v));
    let response = match state.google_intake.authenticate_push(token.as_deref()) {
        Err(why) => {
            GmailPushUnauthorized { why }.emit();
            let body = HttpError::body("unauthorized", "missing or wrong push token");
            match why {
                PushAuth::Missing => HttpResponse::Unauthorized().json(body),
                PushAuth::Wrong => HttpResponse::Forbidden().json(body),
            }
        }
        Ok(()) => match state.google_intake.gmail_push(&body).await {
            Ok(_) => HttpResponse::NoContent().finish(),
            Err(e) => refused("gmail", &e),
        },
    };
    WebhookAnswered {
        kind: "gmail",
        seconds: started.elapsed().as_secs_f64(),
    }
    .emit();
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody as _;
    use actix_web::http::StatusCode;

    /// What an intake refusal answers: status, the one error shape, what failed.
    fn answer(e: &IntakeError) -> (StatusCode, serde_json::Value) {
        let response = refused("microsoft", e);
        let status = response.status();
        let bytes = response.into_body().try_into_bytes().ok().unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn a_notification_that_cannot_be_encoded_is_a_5xx_that_says_so() {
        struct Unencodable;
        impl serde::Serialize for Unencodable {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let error = crate::intake::encode("webhook_envelope", &Unencodable).unwrap_err();
        let (status, body) = answer(&IntakeError::from(error));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal");
        assert_eq!(
            body["error"]["message"],
            "webhook_envelope could not be encoded; nothing was stored"
        );

        let (status, body) = answer(&IntakeError::Malformed("body is not JSON".into()));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "bad_request");
        let (status, body) = answer(&IntakeError::Unavailable);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "unavailable");
    }
}
