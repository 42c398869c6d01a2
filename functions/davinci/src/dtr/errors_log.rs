//! `Questionnaire/$log-questionnaire-errors`: a DTR client reports the problems it met running a payer's form
//! (CQL that would not run, a ValueSet it could not expand). Kept for the payer's form authors per partner for a
//! year; the outcome's text may hold anything, so it is stored, never logged.

use axum::http::StatusCode;
use exchange_core::commit::Commit;
use exchange_core::fhir::FhirError;
use exchange_core::http::CallerContext;
use exchange_core::ports::{Item, Key, PortError, WriteOp};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::Davinci;

/// How long reports are kept.
pub const RETENTION_DAYS: i64 = 365;

/// Records one report.
pub async fn log(dv: &Davinci, caller: &CallerContext, body: &[u8], now: OffsetDateTime) -> Result<Value, FhirError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| FhirError::invalid("structure", "the body is not JSON", None))?;
    if v["resourceType"] != "Parameters" {
        return Err(FhirError::invalid("structure", "$log-questionnaire-errors takes a Parameters resource", None));
    }
    let params: Vec<&Value> = v["parameter"].as_array().into_iter().flatten().collect();
    let questionnaire = params
        .iter()
        .find(|p| p["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case("questionnaire")))
        .and_then(|p| p["valueCanonical"].as_str().or_else(|| p["valueUri"].as_str()));
    let outcome = params
        .iter()
        .find(|p| matches!(p["name"].as_str(), Some("operationOutcome" | "OperationOutcome" | "outcome")))
        .map(|p| &p["resource"])
        .filter(|r| r["resourceType"] == "OperationOutcome");
    let (Some(questionnaire), Some(outcome)) = (questionnaire, outcome) else {
        return Err(FhirError::invalid(
            "required",
            "send the questionnaire (canonical) and the OperationOutcome (operationOutcome)",
            Some("Parameters.parameter"),
        ));
    };
    let issues = outcome["issue"].as_array().map_or(0, Vec::len);
    let random: [u8; 4] = rand::random();
    let key = Key::new(
        format!("DTRERRORS#{}", caller.partner.id.as_str()),
        format!("{}#{}", now.unix_timestamp(), hex::encode(random)),
    );
    let item =
        Item::new(key, json!({ "questionnaire": questionnaire, "outcome": outcome, "at": now.unix_timestamp() }))
            .with_ttl(now.unix_timestamp() + RETENTION_DAYS * 86_400);
    // The request's audit record commits with the log entry.
    let commit = Commit::answered(StatusCode::OK).write(WriteOp::PutNew(item));
    dv.core
        .committer()
        .commit(caller, commit)
        .await
        .map_err(|e: PortError| FhirError::from_port(&caller.request_id, &e))?;
    tracing::info!(request_id = %caller.request_id, partner = caller.partner.id.as_str(), issues, "DTR form errors logged");
    Ok(json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "information", "code": "informational",
                    "diagnostics": format!("{issues} issue(s) logged for the payer's form authors") }]
    }))
}
