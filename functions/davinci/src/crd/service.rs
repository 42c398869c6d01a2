//! Answering a CRD hook: place the member through the Coverage, ask the plan's policy about every billing code of
//! every order, and answer with the coverage-information extension on each order (a system action) and a card
//! wherever a person should act. The assertions are kept in one transaction with the client JWT's replay record.

use std::sync::Arc;

use axum::http::StatusCode;
use exchange_core::app::App;
use exchange_core::commit::{Commit, Committer};
use exchange_core::domain::audit::AuditEntry;
use exchange_core::domain::payer_data::{CurrentDataSet, MemberRecord, PayerDataRepo, Plan};
use exchange_core::domain::policy::evaluate;
use exchange_core::domain::replay::ReplayLedger;
use exchange_core::domain::MemberId;
use exchange_core::fhir::FhirError;
use exchange_core::ports::PortError;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::assertions::AssertionRepo;
use super::assertions::{new_assertion_id, StoredAssertion};
use super::client_auth::CdsClient;
use super::coverage_information::Assertion;
use super::ehr::EhrFhir;
use super::orders::{coverages, local_reference, member_id, orders, payer_identifiers, prefetched, Order};
use super::request::{Hook, HookRequest};
use crate::Settings;

/// The CRD service: the ports answering a hook uses (payer data, the kept assertions, the committer, the EHR
/// reader for missing prefetch) and the deployment's settings; nothing of HTTP.
#[derive(Clone)]
pub struct CrdService {
    repo: PayerDataRepo,
    assertions: AssertionRepo,
    committer: Committer,
    ehr: Arc<dyn EhrFhir>,
    settings: Settings,
}

impl std::fmt::Debug for CrdService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrdService").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl CrdService {
    /// The service over the app's ports, the assertions in `assertions`, reading missing prefetch with `ehr`.
    pub fn new(app: &App, assertions: AssertionRepo, ehr: Arc<dyn EhrFhir>, settings: Settings) -> Self {
        CrdService { repo: app.repo().clone(), assertions, committer: app.committer().clone(), ehr, settings }
    }
}

/// Most orders answered in one call (each is one kept assertion per billing code; a transaction holds 100).
pub const MAX_ORDERS: usize = 20;
/// Most billing codes evaluated per order.
pub const MAX_CODES_PER_ORDER: usize = 4;

/// The card-type code system cards are labelled with.
const CARD_TYPES: &str = "http://terminology.hl7.org/CodeSystem/cdshooks-card-type";

/// Where the member stands, from the Coverage.
enum Placement {
    /// Found, with their record (plans are looked up per order's service date).
    Member(Box<MemberRecord>),
    /// Not placed: the reason code (CRD temp codes) and text.
    NotPlaced(&'static str, &'static str),
}

/// The whole answer to one hook call. The assertions it keeps are committed with `audit`, the request's audit
/// record, in one transaction.
pub async fn answer(
    svc: &CrdService,
    client: &CdsClient,
    request: HookRequest,
    now: OffsetDateTime,
    request_id: &str,
    audit: AuditEntry,
) -> Result<Value, FhirError> {
    let port = |e: PortError| FhirError::from_port(request_id, &e);
    let data = svc.repo.current().await.map_err(port)?.ok_or(FhirError::Unavailable)?;

    // What the client did not prefetch is read from its FHIR server, when this deployment allows it.
    let mut fetched: Vec<Value> = Vec::new();
    let mut unresolved: Vec<String> = Vec::new();
    let mut coverage_known = request.prefetch.contains_key("coverage");
    if !coverage_known {
        let patient = request.context["patientId"].as_str().unwrap_or_default().to_owned();
        let query = format!("Coverage?patient={}&status=active", url_component(&patient));
        match fetch(svc, &request, &query).await {
            Some(found) => {
                coverage_known = true;
                fetched.extend(resources_of(found));
            }
            None => unresolved.push("the patient's Coverage (prefetch `coverage`)".into()),
        }
    }
    let (mut found, missing) = orders(&request, &fetched);
    for reference in missing {
        match fetch(svc, &request, &reference).await {
            Some(resource) => fetched.push(resource),
            None => unresolved.push(reference),
        }
    }
    if !fetched.is_empty() {
        found = orders(&request, &fetched).0;
    }
    if found.len() > MAX_ORDERS {
        return Err(FhirError::invalid(
            "too-costly",
            format!("at most {MAX_ORDERS} orders are answered per call"),
            Some("context"),
        ));
    }

    let mut assertions: Vec<StoredAssertion> = Vec::new();
    let mut cards: Vec<Value> = Vec::new();
    let mut actions: Vec<Value> = Vec::new();
    let today = date_of(now);

    if coverage_known {
        let all = coverages(&request, &fetched);
        let known: Vec<&Value> = prefetched(&request.prefetch).into_iter().chain(fetched.iter()).collect();
        let ours: Vec<&Value> = all
            .iter()
            .copied()
            .filter(|c| payer_identifiers(c, &known).iter().any(|id| data.payer.answers_to(id)))
            .collect();
        let coverage = match (all.len(), ours.len()) {
            (0, _) => {
                return Err(FhirError::invalid(
                    "required",
                    "the request carries no Coverage: CRD answers for the patient's coverage with this payer",
                    Some("prefetch.coverage"),
                ))
            }
            (_, 1) => ours[0],
            (_, n) if n > 1 => {
                return Err(FhirError::invalid(
                    "business-rule",
                    "two Coverages name this payer: send the one the orders are for",
                    Some("prefetch.coverage"),
                ))
            }
            (1, 0) => all[0],
            _ => {
                return Err(FhirError::invalid(
                    "business-rule",
                    "several Coverages, none naming this payer by identifier",
                    Some("prefetch.coverage"),
                ))
            }
        };
        let coverage_ref =
            coverage["id"].as_str().map(|id| format!("Coverage/{id}")).unwrap_or_else(|| "Coverage".to_owned());
        let placement = if ours.is_empty() {
            Placement::NotPlaced(
                "coverage-not-found",
                "the Coverage does not name this payer by identifier (payor.identifier or the payor Organization's)",
            )
        } else {
            place_member(svc, &data, coverage).await.map_err(port)?
        };
        for order in &found {
            let evaluated = evaluate_order(svc, &data, &placement, order, &today).await.map_err(port)?;
            let mut extensions = Vec::new();
            let several = evaluated.len() > 1;
            for (code, assertion) in &evaluated {
                let id = new_assertion_id();
                let billing = code.as_ref().filter(|_| several).map(|(s, c, _)| (s.as_str(), c.as_str()));
                extensions.push(assertion.extension(&coverage_ref, &iso_date(&today), &id, billing));
                assertions.push(StoredAssertion {
                    id,
                    partner: client.partner.id.as_str().to_owned(),
                    hook: request.hook.name().to_owned(),
                    hook_instance: request.hook_instance.clone(),
                    asserted_at: rfc3339(now),
                    member_id: match &placement {
                        Placement::Member(m) => m.person().member_id.clone().or_else(|| member_id(coverage)),
                        Placement::NotPlaced(..) => None,
                    },
                    plan_id: code.as_ref().and_then(|(_, _, plan)| plan.clone()),
                    coverage: coverage_ref.clone(),
                    order: order.reference.clone(),
                    billing_code: code.as_ref().map(|(s, c, _)| format!("{s}|{c}")),
                    covered: assertion.covered.to_owned(),
                    pa_needed: assertion.pa_needed.map(str::to_owned),
                    doc_needed: assertion.doc_needed.map(str::to_owned),
                    questionnaire: assertion.questionnaire.clone(),
                    documentation: assertion.documentation.clone(),
                });
                if assertion.needs_attention() {
                    cards.push(card(&data, order, code.as_ref().map(|(s, c, _)| (s.as_str(), c.as_str())), assertion));
                }
            }
            if request.configuration.coverage_info {
                let mut resource = order.resource.clone();
                if let Some(obj) = resource.as_object_mut() {
                    let list = obj.entry("extension").or_insert_with(|| json!([]));
                    if let Some(list) = list.as_array_mut() {
                        list.extend(extensions);
                    }
                }
                actions.push(json!({
                    "type": "update",
                    "description": format!("Coverage information from {} for {}", data.payer.name, order.reference),
                    "resource": resource,
                }));
            }
        }
    }
    if !unresolved.is_empty() {
        cards.push(undetermined_card(&data, request.hook, &unresolved));
    }
    cards.truncate(request.configuration.max_cards);

    let mut ops = svc.assertions.create_ops(&assertions).map_err(port)?;
    ops.push(ReplayLedger::record("cds", &client.issuer, &client.jti, client.expires));
    match svc.committer.commit_as(audit, Commit::answered(StatusCode::OK).writes(ops)).await {
        Ok(()) => {}
        // The assertion ids are fresh: the only create that can collide is the JWT's replay record.
        Err(PortError::Conflict(_)) => {
            tracing::info!(request_id, "CDS Hooks request refused: client JWT replayed");
            return Err(FhirError::Unauthorized("the CDS client JWT was refused: jti already used".into()));
        }
        Err(e) => return Err(port(e)),
    }
    let mut body = json!({ "cards": cards });
    if !actions.is_empty() {
        body["systemActions"] = json!(actions);
    }
    Ok(body)
}

/// Member id → member record; not placed when the id is malformed or unknown.
async fn place_member(svc: &CrdService, data: &CurrentDataSet, coverage: &Value) -> Result<Placement, PortError> {
    let Some(id) = member_id(coverage).and_then(|id| MemberId::parse(&id).ok()) else {
        return Ok(Placement::NotPlaced("no-member-found", "the Coverage carries no member id this payer issues"));
    };
    Ok(match svc.repo.member(data.version, &id).await? {
        Some(record) => Placement::Member(Box::new(record)),
        None => Placement::NotPlaced("no-member-found", "no member with the Coverage's member id"),
    })
}

/// A billing code with the plan it was evaluated under: (FHIR system, code, plan id).
type EvaluatedCode = Option<(String, String, Option<String>)>;

/// The assertion for each billing code of an order (one assertion without a code when there is none to evaluate
/// or the member cannot be placed).
async fn evaluate_order(
    svc: &CrdService,
    data: &CurrentDataSet,
    placement: &Placement,
    order: &Order,
    today: &str,
) -> Result<Vec<(EvaluatedCode, Assertion)>, PortError> {
    let record = match placement {
        Placement::Member(record) => record,
        Placement::NotPlaced(code, text) => return Ok(vec![(None, Assertion::member_not_placed(code, text))]),
    };
    let on = order.service_date.clone().unwrap_or_else(|| today.to_owned());
    let Some(active) = record.active_coverage(&on) else {
        return Ok(vec![(
            None,
            Assertion::member_not_placed("no-active-coverage", "the member has no coverage on the service date"),
        )]);
    };
    let plan: Option<std::sync::Arc<Plan>> = svc.repo.plan(data.version, &active.plan_id).await?;
    if order.codes.is_empty() {
        return Ok(vec![(None, Assertion::no_billing_code())]);
    }
    Ok(order
        .codes
        .iter()
        .take(MAX_CODES_PER_ORDER)
        .map(|c| {
            let outcome = match &plan {
                Some(plan) => evaluate(plan, &c.policy_system, &c.code),
                None => exchange_core::domain::policy::PolicyOutcome::Unknown,
            };
            (Some((c.system.clone(), c.code.clone(), Some(active.plan_id.clone()))), Assertion::from_policy(&outcome))
        })
        .collect())
}

fn card(data: &CurrentDataSet, order: &Order, code: Option<(&str, &str)>, a: &Assertion) -> Value {
    let what = match code {
        Some((system, code)) => format!("{} {code}", exchange_core::domain::policy::fhir_code_system(system)),
        None => local_reference(&order.reference),
    };
    let (summary, indicator) = match (a.covered, a.pa_needed) {
        ("not-covered", _) => (format!("Not covered by {}: {what}", data.payer.name), "warning"),
        (_, Some("auth-needed")) => (format!("Prior authorization required: {what}"), "info"),
        _ => (format!("Coverage could not be determined: {what}"), "info"),
    };
    let mut detail = a.reason_text.clone().unwrap_or_default();
    if let Some(q) = &a.questionnaire {
        detail.push_str(&format!(". Complete the questionnaire {q} (DTR $questionnaire-package)"));
    }
    json!({
        "uuid": uuid(),
        "summary": truncate(&summary, 140),
        "detail": detail,
        "indicator": indicator,
        "source": {
            "label": data.payer.name,
            "topic": { "system": CARD_TYPES, "code": "coverage-info", "display": "Coverage Information" }
        },
        "extension": { "davinci-crd.associated-resource": [ { "reference": order.reference } ] }
    })
}

fn undetermined_card(data: &CurrentDataSet, hook: Hook, unresolved: &[String]) -> Value {
    json!({
        "uuid": uuid(),
        "summary": "Coverage requirements could not be determined",
        "detail": format!(
            "The {} request did not carry {} and this service is not configured to read it from the EHR (or the \
             read failed). Send the prefetch the service's discovery entry asks for.",
            hook.name(),
            unresolved.join(", ")
        ),
        "indicator": "info",
        "source": {
            "label": data.payer.name,
            "topic": { "system": CARD_TYPES, "code": "coverage-info", "display": "Coverage Information" }
        }
    })
}

/// One read from the EHR when allowed and possible (`None` otherwise; failures are logged without content).
async fn fetch(svc: &CrdService, request: &HookRequest, path_and_query: &str) -> Option<Value> {
    if !svc.settings.fetch_from_ehr {
        return None;
    }
    let (Some(base), Some(auth)) = (&request.fhir_server, &request.fhir_authorization) else { return None };
    if !svc.settings.allow_http_ehr && !base.starts_with("https://") {
        return None;
    }
    match svc.ehr.read(base, path_and_query, &auth.access_token).await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(error = %e, "reading prefetch from the EHR failed");
            None
        }
    }
}

fn resources_of(value: Value) -> Vec<Value> {
    if value["resourceType"] == "Bundle" {
        value["entry"].as_array().into_iter().flatten().map(|e| e["resource"].clone()).collect()
    } else {
        vec![value]
    }
}

/// Percent-encodes a query value (ids are `[A-Za-z0-9\-\.]`, but the client's value is not trusted).
fn url_component(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn date_of(now: OffsetDateTime) -> String {
    exchange_core::x12::ack::ccyymmdd(now)
}

fn iso_date(ccyymmdd: &str) -> String {
    format!("{}-{}-{}", &ccyymmdd[..4], &ccyymmdd[4..6], &ccyymmdd[6..8])
}

fn rfc3339(now: OffsetDateTime) -> String {
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        s.chars().take(max - 1).chain(std::iter::once('…')).collect()
    }
}

/// A random (version 4) UUID, as cards carry.
pub fn uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}
