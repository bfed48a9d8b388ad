//! The status page at `/`: server-rendered HTML (maud, escaped by construction),
//! no JavaScript and nothing from a CDN. Every provider the session may see —
//! every tenant for the admin token, one for a tenant token — with kind, status,
//! subscription state, when it expires (human, exact time on hover), the last
//! renewal and its result, the failure reason (selectable to copy), the last
//! webhook, the silent flag and the next renewal; the ones that need a human
//! first; filtered by tenant and status and paged on the server. Per provider:
//! Retry renewal, Sync now, Delete (after a confirmation page), and a detail
//! view with recent attempts and deliveries.
//!
//! Sign-in takes a token (the admin token or a tenant token, checked by the API's
//! [`Principal::authenticate`]) and answers with an HttpOnly, SameSite=Strict
//! session cookie; the session is stored by its SHA-256. Every form that changes
//! something carries a CSRF token derived from the session secret and every POST
//! must come from this origin. Responses carry a CSP without inline script or
//! style, `X-Frame-Options: DENY` and `no-store`.

use super::auth::Principal;
use super::{AppState, HttpError};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, TimeDelta, Utc};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subkeeper_actors::domain::{DomainEvent, ProviderId, ProviderStatus, RenewalResult, TenantId};
use subkeeper_actors::ports::page::PageRequest;
use subkeeper_actors::ports::{
    AuditRecord, BoardCursor, BoardFilter, BoardRow, ProviderView, SessionGrant,
};
use subtle::ConstantTimeEq;

/// The session cookie's name.
const COOKIE: &str = "subkeeper_session";

/// How long a session lasts.
const SESSION_HOURS: i64 = 12;

/// Providers per page.
const PAGE_SIZE: u32 = 50;

/// Tenants the admin's tenant filter lists at most.
const MAX_TENANTS: u32 = 200;

/// The page's stylesheet (served from `/static/status.css`: the CSP allows no
/// inline style).
const CSS: &str = include_str!("status_page.css");

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(board))
        .route("/static/status.css", web::get().to(stylesheet))
        .route("/sign-in", web::get().to(sign_in_form))
        .route("/sign-in", web::post().to(sign_in))
        .route("/sign-out", web::post().to(sign_out))
        .route("/providers/{tenant}/{id}", web::get().to(detail))
        .route("/providers/{tenant}/{id}/renew", web::post().to(renew))
        .route("/providers/{tenant}/{id}/sync", web::post().to(sync))
        .route(
            "/providers/{tenant}/{id}/delete",
            web::get().to(confirm_delete),
        )
        .route("/providers/{tenant}/{id}/delete", web::post().to(delete));
}

/// SHA-256 hex of `parts` joined.
fn sha256(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(b"\x1f");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A signed-in caller.
struct Session {
    grant: SessionGrant,
    /// The cookie value (the session secret).
    secret: String,
}

impl Session {
    /// The CSRF token of this session's forms: derived from the secret, which no
    /// other site can read.
    fn csrf(&self) -> String {
        sha256(&["csrf", &self.secret])
    }

    /// The tenant the session is limited to, if any.
    fn own_tenant(&self) -> Option<&TenantId> {
        match &self.grant {
            SessionGrant::Admin => None,
            SessionGrant::Tenant { tenant, .. } => Some(tenant),
        }
    }

    /// Who the audit trail names (a token id, never a token).
    fn actor(&self) -> String {
        match &self.grant {
            SessionGrant::Admin => "session:admin".into(),
            SessionGrant::Tenant { token_id, .. } => format!("session:{token_id}"),
        }
    }

    /// May act for `tenant`: 403 otherwise.
    fn authorize(&self, tenant: &TenantId) -> Result<(), PageError> {
        match self.own_tenant() {
            Some(own) if own != tenant => Err(PageError::Forbidden),
            _ => Ok(()),
        }
    }
}

/// What the page answers instead of the page.
enum PageError {
    /// Not signed in: to the sign-in form.
    SignIn,
    /// Signed in, but not for this tenant.
    Forbidden,
    /// No such provider for this tenant.
    NotFound,
    /// A form without the right CSRF token, or a cross-site POST.
    BadForm,
    /// What the API would answer.
    Http(HttpError),
}

impl From<HttpError> for PageError {
    fn from(e: HttpError) -> Self {
        Self::Http(e)
    }
}

impl From<subkeeper_actors::ports::StoreError> for PageError {
    fn from(e: subkeeper_actors::ports::StoreError) -> Self {
        Self::Http(e.into())
    }
}

impl PageError {
    fn respond(self) -> HttpResponse {
        let (status, title, text) = match self {
            Self::SignIn => {
                return secure(HttpResponse::SeeOther())
                    .insert_header((header::LOCATION, "/sign-in"))
                    .finish();
            }
            Self::Forbidden => (
                actix_web::http::StatusCode::FORBIDDEN,
                "Forbidden",
                "Your token does not act for this tenant.".to_owned(),
            ),
            Self::NotFound => (
                actix_web::http::StatusCode::NOT_FOUND,
                "Not found",
                "No such provider for this tenant.".to_owned(),
            ),
            Self::BadForm => (
                actix_web::http::StatusCode::FORBIDDEN,
                "Form refused",
                "This form was not sent from this page (or your session changed). Go back, reload and try again.".to_owned(),
            ),
            Self::Http(e) => {
                let status = actix_web::ResponseError::status_code(&e);
                (status, "Something failed", e.to_string())
            }
        };
        secure(HttpResponse::build(status)).body(
            layout(
                title,
                None,
                html! {
                    section.notice.bad { h2 { (title) } p { (text) } p { a href="/" { "Back to the status page" } } }
                },
            )
            .into_string(),
        )
    }
}

/// Security headers on every page response.
fn secure(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/html; charset=utf-8");
    builder
}

fn page(markup: Markup) -> HttpResponse {
    secure(HttpResponse::Ok()).body(markup.into_string())
}

fn respond(result: Result<HttpResponse, PageError>) -> HttpResponse {
    result.unwrap_or_else(PageError::respond)
}

/// The session of the request, if a live one.
async fn session(req: &HttpRequest, state: &AppState) -> Result<Option<Session>, PageError> {
    // `Cookie: a=1; subkeeper_session=…` (RFC 6265 §5.4).
    let Some(secret) = req
        .headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
    else {
        return Ok(None);
    };
    if secret.len() != 64 {
        return Ok(None);
    }
    Ok(state
        .page
        .session(&sha256(&["session", &secret]))
        .await?
        .map(|grant| Session { grant, secret }))
}

async fn signed_in(req: &HttpRequest, state: &AppState) -> Result<Session, PageError> {
    session(req, state).await?.ok_or(PageError::SignIn)
}

/// A POST must come from this origin (a browser says so in `Sec-Fetch-Site` or
/// `Origin`), and a signed-in form must carry the session's CSRF token.
fn check_form(req: &HttpRequest, csrf: Option<(&Session, &str)>) -> Result<(), PageError> {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(PageError::BadForm);
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        if origin != "null" && origin_host != host {
            return Err(PageError::BadForm);
        }
    }
    if let Some((session, given)) = csrf
        && !bool::from(session.csrf().as_bytes().ct_eq(given.as_bytes()))
    {
        return Err(PageError::BadForm);
    }
    Ok(())
}

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "max-age=3600"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(CSS)
}

/// The frame of every page.
fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · subkeeper" }
                link rel="stylesheet" href="/static/status.css";
            }
            body {
                header.top {
                    a.brand href="/" { "subkeeper" }
                    span.where { (title) }
                    @if let Some(s) = session {
                        span.who {
                            @match &s.grant {
                                SessionGrant::Admin => { "admin · every tenant" }
                                SessionGrant::Tenant { tenant, .. } => { "tenant " strong { (tenant) } }
                            }
                        }
                        form.inline method="post" action="/sign-out" {
                            input type="hidden" name="csrf" value=(s.csrf());
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// "in 3 d 4 h", "2 h 5 min ago".
fn human(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let delta = at - now;
    let (future, d) = if delta >= TimeDelta::zero() {
        (true, delta)
    } else {
        (false, -delta)
    };
    let mins = d.num_minutes();
    let text = if mins < 1 {
        format!("{} s", d.num_seconds())
    } else if mins < 60 {
        format!("{mins} min")
    } else if mins < 48 * 60 {
        format!("{} h {} min", mins / 60, mins % 60)
    } else {
        format!("{} d {} h", mins / (24 * 60), (mins / 60) % 24)
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// A time as "in 3 d 4 h", the exact time on hover.
fn when(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Markup {
    match at {
        None => html! { span.none { "—" } },
        Some(at) => html! {
            time datetime=(at.to_rfc3339()) title=(at.format("%Y-%m-%d %H:%M:%S UTC")) { (human(at, now)) }
        },
    }
}

/// The status badge, in the words of `subkeeper status`.
fn badge(status: ProviderStatus) -> Markup {
    html! { span class=(format!("badge {}", status.as_str())) { (status.as_str()) } }
}

#[derive(Deserialize)]
struct BoardQuery {
    tenant: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
}

/// The opaque form of a list cursor.
fn encode_cursor(c: &BoardCursor) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}|{}|{}",
        c.part,
        c.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        c.id
    ))
}

fn decode_cursor(raw: &str) -> Option<BoardCursor> {
    use base64::Engine as _;
    let text = String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .ok()?,
    )
    .ok()?;
    let mut parts = text.splitn(3, '|');
    let part: u8 = parts.next()?.parse().ok()?;
    let created_at = DateTime::parse_from_rfc3339(parts.next()?)
        .ok()?
        .with_timezone(&Utc);
    let id: ProviderId = parts.next()?.parse().ok()?;
    (part <= 1).then_some(BoardCursor {
        part,
        created_at,
        id,
    })
}

/// A query string from pairs (values form-encoded).
fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            s.append_pair(k, v);
        }
    }
    let s = s.finish();
    if s.is_empty() {
        "/".into()
    } else {
        format!("/?{s}")
    }
}

async fn board(
    req: HttpRequest,
    state: web::Data<AppState>,
    q: web::Query<BoardQuery>,
) -> HttpResponse {
    respond(board_page(&req, &state, &q).await)
}

async fn board_page(
    req: &HttpRequest,
    state: &AppState,
    q: &BoardQuery,
) -> Result<HttpResponse, PageError> {
    let session = signed_in(req, state).await?;
    let bad = |what: &str| PageError::Http(HttpError::BadRequest(what.to_owned()));
    let asked_tenant = q
        .tenant
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| TenantId::parse(t).map_err(|e| bad(&e.to_string())))
        .transpose()?;
    if let Some(t) = &asked_tenant {
        session.authorize(t)?;
    }
    let tenant = session.own_tenant().cloned().or(asked_tenant);
    let status: Option<ProviderStatus> = q
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| bad("status must be connected, error, needs_reauth or disabled"))
        })
        .transpose()?;
    let after = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| decode_cursor(c).ok_or_else(|| bad("cursor is not one this page handed out")))
        .transpose()?;
    let filter = BoardFilter {
        tenant: tenant.clone(),
        status,
    };
    let (rows, more) = state.page.board(&filter, after, PAGE_SIZE).await?;
    let now = state.clock.now();
    let counts = state
        .board_counts
        .get(state.page.as_ref(), tenant.as_ref(), now)
        .await?;
    let tenants = match session.own_tenant() {
        Some(_) => Vec::new(),
        None => state.page.board_tenants(MAX_TENANTS).await?,
    };
    let next = more.then(|| rows.last()).flatten().map(|r| {
        encode_cursor(&BoardCursor {
            part: r.part(),
            created_at: r.created_at,
            id: r.id,
        })
    });
    let tenant_str = tenant.as_ref().map(TenantId::as_str);
    let status_str = status.map(ProviderStatus::as_str);
    let count_of = |s: ProviderStatus| counts.of(s);
    let counted_ago = (now - counts.at).num_seconds().max(0);
    let attention = count_of(ProviderStatus::Error) + count_of(ProviderStatus::NeedsReauth);
    let body = html! {
        section.summary {
            @for s in ProviderStatus::ALL {
                a class=(format!("count {}", s.as_str())) href=(query(&[("tenant", tenant_str), ("status", Some(s.as_str()))])) {
                    strong { (count_of(*s)) } " " (s.as_str())
                }
            }
            @if attention > 0 {
                span.alarm { (attention) " need a human" }
            } @else {
                span.calm { "nothing needs a human" }
            }
            span.stale title=(format!("The counts are kept for {} s; the list below is read afresh on every view", state.board_counts.ttl().as_secs())) {
                @if counted_ago == 0 { "counted now" } @else { "counted " (counted_ago) " s ago" }
            }
        }
        form.filters method="get" action="/" {
            @if session.own_tenant().is_none() {
                label { "Tenant "
                    select name="tenant" {
                        option value="" { "every tenant" }
                        @for t in &tenants {
                            option value=(t) selected[Some(t.as_str()) == tenant_str] { (t) }
                        }
                    }
                }
            }
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in ProviderStatus::ALL {
                        option value=(s.as_str()) selected[Some(s.as_str()) == status_str] { (s.as_str()) }
                    }
                }
            }
            button type="submit" { "Filter" }
            @if tenant_str.is_some() && session.own_tenant().is_none() || status_str.is_some() {
                a.clear href="/" { "clear" }
            }
        }
        @if rows.is_empty() {
            p.empty { "No provider matches." }
        } @else {
            table.providers {
                thead { tr {
                    th { "Provider" } th { "Kind" } th { "Status" } th { "Subscription" }
                    th { "Expires in" } th { "Last renewal" } th { "Failure reason" }
                    th { "Last webhook" } th { "Next renewal" } th { "Actions" }
                } }
                tbody {
                    @for r in &rows { (row(r, &session, now)) }
                }
            }
        }
        nav.pager {
            @if after.is_some() {
                a href=(query(&[("tenant", tenant_str), ("status", status_str)])) { "⟨ first page" }
            }
            @if let Some(next) = &next {
                a.next href=(query(&[("tenant", tenant_str), ("status", status_str), ("cursor", Some(next))])) { "next page ⟩" }
            }
        }
    };
    Ok(page(layout("Providers", Some(&session), body)))
}

/// One provider's row.
fn row(r: &BoardRow, session: &Session, now: DateTime<Utc>) -> Markup {
    let detail = format!("/providers/{}/{}", r.tenant, r.id);
    let renewing = r.subscription_status.as_deref() == Some("renewing");
    let reason = r.error_message.as_deref().or(r.failure_reason.as_deref());
    html! {
        tr class=(format!("provider {}", r.status.as_str())) data-provider=(r.id) {
            td.name {
                a href=(detail) { (r.display_name) }
                div.sub { (r.tenant) }
            }
            td { (r.kind.as_str()) }
            td.status { (badge(r.status)) }
            td.substatus {
                (r.subscription_status.as_deref().unwrap_or("—"))
                @if r.silent_since.is_some() {
                    " " span.silent title="The subscription is alive but no webhook came for longer than the kind's threshold" { "silent" }
                }
            }
            td.expires { (when(r.subscription.as_ref().map(|(_, at)| *at), now)) }
            td.renewal {
                @match &r.last_renewal {
                    Some((at, result)) => { (when(Some(*at), now)) " " span class=(format!("result {result}")) { (result) } },
                    None => span.none { "—" },
                }
            }
            td.reason {
                @if let Some(reason) = reason {
                    textarea.copy readonly rows="2" aria-label="failure reason (select to copy)" { (reason) }
                } @else { span.none { "—" } }
            }
            td.webhook { (when(r.last_webhook_at, now)) }
            td.next { (when(r.next_renewal_at, now)) }
            td.actions { (actions(&r.tenant, r.id, renewing, session)) }
        }
    }
}

/// Retry renewal, Sync now, Delete.
fn actions(tenant: &TenantId, id: ProviderId, renewing: bool, session: &Session) -> Markup {
    let base = format!("/providers/{tenant}/{id}");
    html! {
        form.inline method="post" action=(format!("{base}/renew")) {
            input type="hidden" name="csrf" value=(session.csrf());
            button.retry type="submit" disabled[renewing] title=(if renewing { "A renewal is running" } else { "Renew the subscription now" }) { "Retry renewal" }
        }
        form.inline method="post" action=(format!("{base}/sync")) {
            input type="hidden" name="csrf" value=(session.csrf());
            button.sync type="submit" title="Emit resync_required: downstream re-reads this provider" { "Sync now" }
        }
        a.delete href=(format!("{base}/delete")) { "Delete" }
    }
}

/// `{tenant}/{id}` of a provider route, for this session.
fn provider_key(
    session: &Session,
    path: &(String, String),
) -> Result<(TenantId, ProviderId), PageError> {
    let tenant = TenantId::parse(&path.0).map_err(|_| PageError::NotFound)?;
    session.authorize(&tenant)?;
    let id = path.1.parse().map_err(|_| PageError::NotFound)?;
    Ok((tenant, id))
}

async fn view(
    state: &AppState,
    tenant: &TenantId,
    id: ProviderId,
) -> Result<ProviderView, PageError> {
    state
        .admin
        .provider_view(tenant, id)
        .await?
        .ok_or(PageError::NotFound)
}

async fn detail(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    respond(
        async {
            let session = signed_in(&req, &state).await?;
            let (tenant, id) = provider_key(&session, &path)?;
            detail_page(&state, &session, &tenant, id, None).await
        }
        .await,
    )
}

/// What an action on the detail page did.
enum Outcome {
    Renewed(Result<RenewalResult, String>),
    Synced(Result<(), String>),
}

async fn detail_page(
    state: &AppState,
    session: &Session,
    tenant: &TenantId,
    id: ProviderId,
    outcome: Option<Outcome>,
) -> Result<HttpResponse, PageError> {
    let v = view(state, tenant, id).await?;
    let attempts = state
        .admin
        .attempts(tenant, id, &PageRequest::first(20))
        .await?;
    let deliveries = state
        .deliveries
        .deliveries(tenant, id, &PageRequest::first(20))
        .await?;
    let now = state.clock.now();
    let health = v.health.as_ref();
    let renewing = health.is_some_and(|h| h.subscription_status.as_str() == "renewing");
    let reason = v
        .error_message
        .as_deref()
        .or(health.and_then(|h| h.failure_reason.as_deref()));
    let body = html! {
        @match &outcome {
            Some(Outcome::Renewed(Ok(r))) => {
                section class=(if r.success { "notice good result" } else { "notice bad result" }) {
                    h2 { "Renewal result: " (r.action.as_str()) }
                    dl.kv {
                        dt { "success" } dd.success { (r.success) }
                        dt { "status after" } dd { (r.status.as_str()) }
                        @if let Some(at) = r.new_expiration { dt { "expires" } dd { (when(Some(at), now)) } }
                        @if let Some(c) = r.error_class { dt { "error class" } dd { (c.as_str()) } }
                        @if let Some(m) = &r.error_message { dt { "message" } dd { textarea.copy readonly rows="2" { (m) } } }
                    }
                }
            },
            Some(Outcome::Renewed(Err(e))) => section.notice.bad.result { h2 { "Renewal not run" } p { (e) } },
            Some(Outcome::Synced(Ok(()))) => section.notice.good.result { h2 { "Sync requested" } p { "resync_required was emitted for this provider." } },
            Some(Outcome::Synced(Err(e))) => section.notice.bad.result { h2 { "Sync not requested" } p { (e) } },
            None => {},
        }
        section.card {
            h1 { (v.display_name) " " (badge(v.status)) }
            dl.kv {
                dt { "tenant" } dd { (v.tenant) }
                dt { "kind" } dd { (v.kind.as_str()) }
                dt { "resource" } dd { code { (v.resource) } }
                dt { "provider id" } dd { code { (v.id) } }
                dt { "subscription" } dd {
                    @match &v.subscription {
                        Some(s) => { code { (s.id) } " expires " (when(Some(s.expires_at), now)) },
                        None => span.none { "none" },
                    }
                }
                dt { "subscription status" } dd.substatus { (health.map_or("—", |h| h.subscription_status.as_str())) }
                dt { "last renewal" } dd { (when(health.and_then(|h| h.last_renewal_attempt_at), now)) " " (health.and_then(|h| h.last_renewal_result).map_or("", |r| r.as_str())) }
                dt { "failure reason" } dd.reason {
                    @if let Some(reason) = reason { textarea.copy readonly rows="3" { (reason) } } @else { span.none { "—" } }
                }
                dt { "last webhook" } dd { (when(health.and_then(|h| h.last_webhook_received_at), now)) }
                dt { "silent" } dd { (if health.is_some_and(|h| h.silent_since.is_some()) { "yes" } else { "no" }) }
                dt { "next renewal" } dd { (when(health.and_then(|h| h.next_renewal_at), now)) }
            }
            div.actions { (actions(tenant, id, renewing, session)) }
        }
        section.card {
            h2 { "Recent renewal attempts" }
            @if attempts.items.is_empty() { p.empty { "None yet." } } @else {
                table { thead { tr { th { "When" } th { "Attempt" } th { "Action" } th { "HTTP" } th { "Error" } th { "ms" } } }
                    tbody { @for a in &attempts.items { tr {
                        td { (when(Some(a.attempted_at), now)) } td { (a.attempt) }
                        td { span class=(format!("result {}", a.action)) { (a.action) } }
                        td { (a.http_status.map(|s| s.to_string()).unwrap_or_default()) }
                        td { (a.error_class.as_deref().unwrap_or("")) " " (a.error_message.as_deref().unwrap_or("")) }
                        td { (a.duration_ms) }
                    } } }
                }
            }
        }
        section.card {
            h2 { "Recent deliveries" }
            @if deliveries.items.is_empty() { p.empty { "None logged." } } @else {
                table { thead { tr { th { "Received" } th { "Kind" } th { "Outcome" } th { "Reason" } th { "Message id" } th { "SHA-256" } } }
                    tbody { @for d in &deliveries.items { tr {
                        td { (when(Some(d.received_at), now)) } td { (d.kind.as_str()) }
                        td { span class=(format!("result {}", d.outcome.as_str())) { (d.outcome.as_str()) } }
                        td { (d.reason.as_str()) }
                        td { code.hash { (d.message_id.as_deref().unwrap_or("—")) } }
                        td { code.hash { (d.payload_sha256) } }
                    } } }
                }
            }
        }
    };
    Ok(page(layout(&v.display_name, Some(session), body)))
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

/// The session of a POST with a valid form.
async fn form_session(
    req: &HttpRequest,
    state: &AppState,
    form: &CsrfForm,
) -> Result<Session, PageError> {
    let session = signed_in(req, state).await?;
    check_form(req, Some((&session, &form.csrf)))?;
    Ok(session)
}

async fn audit(
    state: &AppState,
    session: &Session,
    tenant: &TenantId,
    action: &str,
    target: String,
    outcome: &str,
) {
    let record = AuditRecord {
        tenant: tenant.clone(),
        actor: session.actor(),
        action: action.into(),
        target,
        outcome: outcome.into(),
        request_hash: sha256(&[action]),
    };
    if let Err(e) = state.admin.record_audit(&record).await {
        tracing::warn!(error = %e, action, "status page action not audited");
    }
}

async fn renew(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    respond(
        async {
            let session = form_session(&req, &state, &form).await?;
            let (tenant, id) = provider_key(&session, &path)?;
            view(&state, &tenant, id).await?;
            let result = state
                .fleet
                .renew(tenant.clone(), id)
                .await
                .map_err(|e| e.to_string());
            let outcome = match &result {
                Ok(r) if r.success => "ok",
                Ok(_) => "failed",
                Err(_) => "refused",
            };
            // The list the operator goes back to counts the new status.
            state.board_counts.forget();
            audit(
                &state,
                &session,
                &tenant,
                "provider.renew",
                id.to_string(),
                outcome,
            )
            .await;
            detail_page(
                &state,
                &session,
                &tenant,
                id,
                Some(Outcome::Renewed(result)),
            )
            .await
        }
        .await,
    )
}

async fn sync(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    respond(
        async {
            let session = form_session(&req, &state, &form).await?;
            let (tenant, id) = provider_key(&session, &path)?;
            let v = view(&state, &tenant, id).await?;
            let event = DomainEvent::resync_required(
                tenant.clone(),
                id,
                v.kind,
                "operator",
                state.clock.now(),
                None,
            );
            let result = state
                .bus
                .domain_events()
                .publish(&event)
                .await
                .map_err(|e| format!("the bus did not take the event: {e}"));
            let outcome = if result.is_ok() { "ok" } else { "failed" };
            audit(
                &state,
                &session,
                &tenant,
                "provider.sync",
                id.to_string(),
                outcome,
            )
            .await;
            detail_page(&state, &session, &tenant, id, Some(Outcome::Synced(result))).await
        }
        .await,
    )
}

async fn confirm_delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    respond(
        async {
            let session = signed_in(&req, &state).await?;
            let (tenant, id) = provider_key(&session, &path)?;
            let v = view(&state, &tenant, id).await?;
            let at = if v.kind.is_graph() { "Microsoft Graph" } else { "Google" };
            let body = html! {
                section.card.confirm {
                    h1 { "Delete " (v.display_name) "?" }
                    p { "This removes provider " code { (v.id) } " of tenant " strong { (v.tenant) } " (" (v.kind.as_str()) ", " code { (v.resource) } ")." }
                    ul {
                        @match &v.subscription {
                            Some(s) => li { "Its subscription " code { (s.id) } " is deleted at " (at) ": webhooks for this resource stop." },
                            None => li { "It has no live subscription at " (at) "." },
                        }
                        li { "It is no longer renewed, and its credentials are no longer used." }
                        li { "Its renewal attempts and delivery log stay until retention removes them." }
                    }
                    form method="post" action=(format!("/providers/{tenant}/{id}/delete")) {
                        input type="hidden" name="csrf" value=(session.csrf());
                        button.danger type="submit" { "Delete provider and its subscription" }
                        " "
                        a href=(format!("/providers/{tenant}/{id}")) { "Cancel" }
                    }
                }
            };
            Ok(page(layout("Delete provider", Some(&session), body)))
        }
        .await,
    )
}

async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    respond(
        async {
            let session = form_session(&req, &state, &form).await?;
            let (tenant, id) = provider_key(&session, &path)?;
            let context = subkeeper_actors::ports::AuditContext {
                actor: session.actor(),
                request_hash: sha256(&["provider.delete", &id.to_string()]),
            };
            if !state.admin.delete_provider(&tenant, id, &context).await? {
                return Err(PageError::NotFound);
            }
            tracing::info!(tenant = %tenant, provider = %id, "provider deleted from the status page; its subscription will be deleted at the provider");
            state.fleet.reconcile();
            state.board_counts.forget();
            Ok(secure(HttpResponse::SeeOther())
                .insert_header((header::LOCATION, format!("/?tenant={tenant}")))
                .finish())
        }
        .await,
    )
}

fn sign_in_body(error: Option<&str>) -> Markup {
    html! {
        section.card.signin {
            h1 { "Sign in" }
            p { "Paste the admin token or a tenant token. A tenant token sees its tenant only." }
            @if let Some(e) = error { p.error { (e) } }
            form method="post" action="/sign-in" {
                label { "Token " input type="password" name="token" autocomplete="off" required autofocus; }
                button type="submit" { "Sign in" }
            }
        }
    }
}

async fn sign_in_form() -> HttpResponse {
    page(layout("Sign in", None, sign_in_body(None)))
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
}

async fn sign_in(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<SignInForm>,
) -> HttpResponse {
    respond(
        async {
            check_form(&req, None)?;
            let principal = match Principal::authenticate(&state, form.token.trim()).await {
                Ok(p) => p,
                Err(HttpError::Unauthorized) => {
                    return Ok(secure(HttpResponse::Unauthorized()).body(
                        layout(
                            "Sign in",
                            None,
                            sign_in_body(Some("That token is not valid (or was revoked).")),
                        )
                        .into_string(),
                    ));
                }
                Err(e) => return Err(e.into()),
            };
            let grant = match &principal {
                Principal::Admin => SessionGrant::Admin,
                Principal::Tenant { token_id, tenant } => SessionGrant::Tenant {
                    token_id: *token_id,
                    tenant: tenant.clone(),
                },
            };
            let secret: String = rand::random::<[u8; 32]>()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            // On the service's clock, which the store checks the session against.
            let expires = state.clock.now() + TimeDelta::hours(SESSION_HOURS);
            state
                .page
                .create_session(&sha256(&["session", &secret]), &grant, expires)
                .await?;
            let session = Session {
                grant: grant.clone(),
                secret: secret.clone(),
            };
            if let SessionGrant::Tenant { tenant, .. } = &grant {
                audit(
                    &state,
                    &session,
                    tenant,
                    "session.sign_in",
                    tenant.to_string(),
                    "ok",
                )
                .await;
            }
            // Secure whenever the service is reached over https.
            let secure_flag = if state.config.public_url.starts_with("https://") {
                "; Secure"
            } else {
                ""
            };
            let cookie = format!(
                "{COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure_flag}",
                SESSION_HOURS * 3600
            );
            Ok(secure(HttpResponse::SeeOther())
                .insert_header((header::LOCATION, "/"))
                .insert_header((header::SET_COOKIE, cookie))
                .finish())
        }
        .await,
    )
}

async fn sign_out(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    respond(
        async {
            let session = form_session(&req, &state, &form).await?;
            state
                .page
                .end_session(&sha256(&["session", &session.secret]))
                .await?;
            Ok(secure(HttpResponse::SeeOther())
                .insert_header((header::LOCATION, "/sign-in"))
                .insert_header((
                    header::SET_COOKIE,
                    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
                ))
                .finish())
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_a_human_says_them() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T06:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(human(now + TimeDelta::minutes(90), now), "in 1 h 30 min");
        assert_eq!(
            human(now + TimeDelta::days(6) + TimeDelta::hours(23), now),
            "in 6 d 23 h"
        );
        assert_eq!(human(now - TimeDelta::minutes(5), now), "5 min ago");
        assert_eq!(human(now - TimeDelta::seconds(20), now), "20 s ago");
    }

    #[test]
    fn a_list_cursor_round_trips_and_garbage_is_none() {
        let c = BoardCursor {
            part: 1,
            created_at: Utc::now(),
            id: ProviderId::new(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&c)), Some(c));
        assert_eq!(decode_cursor("nope"), None);
        assert_eq!(decode_cursor(""), None);
    }
}
