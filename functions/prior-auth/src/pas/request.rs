//! Reading a PAS request Bundle: the structural rules a `$submit` (and `$inquire`) body must meet, then the
//! channel-neutral [`Request`] it asks for. Structural failures are [`FhirError`]s (a single OperationOutcome, 4xx);
//! business failures come later, from intake, as `ClaimResponse.error`.

use std::collections::HashMap;

use exchange_core::domain::ids::MAX_REFERENCE_LEN;
use exchange_core::domain::policy::fhir_code_system;
use exchange_core::domain::prior_auth::{CaseItem, FhirRefs, Requester, Subscriber, Trace, Urgency};
use exchange_core::fhir::{first_coding, FhirError, Issue};
use serde_json::Value;

use crate::intake::Request;

/// PAS extension base URL.
pub const PAS_EXT: &str = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/";
const NPI_SYSTEM: &str = "http://hl7.org/fhir/sid/us-npi";
const LOINC: &str = "http://loinc.org";

/// The resources of a Bundle, by `Type/id` and by `fullUrl`.
#[derive(Debug)]
pub struct BundleIndex<'a> {
    by_ref: HashMap<String, &'a Value>,
}

impl<'a> BundleIndex<'a> {
    /// Resolves a Reference (`Type/id`, or a fullUrl).
    pub fn resolve(&self, reference: &Value) -> Option<&'a Value> {
        reference["reference"].as_str().and_then(|r| self.by_ref.get(r)).copied()
    }
}

/// What kind of Claim a Bundle carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// A new request.
    Initial,
    /// An update of an earlier request (`related.claim`).
    Update,
}

/// What changes an update makes to one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemChange {
    /// Unchanged (sent again for context).
    Same(u32),
    /// Cancelled (`infoCancelled`, or certificationType 3).
    Cancel(u32),
    /// New or changed detail (`infoChanged`, or a sequence the case does not have).
    Replace(Box<CaseItem>),
}

/// A parsed PAS request.
#[derive(Debug)]
pub struct PasRequest {
    /// Bundle.identifier (system, value): the submission's identity.
    pub bundle_identifier: (String, String),
    /// Initial or update.
    pub kind: ClaimKind,
    /// The request.
    pub request: Request,
    /// For updates: the trace of the Claim being updated.
    pub updates: Option<Trace>,
    /// For updates: the id of the earlier Claim, when the Bundle carries it (tells apart requests that share a
    /// trace).
    pub updates_claim_id: Option<String>,
    /// For updates: what happens to each item.
    pub item_changes: Vec<ItemChange>,
    /// Every item was cancelled (certificationType 3 on the whole request).
    pub cancels_all: bool,
}

fn invalid(diagnostics: impl Into<String>, expression: &str) -> FhirError {
    FhirError::unprocessable("invalid", diagnostics, Some(expression))
}

fn collect_references<'v>(value: &'v Value, path: String, out: &mut Vec<(String, &'v str)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "reference" {
                    if let Some(r) = v.as_str() {
                        out.push((path.clone(), r));
                    }
                } else {
                    collect_references(v, format!("{path}.{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_references(v, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Checks the Bundle's structure: a `collection` with an identifier, a Claim first whose `use` is
/// preauthorization, every entry a resource with an id present exactly once, and every reference the Claim makes
/// resolvable inside the Bundle.
pub fn index_bundle(bundle: &Value) -> Result<BundleIndex<'_>, FhirError> {
    if bundle["resourceType"] != "Bundle" {
        return Err(FhirError::invalid("structure", "the body must be a FHIR Bundle", Some("Bundle")));
    }
    if bundle["type"] != "collection" {
        return Err(invalid("a PAS request Bundle must have type 'collection'", "Bundle.type"));
    }
    let entries = bundle["entry"]
        .as_array()
        .filter(|e| !e.is_empty())
        .ok_or_else(|| FhirError::unprocessable("required", "the Bundle has no entries", Some("Bundle.entry")))?;
    let mut issues = Vec::new();
    let mut by_ref: HashMap<String, &Value> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let resource = &entry["resource"];
        let (Some(rt), Some(id)) = (resource["resourceType"].as_str(), resource["id"].as_str()) else {
            issues.push(Issue::error(
                "required",
                "every entry needs a resource with resourceType and id",
                Some(format!("Bundle.entry[{i}].resource")),
            ));
            continue;
        };
        let local = format!("{rt}/{id}");
        if by_ref.insert(local.clone(), resource).is_some() {
            issues.push(Issue::error(
                "duplicate",
                format!("{local} appears more than once in the Bundle"),
                Some(format!("Bundle.entry[{i}]")),
            ));
        }
        if let Some(full) = entry["fullUrl"].as_str() {
            if full != local {
                by_ref.insert(full.to_owned(), resource);
            }
        }
    }
    if !issues.is_empty() {
        return Err(FhirError::Unprocessable(issues));
    }
    let claim = &entries[0]["resource"];
    if claim["resourceType"] != "Claim" {
        return Err(invalid("the first entry of a PAS request Bundle must be the Claim", "Bundle.entry[0].resource"));
    }
    let index = BundleIndex { by_ref };
    let mut refs = Vec::new();
    collect_references(claim, "Bundle.entry[0].resource".into(), &mut refs);
    let dangling: Vec<Issue> = refs
        .iter()
        .filter(|(_, r)| !r.starts_with('#') && !index.by_ref.contains_key(*r))
        .map(|(path, r)| {
            Issue::error(
                "not-found",
                format!("the reference {r} does not resolve inside the Bundle"),
                Some(path.clone()),
            )
        })
        .collect();
    if !dangling.is_empty() {
        return Err(FhirError::Unprocessable(dangling));
    }
    Ok(index)
}

/// The Bundle.identifier.
pub fn bundle_identifier(bundle: &Value) -> Result<(String, String), FhirError> {
    let id = &bundle["identifier"];
    match (id["system"].as_str(), id["value"].as_str()) {
        (system, Some(value)) if value.len() > MAX_REFERENCE_LEN || system.unwrap_or("").len() > 255 => {
            Err(FhirError::unprocessable(
                "value",
                format!("Bundle.identifier.value is at most {MAX_REFERENCE_LEN} characters (system 255)"),
                Some("Bundle.identifier"),
            ))
        }
        (system, Some(value)) if !value.is_empty() => Ok((system.unwrap_or("").to_owned(), value.to_owned())),
        _ => Err(FhirError::unprocessable(
            "required",
            "Bundle.identifier (system and value) identifies the submission and is required",
            Some("Bundle.identifier"),
        )),
    }
}

/// The trace a Claim.identifier carries (`urn:trnorg:ORIGINATOR` system, TRN02 value).
pub fn claim_trace(claim: &Value) -> Option<Trace> {
    identifier_trace(claim["identifier"].as_array()?.first()?)
}

/// The Claim's trace, refused when it is too long to key a record by.
fn bounded_trace(claim: &Value) -> Result<Option<Trace>, FhirError> {
    match claim_trace(claim) {
        Some(t) if t.value.len() > MAX_REFERENCE_LEN || t.originator.len() > 255 => Err(invalid(
            format!("Claim.identifier.value is at most {MAX_REFERENCE_LEN} characters"),
            "Claim.identifier",
        )),
        trace => Ok(trace),
    }
}

/// The trace an Identifier carries: TRN02 is the value; TRN03 is the `urn:trnorg:` suffix of the system, else the
/// assigner's identifier (where PAS maps TRN03), else the system itself.
fn identifier_trace(id: &Value) -> Option<Trace> {
    let value = id["value"].as_str()?.to_owned();
    let system = id["system"].as_str().unwrap_or("");
    let originator = match (system.strip_prefix("urn:trnorg:"), id["assigner"]["identifier"]["value"].as_str()) {
        (Some(org), _) => org,
        (None, Some(assigner)) => assigner,
        (None, None) => system,
    };
    Some(Trace { value, originator: originator.to_owned() })
}

fn ext_code<'a>(resource: &'a Value, name: &str) -> Option<&'a str> {
    let url = format!("{PAS_EXT}{name}");
    let ext = resource["extension"].as_array()?.iter().find(|e| e["url"].as_str() == Some(url.as_str()))?;
    first_coding(&ext["valueCodeableConcept"]).map(|(_, code)| code)
}

fn has_ext(resource: &Value, list: &str, name: &str) -> bool {
    let url = format!("{PAS_EXT}{name}");
    resource[list].as_array().is_some_and(|l| l.iter().any(|e| e["url"].as_str() == Some(url.as_str())))
}

fn date8(fhir_date: &str) -> Option<String> {
    let d: String = fhir_date.chars().take(10).filter(char::is_ascii_digit).collect();
    (d.len() == 8).then_some(d)
}

fn item_of(item: &Value, index: usize) -> Result<CaseItem, FhirError> {
    let path = format!("Claim.item[{index}]");
    let sequence = item["sequence"]
        .as_u64()
        .and_then(|s| u32::try_from(s).ok())
        .filter(|s| *s > 0)
        .ok_or_else(|| invalid("item.sequence must be a positive integer", &format!("{path}.sequence")))?;
    let (system, code) = first_coding(&item["productOrService"])
        .ok_or_else(|| invalid("item.productOrService needs a coding", &format!("{path}.productOrService")))?;
    let (from, to) = if let Some(d) = item["servicedDate"].as_str() {
        (date8(d), None)
    } else {
        (
            item["servicedPeriod"]["start"].as_str().and_then(date8),
            item["servicedPeriod"]["end"].as_str().and_then(date8),
        )
    };
    let quantity =
        item["quantity"]["value"].as_f64().map(
            |q| {
                if q.fract() == 0.0 {
                    format!("{}", q as i64)
                } else {
                    q.to_string()
                }
            },
        );
    let trace = item["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["url"].as_str() == Some(&format!("{PAS_EXT}extension-itemTraceNumber")))
        .and_then(|e| e["valueIdentifier"]["value"].as_str())
        .map(str::to_owned);
    Ok(CaseItem {
        sequence,
        code_system: fhir_code_system(system),
        code: code.to_owned(),
        quantity,
        service_from: from,
        service_to: to,
        decision: None,
        certified_period: None,
        trace,
        decided_at: None,
        extended_review: false,
    })
}

fn requester_of(resource: &Value) -> Requester {
    let npi = resource["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["system"].as_str() == Some(NPI_SYSTEM))
        .or_else(|| resource["identifier"].as_array().and_then(|a| a.first()));
    let id = npi.and_then(|i| i["value"].as_str()).unwrap_or("").to_owned();
    let qualifier = if npi.and_then(|i| i["system"].as_str()) == Some(NPI_SYSTEM) { "XX" } else { "PI" };
    let (name, first_name) = match resource["resourceType"].as_str() {
        Some("Organization") => (resource["name"].as_str().unwrap_or("").to_owned(), None),
        _ => {
            let n = &resource["name"][0];
            (n["family"].as_str().unwrap_or("").to_owned(), n["given"][0].as_str().map(str::to_owned))
        }
    };
    Requester { id_qualifier: qualifier.into(), id, name, first_name }
}

/// Parses a `$submit` body.
pub fn parse_submit(bundle: &Value) -> Result<PasRequest, FhirError> {
    let index = index_bundle(bundle)?;
    let bundle_identifier = bundle_identifier(bundle)?;
    let claim = &bundle["entry"][0]["resource"];
    if claim["use"] != "preauthorization" {
        return Err(invalid("a PAS Claim must have use 'preauthorization'", "Claim.use"));
    }
    let patient = index
        .resolve(&claim["patient"])
        .filter(|p| p["resourceType"] == "Patient")
        .ok_or_else(|| invalid("Claim.patient must reference a Patient in the Bundle", "Claim.patient"))?;
    let insurer = index
        .resolve(&claim["insurer"])
        .filter(|p| p["resourceType"] == "Organization")
        .ok_or_else(|| invalid("Claim.insurer must reference an Organization in the Bundle", "Claim.insurer"))?;
    let provider = requesting_provider(&index, claim)?;
    let member_id = member_id_of(&index, claim, Some(patient))?;
    let name = &patient["name"][0];
    let subscriber = Subscriber {
        member_id,
        last_name: name["family"].as_str().unwrap_or("").to_owned(),
        first_name: name["given"][0].as_str().map(str::to_owned),
        date_of_birth: patient["birthDate"].as_str().and_then(date8),
        gender: patient["gender"].as_str().map(|g| match g {
            "male" => "M".to_owned(),
            "female" => "F".to_owned(),
            _ => "U".to_owned(),
        }),
    };

    let items_json = claim["item"]
        .as_array()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| FhirError::unprocessable("required", "the Claim has no items", Some("Claim.item")))?;
    let mut items = Vec::with_capacity(items_json.len());
    let mut changes = Vec::with_capacity(items_json.len());
    let mut cancelled = 0;
    for (i, item) in items_json.iter().enumerate() {
        let parsed = item_of(item, i)?;
        if items.iter().any(|x: &CaseItem| x.sequence == parsed.sequence) {
            return Err(invalid(
                format!("item.sequence {} is used twice", parsed.sequence),
                &format!("Claim.item[{i}]"),
            ));
        }
        let cancel = item["modifierExtension"].as_array().is_some_and(|m| {
            m.iter().any(|e| {
                e["url"].as_str() == Some(&format!("{PAS_EXT}modifierextension-infoCancelled"))
                    && e["valueBoolean"] == true
            })
        }) || ext_code(item, "extension-certificationType") == Some("3");
        let changed = has_ext(item, "extension", "extension-infoChanged");
        changes.push(if cancel {
            cancelled += 1;
            ItemChange::Cancel(parsed.sequence)
        } else if changed {
            ItemChange::Replace(Box::new(parsed.clone()))
        } else {
            ItemChange::Same(parsed.sequence)
        });
        items.push(parsed);
    }

    let related = claim["related"].as_array().and_then(|r| r.iter().find(|x| x["claim"].is_object()));
    let updates_claim_id =
        related.and_then(|r| index.resolve(&r["claim"])).and_then(|c| c["id"].as_str()).map(str::to_owned);
    let (kind, updates) = match related {
        Some(r) => {
            let prior = index.resolve(&r["claim"]);
            // The earlier Claim in the Bundle, or a reference by identifier.
            let trace = prior.and_then(claim_trace).or_else(|| identifier_trace(&r["claim"]["identifier"]));
            let trace = trace.ok_or_else(|| {
                invalid("Claim.related.claim must identify the earlier Claim", "Claim.related[0].claim")
            })?;
            // It becomes a key prefix, like the Claim's own identifier: bounded the same way.
            if trace.value.len() > MAX_REFERENCE_LEN || trace.originator.len() > 255 {
                return Err(invalid(
                    format!(
                        "Claim.related.claim identifies the earlier Claim in at most {MAX_REFERENCE_LEN} characters"
                    ),
                    "Claim.related[0].claim",
                ));
            }
            (ClaimKind::Update, Some(trace))
        }
        None => (ClaimKind::Initial, None),
    };

    let level = ext_code(claim, "extension-levelOfServiceCode");
    let priority = first_coding(&claim["priority"]).map(|(_, c)| c);
    let urgency = if priority == Some("stat") || matches!(level, Some("U") | Some("03")) {
        Urgency::Expedited
    } else {
        Urgency::Standard
    };

    let first_item = &items_json[0];
    let request_category = ext_code(first_item, "extension-serviceItemRequestType").unwrap_or("HS").to_owned();
    let certification_type = ext_code(first_item, "extension-certificationType").unwrap_or("I").to_owned();
    let diagnoses = claim["diagnosis"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| first_coding(&d["diagnosisCodeableConcept"]).map(|(_, c)| c.to_owned()))
        .collect();
    let supplied_documentation = claim["supportingInfo"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| index.resolve(&s["valueReference"]))
        .flat_map(|doc| doc["type"]["coding"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["system"].as_str() == Some(LOINC))
        .filter_map(|c| c["code"].as_str().map(str::to_owned))
        .collect();

    let payer_ids: Vec<String> = insurer["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["value"].as_str().map(str::to_owned))
        .collect();
    let provider_ref = claim["provider"]["reference"].as_str().unwrap_or("").to_owned();
    let fhir = FhirRefs {
        claim: claim["id"].as_str().unwrap_or("").to_owned(),
        patient: patient["id"].as_str().unwrap_or("").to_owned(),
        requestor: provider_ref,
        insurer: insurer["id"].as_str().unwrap_or("").to_owned(),
        claim_type: first_coding(&claim["type"]).map(|(_, c)| c.to_owned()).unwrap_or_else(|| "professional".into()),
        bundle_identifier: bundle_identifier.clone(),
        claim_identifier: claim["identifier"].as_array().and_then(|a| a.first()).cloned(),
    };
    let request = Request {
        payer_ids,
        payer_name: insurer["name"].as_str().unwrap_or("").to_owned(),
        subscriber,
        requester: requester_of(provider),
        trace: bounded_trace(claim)?,
        request_category,
        certification_type,
        diagnoses,
        urgency,
        items,
        supplied_documentation,
        fhir: Some(fhir),
    };
    let cancels_all = cancelled == changes.len();
    Ok(PasRequest { bundle_identifier, kind, request, updates, updates_claim_id, item_changes: changes, cancels_all })
}

/// What an `$inquire` asks: the member, the provider and, when given, the Claim's trace.
#[derive(Debug, Clone)]
pub struct Inquiry {
    /// Member id.
    pub member_id: String,
    /// Provider identifier (NPI).
    pub provider_id: String,
    /// The Claim identifier, narrowing the match.
    pub trace: Option<Trace>,
}

/// Parses an `$inquire` Bundle (a Parameters body is unwrapped by the route).
pub fn parse_inquiry(bundle: &Value) -> Result<Inquiry, FhirError> {
    let index = index_bundle(bundle)?;
    let claim = &bundle["entry"][0]["resource"];
    if claim["use"] != "preauthorization" {
        return Err(invalid("a PAS inquiry Claim must have use 'preauthorization'", "Claim.use"));
    }
    let member_id = member_id_of(&index, claim, index.resolve(&claim["patient"]))?;
    let provider = requesting_provider(&index, claim)?;
    let provider_id = requester_of(provider).id;
    if provider_id.is_empty() {
        return Err(invalid("the inquiry's provider needs an identifier (NPI)", "Claim.provider"));
    }
    Ok(Inquiry { member_id, provider_id, trace: bounded_trace(claim)? })
}

/// The member id: the focal Coverage's subscriberId (where PAS maps 2010C NM109), else the Patient's first
/// identifier.
fn member_id_of(index: &BundleIndex<'_>, claim: &Value, patient: Option<&Value>) -> Result<String, FhirError> {
    let insurances = claim["insurance"].as_array().map(Vec::as_slice).unwrap_or_default();
    let focal = insurances.iter().find(|i| i["focal"] == true).or_else(|| insurances.first());
    focal
        .and_then(|i| index.resolve(&i["coverage"]))
        .and_then(|c| c["subscriberId"].as_str())
        .or_else(|| patient.and_then(|p| p["identifier"][0]["value"].as_str()))
        .map(str::to_owned)
        .ok_or_else(|| invalid("the member id is missing (Coverage.subscriberId)", "Coverage.subscriberId"))
        .and_then(|m| match m.len() {
            // Longer than any member id (80): refused here rather than keyed by.
            0..=80 => Ok(m),
            _ => Err(invalid("the member id is at most 80 characters", "Coverage.subscriberId")),
        })
}

/// The requesting provider: Claim.provider, or the organisation of a PractitionerRole that names one.
fn requesting_provider<'a>(index: &BundleIndex<'a>, claim: &Value) -> Result<&'a Value, FhirError> {
    let provider = index
        .resolve(&claim["provider"])
        .ok_or_else(|| invalid("Claim.provider must reference a resource in the Bundle", "Claim.provider"))?;
    Ok(match provider["resourceType"].as_str() {
        Some("PractitionerRole") => index.resolve(&provider["organization"]).unwrap_or(provider),
        _ => provider,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> Value {
        let path = format!("{}/../../../shared/conformance/davinci/pas/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_slice(&std::fs::read(path).expect("conformance example")).expect("json")
    }

    #[test]
    fn reads_the_referral_example() {
        let req = parse_submit(&example("Bundle-ReferralAuthorizationBundleExample.json")).expect("accepted");
        assert_eq!(req.bundle_identifier.1, "A12345");
        assert_eq!(req.kind, ClaimKind::Initial);
        assert_eq!(req.request.subscriber.member_id, "1122334455");
        assert_eq!(req.request.requester.npi(), Some("8189991234"));
        assert_eq!(req.request.urgency, Urgency::Expedited, "level of service U is urgent");
        assert_eq!(req.request.trace, Some(Trace { value: "111099".into(), originator: "9012345678".into() }));
        assert_eq!(req.request.items[0].code_system, "X12-1365");
        assert_eq!(req.request.diagnoses, vec!["G89.4".to_owned()]);
    }

    #[test]
    fn reads_the_update_example() {
        let req = parse_submit(&example("Bundle-HomecareAuthorizationUpdateBundleExample.json")).expect("accepted");
        assert_eq!(req.kind, ClaimKind::Update);
        assert_eq!(req.updates.as_ref().map(|t| t.value.as_str()), Some("111099"));
        assert_eq!(req.item_changes[0], ItemChange::Same(1));
        assert_eq!(req.item_changes[1], ItemChange::Cancel(2));
        assert!(matches!(&req.item_changes[2], ItemChange::Replace(i) if i.code == "B4185"));
        assert!(!req.cancels_all);
    }

    #[test]
    fn structural_rules() {
        let good = example("Bundle-HomecareAuthorizationBundleExample.json");
        let mut b = good.clone();
        b["type"] = "transaction".into();
        assert!(
            matches!(parse_submit(&b), Err(FhirError::Unprocessable(i)) if i[0].expression.as_deref() == Some("Bundle.type"))
        );
        let mut b = good.clone();
        b["entry"].as_array_mut().unwrap().swap(0, 1);
        assert!(
            matches!(parse_submit(&b), Err(FhirError::Unprocessable(i)) if i[0].diagnostics.contains("first entry"))
        );
        let mut b = good.clone();
        b["entry"][0]["resource"]["use"] = "claim".into();
        assert!(
            matches!(parse_submit(&b), Err(FhirError::Unprocessable(i)) if i[0].expression.as_deref() == Some("Claim.use"))
        );
        let mut b = good.clone();
        b["entry"][0]["resource"]["insurer"]["reference"] = "Organization/Nowhere".into();
        assert!(matches!(parse_submit(&b), Err(FhirError::Unprocessable(i)) if i[0].code == "not-found"));
        let mut b = good.clone();
        let dup = b["entry"][1].clone();
        b["entry"].as_array_mut().unwrap().push(dup);
        assert!(matches!(parse_submit(&b), Err(FhirError::Unprocessable(i)) if i[0].code == "duplicate"));
        let mut b = good;
        b.as_object_mut().unwrap().remove("identifier");
        assert!(matches!(parse_submit(&b), Err(FhirError::Unprocessable(i)) if i[0].code == "required"));
        assert!(matches!(parse_submit(&serde_json::json!({"resourceType": "Patient"})), Err(FhirError::Invalid(_))));
    }
}
