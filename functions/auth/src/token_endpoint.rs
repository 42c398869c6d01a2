//! `POST /auth/token`: SMART Backend Services (client credentials with a JWT client assertion, RFC 7523).
//!
//! The request is `application/x-www-form-urlencoded` with `grant_type=client_credentials`,
//! `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`, `client_assertion` (a compact
//! JWS) and `scope`. The assertion must be signed (ES384 or RS384) by a key in the partner's registered client JWK
//! Set (`clientJwks`, apart from the CDS clients' `jwks`),
//! with `iss` = `sub` = the client id (the partner id), `aud` = this endpoint's URL, `exp` at most five minutes
//! away, and a `jti` never used before by that client (kept in the replay ledger until the assertion expires).
//! The token granted carries the requested scopes the partner is allowed (at least one, or `invalid_scope`).
//!
//! Errors are RFC 6749 §5.2 bodies (`{"error", "error_description"}`), `Cache-Control: no-store`: 401
//! `invalid_client` for every assertion that does not authenticate (malformed, unknown client, unknown key, bad
//! signature, wrong audience, expired or too long-lived, replayed); 400 `invalid_request`,
//! `unsupported_grant_type` or `invalid_scope` for the rest of the request; 503 when a dependency is down. The
//! description names the check that failed, never the assertion's content.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use exchange_core::auth::{request_id, TOKEN_LIFETIME_SECS};
use exchange_core::domain::audit::{timestamp, AuditAction, AuditEntry};
use exchange_core::domain::{PartnerId, TradingPartner};
use exchange_core::jose::{check_client_assertion, JoseError, UnverifiedJws};
use exchange_core::ports::PortError;
use serde_json::json;

use crate::Auth;

/// The only `client_assertion_type` (RFC 7523).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Longest lifetime of a client assertion (SMART: "no more than five minutes in the future").
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;

/// The replay-ledger purpose of client assertions.
const REPLAY_PURPOSE: &str = "client-assertion";

/// Why a token request was refused: one RFC 6749 error code each.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A parameter is missing, repeated or malformed, or the body is not a form.
    #[error("{0}")]
    InvalidRequest(String),
    /// The client assertion does not authenticate the client.
    #[error("{0}")]
    InvalidClient(String),
    /// `grant_type` other than `client_credentials`.
    #[error("only grant_type=client_credentials is supported")]
    UnsupportedGrantType,
    /// None of the requested scopes is allowed to the client.
    #[error("none of the requested scopes is granted to this client")]
    InvalidScope,
    /// The state store or key service is down.
    #[error("the token service is temporarily unavailable")]
    Unavailable(#[source] PortError),
}

impl TokenError {
    fn code(&self) -> &'static str {
        match self {
            TokenError::InvalidRequest(_) => "invalid_request",
            TokenError::InvalidClient(_) => "invalid_client",
            TokenError::UnsupportedGrantType => "unsupported_grant_type",
            TokenError::InvalidScope => "invalid_scope",
            TokenError::Unavailable(_) => "temporarily_unavailable",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            TokenError::InvalidClient(_) => StatusCode::UNAUTHORIZED,
            TokenError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn from_jose(e: &JoseError) -> Self {
        TokenError::InvalidClient(format!("the client assertion was refused: {e}"))
    }
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = json!({"error": self.code(), "error_description": self.to_string()});
        no_store(status, body)
    }
}

/// A JSON answer that no cache may keep (RFC 6749 §5.1).
fn no_store(status: StatusCode, body: serde_json::Value) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// The form's parameters, each at most once (RFC 6749 §3.2: "parameters MUST NOT be included more than once").
#[derive(Debug, Default)]
struct TokenRequest {
    grant_type: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
    scope: Option<String>,
}

fn parse_form(headers: &HeaderMap, body: &[u8]) -> Result<TokenRequest, TokenError> {
    if exchange_core::http::media_type(headers) != "application/x-www-form-urlencoded" {
        return Err(TokenError::InvalidRequest("the body must be application/x-www-form-urlencoded".into()));
    }
    let mut req = TokenRequest::default();
    for (name, value) in form_urlencoded::parse(body) {
        let slot = match name.as_ref() {
            "grant_type" => &mut req.grant_type,
            "client_assertion_type" => &mut req.client_assertion_type,
            "client_assertion" => &mut req.client_assertion,
            "scope" => &mut req.scope,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(TokenError::InvalidRequest(format!("{name} is given more than once")));
        }
    }
    Ok(req)
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, TokenError> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(TokenError::InvalidRequest(format!("{name} is required"))),
    }
}

/// The requested scopes the partner is allowed, in the order asked, without repeats.
pub fn grant(requested: &str, partner: &TradingPartner) -> Vec<String> {
    let mut granted: Vec<String> = Vec::new();
    for scope in requested.split_ascii_whitespace() {
        if partner.scopes.iter().any(|s| s == scope) && !granted.iter().any(|g| g == scope) {
            granted.push(scope.to_owned());
        }
    }
    granted
}

/// `POST /auth/token`.
pub async fn token(State(auth): State<Arc<Auth>>, headers: HeaderMap, body: Bytes) -> Response {
    match issue(&auth, &headers, &body).await {
        Ok((partner, granted, access_token)) => {
            tracing::info!(partner = partner.as_str(), scopes = granted.len(), "access token issued");
            no_store(
                StatusCode::OK,
                json!({
                    "access_token": access_token,
                    "token_type": "bearer",
                    "expires_in": TOKEN_LIFETIME_SECS,
                    "scope": granted.join(" ")
                }),
            )
        }
        Err(e) => {
            match &e {
                TokenError::Unavailable(cause) => tracing::error!(error = %cause, "token request failed"),
                other => tracing::info!(error = other.code(), reason = %other, "token request refused"),
            }
            e.into_response()
        }
    }
}

async fn issue(auth: &Auth, headers: &HeaderMap, body: &[u8]) -> Result<(PartnerId, Vec<String>, String), TokenError> {
    let req = parse_form(headers, body)?;
    if required(&req.grant_type, "grant_type")? != "client_credentials" {
        return Err(TokenError::UnsupportedGrantType);
    }
    if required(&req.client_assertion_type, "client_assertion_type")? != JWT_BEARER {
        return Err(TokenError::InvalidRequest(format!("client_assertion_type must be {JWT_BEARER}")));
    }
    let assertion = required(&req.client_assertion, "client_assertion")?;
    let requested = required(&req.scope, "scope")?;

    // The client: `iss` names a registered partner; its registered keys must have signed the assertion.
    let jws = UnverifiedJws::parse(assertion).map_err(|e| TokenError::from_jose(&e))?;
    let unknown = || TokenError::InvalidClient("unknown client".into());
    let client_id = PartnerId::parse(jws.issuer().ok_or_else(unknown)?).map_err(|_| unknown())?;
    let partner = auth.core.repo().partner(&client_id).await.map_err(TokenError::Unavailable)?.ok_or_else(unknown)?;
    let Some(jwks) = partner.client_jwks.as_ref().filter(|j| !j.keys.is_empty()) else {
        return Err(TokenError::InvalidClient("the client has registered no keys".into()));
    };
    let claims = jws.verify(jwks).map_err(|e| TokenError::from_jose(&e))?;
    let now = auth.core.clock().now();
    let checked =
        check_client_assertion(&claims, &auth.token_url(headers), now.unix_timestamp(), MAX_ASSERTION_LIFETIME_SECS)
            .map_err(|e| TokenError::from_jose(&e))?;

    let granted = grant(requested, &partner);
    if granted.is_empty() {
        return Err(TokenError::InvalidScope);
    }
    // Last, so that a refused request does not use up the assertion; a conditional create, so that two racing
    // uses of one assertion get one token.
    let first = auth
        .replay
        .first_use(REPLAY_PURPOSE, partner.id.as_str(), &checked.jti, checked.exp)
        .await
        .map_err(TokenError::Unavailable)?;
    if !first {
        return Err(TokenError::InvalidClient("the client assertion was used before (jti)".into()));
    }
    let token = auth
        .core
        .tokens()
        .issue_scoped(&partner, &granted, partner.id.as_str(), now, TOKEN_LIFETIME_SECS)
        .await
        .map_err(TokenError::Unavailable)?;
    // Access granted is audited like access used; no record, no token.
    let entry = AuditEntry {
        at: timestamp(now),
        partner: partner.id.as_str().to_owned(),
        client_id: partner.id.as_str().to_owned(),
        action: AuditAction::E,
        operation: "POST /auth/token".to_owned(),
        resources: granted.iter().map(|s| format!("scope/{s}")).collect(),
        members: vec![],
        outcome: 200,
        request_id: request_id(),
    };
    auth.core.audit().append(entry).await.map_err(TokenError::Unavailable)?;
    Ok((partner.id.clone(), granted, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partner(scopes: &[&str]) -> TradingPartner {
        TradingPartner {
            id: PartnerId::parse("demo-provider").expect("id"),
            role: exchange_core::domain::PartnerRole::Provider,
            name: "Demo".into(),
            npis: vec![],
            provider_ids: vec![],
            x12_sender_ids: vec![],
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            jwks: None,
            client_jwks: None,
            cds_issuers: vec![],
            payer_ids: vec![],
        }
    }

    #[test]
    fn grants_only_allowed_scopes_once_each() {
        let p = partner(&["eligibility", "prior-auth"]);
        assert_eq!(grant("prior-auth admin  eligibility prior-auth", &p), ["prior-auth", "eligibility"]);
        assert!(grant("admin reviewer", &p).is_empty());
        assert!(grant("", &p).is_empty());
    }

    #[test]
    fn form_parameters_are_read_once_each_and_only_from_a_form() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"));
        let r = parse_form(&h, b"grant_type=client_credentials&scope=a+b&other=x").expect("form");
        assert_eq!(r.grant_type.as_deref(), Some("client_credentials"));
        assert_eq!(r.scope.as_deref(), Some("a b"));
        assert!(matches!(parse_form(&h, b"scope=a&scope=b"), Err(TokenError::InvalidRequest(_))));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(matches!(parse_form(&h, b"{}"), Err(TokenError::InvalidRequest(_))));
    }

    #[test]
    fn error_codes_and_statuses_follow_rfc_6749() {
        for (e, code, status) in [
            (TokenError::InvalidRequest("x".into()), "invalid_request", 400),
            (TokenError::InvalidClient("x".into()), "invalid_client", 401),
            (TokenError::UnsupportedGrantType, "unsupported_grant_type", 400),
            (TokenError::InvalidScope, "invalid_scope", 400),
            (TokenError::Unavailable(PortError::Unavailable("down".into())), "temporarily_unavailable", 503),
        ] {
            assert_eq!((e.code(), e.status().as_u16()), (code, status));
        }
    }
}
