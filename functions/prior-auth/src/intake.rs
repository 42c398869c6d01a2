//! Intake: what a prior-authorization request asks, however it arrived, checked against the payer data and decided
//! by the payer policy where it can be. Both channels (X12 278 and PAS) build a [`Request`] and get back either a
//! decided [`PaCase`] or the [`Rejection`] that stops it (an X12 AAA segment / a PAS `ClaimResponse.error`).

use exchange_core::domain::payer_data::{names_match, CurrentDataSet, PayerDataRepo, Plan};
use exchange_core::domain::policy::{auto_decision, evaluate, PolicyOutcome};
use exchange_core::domain::prior_auth::{
    CaseItem, Decision, FhirRefs, NewCase, PaCase, Requester, Subscriber, Trace, Urgency,
};
use exchange_core::domain::{MemberId, TradingPartner};
use exchange_core::ports::PortError;
use exchange_core::x12::ack::ccyymmdd;
use time::OffsetDateTime;

/// Who decides automatically, in a case's history.
pub const POLICY: &str = "policy";

/// A request, channel-neutral.
#[derive(Debug, Clone)]
pub struct Request {
    /// The payer ids the request is addressed to (2010A NM109, or the insurer's identifiers).
    pub payer_ids: Vec<String>,
    /// The payer's name as sent.
    pub payer_name: String,
    /// The subscriber.
    pub subscriber: Subscriber,
    /// The requesting provider.
    pub requester: Requester,
    /// The submitter's trace.
    pub trace: Option<Trace>,
    /// UM01 / serviceItemRequestType.
    pub request_category: String,
    /// UM02 / certificationType.
    pub certification_type: String,
    /// Diagnoses.
    pub diagnoses: Vec<String>,
    /// Urgency.
    pub urgency: Urgency,
    /// Items, undecided.
    pub items: Vec<CaseItem>,
    /// LOINC codes of documentation sent with the request.
    pub supplied_documentation: Vec<String>,
    /// FHIR ids, for PAS.
    pub fhir: Option<FhirRefs>,
}

/// Where a rejection points: the X12 loop and element, and the FHIR path of the same data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// 2010A: the payer (UMO).
    Payer,
    /// 2010B: the requester.
    Requester,
    /// 2010C: the subscriber.
    Subscriber,
    /// 2000E: the patient event (e.g. the earlier request it quotes).
    Event,
}

impl Party {
    /// The X12 loop.
    pub fn loop_id(self) -> &'static str {
        match self {
            Party::Payer => "2010A",
            Party::Requester => "2010B",
            Party::Subscriber => "2010C",
            Party::Event => "2000E",
        }
    }
}

/// Why a request cannot be decided: an X12 AAA reject reason (element 901), at a party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The party at fault.
    pub party: Party,
    /// AAA03 (X12 901): `79` invalid participant, `42` unable to respond now, `41` authorization/access
    /// restrictions, `72` invalid member id, `73` name, `71` birth date, `75` subscriber not found, `95` patient not
    /// eligible, `15` required application data missing.
    pub code: &'static str,
    /// AAA04 follow-up: `C` (correct and resubmit), `N` (resubmission not allowed), `R` (resubmission allowed).
    pub follow_up: &'static str,
    /// The element (X12 position such as `NM109`).
    pub element: &'static str,
}

impl Rejection {
    /// A rejection at `party`.
    pub fn new(party: Party, code: &'static str, follow_up: &'static str, element: &'static str) -> Self {
        Rejection { party, code, follow_up, element }
    }

    /// AAA01: whether the request itself is valid (only "unable to respond now" says so).
    pub fn valid_request(&self) -> bool {
        self.code == "42"
    }
}

/// What intake produced.
#[derive(Debug)]
pub enum Intake {
    /// A case with its automatic decisions made.
    Decided(Box<PaCase>),
    /// The request cannot be decided.
    Rejected(Rejection),
}

/// A new case id: also the authorization number and the administrative reference number (HCR02 / REF*NT).
pub fn new_case_id(now: OffsetDateTime) -> String {
    let random: [u8; 5] = rand::random();
    format!("PA{}{}", &ccyymmdd(now)[2..], hex::encode_upper(random))
}

/// The policy's automatic decision for one item under `plan` (a person decides when there is no plan).
pub fn policy_decision(plan: Option<&Plan>, item: &CaseItem, supplied_documentation: &[String]) -> Decision {
    let outcome = match plan {
        Some(plan) => evaluate(plan, &item.code_system, &item.code),
        None => PolicyOutcome::Unknown,
    };
    auto_decision(&outcome, supplied_documentation)
}

/// Whether `request` is about the same member and from the same requester as `case` (an update or cancellation
/// must not reach another member's case through a mistyped reference).
pub fn same_parties(case: &PaCase, subscriber: &Subscriber, requester: &Requester) -> bool {
    case.subscriber.member_id.eq_ignore_ascii_case(&subscriber.member_id) && case.requester.id == requester.id
}

/// Looks up the payer, requester and member, then decides each item from the plan's policy.
pub async fn take(
    repo: &PayerDataRepo,
    submitter: &TradingPartner,
    channel: &str,
    submission_key: &str,
    request: Request,
    now: OffsetDateTime,
) -> Result<Intake, PortError> {
    let Some(data): Option<CurrentDataSet> = repo.current().await? else {
        return Ok(Intake::Rejected(Rejection::new(Party::Payer, "42", "R", "NM109")));
    };
    if !request.payer_ids.iter().any(|id| data.payer.answers_to(id)) {
        return Ok(Intake::Rejected(Rejection::new(Party::Payer, "79", "C", "NM109")));
    }
    if !submitter.may_submit_for(&request.requester.id) {
        return Ok(Intake::Rejected(Rejection::new(Party::Requester, "41", "N", "NM109")));
    }
    let Ok(member_id) = MemberId::parse(&request.subscriber.member_id) else {
        return Ok(Intake::Rejected(Rejection::new(Party::Subscriber, "72", "C", "NM109")));
    };
    let Some(record) = repo.member(data.version, &member_id).await? else {
        return Ok(Intake::Rejected(Rejection::new(Party::Subscriber, "75", "C", "NM109")));
    };
    // The person on file must be the one named (as eligibility checks it): last name, and birth date when sent.
    let person = record.person();
    if !names_match(Some(&request.subscriber.last_name), &person.last_name) {
        return Ok(Intake::Rejected(Rejection::new(Party::Subscriber, "73", "C", "NM103")));
    }
    if request.subscriber.date_of_birth.as_ref().is_some_and(|dob| *dob != person.date_of_birth) {
        return Ok(Intake::Rejected(Rejection::new(Party::Subscriber, "71", "C", "DMG02")));
    }
    // The coverage on the first requested service date (or today).
    let on = request.items.iter().filter_map(|i| i.service_from.clone()).min().unwrap_or_else(|| ccyymmdd(now));
    let Some(active) = record.active_coverage(&on) else {
        return Ok(Intake::Rejected(Rejection::new(Party::Subscriber, "95", "N", "NM109")));
    };
    let plan = repo.plan(data.version, &active.plan_id).await?;

    let mut case = NewCase {
        submitter: submitter.id.as_str().to_owned(),
        payer: data.payer.id.clone(),
        payer_name: data.payer.name.clone(),
        channel: channel.to_owned(),
        submission_key: submission_key.to_owned(),
        subscriber: request.subscriber,
        requester: request.requester,
        plan_id: Some(active.plan_id.clone()),
        trace: request.trace,
        request_category: request.request_category,
        certification_type: request.certification_type,
        diagnoses: request.diagnoses,
        fhir: request.fhir,
        urgency: request.urgency,
        items: request.items,
    }
    .into_case(new_case_id(now), now);
    let sequences: Vec<u32> = case.items.iter().map(|i| i.sequence).collect();
    decide_items(&mut case, plan.as_deref(), &sequences, &request.supplied_documentation, now);
    Ok(Intake::Decided(Box::new(case)))
}

fn decide_items(case: &mut PaCase, plan: Option<&Plan>, sequences: &[u32], docs: &[String], now: OffsetDateTime) {
    for &sequence in sequences {
        let Some(item) = case.items.iter().find(|i| i.sequence == sequence) else { continue };
        let decision = policy_decision(plan, item, docs);
        // The sequence was just found, so deciding it cannot fail.
        let _ = case.decide(sequence, decision, POLICY, now);
    }
}

/// Applies the policy to items an update (revision) added or changed.
pub async fn decide_added_items(
    repo: &PayerDataRepo,
    case: &mut PaCase,
    sequences: &[u32],
    supplied_documentation: &[String],
    now: OffsetDateTime,
) -> Result<(), PortError> {
    let plan = match (&case.plan_id, repo.current().await?) {
        (Some(id), Some(data)) => repo.plan(data.version, id).await?,
        _ => None,
    };
    decide_items(case, plan.as_deref(), sequences, supplied_documentation, now);
    Ok(())
}
