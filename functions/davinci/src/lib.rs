//! Da Vinci CRD and DTR, and the exchange's FHIR discovery documents, as an AWS Lambda function. [`router`] is the
//! whole HTTP surface; `main.rs` only builds [`Davinci`] and runs it.
//!
//! - [`crd`]: CDS Hooks discovery and the six CRD hooks, answered from the payer policy;
//! - [`dtr`]: `$questionnaire-package`, `$next-question`, `$log-questionnaire-errors` from the payer's forms;
//! - [`metadata`]: `GET /fhir/metadata` and `/.well-known/smart-configuration`.
//!
//! CRD, DTR, prior authorization and eligibility all read the same policy (`exchange_core::domain::policy`), so
//! they cannot disagree about a member, plan and code.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod crd;
pub mod dtr;
pub mod metadata;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use exchange_core::app::App;
use exchange_core::http::{require_caller, MAX_BODY_BYTES};

use crd::assertions::AssertionRepo;
use crd::ehr::EhrFhir;

/// Behaviour that differs between deployments.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The public base URL (`https://api.example.com`): CDS client JWTs name `{base}/cds-services/{id}` as their
    /// audience. Unset: taken from the request's `Host` (and `X-Forwarded-Proto`, else https).
    pub public_base_url: Option<String>,
    /// Whether missing CRD prefetch may be read from the EHR's FHIR server with the lent `fhirAuthorization`.
    pub fetch_from_ehr: bool,
    /// Whether that server may be plain HTTP (local runner and tests only).
    pub allow_http_ehr: bool,
}

impl Settings {
    /// From the environment: `PUBLIC_BASE_URL`, `CRD_FETCH_FROM_EHR=true`.
    pub fn from_env() -> Self {
        Settings {
            public_base_url: std::env::var("PUBLIC_BASE_URL").ok().filter(|s| !s.is_empty()),
            fetch_from_ehr: std::env::var("CRD_FETCH_FROM_EHR").is_ok_and(|v| v == "true"),
            allow_http_ehr: false,
        }
    }
}

/// The function's state.
pub struct Davinci {
    /// Shared ports.
    pub core: Arc<App>,
    /// Kept coverage assertions.
    pub assertions: AssertionRepo,
    /// The EHR reader (missing prefetch).
    pub ehr: Arc<dyn EhrFhir>,
    /// Settings.
    pub settings: Settings,
    /// The CRD hooks' operation, over the ports it uses.
    pub crd: crd::service::CrdService,
}

impl std::fmt::Debug for Davinci {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Davinci").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Davinci {
    /// Assembles the state.
    pub fn new(core: Arc<App>, ehr: Arc<dyn EhrFhir>, settings: Settings) -> Self {
        let assertions = AssertionRepo::new(core.store().clone());
        let crd = crd::service::CrdService::new(&core, assertions.clone(), ehr.clone(), settings.clone());
        Davinci { assertions, core, ehr, settings, crd }
    }

    /// The public base URL: configured, else from the request's headers.
    pub fn base_url(&self, headers: &HeaderMap) -> String {
        exchange_core::http::public_base_url(self.settings.public_base_url.as_deref(), headers)
    }
}

/// The function's routes: [`open_routes`], [`routes`] and `/health`.
pub fn router(dv: Arc<Davinci>) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .merge(open_routes(dv.clone()))
        .merge(routes(dv))
}

/// Routes without an exchange bearer token: discovery documents, and the CDS services (their callers present the
/// CDS client JWT, checked in the handler).
pub fn open_routes(dv: Arc<Davinci>) -> Router {
    Router::new()
        .route("/cds-services", get(crd::routes::discover))
        .route("/cds-services/{id}", post(crd::routes::invoke))
        .route("/fhir/metadata", get(metadata_route))
        .route("/.well-known/smart-configuration", get(smart_route))
        .with_state(dv)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES + 1))
}

/// The DTR operations (exchange bearer token).
pub fn routes(dv: Arc<Davinci>) -> Router {
    Router::new()
        .route("/fhir/Questionnaire/$questionnaire-package", post(dtr::routes::questionnaire_package))
        .route("/fhir/Questionnaire/$next-question", post(dtr::routes::next_question))
        .route("/fhir/Questionnaire/$log-questionnaire-errors", post(dtr::routes::log_questionnaire_errors))
        .route_layer(middleware::from_fn_with_state(dv.core.auth().clone(), require_caller))
        .with_state(dv)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES + 1))
}

async fn metadata_route(State(dv): State<Arc<Davinci>>, headers: HeaderMap) -> Response {
    let name = match dv.core.repo().current().await {
        Ok(Some(data)) => data.payer.name,
        _ => "Payer".to_owned(),
    };
    let date = exchange_core::x12::ack::ccyymmdd(dv.core.clock().now());
    let date = format!("{}-{}-{}", &date[..4], &date[4..6], &date[6..]);
    let body = metadata::capability_statement(&dv.base_url(&headers), &name, &date);
    let mut resp = serde_json::to_vec(&body).unwrap_or_default().into_response();
    resp.headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static(exchange_core::fhir::FHIR_JSON));
    resp
}

async fn smart_route(State(dv): State<Arc<Davinci>>, headers: HeaderMap) -> Response {
    Json(metadata::smart_configuration(&dv.base_url(&headers))).into_response()
}
