//! The DTR HTTP handlers: a provider token with scope `dtr` or `prior-auth` (DTR gathers prior-authorization
//! documentation), FHIR JSON in and out, every failure an OperationOutcome.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use exchange_core::domain::PartnerRole;
use exchange_core::fhir::{FhirError, FHIR_JSON};
use exchange_core::http::{media_type, CallerContext, MAX_BODY_BYTES};

use super::{adaptive, errors_log, package};
use crate::Davinci;

fn admit(caller: &CallerContext, headers: &HeaderMap, body: &[u8]) -> Result<(), FhirError> {
    if caller.caller.role != PartnerRole::Provider
        || !(caller.caller.has_scope("dtr") || caller.caller.has_scope("prior-auth"))
    {
        return Err(FhirError::Forbidden("DTR needs a provider token with scope dtr or prior-auth".into()));
    }
    let media = media_type(headers);
    if !media.is_empty() && media != FHIR_JSON && media != "application/json" {
        return Err(FhirError::UnsupportedMediaType);
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(FhirError::TooLarge(MAX_BODY_BYTES));
    }
    Ok(())
}

fn fhir(result: Result<serde_json::Value, FhirError>) -> Response {
    match result {
        Ok(v) => {
            let mut resp = serde_json::to_vec(&v).unwrap_or_default().into_response();
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
            resp
        }
        Err(e) => e.into_response(),
    }
}

/// `POST /fhir/Questionnaire/$questionnaire-package`.
pub async fn questionnaire_package(
    State(dv): State<Arc<Davinci>>,
    Extension(caller): Extension<CallerContext>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        admit(&caller, &headers, &body)?;
        let request = package::parse(&body)?;
        package::package(&dv, &caller, request, dv.core.clock().now()).await
    };
    fhir(result.await)
}

/// `POST /fhir/Questionnaire/$next-question`.
pub async fn next_question(
    State(dv): State<Arc<Davinci>>,
    Extension(caller): Extension<CallerContext>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        admit(&caller, &headers, &body)?;
        let qr = adaptive::parse(&body)?;
        adaptive::next_question(&dv, qr, &caller.request_id).await
    };
    fhir(result.await)
}

/// `POST /fhir/Questionnaire/$log-questionnaire-errors`.
pub async fn log_questionnaire_errors(
    State(dv): State<Arc<Davinci>>,
    Extension(caller): Extension<CallerContext>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        admit(&caller, &headers, &body)?;
        errors_log::log(&dv, &caller, &body, dv.core.clock().now()).await
    };
    fhir(result.await)
}
