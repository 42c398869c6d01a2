//! `Questionnaire/$questionnaire-package` (DTR 2.0.1 and 2.2): which forms the payer needs for a Coverage and its
//! orders (the policy's questionnaire for each billing code, a CRD coverage-assertion-id's questionnaire, or the
//! canonicals asked for), each answered as a package Bundle: the Questionnaire first, the ValueSets and Libraries it
//! uses, and a draft QuestionnaireResponse seeded with what the payer already knows.

use exchange_core::domain::forms::{canonical_url, dependencies, Form, PrefillSource};
use exchange_core::domain::payer_data::{CurrentDataSet, MemberRecord, Plan};
use exchange_core::domain::policy::{evaluate, PolicyOutcome};
use exchange_core::domain::MemberId;
use exchange_core::fhir::FhirError;
use exchange_core::http::CallerContext;
use exchange_core::ports::PortError;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::crd::orders::{billing_codes, member_id, payer_identifiers};
use crate::Davinci;

/// DTR profiles the answer claims.
pub const QPACKAGE_OUTPUT: &str =
    "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/dtr-qpackage-output-parameters";
/// The package Bundle profile.
pub const QPACKAGE_BUNDLE: &str = "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/DTR-QPackageBundle";
/// The standard Questionnaire profile.
pub const STD_QUESTIONNAIRE: &str = "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/dtr-std-questionnaire";
/// The QuestionnaireResponse profile.
pub const DTR_QR: &str = "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/dtr-questionnaireresponse";
/// qr-context extension.
pub const QR_CONTEXT: &str = "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/qr-context";
/// intendedUse extension.
pub const INTENDED_USE: &str = "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/intendedUse";
/// information-origin extension.
pub const INFORMATION_ORIGIN: &str = "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/information-origin";

/// Most forms (and orders) in one request.
pub const MAX_INPUTS: usize = 20;

/// The operation's inputs, under their 2.0.1 or 2.2 names.
#[derive(Debug, Default)]
pub struct PackageRequest {
    /// Coverage resources.
    pub coverage: Vec<Value>,
    /// Order resources.
    pub orders: Vec<Value>,
    /// Questionnaire canonicals asked for.
    pub questionnaires: Vec<String>,
    /// A CRD coverage-assertion-id.
    pub context: Option<String>,
    /// Only forms changed since (an instant / dateTime).
    pub changed_since: Option<String>,
}

/// Reads the input Parameters.
pub fn parse(body: &[u8]) -> Result<PackageRequest, FhirError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| FhirError::invalid("structure", "the body is not JSON", None))?;
    if v["resourceType"] != "Parameters" {
        return Err(FhirError::invalid("structure", "$questionnaire-package takes a Parameters resource", None));
    }
    let mut r = PackageRequest::default();
    for (i, p) in v["parameter"].as_array().into_iter().flatten().enumerate() {
        let at = format!("Parameters.parameter[{i}]");
        match p["name"].as_str().unwrap_or_default() {
            "coverage" => match &p["resource"] {
                c if c["resourceType"] == "Coverage" => r.coverage.push(c.clone()),
                _ => return Err(FhirError::invalid("structure", "coverage must carry a Coverage", Some(&at))),
            },
            "order" => match &p["resource"] {
                o if o.is_object() => r.orders.push(o.clone()),
                _ => return Err(FhirError::invalid("structure", "order must carry a resource", Some(&at))),
            },
            "questionnaire" => match p["valueCanonical"].as_str().or_else(|| p["valueUri"].as_str()) {
                Some(q) if !q.is_empty() => r.questionnaires.push(q.to_owned()),
                _ => return Err(FhirError::invalid("structure", "questionnaire must be a canonical", Some(&at))),
            },
            "context" => r.context = p["valueString"].as_str().or_else(|| p["valueId"].as_str()).map(str::to_owned),
            "changedsince" => {
                r.changed_since = p["valueDateTime"].as_str().or_else(|| p["valueInstant"].as_str()).map(str::to_owned)
            }
            // Resources the client thinks the forms need (2.0.1 `referenced`): not used by these forms.
            _ => {}
        }
    }
    if r.coverage.len() != 1 {
        return Err(FhirError::invalid(
            "required",
            "exactly one coverage (the Coverage the forms are for) is required",
            Some("Parameters.parameter.where(name='coverage')"),
        ));
    }
    if r.orders.is_empty() && r.questionnaires.is_empty() && r.context.is_none() {
        return Err(FhirError::invalid(
            "required",
            "name the forms through order, questionnaire or context (dtr-1)",
            Some("Parameters.parameter"),
        ));
    }
    if r.orders.len() > MAX_INPUTS || r.questionnaires.len() > MAX_INPUTS {
        return Err(FhirError::invalid("too-costly", format!("at most {MAX_INPUTS} orders and questionnaires"), None));
    }
    Ok(r)
}

/// The member a Coverage names, checked against this payer: 422 when it is another payer's or not on file.
pub async fn place(dv: &Davinci, data: &CurrentDataSet, coverage: &Value) -> Result<MemberRecord, FhirError> {
    let unknown = |d: &str| {
        FhirError::unprocessable("not-found", d.to_owned(), Some("Parameters.parameter.where(name='coverage')"))
    };
    let contained: Vec<&Value> = coverage["contained"].as_array().into_iter().flatten().collect();
    if !payer_identifiers(coverage, &contained).iter().any(|id| data.payer.answers_to(id)) {
        return Err(unknown("the Coverage does not name this payer by identifier (payor.identifier)"));
    }
    let Some(id) = member_id(coverage).and_then(|m| MemberId::parse(&m).ok()) else {
        return Err(unknown("the Coverage carries no member id this payer issues (subscriberId or identifier MB)"));
    };
    match dv.core.repo().member(data.version, &id).await {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(unknown("unknown coverage: no member with this member id")),
        Err(e) => Err(FhirError::from_port("-", &e)),
    }
}

/// A form chosen for the request, with the order it is for.
struct Chosen {
    form: Form,
    order: Option<String>,
    code: Option<String>,
}

/// Answers the operation.
pub async fn package(
    dv: &Davinci,
    caller: &CallerContext,
    request: PackageRequest,
    now: OffsetDateTime,
) -> Result<Value, FhirError> {
    let port = |e: PortError| FhirError::from_port(&caller.request_id, &e);
    let data = dv.core.repo().current().await.map_err(port)?.ok_or(FhirError::Unavailable)?;
    let coverage = &request.coverage[0];
    let record = place(dv, &data, coverage).await?;
    if let Some(m) = member_id(coverage) {
        caller.audit_member(&m);
    }
    let today = exchange_core::x12::ack::ccyymmdd(now);
    let active = record.active_coverage(&today).ok_or_else(|| {
        FhirError::unprocessable(
            "business-rule",
            "the member has no active coverage today",
            Some("Parameters.parameter.where(name='coverage')"),
        )
    })?;
    let plan = dv.core.repo().plan(data.version, &active.plan_id).await.map_err(port)?;

    let mut warnings: Vec<String> = Vec::new();
    let mut chosen: Vec<Chosen> = Vec::new();
    let add = |chosen: &mut Vec<Chosen>, form: Form, order: Option<String>, code: Option<String>| {
        if !chosen.iter().any(|c| c.form.url() == form.url() && c.order == order) {
            chosen.push(Chosen { form, order, code });
        }
    };
    // Orders: the policy's questionnaire for each billing code that needs authorization.
    for order in &request.orders {
        let reference = order["resourceType"].as_str().zip(order["id"].as_str()).map(|(t, i)| format!("{t}/{i}"));
        for code in billing_codes(order) {
            let outcome =
                plan.as_deref().map_or(PolicyOutcome::Unknown, |p: &Plan| evaluate(p, &code.policy_system, &code.code));
            if let PolicyOutcome::AuthNeeded { questionnaire: Some(q), .. } = outcome {
                match dv.core.repo().canonical(data.version, &q).await.map_err(port)? {
                    Some(form) => add(&mut chosen, form, reference.clone(), Some(code.code.clone())),
                    None => warnings.push(format!("the form {q} named by the policy is not available")),
                }
            }
        }
    }
    // A CRD assertion the caller was given.
    if let Some(id) = &request.context {
        let assertion = dv.assertions.get(id).await.map_err(port)?;
        let Some(assertion) = assertion.filter(|a| a.partner == caller.partner.id.as_str()) else {
            return Err(FhirError::NotFound("unknown context: no coverage assertion with this id".into()));
        };
        let mine = assertion.member_id.as_deref().is_none_or(|m| {
            record.person().member_id.as_deref().is_none_or(|own| own.eq_ignore_ascii_case(m))
                || record.subscriber.member_id().eq_ignore_ascii_case(m)
        });
        if !mine {
            return Err(FhirError::unprocessable(
                "business-rule",
                "the context is an assertion about another member",
                Some("Parameters.parameter.where(name='context')"),
            ));
        }
        if let Some(q) = &assertion.questionnaire {
            if let Some(form) = dv.core.repo().canonical(data.version, q).await.map_err(port)? {
                let code = assertion.billing_code.as_deref().and_then(|c| c.split_once('|')).map(|(_, c)| c.to_owned());
                add(&mut chosen, form, Some(assertion.order.clone()), code);
            }
        }
    }
    // Canonicals asked for by name.
    for q in &request.questionnaires {
        match dv.core.repo().canonical(data.version, q).await.map_err(port)? {
            Some(form) if form.resource["resourceType"] == "Questionnaire" => add(&mut chosen, form, None, None),
            _ => warnings.push(format!("no questionnaire {} is published by this payer", canonical_url(q))),
        }
    }
    if let Some(since) = &request.changed_since {
        chosen.retain(|c| changed_since(&c.form.resource, since));
    }

    let mut parameters = Vec::new();
    for c in &chosen {
        let bundle = package_bundle(dv, &data, &record, plan.as_deref(), coverage, c, now).await.map_err(port)?;
        parameters.push(json!({ "name": "PackageBundle", "resource": bundle }));
    }
    if chosen.is_empty() && warnings.is_empty() {
        warnings.push("no form is needed for these orders under the member's plan".into());
    }
    if !warnings.is_empty() {
        let issues: Vec<Value> =
            warnings.iter().map(|w| json!({ "severity": "warning", "code": "not-found", "diagnostics": w })).collect();
        parameters.push(json!({
            "name": "operationOutcome",
            "resource": { "resourceType": "OperationOutcome", "issue": issues }
        }));
    }
    let mut out = json!({ "resourceType": "Parameters", "parameter": parameters });
    if !chosen.is_empty() {
        out["meta"] = json!({ "profile": [QPACKAGE_OUTPUT] });
    }
    Ok(out)
}

/// Whether a form changed after `since` (by `meta.lastUpdated`, else `date`; undated forms count as changed).
fn changed_since(q: &Value, since: &str) -> bool {
    match q["meta"]["lastUpdated"].as_str().or_else(|| q["date"].as_str()) {
        Some(changed) => changed > since,
        None => true,
    }
}

async fn package_bundle(
    dv: &Davinci,
    data: &CurrentDataSet,
    record: &MemberRecord,
    plan: Option<&Plan>,
    coverage: &Value,
    chosen: &Chosen,
    now: OffsetDateTime,
) -> Result<Value, PortError> {
    let mut questionnaire = chosen.form.resource.clone();
    claim_profile(&mut questionnaire, STD_QUESTIONNAIRE);
    let mut entries = vec![entry(&questionnaire)];
    for dep in dependencies(&questionnaire) {
        if let Some(r) = dv.core.repo().canonical(data.version, &dep).await? {
            entries.push(entry(&r.resource));
        }
    }
    if let Some(qr) = seeded_response(&chosen.form, record, plan, coverage, chosen, now) {
        entries.push(entry(&qr));
    }
    Ok(json!({
        "resourceType": "Bundle",
        "meta": { "profile": [QPACKAGE_BUNDLE] },
        "type": "collection",
        "timestamp": rfc3339(now),
        "entry": entries,
    }))
}

fn entry(resource: &Value) -> Value {
    let url = match (resource["url"].as_str(), resource["resourceType"].as_str(), resource["id"].as_str()) {
        (Some(u), _, _) => u.to_owned(),
        (None, Some(t), Some(i)) => format!("urn:{t}:{i}"),
        _ => format!("urn:uuid:{}", crate::crd::service::uuid()),
    };
    json!({ "fullUrl": url, "resource": resource })
}

fn claim_profile(resource: &mut Value, profile: &str) {
    let profiles = &mut resource["meta"]["profile"];
    if !profiles.is_array() {
        *profiles = json!([]);
    }
    if let Some(list) = profiles.as_array_mut() {
        if !list.iter().any(|p| p == profile) {
            list.push(json!(profile));
        }
    }
}

/// The draft response: the payer's pre-filled answers, for the Coverage and the order (the profile needs both as
/// context, and at least one answered item). `None` when either is missing.
fn seeded_response(
    form: &Form,
    record: &MemberRecord,
    plan: Option<&Plan>,
    coverage: &Value,
    chosen: &Chosen,
    now: OffsetDateTime,
) -> Option<Value> {
    let order = chosen.order.as_deref()?;
    let coverage_ref = format!("Coverage/{}", coverage["id"].as_str()?);
    let person = record.person();
    let mut items = Vec::new();
    for p in &form.prefill {
        let value = match p.from {
            PrefillSource::MemberId => {
                json!({ "valueString": person.member_id.clone().unwrap_or_else(|| record.subscriber.member_id().to_owned()) })
            }
            PrefillSource::FirstName => json!({ "valueString": person.first_name }),
            PrefillSource::LastName => json!({ "valueString": person.last_name }),
            PrefillSource::DateOfBirth => {
                let d = &person.date_of_birth;
                if d.len() != 8 {
                    continue;
                }
                json!({ "valueDate": format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..]) })
            }
            PrefillSource::PlanId => json!({ "valueString": plan?.id }),
            PrefillSource::PlanName => json!({ "valueString": plan?.name }),
            PrefillSource::OrderCode => match &chosen.code {
                Some(c) => json!({ "valueString": c }),
                None => continue,
            },
        };
        let mut answer = value;
        answer["extension"] =
            json!([{ "url": INFORMATION_ORIGIN, "extension": [{ "url": "source", "valueCode": "auto" }] }]);
        let text = item_text(&form.resource["item"], &p.link_id);
        let mut item = json!({ "linkId": p.link_id, "answer": [answer] });
        if let Some(t) = text {
            item["text"] = json!(t);
        }
        items.push(item);
    }
    if items.is_empty() {
        return None;
    }
    let subject = coverage["beneficiary"]["reference"].as_str().map(crate::crd::orders::local_reference)?;
    let version = form.resource["version"].as_str().map(|v| format!("|{v}")).unwrap_or_default();
    Some(json!({
        "resourceType": "QuestionnaireResponse",
        "id": format!("dtr-{}", &crate::crd::service::uuid()[..8]),
        "meta": { "profile": [DTR_QR] },
        "extension": [
            { "url": QR_CONTEXT, "valueReference": { "reference": coverage_ref } },
            { "url": QR_CONTEXT, "valueReference": { "reference": crate::crd::orders::local_reference(order) } },
            { "url": INTENDED_USE, "valueCodeableConcept": { "coding": [{
                "system": crate::crd::coverage_information::CODES, "code": "withpa" }] } }
        ],
        "questionnaire": format!("{}{version}", form.url()),
        "status": "in-progress",
        "subject": { "reference": subject },
        "authored": rfc3339(now),
        "item": items,
    }))
}

fn item_text<'a>(items: &'a Value, link_id: &str) -> Option<&'a str> {
    for item in items.as_array().into_iter().flatten() {
        if item["linkId"] == link_id {
            return item["text"].as_str();
        }
        if let Some(t) = item_text(&item["item"], link_id) {
            return Some(t);
        }
    }
    None
}

fn rfc3339(now: OffsetDateTime) -> String {
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
