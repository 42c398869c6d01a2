//! The caller middleware: every protected route resolves the calling trading partner from its bearer token here,
//! once, and hands the domain a [`CallerContext`].

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::Problem;
use crate::auth::{random_id, AuthError, TokenService};
use crate::domain::payer_data::PayerDataRepo;
use crate::domain::{Caller, TradingPartner};
use crate::ports::Clock;

/// Verifies tokens and resolves partners.
pub struct Authenticator {
    /// Token verification.
    pub tokens: Arc<TokenService>,
    /// Partner records.
    pub repo: PayerDataRepo,
    /// Time source.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Resolves the caller of a request from its `Authorization` header.
    pub async fn authenticate(&self, authorization: Option<&HeaderValue>) -> Result<CallerContext, AuthError> {
        let value = authorization.and_then(|v| v.to_str().ok()).ok_or(AuthError::Missing)?;
        let token =
            value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).ok_or(AuthError::Missing)?.trim();
        let caller = self.tokens.verify(token, self.clock.now()).await?;
        let partner = self.repo.partner(&caller.partner).await?.ok_or(AuthError::UnknownPartner)?;
        if partner.role != caller.role {
            return Err(AuthError::UnknownPartner);
        }
        Ok(CallerContext { caller, partner: Arc::new(partner), request_id: random_id() })
    }
}

/// The authenticated caller of one request, with its partner record and the request id.
#[derive(Debug, Clone)]
pub struct CallerContext {
    /// Who the token names.
    pub caller: Caller,
    /// The partner's registration.
    pub partner: Arc<TradingPartner>,
    /// Request id (logged, and returned in `x-request-id`).
    pub request_id: String,
}

/// Middleware: 401 problem+json unless the request carries a valid token of a registered partner.
pub async fn require_caller(State(auth): State<Arc<Authenticator>>, mut req: Request, next: Next) -> Response {
    match auth.authenticate(req.headers().get(header::AUTHORIZATION)).await {
        Ok(ctx) => {
            let request_id = ctx.request_id.clone();
            req.extensions_mut().insert(ctx);
            let mut resp = next.run(req).await;
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                resp.headers_mut().insert("x-request-id", v);
            }
            resp
        }
        // A dependency fault is 503 only when a retry can help (the one mapping every route uses).
        Err(AuthError::Unavailable(e)) => Problem::from_port(&random_id(), &e).into_response(),
        Err(e) => {
            tracing::info!(reason = %e, "request refused: unauthenticated");
            Problem::unauthorized(e.to_string()).into_response()
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CallerContext {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<CallerContext>()
            .cloned()
            .ok_or_else(|| Problem::unauthorized("the route is not behind the caller middleware"))
    }
}
