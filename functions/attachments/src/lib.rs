//! Claims attachments: X12 275 and Da Vinci CDex `$submit-attachment` into one KMS-encrypted vault, the payer's
//! attachment requests (CDex Tasks) and payer retrieval, as an AWS Lambda function. [`router`] is the whole HTTP
//! surface; `main.rs` only builds [`Attachments`] and runs it.
//!
//! - [`service`]: the ports a submission uses, and the 275 operation's home;
//! - [`intake`]: channel-neutral checks, vaulting, linking to the payer's request and the prior-auth case;
//! - [`x12`]: `POST /x12/275`; [`cdex`]: `POST /fhir/$submit-attachment`;
//! - [`tasks`]: payer-initiated attachment requests (`/fhir/Task`);
//! - [`retrieval`]: `/attachments[...]` (JSON) and `GET /fhir/DocumentReference` (FHIR search);
//! - [`uploads`]: `POST /attachments/uploads`, a transfer URL for a document too large for a request body.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cdex;
pub mod intake;
pub mod retrieval;
pub mod service;
pub mod tasks;
pub mod uploads;
pub mod x12;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use exchange_core::app::App;
use exchange_core::domain::attachment_requests::AttachmentRequestRepo;
use exchange_core::domain::attachments::AttachmentRepo;
use exchange_core::domain::prior_auth::CaseRepo;
use exchange_core::domain::uploads::UploadRepo;
use exchange_core::http::require_caller;

/// The attachments function's state: the shared ports and the repositories it reads and writes.
pub struct Attachments {
    /// Shared ports.
    pub core: Arc<App>,
    /// Attachments.
    pub attachments: AttachmentRepo,
    /// The payer's requests.
    pub requests: AttachmentRequestRepo,
    /// Prior-authorization cases (attachments for a pended case are linked to it).
    pub cases: CaseRepo,
    /// Staged uploads of documents too large for a request body.
    pub uploads: UploadRepo,
    /// The submission operations (275, CDex), over the ports they use.
    pub service: service::AttachmentService,
}

impl std::fmt::Debug for Attachments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachments").finish_non_exhaustive()
    }
}

impl Attachments {
    /// Assembles the state.
    pub fn new(core: Arc<App>) -> Self {
        // The routes outside the submission flows read the service's repositories.
        let service = service::AttachmentService::new(&core);
        Attachments {
            attachments: service.attachments.clone(),
            requests: service.requests.clone(),
            cases: service.cases.clone(),
            uploads: service.uploads.clone(),
            service,
            core,
        }
    }
}

/// The function's routes: [`routes`] plus `/health` (open).
pub fn router(svc: Arc<Attachments>) -> Router {
    Router::new().route("/health", get(|| async { Json(serde_json::json!({"status": "ok"})) })).merge(routes(svc))
}

/// The protected routes (bearer token required): `/x12/275`, `/fhir/$submit-attachment`, `/fhir/Task[/ID]`,
/// `/fhir/DocumentReference`, `/attachments`, `/attachments/uploads`, `/attachments/ID` and
/// `/attachments/ID/documents/N`.
pub fn routes(svc: Arc<Attachments>) -> Router {
    Router::new()
        .route("/x12/275", post(x12::post_275))
        .route("/fhir/$submit-attachment", post(cdex::submit_attachment))
        .route("/fhir/Task", post(tasks::create).get(tasks::search))
        .route("/fhir/Task/{id}", get(tasks::read))
        .route("/fhir/DocumentReference", get(retrieval::search_document_references))
        .route("/attachments", get(retrieval::list))
        .route("/attachments/uploads", post(uploads::create))
        .route("/attachments/{id}", get(retrieval::read))
        .route("/attachments/{id}/documents/{index}", get(retrieval::download))
        .route_layer(middleware::from_fn_with_state(svc.core.auth().clone(), require_caller))
        .with_state(svc)
        // Axum's own limit sits above ours so that our handlers answer 413 in their own format.
        .layer(DefaultBodyLimit::max(exchange_core::http::MAX_BODY_BYTES + 1))
}
