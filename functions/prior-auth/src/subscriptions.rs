//! `/fhir/Subscription`: R4 Subscriptions backport for PAS pended-decision notifications. Only `rest-hook`
//! channels with `full-resource` payloads on the PAS topic, filtered by `orgIdentifier` naming the caller's own
//! organisation; only the owner may read, change or delete a subscription (anyone else gets 404).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use exchange_core::commit::Commit;
use exchange_core::domain::subscriptions::{SubscriptionRecord, SubscriptionRepo, MAX_SUBSCRIPTIONS_PER_OWNER};
use exchange_core::fhir::{FhirError, FHIR_JSON};
use exchange_core::http::{answer_response, CallerContext};
use exchange_core::ports::PortError;
use serde_json::{json, Value};

use crate::notify::TOPIC;
use crate::pas::routes::{fhir_body, require_submitter};
use crate::PriorAuth;

const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";

fn port(ctx: &CallerContext) -> impl Fn(PortError) -> FhirError + '_ {
    |e| FhirError::from_port(&ctx.request_id, &e)
}

fn backport_ext<'a>(element: &'a Value, name: &str) -> Option<&'a Value> {
    let url = format!("{BACKPORT}{name}");
    element["extension"].as_array()?.iter().find(|e| e["url"].as_str() == Some(url.as_str()))
}

fn invalid(diag: &str, expr: &str) -> FhirError {
    FhirError::unprocessable("invalid", diag, Some(expr))
}

/// Validates a Subscription resource for `ctx`'s organisation; returns the record to store (id assigned by the
/// caller).
fn to_record(pa: &PriorAuth, ctx: &CallerContext, sub: &Value, id: String) -> Result<SubscriptionRecord, FhirError> {
    if sub["resourceType"] != "Subscription" {
        return Err(FhirError::invalid("structure", "the body must be a Subscription", Some("Subscription")));
    }
    if sub["criteria"].as_str() != Some(TOPIC) {
        return Err(invalid("criteria must be the PAS subscription topic", "Subscription.criteria"));
    }
    let channel = &sub["channel"];
    if channel["type"] != "rest-hook" {
        return Err(invalid("only rest-hook channels are supported", "Subscription.channel.type"));
    }
    let endpoint = channel["endpoint"].as_str().unwrap_or("");
    let uri: Result<http::Uri, _> = endpoint.parse();
    let scheme_ok = match uri.as_ref().ok().and_then(|u| u.scheme_str()) {
        Some("https") => true,
        Some("http") => pa.settings.allow_http_endpoints,
        _ => false,
    };
    if !scheme_ok || uri.as_ref().ok().and_then(|u| u.host()).is_none() {
        return Err(invalid("channel.endpoint must be an absolute https URL", "Subscription.channel.endpoint"));
    }
    if channel["payload"].as_str().is_some_and(|p| p != FHIR_JSON) {
        return Err(invalid("payload must be application/fhir+json", "Subscription.channel.payload"));
    }
    let content = backport_ext(&channel["_payload"], "backport-payload-content").and_then(|e| e["valueCode"].as_str());
    if content.is_some_and(|c| c != "full-resource") {
        return Err(invalid("only full-resource notifications are supported", "Subscription.channel.payload"));
    }
    let filter = backport_ext(&sub["_criteria"], "backport-filter-criteria")
        .and_then(|e| e["valueString"].as_str())
        .ok_or_else(|| invalid("a filter 'orgIdentifier=NPI' is required", "Subscription.criteria"))?;
    let org = filter
        .strip_prefix("orgIdentifier=")
        .filter(|o| !o.is_empty())
        .ok_or_else(|| invalid("the filter must be 'orgIdentifier=NPI'", "Subscription.criteria"))?;
    if !ctx.partner.may_submit_for(org) {
        return Err(FhirError::Forbidden("the filter names an organisation this token does not represent".into()));
    }
    let headers: Vec<String> = channel["header"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h.as_str())
        .map(|h| {
            let valid = h.split_once(':').is_some_and(|(n, v)| {
                http::HeaderName::from_bytes(n.trim().as_bytes()).is_ok()
                    && http::HeaderValue::from_str(v.trim()).is_ok()
            });
            if valid {
                Ok(h.to_owned())
            } else {
                Err(invalid("each channel.header must be 'Name: value'", "Subscription.channel.header"))
            }
        })
        .collect::<Result<_, _>>()?;
    let status = if sub["status"] == "off" { "off" } else { "active" };
    Ok(SubscriptionRecord {
        id,
        owner: ctx.caller.partner.as_str().to_owned(),
        org_identifier: org.to_owned(),
        endpoint: endpoint.to_owned(),
        headers,
        status: status.into(),
        reason: sub["reason"].as_str().map(str::to_owned),
        events_delivered: 0,
    })
}

/// The stored subscription as a FHIR resource (headers are not echoed: they may carry secrets).
pub fn to_resource(s: &SubscriptionRecord) -> Value {
    json!({
        "resourceType": "Subscription",
        "id": s.id,
        "meta": { "profile": ["http://hl7.org/fhir/us/davinci-pas/StructureDefinition/profile-subscription"] },
        "status": s.status,
        "reason": s.reason.clone().unwrap_or_else(|| "PAS pended authorization updates".into()),
        "criteria": TOPIC,
        "_criteria": { "extension": [{ "url": format!("{BACKPORT}backport-filter-criteria"), "valueString": format!("orgIdentifier={}", s.org_identifier) }] },
        "channel": {
            "type": "rest-hook",
            "endpoint": s.endpoint,
            "payload": FHIR_JSON,
            "_payload": { "extension": [{ "url": format!("{BACKPORT}backport-payload-content"), "valueCode": "full-resource" }] }
        }
    })
}

fn resource_response(status: StatusCode, s: &SubscriptionRecord) -> Response {
    let mut resp = answer_response(status, FHIR_JSON, serde_json::to_vec(&to_resource(s)).unwrap_or_default(), false);
    if status == StatusCode::CREATED {
        if let Ok(v) = HeaderValue::from_str(&format!("Subscription/{}", s.id)) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
    }
    resp
}

/// `POST /fhir/Subscription`.
pub async fn create(
    State(pa): State<Arc<PriorAuth>>,
    ctx: CallerContext,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    require_submitter(&ctx)?;
    let sub = fhir_body(&headers, body)?.resource;
    let record = to_record(&pa, &ctx, &sub, exchange_core::auth::random_id())?;
    let held = pa.subscriptions.of_owner(ctx.caller.partner.as_str()).await.map_err(port(&ctx))?.len();
    if held >= MAX_SUBSCRIPTIONS_PER_OWNER {
        return Err(FhirError::unprocessable(
            "too-costly",
            format!("a trading partner holds at most {MAX_SUBSCRIPTIONS_PER_OWNER} subscriptions; delete one first"),
            Some("Subscription"),
        ));
    }
    ctx.audit_resource_on_commit("subscription", &record.id);
    let ops = SubscriptionRepo::create_ops(&record).map_err(port(&ctx))?;
    pa.core.committer().commit(&ctx, Commit::answered(StatusCode::CREATED).writes(ops)).await.map_err(port(&ctx))?;
    tracing::info!(request_id = %ctx.request_id, subscription = %record.id, "subscription created");
    Ok(resource_response(StatusCode::CREATED, &record))
}

async fn owned(pa: &PriorAuth, ctx: &CallerContext, id: &str) -> Result<(SubscriptionRecord, u64), FhirError> {
    match pa.subscriptions.get(id).await.map_err(port(ctx))? {
        Some((s, v)) if s.owner == ctx.caller.partner.as_str() => Ok((s, v)),
        // The id is not echoed: a 404 for another partner's Subscription reads like one for no Subscription.
        _ => Err(FhirError::NotFound("no such Subscription".into())),
    }
}

/// `GET /fhir/Subscription/{id}`.
pub async fn read(
    State(pa): State<Arc<PriorAuth>>,
    ctx: CallerContext,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let (s, _) = owned(&pa, &ctx, &id).await?;
    Ok(resource_response(StatusCode::OK, &s))
}

/// `GET /fhir/Subscription`: the caller's subscriptions as a searchset Bundle.
pub async fn list(State(pa): State<Arc<PriorAuth>>, ctx: CallerContext) -> Result<Response, FhirError> {
    let subs = pa.subscriptions.of_owner(ctx.caller.partner.as_str()).await.map_err(port(&ctx))?;
    let entries: Vec<Value> = subs.iter().map(|s| json!({ "resource": to_resource(s) })).collect();
    let body = json!({ "resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries });
    Ok(answer_response(StatusCode::OK, FHIR_JSON, serde_json::to_vec(&body).unwrap_or_default(), false))
}

/// `PUT /fhir/Subscription/{id}`.
pub async fn update(
    State(pa): State<Arc<PriorAuth>>,
    ctx: CallerContext,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    require_submitter(&ctx)?;
    let sub = fhir_body(&headers, body)?.resource;
    let (current, version) = owned(&pa, &ctx, &id).await?;
    let mut record = to_record(&pa, &ctx, &sub, id.clone())?;
    record.events_delivered = current.events_delivered;
    ctx.audit_resource("subscription", &id);
    let op = SubscriptionRepo::save_op(&record, version).map_err(port(&ctx))?;
    match pa.core.committer().commit(&ctx, Commit::answered(StatusCode::OK).write(op)).await {
        Ok(()) => Ok(resource_response(StatusCode::OK, &record)),
        Err(PortError::Conflict(_)) => Err(FhirError::Conflict("the subscription changed meanwhile".into())),
        Err(e) => Err(port(&ctx)(e)),
    }
}

/// `DELETE /fhir/Subscription/{id}`.
pub async fn delete(
    State(pa): State<Arc<PriorAuth>>,
    ctx: CallerContext,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let (current, version) = owned(&pa, &ctx, &id).await?;
    ctx.audit_resource("subscription", &id);
    let ops = pa.subscriptions.delete_ops(&current, version).await.map_err(port(&ctx))?;
    match pa.core.committer().commit(&ctx, Commit::answered(StatusCode::NO_CONTENT).writes(ops)).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(PortError::Conflict(_)) => Err(FhirError::Conflict("the subscription changed meanwhile".into())),
        Err(e) => Err(port(&ctx)(e)),
    }
}
