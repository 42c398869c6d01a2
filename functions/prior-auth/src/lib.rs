//! Prior authorization: X12 278 and Da Vinci PAS over one shared case, the payer's reviewer API, notification
//! subscriptions, deadline sweeps and the CMS-0057-F metrics, as an AWS Lambda function. [`router`] is the whole
//! HTTP surface; `main.rs` only builds [`PriorAuth`] and runs it.
//!
//! - [`service`]: the ports a submission uses; [`intake`]: channel-neutral request → payer data checks → policy
//!   decisions;
//! - [`x12`]: `POST /x12/278`; [`pas`]: `Claim/$submit` and `Claim/$inquire`;
//! - [`review`]: the reviewer API; [`subscriptions`]: R4 backport Subscriptions; [`notify`]: what is sent;
//! - [`worker`]: notification delivery and deadline sweeps (the `worker` function; in-process locally);
//! - [`metrics`]: CMS-0057-F public metrics.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod intake;
pub mod metrics;
pub mod notify;
pub mod pas;
pub mod review;
pub mod service;
pub mod subscriptions;
pub mod worker;
pub mod x12;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use exchange_core::app::App;
use exchange_core::domain::notifications::Outbox;
use exchange_core::domain::prior_auth::CaseRepo;
use exchange_core::domain::subscriptions::SubscriptionRepo;
use exchange_core::http::{require_caller, MAX_BODY_BYTES};
use exchange_core::ports::Notifier;
use tokio::sync::Notify;

/// Behaviour that differs between AWS and the local runner.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Whether subscription endpoints may be plain `http://` (local runner); AWS requires HTTPS.
    pub allow_http_endpoints: bool,
    /// First retry delay of a failed notification (doubles per attempt).
    pub retry_base: time::Duration,
    /// How long before its deadline a pended case is flagged by the sweep.
    pub deadline_warning: time::Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allow_http_endpoints: false,
            retry_base: time::Duration::seconds(30),
            deadline_warning: time::Duration::hours(24),
        }
    }
}

/// The prior-auth function's state: the shared ports plus the case, subscription and outbox repositories.
pub struct PriorAuth {
    /// Shared ports.
    pub core: Arc<App>,
    /// Cases.
    pub cases: CaseRepo,
    /// The submission operations (the 278, PAS `$submit`), over the ports they use.
    pub service: service::PriorAuthService,
    /// Subscriptions.
    pub subscriptions: SubscriptionRepo,
    /// Notification outbox.
    pub outbox: Outbox,
    /// Outbound notifier.
    pub notifier: Arc<dyn Notifier>,
    /// Settings.
    pub settings: Settings,
    /// Wakes an in-process worker when a job is enqueued (local runner); AWS uses DynamoDB Streams instead.
    pub wake: Arc<Notify>,
}

impl std::fmt::Debug for PriorAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriorAuth").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl PriorAuth {
    /// Assembles the state.
    pub fn new(core: Arc<App>, notifier: Arc<dyn Notifier>, settings: Settings) -> Self {
        let cases = CaseRepo::new(core.store().clone());
        PriorAuth {
            service: service::PriorAuthService::new(&core, cases.clone()),
            cases,
            subscriptions: SubscriptionRepo::new(core.store().clone()),
            outbox: Outbox::new(core.store().clone()),
            core,
            notifier,
            settings,
            wake: Arc::new(Notify::new()),
        }
    }
}

/// Notes for the request's audit record that it touched `case` (its id and its member).
pub fn audit_case(ctx: &exchange_core::http::CallerContext, case: &exchange_core::domain::prior_auth::PaCase) {
    ctx.audit_resource("case", &case.id);
    ctx.audit_member(&case.subscriber.member_id);
}

/// Notes a case the request's next audited commit creates: kept in the audit record only if that commit succeeds.
pub fn audit_new_case(ctx: &exchange_core::http::CallerContext, case: &exchange_core::domain::prior_auth::PaCase) {
    ctx.audit_resource_on_commit("case", &case.id);
    ctx.audit_member_on_commit(&case.subscriber.member_id);
}

/// The function's routes: [`routes`] plus `/health` (open).
pub fn router(pa: Arc<PriorAuth>) -> Router {
    Router::new().route("/health", get(|| async { Json(serde_json::json!({"status": "ok"})) })).merge(routes(pa))
}

/// The protected routes (bearer token required): `/x12/278`, `/fhir/Claim/$submit`, `/fhir/Claim/$inquire`,
/// `/fhir/Subscription[/ID]`, `/review/cases[...]`, `/review/dead-letters` and `/metrics/prior-auth`. The local
/// runner merges these beside the other functions' routes.
pub fn routes(pa: Arc<PriorAuth>) -> Router {
    Router::new()
        .route("/x12/278", post(x12::routes::post_278))
        .route("/fhir/Claim/$submit", post(pas::routes::submit))
        .route("/fhir/Claim/$inquire", post(pas::routes::inquire))
        .route("/fhir/Subscription", post(subscriptions::create).get(subscriptions::list))
        .route(
            "/fhir/Subscription/{id}",
            get(subscriptions::read).put(subscriptions::update).delete(subscriptions::delete),
        )
        .route("/review/cases", get(review::list))
        .route("/review/cases/{id}", get(review::read))
        .route("/review/cases/{id}/decisions", post(review::decide))
        .route("/review/cases/{id}/documentation-requests", post(review::request_documentation))
        .route("/review/dead-letters", get(review::dead_letters))
        .route("/review/dead-letters/{id}/redrive", post(review::redrive))
        .route("/metrics/prior-auth", get(metrics::get_metrics))
        .route_layer(middleware::from_fn_with_state(pa.core.auth().clone(), require_caller))
        .with_state(pa)
        // Axum's own limit sits above ours so that our handlers answer 413 in their own format.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES + 1))
}
