//! Writing PAS response Bundles from a case: the ClaimResponse first (`outcome`, item `reviewAction` with the
//! X12 306 action code, the authorization number and reason codes, the certified period), then the resources it
//! references. The same writer answers `$submit`, `$inquire` and notifications, for PAS- and 278-submitted cases.

use exchange_core::domain::prior_auth::{rfc3339, Decision, FhirRefs, PaCase, Requester, Subscriber, Trace};
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::request::PAS_EXT;
use crate::intake::{Party, Rejection};

const PROFILE: &str = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/";
const X12_306: &str = "https://codesystem.x12.org/005010/306";
const X12_901: &str = "https://codesystem.x12.org/005010/901";
const X12_889: &str = "https://codesystem.x12.org/005010/889";
/// HCR03 reason codes (X12 external code list 886).
const X12_886: &str = "https://codesystem.x12.org/external/886";

/// Which response profile to claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `$submit` and notifications: profile-pas-response-bundle / profile-claimresponse.
    Submit,
    /// `$inquire`: profile-pas-inquiry-response-bundle / profile-claiminquiryresponse.
    Inquiry,
}

fn action_display(code: &str) -> &'static str {
    match code {
        "A1" => "Certified in total",
        "A3" => "Not Certified",
        "A4" => "Pended",
        "A6" => "Modified",
        "C" => "Cancelled",
        "CT" => "Contact Payer",
        _ => "",
    }
}

fn fhir_date(d: &str) -> String {
    if d.len() == 8 {
        format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..])
    } else {
        d.to_owned()
    }
}

/// Resource ids for a case's response: the submitter's own for PAS, stable derived ids for X12.
struct Ids {
    patient: String,
    /// Organization id (a PractitionerRole requester is answered with an Organization of its own).
    requestor: String,
    insurer: String,
    claim_type: String,
    claim_ref: Value,
    /// ClaimResponse.identifier: the Claim.identifier as sent, or the 278's trace.
    identifier: Value,
    bundle_identifier: (String, String),
}

fn pas_ids(f: &FhirRefs, derived: &str, trace: Option<&Trace>) -> Ids {
    Ids {
        patient: f.patient.clone(),
        requestor: match f.requestor.strip_prefix("Organization/") {
            Some(id) => id.to_owned(),
            None => format!("requestor-{derived}"),
        },
        insurer: f.insurer.clone(),
        claim_type: if f.claim_type.is_empty() { "professional".into() } else { f.claim_type.clone() },
        claim_ref: json!({ "reference": format!("Claim/{}", f.claim) }),
        identifier: f.claim_identifier.clone().unwrap_or_else(|| trace_identifier(trace, derived)),
        bundle_identifier: f.bundle_identifier.clone(),
    }
}

fn ids(case: &PaCase) -> Ids {
    match &case.fhir {
        Some(f) => pas_ids(f, &case.id, case.trace.as_ref()),
        None => Ids {
            patient: format!("subscriber-{}", case.id),
            requestor: format!("requestor-{}", case.id),
            insurer: format!("insurer-{}", case.payer),
            claim_type: if case.request_category == "AR" { "institutional".into() } else { "professional".into() },
            claim_ref: json!({ "identifier": trace_identifier(case.trace.as_ref(), &case.id) }),
            identifier: trace_identifier(case.trace.as_ref(), &case.id),
            bundle_identifier: ("urn:ietf:rfc:3986".into(), format!("urn:x12:278:{}", case.submission_key)),
        },
    }
}

fn trace_identifier(trace: Option<&Trace>, case_id: &str) -> Value {
    match trace {
        Some(t) if !t.originator.is_empty() && !t.originator.contains(':') => {
            json!({ "system": format!("urn:trnorg:{}", t.originator), "value": t.value })
        }
        Some(t) => json!({ "system": t.originator, "value": t.value }),
        None => json!({ "system": "urn:ietf:rfc:3986", "value": format!("urn:x12:case:{case_id}") }),
    }
}

fn review_action(decision: &Decision, authorization: Option<&str>) -> Value {
    let code = decision.action_code();
    let mut parts = vec![json!({
        "url": format!("{PAS_EXT}extension-reviewActionCode"),
        "valueCodeableConcept": { "coding": [{ "system": X12_306, "code": code, "display": action_display(code) }] }
    })];
    if let (Some(number), Decision::Certified | Decision::Modified { .. }) = (authorization, decision) {
        parts.push(json!({ "url": "number", "valueString": number }));
    }
    let reasons: &[String] = match decision {
        Decision::NotCertified { reasons } | Decision::Modified { reasons, .. } => reasons,
        _ => &[],
    };
    for r in reasons.iter().filter(|r| !r.is_empty()) {
        parts.push(
            json!({ "url": "reasonCode", "valueCodeableConcept": { "coding": [{ "system": X12_886, "code": r }] } }),
        );
    }
    json!({ "url": format!("{PAS_EXT}extension-reviewAction"), "extension": parts })
}

fn claim_response(case: &PaCase, ids: &Ids, flavor: Flavor, now: OffsetDateTime) -> Value {
    let profile = match flavor {
        Flavor::Submit => "profile-claimresponse",
        Flavor::Inquiry => "profile-claiminquiryresponse",
    };
    let items: Vec<Value> = case
        .items
        .iter()
        .map(|item| {
            let decision = item.decision.clone().unwrap_or(Decision::Pended { documentation: vec![] });
            let mut ext = vec![json!({
                "url": format!("{PAS_EXT}extension-administrationReferenceNumber"),
                "valueString": case.id
            })];
            if let Some((from, to)) = &item.certified_period {
                ext.push(json!({
                    "url": format!("{PAS_EXT}extension-itemPreAuthPeriod"),
                    "valuePeriod": { "start": fhir_date(from), "end": fhir_date(to) }
                }));
            }
            if let Some(trace) = &item.trace {
                ext.push(json!({
                    "url": format!("{PAS_EXT}extension-itemTraceNumber"),
                    "valueIdentifier": { "system": "urn:ietf:rfc:3986", "value": format!("urn:trace:{trace}") }
                }));
            }
            let mut adjudication = json!({
                "extension": [review_action(&decision, case.authorization_number.as_deref())],
                "category": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/adjudication", "code": "submitted" }] }
            });
            if let Decision::Modified { quantity: Some(q), .. } = &decision {
                if let Ok(v) = q.parse::<f64>() {
                    adjudication["value"] = json!(v);
                }
            }
            json!({ "extension": ext, "itemSequence": item.sequence, "adjudication": [adjudication] })
        })
        .collect();
    let mut cr = claim_response_base(&case.id, profile, ids, "complete", now);
    cr["item"] = json!(items);
    if let Some(auth) = &case.authorization_number {
        cr["preAuthRef"] = json!(auth);
    }
    let pended_docs: Vec<&String> = case
        .items
        .iter()
        .filter_map(|i| match &i.decision {
            Some(Decision::Pended { documentation }) => Some(documentation),
            _ => None,
        })
        .flatten()
        .collect();
    if !pended_docs.is_empty() {
        let codes: Vec<&str> = pended_docs.iter().map(|s| s.as_str()).collect();
        cr["processNote"] = json!([{ "number": 1, "type": "display",
            "text": format!("Documentation requested (LOINC): {}", codes.join(", ")) }]);
    }
    cr
}

/// The ClaimResponse elements every answer has.
fn claim_response_base(id: &str, profile: &str, ids: &Ids, outcome: &str, now: OffsetDateTime) -> Value {
    json!({
        "resourceType": "ClaimResponse",
        "id": id,
        "meta": { "profile": [format!("{PROFILE}{profile}")] },
        "identifier": [ids.identifier],
        "status": "active",
        "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": ids.claim_type }] },
        "use": "preauthorization",
        "patient": { "reference": format!("Patient/{}", ids.patient) },
        "created": rfc3339(now),
        "insurer": { "reference": format!("Organization/{}", ids.insurer) },
        "requestor": { "reference": format!("Organization/{}", ids.requestor) },
        "request": ids.claim_ref,
        "outcome": outcome,
    })
}

fn patient(s: &Subscriber, payer: &str, id: &str) -> Value {
    let mut name = json!({ "family": s.last_name });
    if let Some(first) = &s.first_name {
        name["given"] = json!([first]);
    }
    let gender = match s.gender.as_deref() {
        Some("M") => "male",
        Some("F") => "female",
        _ => "unknown",
    };
    let mut p = json!({
        "resourceType": "Patient",
        "id": id,
        "meta": { "profile": [format!("{PROFILE}profile-subscriber")] },
        "identifier": [{
            "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB" }] },
            "system": format!("urn:payer:{payer}:member"),
            "value": s.member_id
        }],
        "name": [name],
        "gender": gender,
    });
    if let Some(dob) = &s.date_of_birth {
        p["birthDate"] = json!(fhir_date(dob));
    }
    p
}

fn organization(id: &str, profile: &str, name: &str, identifier: Option<Value>, type_code: &str) -> Value {
    let mut o = json!({
        "resourceType": "Organization",
        "id": id,
        "meta": { "profile": [format!("{PROFILE}{profile}")] },
        "active": true,
        "type": [{ "coding": [{ "system": "https://codesystem.x12.org/005010/98", "code": type_code }] }],
        "name": if name.is_empty() { "UNKNOWN" } else { name },
    });
    if let Some(i) = identifier {
        o["identifier"] = json!([i]);
    }
    o
}

fn entry(resource: Value) -> Value {
    let full = format!("{}/{}", resource["resourceType"].as_str().unwrap_or(""), resource["id"].as_str().unwrap_or(""));
    json!({ "fullUrl": format!("http://exchange.invalid/fhir/{full}"), "resource": resource })
}

fn bundle(profile: &str, identifier: &(String, String), id: &str, entries: Vec<Value>, now: OffsetDateTime) -> Value {
    let mut ident = json!({ "value": identifier.1 });
    if !identifier.0.is_empty() {
        ident["system"] = json!(identifier.0);
    }
    json!({
        "resourceType": "Bundle",
        "id": id,
        "meta": { "profile": [format!("{PROFILE}{profile}")] },
        "identifier": ident,
        "type": "collection",
        "timestamp": rfc3339(now),
        "entry": entries,
    })
}

/// The resources a ClaimResponse references: the subscriber, the requester and the insurer.
fn parties(ids: &Ids, subscriber: &Subscriber, requester: &Requester, payer: &str, payer_name: &str) -> Vec<Value> {
    let requester_identifier =
        requester.npi().map(|npi| json!({ "system": "http://hl7.org/fhir/sid/us-npi", "value": npi }));
    let payer_identifier = (!payer.is_empty()).then(|| json!({ "system": "urn:payer-id", "value": payer }));
    vec![
        entry(patient(subscriber, payer, &ids.patient)),
        entry(organization(&ids.requestor, "profile-requestor", &requester.name, requester_identifier, "X3")),
        entry(organization(&ids.insurer, "profile-insurer", payer_name, payer_identifier, "PR")),
    ]
}

/// The PAS response Bundle for a case's current state.
pub fn response_bundle(case: &PaCase, flavor: Flavor, now: OffsetDateTime) -> Value {
    let ids = ids(case);
    let mut entries = vec![entry(claim_response(case, &ids, flavor, now))];
    entries.extend(parties(&ids, &case.subscriber, &case.requester, &case.payer, &case.payer_name));
    let profile = match flavor {
        Flavor::Submit => "profile-pas-response-bundle",
        Flavor::Inquiry => "profile-pas-inquiry-response-bundle",
    };
    bundle(profile, &ids.bundle_identifier, &format!("{}-{}", case.id, case.history.len()), entries, now)
}

/// Where in the request Bundle the data a rejection names sits.
fn error_path(r: &Rejection) -> &'static str {
    match r.party {
        Party::Payer => "Claim.insurer",
        Party::Requester => "Claim.provider",
        Party::Subscriber => "Coverage.subscriberId",
        Party::Event => "Claim.related",
    }
}

/// The PAS response Bundle for a request that could not be decided: `outcome=error` with X12 901 codes in
/// `ClaimResponse.error`, each naming the X12 element (`errorElement`) and the Bundle path (`errorPath`).
pub fn error_bundle(
    bundle_identifier: &(String, String),
    request: &crate::intake::Request,
    rejection: &Rejection,
    now: OffsetDateTime,
) -> Value {
    let errors: Vec<Value> = std::iter::once(rejection)
        .map(|r| {
            json!({
                "extension": [
                    { "url": format!("{PAS_EXT}extension-errorElement"),
                      "extension": [{ "url": "error", "valueString": format!("{}-{}", r.party.loop_id(), r.element) }] },
                    { "url": format!("{PAS_EXT}extension-errorPath"), "valueString": error_path(r) },
                    { "url": format!("{PAS_EXT}extension-errorFollowupAction"),
                      "valueCodeableConcept": { "coding": [{ "system": X12_889, "code": r.follow_up }] } }
                ],
                "code": { "coding": [{ "system": X12_901, "code": r.code }] }
            })
        })
        .collect();
    let id = format!("error-{}", exchange_core::auth::random_id());
    let ids = pas_ids(&request.fhir.clone().unwrap_or_default(), &id, request.trace.as_ref());
    let mut cr = claim_response_base(&id, "profile-claimresponse", &ids, "error", now);
    cr["error"] = json!(errors);
    // The parties as the submitter sent them (by id), so the references resolve.
    let mut entries = vec![entry(cr)];
    entries.extend(parties(&ids, &request.subscriber, &request.requester, "", &request.payer_name));
    bundle("profile-pas-response-bundle", bundle_identifier, &id, entries, now)
}
