//! `POST /eligibility`: the JSON twin of the 270/271, in the "eligibility v3" shape billing systems already speak.
//!
//! The request is validated against `schemas/eligibility-request.schema.json` (400 problem+json with one entry per
//! invalid field); it is answered by the same matching as the 270, and the response carries the raw 271 too.

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use exchange_core::http::problem::FieldError;
use exchange_core::http::{CallerContext, Problem};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::inquiry::{Inquiry, PersonQuery, Receiver};
use crate::matching::{Answer, BenefitLine, PersonAnswer, Rejection};
use crate::service::Reply;
use crate::Routes;

/// TRN03 of the trace a JSON request stands for (the JSON shape has no originator; the guide wants 10 characters).
const JSON_TRACE_ORIGINATOR: &str = "9JSONCALLR";

/// The request schema, compiled into the binary.
pub const REQUEST_SCHEMA: &str = include_str!("../schemas/eligibility-request.schema.json");

fn validator() -> Option<&'static jsonschema::Validator> {
    static V: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    V.get_or_init(|| {
        let schema: Value = serde_json::from_str(REQUEST_SCHEMA).ok()?;
        jsonschema::validator_for(&schema).ok()
    })
    .as_ref()
}

/// A JSON eligibility inquiry (its shape is the request schema's).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub(crate) control_number: String,
    pub(crate) trading_partner_service_id: String,
    provider: Provider,
    subscriber: Person,
    #[serde(default)]
    dependents: Vec<Person>,
    #[serde(default)]
    encounter: Option<Encounter>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Provider {
    organization_name: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    npi: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Person {
    member_id: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    middle_name: Option<String>,
    date_of_birth: Option<String>,
    gender: Option<String>,
}

impl std::fmt::Debug for Person {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Person(<redacted>)")
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Encounter {
    #[serde(default)]
    service_type_codes: Vec<String>,
    date_of_service: Option<String>,
    beginning_date_of_service: Option<String>,
    end_date_of_service: Option<String>,
}

/// Validates a request body against the schema; the errors name fields, never values.
pub fn validate_request(value: &Value) -> Result<(), Vec<FieldError>> {
    let Some(v) = validator() else {
        return Err(vec![FieldError { pointer: String::new(), message: "schema unavailable".into() }]);
    };
    let errors: Vec<FieldError> = v
        .iter_errors(value)
        .take(20)
        .map(|e| FieldError { pointer: e.instance_path().to_string(), message: rule_of(&e) })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The violated rule, without the offending value (which may be PHI).
fn rule_of(e: &jsonschema::ValidationError<'_>) -> String {
    let full = e.to_string();
    for marker in [
        " is a required property",
        " is not valid under any of the schemas",
        " does not match ",
        " is not one of ",
        " is longer than ",
        " is shorter than ",
        " is not of type ",
        " has more than ",
        " has less than ",
        " depends on ",
    ] {
        if let Some(i) = full.find(marker) {
            if marker == " is a required property" {
                return full; // names the missing property: safe
            }
            return format!("value{}", &full[i..]);
        }
    }
    "invalid value".to_owned()
}

fn person_query(p: &Person, encounter: Option<&Encounter>) -> PersonQuery {
    let dates =
        encounter.and_then(|e| match (&e.beginning_date_of_service, &e.end_date_of_service, &e.date_of_service) {
            (Some(b), Some(end), _) => Some((b.clone(), end.clone())),
            (_, _, Some(d)) => Some((d.clone(), d.clone())),
            _ => None,
        });
    PersonQuery {
        member_id: p.member_id.clone(),
        last: p.last_name.clone(),
        first: p.first_name.clone(),
        middle: p.middle_name.clone(),
        date_of_birth: p.date_of_birth.clone(),
        gender: p.gender.clone(),
        traces: Vec::new(),
        service_types: encounter.map(|e| e.service_type_codes.clone()).unwrap_or_default(),
        date_of_service: dates,
    }
}

pub(crate) fn to_inquiry(r: &Request) -> Inquiry {
    let encounter = r.encounter.as_ref();
    let (entity_type, last_or_org, first) = match &r.provider.organization_name {
        Some(org) => ("2", org.clone(), String::new()),
        None => {
            ("1", r.provider.last_name.clone().unwrap_or_default(), r.provider.first_name.clone().unwrap_or_default())
        }
    };
    let mut subscriber = person_query(&r.subscriber, if r.dependents.is_empty() { encounter } else { None });
    subscriber.traces.push(crate::inquiry::Trace {
        reference: r.control_number.clone(),
        originator: JSON_TRACE_ORIGINATOR.to_owned(),
        supplemental: None,
    });
    Inquiry {
        reference: r.control_number.clone(),
        payer_name: String::new(),
        payer_id_qualifier: "PI".into(),
        payer_id: r.trading_partner_service_id.clone(),
        receiver: Receiver {
            entity: "1P".into(),
            entity_type: entity_type.into(),
            last_or_org,
            first,
            id_qualifier: "XX".into(),
            id: r.provider.npi.clone(),
        },
        subscriber,
        dependent: r.dependents.first().map(|d| person_query(d, encounter)),
    }
}

/// `POST /eligibility`.
pub async fn post_eligibility(
    State(state): State<Arc<Routes>>,
    ctx: CallerContext,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(p) = crate::require_provider(&ctx) {
        return p.into_response();
    }
    if exchange_core::http::media_type(&headers) != "application/json" {
        return Problem::unsupported_media_type("application/json").into_response();
    }
    let body = match exchange_core::http::read_body(body) {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return Problem::bad_request(format!(
                "the body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
            .into_response()
        }
    };
    if let Err(errors) = validate_request(&value) {
        return Problem::new(StatusCode::BAD_REQUEST, "invalid-request", "The request does not match its schema")
            .with_errors(errors)
            .into_response();
    }
    let request: Request = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(_) => return Problem::bad_request("the request does not match its schema").into_response(),
    };

    let idempotency = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| (1..=128).contains(&k.len()))
        .map(|k| exchange_core::record::idempotency_key(&ctx, "JSON-ELIGIBILITY", k));
    match state.service.answer_json(&ctx, &request, &body, idempotency).await {
        Ok(Reply::Answered { body, replayed }) => {
            exchange_core::http::answer_response(StatusCode::OK, "application/json", body, replayed)
        }
        Ok(Reply::KeyReused) => reused_key(),
        Err(e) => Problem::from_port(&ctx.request_id, &e).into_response(),
    }
}

/// 422: the Idempotency-Key names another request.
fn reused_key() -> Response {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused", "Idempotency-Key reused")
        .with_detail("this Idempotency-Key was used for a different request")
        .into_response()
}

fn aaa_json(r: Rejection, location: &str) -> Value {
    json!({
        "code": r.reason,
        "description": r.description(),
        "followupAction": match r.follow_up { "C" => "Please Correct and Resubmit", "R" => "Resubmission Allowed", "N" => "Resubmission Not Allowed", _ => "Please Correct and Resubmit" },
        "followupActionCode": r.follow_up,
        "location": location,
        "possibleResolutions": "",
    })
}

fn benefit_json(b: &BenefitLine) -> Value {
    let mut v = json!({
        "code": b.code,
        "name": benefit_name(b.code),
        "serviceTypeCodes": b.service_types,
    });
    let obj = v.as_object_mut();
    if let Some(o) = obj {
        let mut put = |k: &str, val: Option<Value>| {
            if let Some(val) = val {
                o.insert(k.to_owned(), val);
            }
        };
        put("coverageLevelCode", b.coverage_level.clone().map(Value::from));
        put("insuranceTypeCode", b.insurance_type.clone().map(Value::from));
        put("planCoverage", b.plan_description.clone().map(Value::from));
        put("timeQualifierCode", b.time_period.map(Value::from));
        put("benefitAmount", b.amount.clone().map(Value::from));
        put("benefitPercent", b.percent.clone().map(Value::from));
        put("quantityQualifierCode", b.quantity.as_ref().map(|q| Value::from(q.0.clone())));
        put("benefitQuantity", b.quantity.as_ref().map(|q| Value::from(q.1.clone())));
        put("authOrCertIndicator", b.authorization_required.map(Value::from));
        put("inPlanNetworkIndicatorCode", b.in_network.clone().map(Value::from));
        put("additionalInformation", b.message.clone().map(|m| json!([{"description": m}])));
        put(
            "benefitsRelatedEntities",
            b.provider.as_ref().map(|(npi, last, first)| {
                json!([{"entityIdentifier": "Primary Care Provider", "entityIdentifierCode": "P3", "entityType": "Person", "entityName": last, "entityFirstname": first, "entityIdentificationValue": npi, "entityIdentification": "XX"}])
            }),
        );
    }
    v
}

fn benefit_name(code: &str) -> &'static str {
    match code {
        "1" => "Active Coverage",
        "6" => "Inactive",
        "A" => "Co-Insurance",
        "B" => "Co-Payment",
        "C" => "Deductible",
        "F" => "Limitations",
        "G" => "Out of Pocket (Stop Loss)",
        "I" => "Non-Covered",
        "L" => "Primary Care Provider",
        _ => "Benefit",
    }
}

fn person_json(a: &PersonAnswer, q: &PersonQuery) -> Value {
    match &a.person {
        Some(p) => json!({
            "memberId": a.member_id,
            "firstName": p.first_name,
            "lastName": p.last_name,
            "middleName": p.middle_name,
            "gender": p.gender,
            "dateOfBirth": p.date_of_birth,
            "relationToSubscriberCode": a.relationship,
            "groupNumber": a.group.as_ref().map(|g| g.0.clone()),
        }),
        None => {
            json!({"memberId": q.member_id, "firstName": q.first, "lastName": q.last, "dateOfBirth": q.date_of_birth})
        }
    }
}

pub(crate) fn response_json(r: &Request, inquiry: &Inquiry, a: &Answer, x12: String) -> Value {
    let mut errors = Vec::new();
    if let Some(rej) = a.source_rejection {
        errors.push(aaa_json(rej, "Loop 2100A"));
    }
    if let Some(rej) = a.receiver_rejection {
        errors.push(aaa_json(rej, "Loop 2100B"));
    }
    let patient = a.dependent.as_ref().or(a.subscriber.as_ref());
    if let Some(rej) = a.subscriber.as_ref().and_then(|s| s.rejection) {
        errors.push(aaa_json(rej, "Loop 2100C"));
    }
    if let Some(rej) = a.dependent.as_ref().and_then(|s| s.rejection) {
        errors.push(aaa_json(rej, "Loop 2100D"));
    }
    let benefits: Vec<Value> = patient.map(|p| p.benefits.iter().map(benefit_json).collect()).unwrap_or_default();
    let plan_status: Vec<Value> = patient
        .map(|p| {
            p.benefits
                .iter()
                .filter(|b| b.code == "1" || b.code == "6")
                .map(|b| {
                    json!({
                        "statusCode": b.code,
                        "status": benefit_name(b.code),
                        "planDetails": b.plan_description,
                        "serviceTypeCodes": b.service_types,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let plan_dates = patient.and_then(|p| p.plan_dates.clone());
    json!({
        "meta": {"applicationMode": "production"},
        "controlNumber": r.control_number,
        "reassociationKey": r.control_number,
        "tradingPartnerServiceId": r.trading_partner_service_id,
        "provider": {"providerName": inquiry.receiver.last_or_org, "npi": inquiry.receiver.id},
        "payer": {"name": a.payer.0, "payorIdentification": a.payer.1},
        "subscriber": a.subscriber.as_ref().map(|s| person_json(s, &inquiry.subscriber)),
        "dependents": a.dependent.as_ref().zip(inquiry.dependent.as_ref()).map(|(d, q)| vec![person_json(d, q)]),
        "planInformation": a.subscriber.as_ref().and_then(|s| s.group.as_ref()).map(|g| json!({"groupNumber": g.0, "groupDescription": g.1})),
        "planDateInformation": plan_dates.map(|(b, e)| json!({"planBegin": b, "planEnd": e})),
        "planStatus": plan_status,
        "benefitsInformation": benefits,
        "errors": errors,
        "x12": x12,
    })
}
