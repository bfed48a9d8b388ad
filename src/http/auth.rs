//! Who is calling: the one authentication seam of the admin API (and of the
//! status page's sessions, which carry a token the same way). A bearer token is
//! either the admin token (compared in constant time; every tenant) or a tenant
//! token (looked up by its SHA-256; one tenant). [`Principal::authorize`] is the
//! one check every tenant-scoped route makes: a tenant token on another
//! tenant's URL is 403, before anything is read or written.

use super::{AppState, HttpError};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use subkeeper_actors::domain::TenantId;
use subkeeper_actors::ports::AuditContext;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The admin token: every tenant, and the admin-only routes (tokens,
    /// offboarding).
    Admin,
    /// A tenant token: its tenant only.
    Tenant {
        /// The token's id (what the audit trail names; never the token).
        token_id: Uuid,
        /// The one tenant it acts for.
        tenant: TenantId,
    },
}

impl Principal {
    /// Authenticates a presented token: the admin token, or a live tenant token.
    /// Anything else (also a revoked token) is 401.
    pub async fn authenticate(state: &AppState, token: &str) -> Result<Self, HttpError> {
        if let Some(admin) = state.config.admin_token.as_deref()
            && bool::from(token.as_bytes().ct_eq(admin.as_bytes()))
        {
            return Ok(Self::Admin);
        }
        if !token.starts_with(crate::tokens::PREFIX) {
            return Err(HttpError::Unauthorized);
        }
        // Looked up by its SHA-256: the comparison the database makes is on the
        // hash, which tells an attacker nothing about a token's bytes.
        match state.admin.token_grant(&crate::tokens::hash(token)).await? {
            Some(grant) => Ok(Self::Tenant {
                token_id: grant.id,
                tenant: grant.tenant,
            }),
            None => Err(HttpError::Unauthorized),
        }
    }

    /// May this caller act for `tenant`? The admin may; a tenant token only for
    /// its own tenant (else 403, saying which tenant the token is for is not
    /// needed: the caller has the token).
    pub fn authorize(&self, tenant: &TenantId) -> Result<(), HttpError> {
        match self {
            Self::Admin => Ok(()),
            Self::Tenant { tenant: own, .. } if own == tenant => Ok(()),
            Self::Tenant { .. } => Err(HttpError::Forbidden(format!(
                "this token may not act for tenant {tenant}"
            ))),
        }
    }

    /// Only the admin token may (token management, offboarding).
    pub fn require_admin(&self) -> Result<(), HttpError> {
        match self {
            Self::Admin => Ok(()),
            Self::Tenant { .. } => Err(HttpError::Forbidden(
                "this route needs the admin token".into(),
            )),
        }
    }

    /// How the audit trail names this caller: `admin` or `token:<id>`.
    pub fn actor(&self) -> String {
        match self {
            Self::Admin => "admin".into(),
            Self::Tenant { token_id, .. } => format!("token:{token_id}"),
        }
    }

    /// The audit context of a request with body `body` made by this caller.
    pub fn audit(&self, body: &[u8]) -> AuditContext {
        AuditContext {
            actor: self.actor(),
            request_hash: crate::store::request_hash(body),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header value. The scheme is
/// case-insensitive (RFC 7235 §2.1); the token is taken as given.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

impl FromRequest for Principal {
    type Error = HttpError;
    type Future = LocalBoxFuture<'static, Result<Self, HttpError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .map(str::to_owned);
        Box::pin(async move {
            let (Some(state), Some(token)) = (state, token) else {
                return Err(HttpError::Unauthorized);
            };
            Principal::authenticate(&state, &token).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_token_acts_for_its_tenant_only_and_never_as_admin() {
        let acme = TenantId::parse("acme").unwrap();
        let contoso = TenantId::parse("contoso").unwrap();
        let token = Principal::Tenant {
            token_id: Uuid::nil(),
            tenant: acme.clone(),
        };
        assert!(token.authorize(&acme).is_ok());
        assert!(matches!(
            token.authorize(&contoso),
            Err(HttpError::Forbidden(_))
        ));
        assert!(matches!(
            token.require_admin(),
            Err(HttpError::Forbidden(_))
        ));
        assert!(Principal::Admin.authorize(&contoso).is_ok());
        assert_eq!(token.actor(), format!("token:{}", Uuid::nil()));
        assert_eq!(bearer_token("bEaReR abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
    }
}
