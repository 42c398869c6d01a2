//! The CDS Hooks HTTP handlers. Errors are answered as OperationOutcome with the CDS Hooks status codes: 400 for a
//! malformed request or an unknown service's hook, 401 for a client JWT that does not verify, 404 for a service
//! this exchange does not offer, 503 when a dependency is down.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use exchange_core::auth::request_id;
use exchange_core::domain::audit::{timestamp, AuditAction, AuditEntry};
use exchange_core::fhir::FhirError;
use exchange_core::http::MAX_BODY_BYTES;

use super::request::{self, Hook};
use super::{client_auth, discovery, orders, service};
use crate::Davinci;

/// `GET /cds-services` (open, as discovery documents are).
pub async fn discover(State(dv): State<Arc<Davinci>>) -> Response {
    let name = match dv.core.repo().current().await {
        Ok(Some(data)) => data.payer.name,
        _ => "Payer".to_owned(),
    };
    Json(discovery::services(&name)).into_response()
}

/// `POST /cds-services/{id}`.
pub async fn invoke(
    State(dv): State<Arc<Davinci>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = request_id();
    let mut resp = match handle(&dv, &id, &headers, &body, &request_id).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => e.into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn handle(
    dv: &Davinci,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
    request_id: &str,
) -> Result<serde_json::Value, FhirError> {
    let Some(hook) = Hook::for_service(id) else {
        return Err(FhirError::NotFound("no such CDS service: see GET /cds-services".into()));
    };
    if body.len() > MAX_BODY_BYTES {
        return Err(FhirError::TooLarge(MAX_BODY_BYTES));
    }
    let now = dv.core.clock().now();
    let audience = format!("{}/cds-services/{}", dv.base_url(headers), hook.service_id());
    let client =
        client_auth::authenticate(dv.core.repo(), headers.get(header::AUTHORIZATION), &audience, now.unix_timestamp())
            .await?;
    let started = std::time::Instant::now();
    // The hook is outside the bearer-token middleware, so it writes its own audit record: the client is the
    // CDS client (its issuer), on behalf of the partner it is registered to, about the member the Coverage names.
    let entry = |members: Vec<String>, outcome: u16| AuditEntry {
        at: timestamp(now),
        partner: client.partner.id.as_str().to_owned(),
        client_id: client.issuer.clone(),
        action: AuditAction::E,
        operation: format!("POST /cds-services/{}", hook.service_id()),
        resources: vec![],
        members,
        outcome,
        request_id: request_id.to_owned(),
    };
    let mut members = Vec::new();
    let result = match request::parse(hook, body) {
        Ok(request) => {
            // Bounded like every noted member id: an id longer than any payer issues is not recorded.
            members.extend(
                orders::coverages(&request, &[])
                    .into_iter()
                    .filter_map(orders::member_id)
                    .filter(|m| !m.is_empty() && m.len() <= 64)
                    .map(|m| m.to_ascii_uppercase())
                    .take(2),
            );
            // An answer is recorded in the transaction that keeps its assertions.
            service::answer(&dv.crd, &client, request, now, request_id, entry(members.clone(), 200)).await
        }
        Err(e) => Err(e),
    };
    // A refusal is recorded on its own.
    if let Err(refused) = &result {
        if let Err(e) = dv.core.audit().append(entry(members, refused.status().as_u16())).await {
            tracing::error!(request_id, error = %e, "audit record not written: answering 503");
            return Err(FhirError::Unavailable);
        }
    }
    let answer = result?;
    tracing::info!(
        request_id,
        partner = client.partner.id.as_str(),
        hook = hook.name(),
        micros = started.elapsed().as_micros() as u64,
        "CRD hook answered"
    );
    Ok(answer)
}
