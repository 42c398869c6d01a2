//! The prior-authorization case: one model for a request however it arrived (X12 278 or Da Vinci PAS), its items'
//! decisions, the authorization number, the status history and the decision deadline (CMS-0057-F: 72 hours for
//! expedited, 7 calendar days for standard requests, from receipt).
//!
//! [`CaseRepo`] keeps cases in the state store: creation is conditional (one case per submission key, so a retried
//! submission finds the original), every change is an optimistic update, and pended cases are indexed by deadline
//! for the reviewer's work list.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::ports::{Item, Key, PortError, Query, StateStore, WriteOp};
use crate::record::IdempotencyRecord;

/// How fast the payer must decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    /// 72 hours.
    Expedited,
    /// 7 calendar days.
    Standard,
}

impl Urgency {
    /// The decision deadline for a request received at `received`.
    pub fn deadline(self, received: OffsetDateTime) -> OffsetDateTime {
        match self {
            Urgency::Expedited => received + Duration::hours(72),
            Urgency::Standard => received + Duration::days(7),
        }
    }
}

/// What was decided for one item. The X12 HCR01 and PAS reviewAction codes are the same (X12 306).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Decision {
    /// A1: certified in total.
    Certified,
    /// A3: not certified, with HCR03 reason codes.
    NotCertified {
        /// Reason codes (X12 1535 / PAS reviewActionReason).
        reasons: Vec<String>,
    },
    /// A4: pended for review or documentation.
    Pended {
        /// What documentation is asked for (LOINC codes).
        documentation: Vec<String>,
    },
    /// A6: modified: certified with different detail.
    Modified {
        /// The authorized quantity.
        quantity: Option<String>,
        /// Reason codes.
        reasons: Vec<String>,
    },
    /// C: cancelled by the requester.
    Cancelled,
}

impl Decision {
    /// The X12 HCR01 / PAS reviewAction code.
    pub fn action_code(&self) -> &'static str {
        match self {
            Decision::Certified => "A1",
            Decision::NotCertified { .. } => "A3",
            Decision::Pended { .. } => "A4",
            Decision::Modified { .. } => "A6",
            Decision::Cancelled => "C",
        }
    }

    /// Whether the item still waits for a decision.
    pub fn is_pending(&self) -> bool {
        matches!(self, Decision::Pended { .. })
    }
}

/// One requested service line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaseItem {
    /// Sequence in the request (PAS `item.sequence`, or the 2000F position).
    pub sequence: u32,
    /// Code system (`CPT`, `HCPCS`, `NUBC`, `X12-1365` service type, ...).
    pub code_system: String,
    /// Service code.
    pub code: String,
    /// Requested quantity.
    pub quantity: Option<String>,
    /// Service date or start of the range (CCYYMMDD).
    pub service_from: Option<String>,
    /// End of the service range (CCYYMMDD).
    pub service_to: Option<String>,
    /// The decision, once made.
    pub decision: Option<Decision>,
    /// Certified period, when certified or modified (CCYYMMDD, CCYYMMDD).
    pub certified_period: Option<(String, String)>,
    /// The submitter's trace number for the item (PAS itemTraceNumber, X12 2000F TRN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// When the first final decision was made (RFC 3339): the decision time CMS-0057-F reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    /// Whether the review was extended: the item, already pended, was pended again asking for more information
    /// (CMS-0057-F reports approvals after an extended review separately). The first pend on receipt does not
    /// count: every item that needs a person is pended then.
    #[serde(default)]
    pub extended_review: bool,
}

/// One status change in a case's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusChange {
    /// When (RFC 3339).
    pub at: String,
    /// Who (partner id, or `policy` for automatic decisions).
    pub by: String,
    /// Item sequence, or `None` for the whole case.
    pub item: Option<u32>,
    /// The action code after the change.
    pub action: String,
    /// Why (reason codes or a note without PHI).
    pub note: Option<String>,
}

/// The case status derived from its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaseStatus {
    /// Some item waits for a decision.
    Pended,
    /// Every item is decided.
    Decided,
    /// Every item is cancelled.
    Cancelled,
}

/// Why a change to a case was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaseError {
    /// The item does not exist.
    #[error("no item with sequence {0}")]
    NoSuchItem(u32),
    /// The item is cancelled and cannot be decided.
    #[error("item {0} is cancelled")]
    ItemCancelled(u32),
}

/// The subscriber the request is about (PHI: kept in the encrypted table, never logged).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Subscriber {
    /// Member id.
    pub member_id: String,
    /// Last name.
    pub last_name: String,
    /// First name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Date of birth (CCYYMMDD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<String>,
    /// F, M or U.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subscriber(<redacted>)")
    }
}

/// The requesting provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Requester {
    /// Identifier qualifier (`XX` NPI, `24` EIN, `34` SSN, `46` ETIN, `PI`...).
    pub id_qualifier: String,
    /// Identifier.
    pub id: String,
    /// Organisation name, or the person's last name.
    pub name: String,
    /// First name when the requester is a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
}

impl Requester {
    /// The NPI, when the requester is identified by one.
    pub fn npi(&self) -> Option<&str> {
        (self.id_qualifier == "XX").then_some(self.id.as_str())
    }
}

/// The submitter's trace of a request: X12 2000E TRN02/TRN03, or the PAS Claim.identifier (`urn:trnorg:TRN03`
/// system, TRN02 value). The same trace from the same submitter names the same case in both channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    /// TRN02: the reference number.
    pub value: String,
    /// TRN03: the originating company (or the identifier's system when it is not `urn:trnorg:`).
    pub originator: String,
}

/// How the request was expressed in FHIR, so responses reference the submitter's own resource ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct FhirRefs {
    /// Claim id.
    pub claim: String,
    /// Patient id.
    pub patient: String,
    /// Requestor reference (`Organization/ID` or `PractitionerRole/ID`).
    pub requestor: String,
    /// Insurer Organization id.
    pub insurer: String,
    /// Claim type code (`professional`, `institutional`).
    pub claim_type: String,
    /// Bundle.identifier (system, value).
    pub bundle_identifier: (String, String),
    /// Claim.identifier as sent (echoed in ClaimResponse.identifier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_identifier: Option<serde_json::Value>,
}

/// A prior-authorization case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaCase {
    /// Case id (also the authorization number's stem).
    pub id: String,
    /// The submitting partner.
    pub submitter: String,
    /// The payer it is addressed to.
    pub payer: String,
    /// `x12` or `fhir`: how it arrived.
    pub channel: String,
    /// The submission's identity (PAS Bundle.identifier, or the 278's sender + ISA13 + ST02): one case per key.
    pub submission_key: String,
    /// The subscriber.
    pub subscriber: Subscriber,
    /// The requesting provider.
    pub requester: Requester,
    /// The payer's name.
    pub payer_name: String,
    /// Plan the member is covered by.
    pub plan_id: Option<String>,
    /// The submitter's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Trace>,
    /// UM01 / serviceItemRequestType (`HS` health services, `SC` specialty care, `AR` admission).
    pub request_category: String,
    /// UM02 / certificationType (`I` initial, `S` revision, `4` extension).
    pub certification_type: String,
    /// Diagnosis codes (ICD-10-CM).
    pub diagnoses: Vec<String>,
    /// FHIR resource ids of the request, when it arrived as PAS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir: Option<FhirRefs>,
    /// Urgency.
    pub urgency: Urgency,
    /// Whether the deadline sweep flagged the case as close to (or past) its deadline.
    #[serde(default)]
    pub deadline_flagged: bool,
    /// Receipt time (RFC 3339).
    pub received: String,
    /// Decision deadline (RFC 3339).
    pub deadline: String,
    /// The authorization number, once any item is certified.
    pub authorization_number: Option<String>,
    /// Items.
    pub items: Vec<CaseItem>,
    /// Every status change.
    pub history: Vec<StatusChange>,
}

/// How long a certification lasts when the request named no service dates.
pub const CERTIFIED_DAYS: i64 = 90;

fn ccyymmdd(d: time::Date) -> String {
    format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day())
}

/// RFC 3339 text of a time, in whole seconds: the texts are sort keys (deadlines, due times), and a varying number
/// of fraction digits would not sort as the times do.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

impl PaCase {
    /// The status derived from the items.
    pub fn status(&self) -> CaseStatus {
        if !self.items.is_empty() && self.items.iter().all(|i| i.decision == Some(Decision::Cancelled)) {
            CaseStatus::Cancelled
        } else if self.items.iter().any(|i| i.decision.as_ref().is_none_or(Decision::is_pending)) {
            CaseStatus::Pended
        } else {
            CaseStatus::Decided
        }
    }

    /// Records a decision for one item, with its history entry. Certified and modified items get the case's
    /// authorization number.
    pub fn decide(&mut self, sequence: u32, decision: Decision, by: &str, at: OffsetDateTime) -> Result<(), CaseError> {
        let item = self.items.iter_mut().find(|i| i.sequence == sequence).ok_or(CaseError::NoSuchItem(sequence))?;
        if item.decision == Some(Decision::Cancelled) && decision != Decision::Cancelled {
            return Err(CaseError::ItemCancelled(sequence));
        }
        let note = match &decision {
            Decision::NotCertified { reasons } | Decision::Modified { reasons, .. } => Some(reasons.join(",")),
            Decision::Pended { documentation } if !documentation.is_empty() => Some(documentation.join(",")),
            _ => None,
        };
        if matches!(decision, Decision::Certified | Decision::Modified { .. }) && self.authorization_number.is_none() {
            self.authorization_number = Some(self.id.clone());
        }
        self.history.push(StatusChange {
            at: rfc3339(at),
            by: by.to_owned(),
            item: Some(sequence),
            action: decision.action_code().to_owned(),
            note,
        });
        if decision.is_pending() {
            item.extended_review |= item.decision.as_ref().is_some_and(Decision::is_pending);
        } else if item.decided_at.is_none() && decision != Decision::Cancelled {
            item.decided_at = Some(rfc3339(at));
        }
        if matches!(decision, Decision::Certified | Decision::Modified { .. }) && item.certified_period.is_none() {
            let from = item.service_from.clone().unwrap_or_else(|| ccyymmdd(at.date()));
            let to = item.service_to.clone().unwrap_or_else(|| ccyymmdd(at.date() + Duration::days(CERTIFIED_DAYS)));
            item.certified_period = Some((from, to));
        }
        item.decision = Some(decision);
        Ok(())
    }

    /// Cancels every item (PAS certificationType 3, or a 278 UM02=3).
    pub fn cancel(&mut self, by: &str, at: OffsetDateTime) {
        for item in &mut self.items {
            item.decision = Some(Decision::Cancelled);
        }
        self.history.push(StatusChange {
            at: rfc3339(at),
            by: by.to_owned(),
            item: None,
            action: "C".into(),
            note: None,
        });
    }

    /// Time left until the deadline at `now` (negative when overdue).
    pub fn time_left(&self, now: OffsetDateTime) -> Option<Duration> {
        let deadline = OffsetDateTime::parse(&self.deadline, &time::format_description::well_known::Rfc3339).ok()?;
        Some(deadline - now)
    }
}

/// A new case, before it has an id and a receipt time.
#[derive(Debug, Clone)]
pub struct NewCase {
    /// Submitting partner.
    pub submitter: String,
    /// Payer id.
    pub payer: String,
    /// Payer name.
    pub payer_name: String,
    /// `x12` or `fhir`.
    pub channel: String,
    /// Submission identity.
    pub submission_key: String,
    /// The subscriber.
    pub subscriber: Subscriber,
    /// The requesting provider.
    pub requester: Requester,
    /// Plan.
    pub plan_id: Option<String>,
    /// The submitter's trace.
    pub trace: Option<Trace>,
    /// UM01 / serviceItemRequestType.
    pub request_category: String,
    /// UM02 / certificationType.
    pub certification_type: String,
    /// Diagnosis codes.
    pub diagnoses: Vec<String>,
    /// FHIR ids, for PAS submissions.
    pub fhir: Option<FhirRefs>,
    /// Urgency.
    pub urgency: Urgency,
    /// Items (undecided).
    pub items: Vec<CaseItem>,
}

impl NewCase {
    /// The case as received at `received`, under `id`.
    pub fn into_case(self, id: String, received: OffsetDateTime) -> PaCase {
        PaCase {
            id,
            history: vec![StatusChange {
                at: rfc3339(received),
                by: self.submitter.clone(),
                item: None,
                action: "received".into(),
                note: None,
            }],
            submitter: self.submitter,
            payer: self.payer,
            channel: self.channel,
            submission_key: self.submission_key,
            subscriber: self.subscriber,
            requester: self.requester,
            payer_name: self.payer_name,
            plan_id: self.plan_id,
            trace: self.trace,
            request_category: self.request_category,
            certification_type: self.certification_type,
            diagnoses: self.diagnoses,
            fhir: self.fhir,
            urgency: self.urgency,
            deadline_flagged: false,
            received: rfc3339(received),
            deadline: rfc3339(self.urgency.deadline(received)),
            authorization_number: None,
            items: self.items,
        }
    }
}

fn case_key(id: &str) -> Key {
    Key::new(format!("CASE#{id}"), "CASE")
}

fn submission_key(submitter: &str, key: &str) -> Key {
    Key::new(format!("PARTNER#{submitter}"), format!("SUBMISSION#{key}"))
}

fn trace_prefix(trace: &Trace) -> String {
    format!("TRACE#{}#{}#", trace.originator, trace.value)
}

fn trace_key(case: &PaCase, trace: &Trace) -> Key {
    // Not unique: submitters do reuse trace numbers (the PAS examples do), so the latest case wins a lookup.
    Key::new(format!("PARTNER#{}", case.submitter), format!("{}{}#{}", trace_prefix(trace), case.received, case.id))
}

/// Member ids compare as the payer data compares them (case-insensitively).
fn member_index(member_id: &str) -> String {
    member_id.to_ascii_uppercase()
}

fn member_key(submitter: &str, member_id: &str, case_id: &str) -> Key {
    Key::new(format!("PARTNER#{submitter}"), format!("MEMBERCASE#{}#{case_id}", member_index(member_id)))
}

fn ledger_key(case: &PaCase) -> Key {
    // One partition per payer and receipt month: the metrics read a period month by month.
    Key::new(
        format!("RECEIVED#{}#{}", case.payer, &case.received[..case.received.len().min(7)]),
        format!("{}#{}", case.received, case.id),
    )
}

fn pended_index(payer: &str) -> String {
    format!("PENDED#{payer}")
}

/// A submission seen before: the case it created or changed, and the answer it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Submission {
    /// The case.
    pub case_id: String,
    /// The original answer, replayed to a retry.
    pub answer: Option<IdempotencyRecord>,
}

/// Where cases live in the state store.
#[derive(Clone)]
pub struct CaseRepo {
    store: Arc<dyn StateStore>,
}

impl std::fmt::Debug for CaseRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaseRepo").finish_non_exhaustive()
    }
}

fn to_item<T: Serialize>(key: Key, body: &T) -> Result<Item, PortError> {
    Ok(Item::new(key, serde_json::to_value(body).map_err(|e| PortError::Invalid(e.to_string()))?))
}

fn pointer(key: Key, case_id: &str) -> Item {
    Item::new(key, serde_json::json!({ "caseId": case_id }))
}

impl CaseRepo {
    /// A repository over `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        CaseRepo { store }
    }

    fn item(case: &PaCase) -> Result<Item, PortError> {
        let mut item = to_item(case_key(&case.id), case)?;
        if case.status() == CaseStatus::Pended {
            item = item.with_gsi1(Key::new(pended_index(&case.payer), format!("{}#{}", case.deadline, case.id)));
        }
        Ok(item)
    }

    /// The submission `key` of `submitter`, when seen before.
    pub async fn submission(&self, submitter: &str, key: &str) -> Result<Option<Submission>, PortError> {
        let Some(item) = self.store.get(&submission_key(submitter, key)).await? else { return Ok(None) };
        serde_json::from_value(item.body).map(Some).map_err(|e| PortError::undecodable("submission", &e))
    }

    /// The writes that create a case: the case, its submission record (with the answer a retry gets), its member
    /// and ledger index entries and its trace entry. All must commit together.
    pub fn create_ops(case: &PaCase, answer: Option<IdempotencyRecord>) -> Result<Vec<WriteOp>, PortError> {
        let submission = Submission { case_id: case.id.clone(), answer };
        let mut ops = vec![
            WriteOp::PutNew(Self::item(case)?),
            WriteOp::PutNew(to_item(submission_key(&case.submitter, &case.submission_key), &submission)?),
            WriteOp::PutNew(pointer(member_key(&case.submitter, &case.subscriber.member_id, &case.id), &case.id)),
            WriteOp::PutNew(pointer(ledger_key(case), &case.id)),
        ];
        if let Some(trace) = &case.trace {
            ops.push(WriteOp::PutNew(pointer(trace_key(case, trace), &case.id)));
        }
        Ok(ops)
    }

    /// Creates a case ([`Self::create_ops`]) in one transaction: all or nothing.
    /// `Conflict` when the submission is already known.
    pub async fn create(&self, case: &PaCase, answer: Option<IdempotencyRecord>) -> Result<(), PortError> {
        self.store.transact(Self::create_ops(case, answer)?).await
    }

    /// The writes that save a changed case read at `version`, with the submission that changed it.
    pub fn save_ops(
        case: &PaCase,
        version: u64,
        submission: Option<(&str, Option<IdempotencyRecord>)>,
    ) -> Result<Vec<WriteOp>, PortError> {
        let mut ops = vec![WriteOp::Update { item: Self::item(case)?, expected_version: version }];
        if let Some((key, answer)) = submission {
            let record = Submission { case_id: case.id.clone(), answer };
            ops.push(WriteOp::PutNew(to_item(submission_key(&case.submitter, key), &record)?));
        }
        Ok(ops)
    }

    /// Saves a changed case if nobody changed it since `version` was read; returns the new version.
    pub async fn save(&self, case: &PaCase, version: u64) -> Result<u64, PortError> {
        self.store.update(Self::item(case)?, version).await
    }

    /// A case and its version.
    pub async fn get(&self, id: &str) -> Result<Option<(PaCase, u64)>, PortError> {
        let Some(item) = self.store.get(&case_key(id)).await? else { return Ok(None) };
        let case = serde_json::from_value(item.body).map_err(|e| PortError::undecodable("case", &e))?;
        Ok(Some((case, item.version)))
    }

    /// The case a pointer item (already read by a query) names.
    async fn via_pointer(&self, pointer: &Item) -> Result<Option<(PaCase, u64)>, PortError> {
        match pointer.body["caseId"].as_str() {
            Some(id) => self.get(id).await,
            None => Ok(None),
        }
    }

    /// Every case `submitter` traced as `trace`, oldest first.
    pub async fn all_by_trace(&self, submitter: &str, trace: &Trace) -> Result<Vec<(PaCase, u64)>, PortError> {
        let page = self.store.query(&Query::prefix(format!("PARTNER#{submitter}"), trace_prefix(trace), 100)).await?;
        let mut out = Vec::with_capacity(page.items.len());
        for p in &page.items {
            if let Some(found) = self.via_pointer(p).await? {
                out.push(found);
            }
        }
        Ok(out)
    }

    /// The cases `submitter` submitted for `member_id`, oldest first.
    pub async fn by_member(&self, submitter: &str, member_id: &str, limit: usize) -> Result<Vec<PaCase>, PortError> {
        let page = self
            .store
            .query(&Query::prefix(
                format!("PARTNER#{submitter}"),
                format!("MEMBERCASE#{}#", member_index(member_id)),
                limit,
            ))
            .await?;
        let mut cases = Vec::with_capacity(page.items.len());
        for p in page.items {
            if let Some((c, _)) = self.via_pointer(&p).await? {
                cases.push(c);
            }
        }
        cases.sort_by(|a, b| a.received.cmp(&b.received));
        Ok(cases)
    }

    /// Pended cases of a payer, soonest deadline first.
    pub async fn pended(&self, payer: &str, limit: usize) -> Result<Vec<(PaCase, u64)>, PortError> {
        Ok(self.pended_page(payer, limit, None).await?.0)
    }

    /// One page of the pended work list from `after` (a cursor from the previous page), with the next cursor.
    pub async fn pended_page(
        &self,
        payer: &str,
        limit: usize,
        after: Option<String>,
    ) -> Result<(Vec<(PaCase, u64)>, Option<String>), PortError> {
        let mut query = Query::prefix(pended_index(payer), "", limit);
        query.after = after;
        let page = self.store.query_gsi1(&query).await?;
        let cases = page
            .items
            .into_iter()
            .map(|i| {
                let v = i.version;
                serde_json::from_value(i.body).map(|c| (c, v)).map_err(|e| PortError::undecodable("case", &e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((cases, page.next))
    }

    /// Cases of a payer received in the month `yyyy_mm` (`2026-11`).
    pub async fn received_in_month(&self, payer: &str, yyyy_mm: &str) -> Result<Vec<PaCase>, PortError> {
        let mut out = Vec::new();
        let mut query = Query::prefix(format!("RECEIVED#{payer}#{yyyy_mm}"), "", 1000);
        loop {
            let page = self.store.query(&query).await?;
            for p in &page.items {
                if let Some((c, _)) = self.via_pointer(p).await? {
                    out.push(c);
                }
            }
            match page.next {
                Some(next) => query.after = Some(next),
                None => break,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryStateStore;
    use time::macros::datetime;

    fn item(sequence: u32, code: &str) -> CaseItem {
        CaseItem {
            sequence,
            code_system: "CPT".into(),
            code: code.into(),
            quantity: Some("1".into()),
            service_from: Some("20261201".into()),
            service_to: None,
            decision: None,
            certified_period: None,
            trace: None,
            decided_at: None,
            extended_review: false,
        }
    }

    fn new_case(key: &str, urgency: Urgency) -> NewCase {
        NewCase {
            submitter: "demo-provider".into(),
            payer: "DEMOPAYER".into(),
            payer_name: "DEMO HEALTH PLAN".into(),
            channel: "fhir".into(),
            submission_key: key.into(),
            subscriber: Subscriber { member_id: "M1".into(), last_name: "DOE".into(), ..Default::default() },
            requester: Requester {
                id_qualifier: "XX".into(),
                id: "1234567893".into(),
                name: "ACME".into(),
                first_name: None,
            },
            plan_id: Some("GOLD-123".into()),
            trace: Some(Trace { value: format!("T-{key}"), originator: "9012345678".into() }),
            request_category: "HS".into(),
            certification_type: "I".into(),
            diagnoses: vec!["G89.4".into()],
            fhir: None,
            urgency,
            items: vec![item(1, "97110"), item(2, "97112")],
        }
    }

    #[test]
    fn deadlines_follow_cms_0057_f() {
        let at = datetime!(2026-11-25 10:00 UTC);
        assert_eq!(Urgency::Expedited.deadline(at), datetime!(2026-11-28 10:00 UTC));
        assert_eq!(Urgency::Standard.deadline(at), datetime!(2026-12-02 10:00 UTC));
    }

    #[tokio::test]
    async fn one_case_per_submission_and_optimistic_updates() {
        let repo = CaseRepo::new(Arc::new(MemoryStateStore::default()));
        let at = datetime!(2026-11-25 10:00 UTC);
        let mut case = new_case("B1", Urgency::Standard).into_case("PA1".into(), at);
        repo.create(&case, None).await.unwrap();
        let again = new_case("B1", Urgency::Standard).into_case("PA2".into(), at);
        assert!(matches!(repo.create(&again, None).await, Err(PortError::Conflict(_))));
        assert!(repo.get("PA2").await.unwrap().is_none(), "the losing create wrote nothing");
        assert_eq!(repo.submission("demo-provider", "B1").await.unwrap().unwrap().case_id, "PA1");
        let trace = case.trace.clone().unwrap();
        assert_eq!(repo.all_by_trace("demo-provider", &trace).await.unwrap().pop().unwrap().0.id, "PA1");
        assert!(repo.all_by_trace("other-provider", &trace).await.unwrap().is_empty(), "traces are per submitter");
        assert_eq!(repo.by_member("demo-provider", "M1", 10).await.unwrap().len(), 1);
        assert_eq!(repo.pended("DEMOPAYER", 10).await.unwrap().len(), 1);

        let v = 1;
        case.decide(1, Decision::Certified, "demo-payer", at).unwrap();
        assert_eq!(case.decide(9, Decision::Certified, "demo-payer", at), Err(CaseError::NoSuchItem(9)));
        let v2 = repo.save(&case, v).await.unwrap();
        assert!(matches!(repo.save(&case, v).await, Err(PortError::Conflict(_))), "a stale version loses");
        assert_eq!(case.status(), CaseStatus::Pended, "item 2 still waits");
        assert_eq!(case.authorization_number.as_deref(), Some("PA1"));
        assert_eq!(case.items[0].certified_period, Some(("20261201".into(), "20270223".into())));
        assert_eq!(case.items[0].decided_at.as_deref(), Some("2026-11-25T10:00:00Z"));

        case.decide(2, Decision::Pended { documentation: vec![] }, "policy", at).unwrap();
        assert!(!case.items[1].extended_review, "the pend on receipt is the ordinary review");
        case.decide(2, Decision::Pended { documentation: vec!["11506-3".into()] }, "demo-payer", at).unwrap();
        case.decide(2, Decision::NotCertified { reasons: vec!["0U".into()] }, "demo-payer", at).unwrap();
        assert!(case.items[1].extended_review, "more information was asked for");
        repo.save(&case, v2).await.unwrap();
        assert_eq!(case.status(), CaseStatus::Decided);
        assert!(repo.pended("DEMOPAYER", 10).await.unwrap().is_empty(), "decided cases leave the work list");
        assert_eq!(case.history.len(), 5);
        assert_eq!(repo.received_in_month("DEMOPAYER", "2026-11").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn work_list_is_ordered_by_deadline_and_cancelled_items_stay_cancelled() {
        let repo = CaseRepo::new(Arc::new(MemoryStateStore::default()));
        let at = datetime!(2026-11-25 10:00 UTC);
        repo.create(&new_case("S", Urgency::Standard).into_case("PA-S".into(), at), None).await.unwrap();
        let e = new_case("E", Urgency::Expedited).into_case("PA-E".into(), at + Duration::hours(1));
        repo.create(&e, None).await.unwrap();
        let list = repo.pended("DEMOPAYER", 10).await.unwrap();
        assert_eq!(list.iter().map(|(c, _)| c.id.as_str()).collect::<Vec<_>>(), vec!["PA-E", "PA-S"]);
        // Page by page, the same order and nothing twice.
        let (first, next) = repo.pended_page("DEMOPAYER", 1, None).await.unwrap();
        let (second, last) = repo.pended_page("DEMOPAYER", 1, next).await.unwrap();
        assert_eq!((first[0].0.id.as_str(), second[0].0.id.as_str()), ("PA-E", "PA-S"));
        assert!(last.is_none() || repo.pended_page("DEMOPAYER", 1, last).await.unwrap().0.is_empty());
        let mut case = list[0].0.clone();
        case.cancel("demo-provider", at);
        assert_eq!(case.status(), CaseStatus::Cancelled);
        assert_eq!(case.decide(1, Decision::Certified, "demo-payer", at), Err(CaseError::ItemCancelled(1)));
        assert_eq!(case.time_left(at + Duration::hours(1)), Some(Duration::hours(72)));
    }
}
