//! `POST /fhir/$submit-attachment` (CDex 2.1): a `Parameters` with TrackingId, AttachTo, PayerId,
//! OrganizationId / ProviderId, MemberId, ServiceDate, Final and one or more Attachment parameters (LineItem, Code,
//! Content) → 200 with an informational OperationOutcome (saying so when the attachment is held for a claim or
//! request not yet received), or a 4xx OperationOutcome naming the parameter at fault.
//!
//! A `DocumentReference` Content stores its attachments' bytes (base64 `data`); any other resource (a document
//! Bundle, a QuestionnaireResponse, an Observation) is stored as the JSON text it arrived as, byte for byte.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use exchange_core::domain::attachments::{AttachTo, MAX_DOCUMENT_BYTES};
use exchange_core::domain::uploads::referenced_upload;
use exchange_core::domain::PartnerRole;
use exchange_core::fhir::{FhirError, FHIR_JSON};
use exchange_core::http::{answer_response, media_type, read_body_max, CallerContext, MAX_BODY_BYTES};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::intake::{self, Document, Refusal, Submission};
use crate::Attachments;

/// The parameters' resources as the JSON text they arrived as (to store non-DocumentReference content verbatim).
#[derive(Deserialize)]
struct RawParameters<'a> {
    #[serde(borrow, default)]
    parameter: Vec<RawParameter<'a>>,
}

#[derive(Deserialize)]
struct RawParameter<'a> {
    #[serde(default)]
    name: String,
    #[serde(borrow, default)]
    resource: Option<&'a RawValue>,
    #[serde(borrow, default)]
    part: Vec<RawParameter<'a>>,
}

fn invalid(diagnostics: impl Into<String>, expression: &str) -> FhirError {
    FhirError::invalid("required", diagnostics, Some(expression))
}

fn value_of<'a>(params: &'a [Value], name: &str) -> Vec<&'a Value> {
    params.iter().filter(|p| p["name"] == name).collect()
}

fn identifier(p: &Value) -> Option<(Option<String>, String)> {
    let id = &p["valueIdentifier"];
    let value = id["value"].as_str().filter(|v| !v.trim().is_empty())?;
    Some((id["system"].as_str().map(str::to_owned), value.trim().to_owned()))
}

fn one_identifier(params: &[Value], name: &str, required: bool) -> Result<Option<(Option<String>, String)>, FhirError> {
    let found = value_of(params, name);
    let expr = format!("Parameters.parameter.where(name = '{name}')");
    match found.as_slice() {
        [] if required => Err(invalid(format!("{name} is required"), &expr)),
        [] => Ok(None),
        [p] => identifier(p)
            .map(Some)
            .ok_or_else(|| FhirError::invalid("value", format!("{name} needs valueIdentifier.value"), Some(&expr))),
        _ => Err(FhirError::invalid("structure", format!("{name} appears more than once"), Some(&expr))),
    }
}

/// Parses a `$submit-attachment` Parameters (`raw` is the request body it was read from).
pub fn parse_submit(raw: &[u8]) -> Result<Submission, FhirError> {
    let value: Value = serde_json::from_slice(raw)
        .map_err(|e| FhirError::invalid("structure", format!("the body is not JSON: {e}"), None))?;
    if value["resourceType"] != "Parameters" {
        return Err(FhirError::invalid("structure", "$submit-attachment takes a Parameters resource", None));
    }
    let raw_params: RawParameters<'_> = serde_json::from_slice(raw)
        .map_err(|_| FhirError::invalid("structure", "Parameters.parameter is not a list of parameters", None))?;
    let Some(params) = value["parameter"].as_array() else {
        return Err(invalid("Parameters.parameter is required", "Parameters.parameter"));
    };

    let (tracking_system, tracking_id) = one_identifier(params, "TrackingId", true)?.unwrap_or_default();
    let attach_to_expr = "Parameters.parameter.where(name = 'AttachTo')";
    let attach_to = match value_of(params, "AttachTo").as_slice() {
        [p] => p["valueCode"].as_str().and_then(AttachTo::parse).ok_or_else(|| {
            FhirError::invalid("code-invalid", "AttachTo must be claim or preauthorization", Some(attach_to_expr))
        })?,
        [] => return Err(invalid("AttachTo is required", attach_to_expr)),
        _ => return Err(FhirError::invalid("structure", "AttachTo appears more than once", Some(attach_to_expr))),
    };
    let (_, payer_id) = one_identifier(params, "PayerId", true)?.unwrap_or_default();
    let organization = one_identifier(params, "OrganizationId", false)?.map(|(_, v)| v);
    let provider = one_identifier(params, "ProviderId", false)?.map(|(_, v)| v);
    if organization.is_none() && provider.is_none() {
        return Err(invalid(
            "OrganizationId or ProviderId is required",
            "Parameters.parameter.where(name = 'OrganizationId')",
        ));
    }
    let (_, member_id) = one_identifier(params, "MemberId", true)?.unwrap_or_default();
    let service_date = match value_of(params, "ServiceDate").first() {
        Some(p) => {
            let date = p["valueDateTime"].as_str().or_else(|| p["valueDate"].as_str()).unwrap_or("");
            if date.len() < 10 || !date.is_char_boundary(10) {
                return Err(FhirError::invalid(
                    "value",
                    "ServiceDate needs a date",
                    Some("Parameters.parameter.where(name = 'ServiceDate')"),
                ));
            }
            Some(date[..10].to_owned())
        }
        None => None,
    };
    let is_final = match value_of(params, "Final").first() {
        Some(p) => p["valueBoolean"].as_bool().ok_or_else(|| {
            FhirError::invalid("value", "Final needs valueBoolean", Some("Parameters.parameter.where(name = 'Final')"))
        })?,
        // CDex: without Final the submission is taken as complete.
        None => true,
    };

    let raw_attachments: Vec<&RawParameter<'_>> =
        raw_params.parameter.iter().filter(|p| p.name == "Attachment").collect();
    let mut documents = Vec::new();
    for (n, attachment) in value_of(params, "Attachment").into_iter().enumerate() {
        let expr = format!("Parameters.parameter.where(name = 'Attachment')[{n}]");
        let parts = attachment["part"].as_array().map(Vec::as_slice).unwrap_or_default();
        let line_items: Vec<String> =
            value_of(parts, "LineItem").iter().filter_map(|p| p["valueString"].as_str().map(str::to_owned)).collect();
        let codes: Vec<String> = value_of(parts, "Code")
            .iter()
            .flat_map(|p| p["valueCodeableConcept"]["coding"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["system"] == "http://loinc.org")
            .filter_map(|c| c["code"].as_str().map(str::to_owned))
            .collect();
        let contents = value_of(parts, "Content");
        let [content] = contents.as_slice() else {
            return Err(invalid("each Attachment needs exactly one Content", &format!("{expr}.part")));
        };
        let resource = &content["resource"];
        let kind = resource["resourceType"].as_str().unwrap_or("");
        if kind.is_empty() {
            return Err(invalid("Content needs a resource", &format!("{expr}.part.where(name = 'Content')")));
        }
        if kind == "DocumentReference" {
            documents.extend(document_reference(resource, &codes, &line_items, &expr)?);
        } else {
            let raw_content = raw_attachments
                .get(n)
                .and_then(|a| a.part.iter().find(|p| p.name == "Content"))
                .and_then(|p| p.resource)
                .ok_or_else(|| invalid("Content needs a resource", &format!("{expr}.part")))?;
            documents.push(Document {
                codes,
                line_items,
                content_type: FHIR_JSON.to_owned(),
                kind: kind.to_owned(),
                content: raw_content.get().as_bytes().to_vec(),
                location: format!("{expr}.part.where(name = 'Content').resource"),
                upload: None,
            });
        }
    }
    if documents.is_empty() {
        return Err(invalid("at least one Attachment is required", "Parameters.parameter"));
    }
    Ok(Submission {
        channel: "fhir",
        tracking_id,
        tracking_system,
        attach_to,
        payer_id,
        organization_npi: organization,
        provider_id: provider,
        member_id,
        service_date,
        is_final,
        documents,
    })
}

/// The documents of a DocumentReference Content: one per `content` with inline `data`.
fn document_reference(
    resource: &Value,
    codes: &[String],
    line_items: &[String],
    expr: &str,
) -> Result<Vec<Document>, FhirError> {
    let mut codes = codes.to_vec();
    if codes.is_empty() {
        codes.extend(
            resource["type"]["coding"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["system"] == "http://loinc.org")
                .filter_map(|c| c["code"].as_str().map(str::to_owned)),
        );
    }
    let content_expr = format!("{expr}.part.where(name = 'Content').resource.content");
    let Some(contents) = resource["content"].as_array().filter(|c| !c.is_empty()) else {
        return Err(invalid("the DocumentReference has no content", &content_expr));
    };
    let mut out = Vec::with_capacity(contents.len());
    for (i, c) in contents.iter().enumerate() {
        let at = format!("{content_expr}[{i}].attachment");
        let attachment = &c["attachment"];
        let Some(content_type) = attachment["contentType"].as_str().filter(|t| !t.is_empty()) else {
            return Err(invalid("attachment.contentType is required", &format!("{at}.contentType")));
        };
        let Some(data) = attachment["data"].as_str() else {
            // Not inline: a document staged through POST /attachments/uploads, named by its reference.
            let url = attachment["url"].as_str().unwrap_or_default();
            let Some(upload) = referenced_upload(url) else {
                return Err(FhirError::unprocessable(
                    "not-supported",
                    "attachment content must be inline (data) or an upload reference (url, from POST \
                     /attachments/uploads); the exchange does not fetch other urls",
                    Some(&format!("{at}.url")),
                ));
            };
            out.push(Document {
                codes: codes.clone(),
                line_items: line_items.to_vec(),
                content_type: content_type.to_ascii_lowercase(),
                kind: "DocumentReference".into(),
                content: Vec::new(),
                location: format!("{at}.url"),
                upload: Some(upload.to_owned()),
            });
            continue;
        };
        let bytes = STANDARD.decode(data.as_bytes()).map_err(|_| {
            FhirError::invalid("value", "attachment.data is not valid base64", Some(&format!("{at}.data")))
        })?;
        out.push(Document {
            codes: codes.clone(),
            line_items: line_items.to_vec(),
            content_type: content_type.to_ascii_lowercase(),
            kind: "DocumentReference".into(),
            content: bytes,
            location: format!("{at}.data"),
            upload: None,
        });
    }
    Ok(out)
}

/// The OperationOutcome of an accepted submission.
fn accepted_outcome(tracking_id: &str, attachment_id: &str, documents: usize, held: Option<&str>) -> Value {
    let mut issues = vec![json!({
        "severity": "information",
        "code": "informational",
        "details": { "text": format!("attachment {attachment_id} received ({documents} document(s))") },
        "diagnostics": format!("tracking id {tracking_id}"),
    })];
    if let Some(held) = held {
        issues.push(json!({ "severity": "information", "code": "informational", "details": { "text": held } }));
    }
    json!({ "resourceType": "OperationOutcome", "issue": issues })
}

fn refusal_error(r: &Refusal) -> FhirError {
    match r {
        Refusal::UnknownPayer => {
            FhirError::unprocessable("not-found", r.message(), Some("Parameters.parameter.where(name = 'PayerId')"))
        }
        Refusal::NotYourProvider => FhirError::Forbidden(r.message()),
        Refusal::ContentType { location, .. } => FhirError::unprocessable("not-supported", r.message(), Some(location)),
        Refusal::TooLarge { .. } => FhirError::TooLarge(MAX_DOCUMENT_BYTES),
        Refusal::Empty { location } => FhirError::invalid("required", r.message(), Some(location)),
        Refusal::TrackingIdReused | Refusal::DifferentSubject => FhirError::Conflict(r.message()),
        Refusal::TooManyDocuments => FhirError::unprocessable("too-costly", r.message(), Some("Parameters.parameter")),
        Refusal::TooLong { what } => {
            FhirError::invalid("value", r.message(), Some(&format!("Parameters.parameter.where(name = '{what}')")))
        }
        Refusal::UnknownUpload { location } => FhirError::unprocessable("not-found", r.message(), Some(location)),
        Refusal::UploadNotReceived { location } => FhirError::unprocessable("incomplete", r.message(), Some(location)),
        Refusal::UploadMismatch { location, .. } => FhirError::unprocessable("value", r.message(), Some(location)),
        Refusal::UploadUsed => FhirError::Conflict(r.message()),
        Refusal::TooMuchStaged => {
            FhirError::unprocessable("too-costly", r.message(), Some("Parameters.parameter.where(name = 'Attachment')"))
        }
    }
}

/// Only providers with the `attachments` scope submit.
pub fn require_provider(ctx: &CallerContext) -> Result<(), FhirError> {
    if ctx.caller.role == PartnerRole::Provider && ctx.caller.has_scope("attachments") {
        Ok(())
    } else {
        Err(FhirError::Forbidden("submitting attachments needs a provider token with the attachments scope".into()))
    }
}

/// `POST /fhir/$submit-attachment`.
pub async fn submit_attachment(
    State(svc): State<Arc<Attachments>>,
    ctx: CallerContext,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    require_provider(&ctx)?;
    let mt = media_type(&headers);
    if !matches!(mt.as_str(), "application/fhir+json" | "application/json" | "") {
        return Err(FhirError::UnsupportedMediaType);
    }
    // Lambda's payload limit, as on every route: a document too large to travel inline (up to
    // MAX_DOCUMENT_BYTES) goes up through a one-time upload URL and is submitted by reference.
    let raw = read_body_max(body, MAX_BODY_BYTES).map_err(|p| match p.status {
        413 => FhirError::TooLarge(MAX_BODY_BYTES),
        _ => FhirError::invalid("structure", p.detail.unwrap_or_default(), None),
    })?;
    let submission = parse_submit(&raw)?;
    let tracking = submission.tracking_id.clone();
    let accepted = match intake::accept(&svc.service, &ctx, submission).await {
        Ok(Ok(a)) => a,
        Ok(Err(refusal)) => {
            tracing::info!(request_id = %ctx.request_id, partner = %ctx.caller.partner, "attachment refused");
            return Err(refusal_error(&refusal));
        }
        Err(e) => return Err(FhirError::from_port(&ctx.request_id, &e)),
    };
    let att = &accepted.attachment;
    ctx.audit_resource("attachment", &att.id);
    ctx.audit_member(&att.member_id);
    tracing::info!(
        request_id = %ctx.request_id,
        partner = %ctx.caller.partner,
        attachment = %att.id,
        documents = att.documents.len(),
        replayed = accepted.replayed,
        held = accepted.held.is_some(),
        "attachment received"
    );
    let outcome = accepted_outcome(&tracking, &att.id, att.documents.len(), accepted.held.as_deref());
    let body = serde_json::to_vec(&outcome).unwrap_or_default();
    Ok(answer_response(StatusCode::OK, FHIR_JSON, body, accepted.replayed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(extra: Value) -> Value {
        let mut p = json!({
            "resourceType": "Parameters",
            "parameter": [
                { "name": "TrackingId", "valueIdentifier": { "system": "urn:t", "value": "T-1" } },
                { "name": "AttachTo", "valueCode": "claim" },
                { "name": "PayerId", "valueIdentifier": { "value": "payer123" } },
                { "name": "OrganizationId", "valueIdentifier": { "value": "1407071236" } },
                { "name": "MemberId", "valueIdentifier": { "value": "M1" } },
                { "name": "Attachment", "part": [
                    { "name": "LineItem", "valueString": "1" },
                    { "name": "Content", "resource": { "resourceType": "QuestionnaireResponse",   "status": "completed" } }
                ]}
            ]
        });
        if let Some(obj) = extra.as_object() {
            let list = p["parameter"].as_array_mut().unwrap();
            for (name, v) in obj {
                list.retain(|q| q["name"] != name.as_str());
                if !v.is_null() {
                    let mut q = v.clone();
                    q["name"] = json!(name);
                    list.push(q);
                }
            }
        }
        p
    }

    #[test]
    fn non_document_content_is_kept_as_sent() {
        // The odd spacing inside the resource must survive: it is stored as the bytes that arrived.
        let body = serde_json::to_string(&params(json!({}))).unwrap().replace(
            r#""resource":{"resourceType":"QuestionnaireResponse","status":"completed"}"#,
            r#""resource":{"resourceType":"QuestionnaireResponse",   "status":"completed"}"#,
        );
        let sub = parse_submit(body.as_bytes()).unwrap();
        assert_eq!(sub.documents.len(), 1);
        assert_eq!(sub.documents[0].content, br#"{"resourceType":"QuestionnaireResponse",   "status":"completed"}"#);
        assert_eq!(sub.documents[0].content_type, FHIR_JSON);
        assert!(sub.is_final, "Final defaults to true");
    }

    #[test]
    fn missing_or_wrong_parameters_are_named() {
        let cases = [
            (json!({ "MemberId": null }), "MemberId"),
            (json!({ "TrackingId": null }), "TrackingId"),
            (json!({ "AttachTo": { "valueCode": "encounter" } }), "AttachTo"),
            (json!({ "OrganizationId": null }), "OrganizationId"),
            (json!({ "ServiceDate": { "valueDateTime": "2022" } }), "ServiceDate"),
            (json!({ "Attachment": null }), "Attachment"),
        ];
        for (change, name) in cases {
            let body = serde_json::to_vec(&params(change)).unwrap();
            let err = parse_submit(&body).unwrap_err();
            let outcome = err.operation_outcome();
            let text = outcome.to_string();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{name}: {text}");
            assert!(text.contains(name), "{name}: {text}");
        }
    }

    #[test]
    fn base64_that_does_not_decode_is_refused() {
        let doc = json!({ "resourceType": "DocumentReference", "status": "current",
            "content": [{ "attachment": { "contentType": "application/pdf", "data": "not base64!" } }] });
        let body = serde_json::to_vec(&params(json!({
            "Attachment": { "part": [{ "name": "Content", "resource": doc }] }
        })))
        .unwrap();
        let err = parse_submit(&body).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.operation_outcome().to_string().contains("base64"));
    }
}
