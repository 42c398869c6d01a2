//! The SMART Backend Services token endpoint as an AWS Lambda function. [`router`] is the whole HTTP surface;
//! `main.rs` only builds [`Auth`] and runs it.
//!
//! A trading partner's backend asks for an access token with `grant_type=client_credentials` and a
//! `private_key_jwt` client assertion signed by a key it registered (ES384 or RS384); the answer is a five-minute
//! exchange token naming the partner and the scopes granted, which the shared caller middleware verifies on every
//! other route ([`exchange_core::http::require_caller`]). See [`token_endpoint`] for the rules and the errors.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit_routes;
pub mod payer_data_routes;
pub mod token_endpoint;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::routing::{get, post, put};
use axum::{middleware, Json, Router};
use exchange_core::app::App;
use exchange_core::domain::replay::ReplayLedger;

/// Largest token request accepted: an assertion is a few kilobytes ([`exchange_core::jose::MAX_TOKEN_BYTES`]).
pub const MAX_TOKEN_REQUEST_BYTES: usize = 32 * 1024;

/// Behaviour that differs between deployments.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The public base URL (`https://api.example.com`): client assertions name `{base}/auth/token` as their
    /// audience. Unset: taken from the request's `Host` (and `X-Forwarded-Proto`, else https).
    pub public_base_url: Option<String>,
}

impl Settings {
    /// From the environment: `PUBLIC_BASE_URL`.
    pub fn from_env() -> Self {
        Settings { public_base_url: std::env::var("PUBLIC_BASE_URL").ok().filter(|s| !s.is_empty()) }
    }
}

/// The function's state.
pub struct Auth {
    /// Shared ports (payer data with the partners, token signing).
    pub core: Arc<App>,
    /// Client assertions used once.
    pub replay: ReplayLedger,
    /// Settings.
    pub settings: Settings,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Auth {
    /// Assembles the state.
    pub fn new(core: Arc<App>, settings: Settings) -> Self {
        Auth { replay: ReplayLedger::new(core.store().clone()), core, settings }
    }

    /// The token endpoint's URL, the audience a client assertion must name.
    pub fn token_url(&self, headers: &HeaderMap) -> String {
        let base = exchange_core::http::public_base_url(self.settings.public_base_url.as_deref(), headers);
        format!("{base}/auth/token")
    }
}

/// The function's routes: [`routes`] and `/health`.
pub fn router(auth: Arc<Auth>) -> Router {
    Router::new().route("/health", get(|| async { Json(serde_json::json!({"status": "ok"})) })).merge(routes(auth))
}

/// `POST /auth/token` (no bearer token: the client assertion is the credential) and the admin routes (bearer
/// token, admin scope): `GET /admin/audit`, `GET /admin/audit/verify`, `PUT /admin/payer-data`.
pub fn routes(auth: Arc<Auth>) -> Router {
    let admin = Router::new()
        .route("/admin/audit", get(audit_routes::export))
        .route("/admin/audit/verify", get(audit_routes::verify_trail))
        .route(
            "/admin/payer-data",
            put(payer_data_routes::replace).layer(DefaultBodyLimit::max(exchange_core::http::MAX_BODY_BYTES + 1)),
        )
        .route_layer(middleware::from_fn_with_state(auth.core.auth().clone(), exchange_core::http::require_caller));
    Router::new()
        .route("/auth/token", post(token_endpoint::token).layer(DefaultBodyLimit::max(MAX_TOKEN_REQUEST_BYTES)))
        .merge(admin)
        .with_state(auth)
}
