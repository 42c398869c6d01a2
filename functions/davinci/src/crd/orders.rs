//! What a hook asks about, read from its context and prefetch: the orders (or appointments, or the encounter) with
//! their billing codes and service dates, and the patient's Coverage with the payer it names. Pure functions over
//! JSON, so every hook's reading is tested alone.

use exchange_core::domain::policy::fhir_code_system;
use serde_json::{Map, Value};

use super::request::{Hook, HookRequest};

/// CRD's extension listing the billing codes an order may be billed under.
pub const BILLING_OPTIONS: &str = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-billing-options";

/// A billing code of an order: the FHIR system as sent, the policy's system (`CPT`, `HCPCS`), the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingCode {
    /// FHIR system URL as sent.
    pub system: String,
    /// The policy code system.
    pub policy_system: String,
    /// The code.
    pub code: String,
}

/// One thing coverage information is given for.
#[derive(Debug, Clone)]
pub struct Order {
    /// `Type/id`.
    pub reference: String,
    /// The resource as the client sent it (answered back with the extension added).
    pub resource: Value,
    /// Billing codes the policy can evaluate.
    pub codes: Vec<BillingCode>,
    /// The service date (CCYYMMDD), when the order says.
    pub service_date: Option<String>,
}

/// Policy code systems: the codes CRD evaluates (others, e.g. LOINC or RxNorm, say nothing about a plan's rules).
fn is_policy_system(system: &str) -> bool {
    matches!(system, "CPT" | "HCPCS" | "X12-1365")
}

fn codings(concept: &Value) -> impl Iterator<Item = &Value> {
    concept["coding"].as_array().into_iter().flatten()
}

/// The billing codes of a resource: its own code element(s), then CRD billing options; duplicates once.
pub fn billing_codes(resource: &Value) -> Vec<BillingCode> {
    let mut concepts: Vec<&Value> = Vec::new();
    for element in ["code", "codeCodeableConcept", "medicationCodeableConcept"] {
        if resource[element].is_object() {
            concepts.push(&resource[element]);
        }
    }
    for element in ["serviceType", "type"] {
        concepts.extend(resource[element].as_array().into_iter().flatten());
    }
    for ext in resource["extension"].as_array().into_iter().flatten() {
        if ext["url"] == BILLING_OPTIONS {
            concepts.push(&ext["valueCodeableConcept"]);
        }
    }
    let mut out: Vec<BillingCode> = Vec::new();
    for coding in concepts.into_iter().flat_map(codings) {
        let (Some(system), Some(code)) = (coding["system"].as_str(), coding["code"].as_str()) else { continue };
        let policy_system = fhir_code_system(system);
        if !is_policy_system(&policy_system) || code.is_empty() || code.len() > 48 {
            continue;
        }
        if !out.iter().any(|c| c.policy_system == policy_system && c.code == code) {
            out.push(BillingCode { system: system.to_owned(), policy_system, code: code.to_owned() });
        }
    }
    out
}

/// CCYYMMDD of a FHIR date or dateTime.
fn ccyymmdd(date: &str) -> Option<String> {
    let digits: String = date.chars().take(10).filter(char::is_ascii_digit).collect();
    (digits.len() == 8).then_some(digits)
}

/// When the order's service happens, as far as the resource says.
fn service_date(resource: &Value) -> Option<String> {
    let candidates = [
        &resource["occurrenceDateTime"],
        &resource["occurrencePeriod"]["start"],
        &resource["occurrenceTiming"]["event"][0],
        &resource["start"],
        &resource["period"]["start"],
        &resource["dispenseRequest"]["validityPeriod"]["start"],
        &resource["authoredOn"],
    ];
    candidates.iter().find_map(|v| v.as_str().and_then(ccyymmdd))
}

fn reference_of(resource: &Value) -> Option<String> {
    Some(format!("{}/{}", resource["resourceType"].as_str()?, resource["id"].as_str()?))
}

fn order(resource: &Value) -> Option<Order> {
    Some(Order {
        reference: reference_of(resource)?,
        codes: billing_codes(resource),
        service_date: service_date(resource),
        resource: resource.clone(),
    })
}

fn bundle_resources(bundle: &Value) -> impl Iterator<Item = &Value> {
    bundle["entry"].as_array().into_iter().flatten().map(|e| &e["resource"]).filter(|r| r.is_object())
}

/// Every resource in the prefetch (Bundles opened), and resources contained in them.
pub fn prefetched(prefetch: &Map<String, Value>) -> Vec<&Value> {
    let mut out = Vec::new();
    for value in prefetch.values() {
        if value["resourceType"] == "Bundle" {
            out.extend(bundle_resources(value));
        } else if value.is_object() {
            out.push(value);
        }
    }
    let contained: Vec<&Value> = out.iter().flat_map(|r| r["contained"].as_array().into_iter().flatten()).collect();
    out.extend(contained);
    out
}

/// The last two path segments of a (possibly absolute) reference: `Type/id`.
pub fn local_reference(reference: &str) -> String {
    let mut parts = reference.trim_end_matches('/').rsplit('/');
    match (parts.next(), parts.next()) {
        (Some(id), Some(ty)) => format!("{ty}/{id}"),
        _ => reference.to_owned(),
    }
}

/// The orders a hook asks about, and the references it names that neither the context nor the prefetch holds.
pub fn orders(request: &HookRequest, extra: &[Value]) -> (Vec<Order>, Vec<String>) {
    let ctx = &request.context;
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let known: Vec<&Value> = prefetched(&request.prefetch).into_iter().chain(extra.iter()).collect();
    let find = |reference: &str| -> Option<&Value> {
        let wanted = local_reference(reference);
        known.iter().copied().find(|r| reference_of(r).as_deref() == Some(wanted.as_str()))
    };
    match request.hook {
        Hook::OrderSign => found.extend(bundle_resources(&ctx["draftOrders"]).filter_map(order)),
        Hook::OrderSelect => {
            let selected: Vec<String> = ctx["selections"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(local_reference)
                .collect();
            found.extend(
                bundle_resources(&ctx["draftOrders"])
                    .filter(|r| reference_of(r).is_some_and(|id| selected.contains(&id)))
                    .filter_map(order),
            );
        }
        Hook::OrderDispatch => {
            for reference in ctx["dispatchedOrders"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                match find(reference).and_then(order) {
                    Some(o) => found.push(o),
                    None => missing.push(local_reference(reference)),
                }
            }
        }
        Hook::AppointmentBook => found.extend(bundle_resources(&ctx["appointments"]).filter_map(order)),
        Hook::EncounterStart | Hook::EncounterDischarge => {
            let reference = format!("Encounter/{}", ctx["encounterId"].as_str().unwrap_or_default());
            match find(&reference).and_then(order) {
                Some(o) => found.push(o),
                None => missing.push(reference),
            }
        }
    }
    (found, missing)
}

/// The Coverage resources the request carries (prefetch `coverage`, a Bundle or a single resource), plus `extra`
/// (fetched from the EHR).
pub fn coverages<'a>(request: &'a HookRequest, extra: &'a [Value]) -> Vec<&'a Value> {
    let from_prefetch: Vec<&Value> = match request.prefetch.get("coverage") {
        Some(b) if b["resourceType"] == "Bundle" => bundle_resources(b).collect(),
        Some(c) if c.is_object() => vec![c],
        _ => Vec::new(),
    };
    from_prefetch.into_iter().chain(extra.iter()).filter(|r| r["resourceType"] == "Coverage").collect()
}

/// The identifiers (values) of the payer a Coverage names: `payor[].identifier`, or the identifiers of the payor
/// Organization when the prefetch (or the Coverage's contained resources) holds it.
pub fn payer_identifiers(coverage: &Value, known: &[&Value]) -> Vec<String> {
    let mut ids = Vec::new();
    for payor in coverage["payor"].as_array().into_iter().flatten() {
        if let Some(v) = payor["identifier"]["value"].as_str() {
            ids.push(v.to_owned());
        }
        let Some(reference) = payor["reference"].as_str() else { continue };
        let organization = if let Some(local) = reference.strip_prefix('#') {
            coverage["contained"].as_array().into_iter().flatten().find(|r| r["id"] == local)
        } else {
            let wanted = local_reference(reference);
            known.iter().copied().find(|r| reference_of(r).as_deref() == Some(wanted.as_str()))
        };
        for identifier in organization.map(|o| &o["identifier"]).and_then(Value::as_array).into_iter().flatten() {
            if let Some(v) = identifier["value"].as_str() {
                ids.push(v.to_owned());
            }
        }
    }
    ids
}

/// The member id a Coverage names: an identifier typed `MB` (the beneficiary's member number), else
/// `subscriberId`.
pub fn member_id(coverage: &Value) -> Option<String> {
    let typed = coverage["identifier"].as_array().into_iter().flatten().find(|i| {
        codings(&i["type"]).any(|c| c["code"] == "MB" && c["system"] == "http://terminology.hl7.org/CodeSystem/v2-0203")
    });
    typed.and_then(|i| i["value"].as_str()).or_else(|| coverage["subscriberId"].as_str()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn billing_codes_come_from_code_and_billing_options() {
        let sr = json!({
            "resourceType": "ServiceRequest", "id": "1",
            "code": {"coding": [{"system": "http://loinc.org", "code": "24604-1"}]},
            "extension": [
                {"url": BILLING_OPTIONS, "valueCodeableConcept": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "77061"}]}},
                {"url": BILLING_OPTIONS, "valueCodeableConcept": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "77061"}]}},
                {"url": BILLING_OPTIONS, "valueCodeableConcept": {"coding": [{"system": "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "code": "G0202"}]}}
            ],
            "occurrenceDateTime": "2026-12-01T09:00:00Z"
        });
        let o = order(&sr).expect("order");
        let codes: Vec<(&str, &str)> = o.codes.iter().map(|c| (c.policy_system.as_str(), c.code.as_str())).collect();
        assert_eq!(codes, vec![("CPT", "77061"), ("HCPCS", "G0202")]);
        assert_eq!(o.service_date.as_deref(), Some("20261201"));
    }

    #[test]
    fn the_payer_is_found_through_the_payor_organization() {
        let org = json!({"resourceType": "Organization", "id": "p", "identifier": [{"value": "DEMOPAYER"}]});
        let cov = json!({"resourceType": "Coverage", "payor": [{"reference": "http://ehr/fhir/Organization/p"}],
                         "subscriberId": "S1",
                         "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB"}]}, "value": "M1"}]});
        assert_eq!(payer_identifiers(&cov, &[&org]), vec!["DEMOPAYER".to_owned()]);
        assert!(payer_identifiers(&cov, &[]).is_empty());
        assert_eq!(member_id(&cov).as_deref(), Some("M1"));
        assert_eq!(local_reference("http://ehr/fhir/Organization/p"), "Organization/p");
    }
}
