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
    /// CT: cancelled by the requester.
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
            Decision::Cancelled => "CT",
        }
    }

    /// Whether the item still waits for a decision.
    pub fn is_pending(&self) -> bool {
        matches!(self, Decision::Pended { .. })
    }

    /// Whether the decision is final (nothing but a cancellation or an appeal changes it).
    pub fn is_final(&self) -> bool {
        !self.is_pending()
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
    /// Member id of the subscriber.
    pub member_id: String,
    /// NPI of the requesting provider.
    pub requester_npi: String,
    /// Plan the member is covered by.
    pub plan_id: Option<String>,
    /// Urgency.
    pub urgency: Urgency,
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

fn rfc3339(t: OffsetDateTime) -> String {
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
            action: "CT".into(),
            note: None,
        });
    }

    /// Time left until the deadline at `now` (negative when overdue).
    pub fn time_left(&self, now: OffsetDateTime) -> Option<Duration> {
        let deadline = OffsetDateTime::parse(&self.deadline, &time::format_description::well_known::Rfc3339).ok()?;
        Some(deadline - now)
    }
}

/// A new case for a request received at `received`.
#[derive(Debug, Clone)]
pub struct NewCase {
    /// Submitting partner.
    pub submitter: String,
    /// Payer.
    pub payer: String,
    /// `x12` or `fhir`.
    pub channel: String,
    /// Submission identity.
    pub submission_key: String,
    /// Member id.
    pub member_id: String,
    /// Requesting provider NPI.
    pub requester_npi: String,
    /// Plan.
    pub plan_id: Option<String>,
    /// Urgency.
    pub urgency: Urgency,
    /// Items (undecided).
    pub items: Vec<CaseItem>,
}

fn case_key(id: &str) -> Key {
    Key::new(format!("CASE#{id}"), "CASE")
}

fn submission_key(submitter: &str, key: &str) -> Key {
    Key::new(format!("PARTNER#{submitter}"), format!("SUBMISSION#{key}"))
}

fn pended_index(payer: &str) -> String {
    format!("PENDED#{payer}")
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

/// What [`CaseRepo::create`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new case.
    New(PaCase, u64),
    /// The submission was seen before: its original case.
    Existing(PaCase, u64),
}

impl CaseRepo {
    /// A repository over `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        CaseRepo { store }
    }

    fn item(case: &PaCase) -> Result<Item, PortError> {
        let body = serde_json::to_value(case).map_err(|e| PortError::Invalid(e.to_string()))?;
        let mut item = Item::new(case_key(&case.id), body);
        if case.status() == CaseStatus::Pended {
            item = item.with_gsi1(Key::new(pended_index(&case.payer), format!("{}#{}", case.deadline, case.id)));
        }
        Ok(item)
    }

    /// Creates the case for a submission, or returns the case the same submission created before. The case and its
    /// submission record are written in one transaction.
    pub async fn create(&self, new: NewCase, id: String, received: OffsetDateTime) -> Result<Created, PortError> {
        let skey = submission_key(&new.submitter, &new.submission_key);
        if let Some(existing) = self.by_submission(&skey).await? {
            return Ok(Created::Existing(existing.0, existing.1));
        }
        let received_by = new.submitter.clone();
        let case = PaCase {
            id: id.clone(),
            submitter: new.submitter,
            payer: new.payer,
            channel: new.channel,
            submission_key: new.submission_key,
            member_id: new.member_id,
            requester_npi: new.requester_npi,
            plan_id: new.plan_id,
            urgency: new.urgency,
            received: rfc3339(received),
            deadline: rfc3339(new.urgency.deadline(received)),
            authorization_number: None,
            items: new.items,
            history: vec![StatusChange {
                at: rfc3339(received),
                by: received_by,
                item: None,
                action: "received".into(),
                note: None,
            }],
        };
        let pointer = Item::new(skey.clone(), serde_json::json!({ "caseId": id }));
        match self.store.transact(vec![WriteOp::PutNew(Self::item(&case)?), WriteOp::PutNew(pointer)]).await {
            Ok(()) => Ok(Created::New(case, 1)),
            Err(PortError::Conflict(_)) => match self.by_submission(&skey).await? {
                // A concurrent retry of the same submission won.
                Some((c, v)) => Ok(Created::Existing(c, v)),
                None => Err(PortError::Conflict("case id already used".into())),
            },
            Err(e) => Err(e),
        }
    }

    async fn by_submission(&self, skey: &Key) -> Result<Option<(PaCase, u64)>, PortError> {
        let Some(pointer) = self.store.get(skey).await? else { return Ok(None) };
        let id = pointer.body["caseId"].as_str().unwrap_or_default().to_owned();
        self.get(&id).await
    }

    /// A case and its version.
    pub async fn get(&self, id: &str) -> Result<Option<(PaCase, u64)>, PortError> {
        let Some(item) = self.store.get(&case_key(id)).await? else { return Ok(None) };
        let case = serde_json::from_value(item.body).map_err(|e| PortError::Invalid(e.to_string()))?;
        Ok(Some((case, item.version)))
    }

    /// Saves a changed case if nobody changed it since `version` was read; returns the new version.
    pub async fn save(&self, case: &PaCase, version: u64) -> Result<u64, PortError> {
        self.store.update(Self::item(case)?, version).await
    }

    /// Pended cases of a payer, soonest deadline first.
    pub async fn pended(&self, payer: &str, limit: usize) -> Result<Vec<PaCase>, PortError> {
        let page = self.store.query_gsi1(&Query::prefix(pended_index(payer), "", limit)).await?;
        page.items
            .into_iter()
            .map(|i| serde_json::from_value(i.body).map_err(|e| PortError::Invalid(e.to_string())))
            .collect()
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
        }
    }

    fn new_case(key: &str, urgency: Urgency) -> NewCase {
        NewCase {
            submitter: "demo-provider".into(),
            payer: "DEMOPAYER".into(),
            channel: "fhir".into(),
            submission_key: key.into(),
            member_id: "M1".into(),
            requester_npi: "1234567893".into(),
            plan_id: Some("GOLD-123".into()),
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
        let Created::New(mut case, v) = repo.create(new_case("B1", Urgency::Standard), "PA1".into(), at).await.unwrap()
        else {
            panic!("first submission creates a case");
        };
        let again = repo.create(new_case("B1", Urgency::Standard), "PA2".into(), at).await.unwrap();
        assert!(matches!(again, Created::Existing(ref c, _) if c.id == "PA1"), "a retry finds the original case");
        assert_eq!(repo.pended("DEMOPAYER", 10).await.unwrap().len(), 1);

        case.decide(1, Decision::Certified, "demo-payer", at).unwrap();
        assert_eq!(case.decide(9, Decision::Certified, "demo-payer", at), Err(CaseError::NoSuchItem(9)));
        let v2 = repo.save(&case, v).await.unwrap();
        assert!(matches!(repo.save(&case, v).await, Err(PortError::Conflict(_))), "a stale version loses");
        assert_eq!(case.status(), CaseStatus::Pended, "item 2 still waits");
        assert_eq!(case.authorization_number.as_deref(), Some("PA1"));

        case.decide(2, Decision::NotCertified { reasons: vec!["0U".into()] }, "demo-payer", at).unwrap();
        repo.save(&case, v2).await.unwrap();
        assert_eq!(case.status(), CaseStatus::Decided);
        assert!(repo.pended("DEMOPAYER", 10).await.unwrap().is_empty(), "decided cases leave the work list");
        assert_eq!(case.history.len(), 3);
    }

    #[tokio::test]
    async fn work_list_is_ordered_by_deadline_and_cancelled_items_stay_cancelled() {
        let repo = CaseRepo::new(Arc::new(MemoryStateStore::default()));
        let at = datetime!(2026-11-25 10:00 UTC);
        repo.create(new_case("S", Urgency::Standard), "PA-S".into(), at).await.unwrap();
        repo.create(new_case("E", Urgency::Expedited), "PA-E".into(), at + Duration::hours(1)).await.unwrap();
        let list = repo.pended("DEMOPAYER", 10).await.unwrap();
        assert_eq!(list.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec!["PA-E", "PA-S"]);
        let mut case = list[0].clone();
        case.cancel("demo-provider", at);
        assert_eq!(case.status(), CaseStatus::Cancelled);
        assert_eq!(case.decide(1, Decision::Certified, "demo-payer", at), Err(CaseError::ItemCancelled(1)));
        assert_eq!(case.time_left(at + Duration::hours(1)), Some(Duration::hours(72)));
    }
}
