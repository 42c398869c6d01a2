//! Payer-initiated attachment requests (CDex attachment-request Tasks): the payer asks a provider organisation for
//! documents for a claim or a pending prior authorization; the provider lists its open requests and answers with
//! `$submit-attachment` under the request's tracking id, which moves the request along.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::attachments::AttachTo;
use crate::ports::{Item, Key, PortError, Query, StateStore, WriteOp};

/// A document the payer asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NeededDocument {
    /// LOINC attachment code.
    pub code: String,
    /// The claim or request line it is for, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

/// Where a request stands (the Task's status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestStatus {
    /// Nothing received yet.
    Requested,
    /// Some documents received, more expected.
    InProgress,
    /// Everything asked for (or a final submission) received.
    Completed,
    /// Withdrawn by the payer.
    Cancelled,
}

impl RequestStatus {
    /// The FHIR Task status code.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Requested => "requested",
            RequestStatus::InProgress => "in-progress",
            RequestStatus::Completed => "completed",
            RequestStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the provider still has something to send.
    pub fn is_open(self) -> bool {
        matches!(self, RequestStatus::Requested | RequestStatus::InProgress)
    }
}

/// A payer's request for attachments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentRequest {
    /// Exchange id (the Task's id).
    pub id: String,
    /// The payer (payer data id).
    pub payer: String,
    /// The payer partner that created it.
    pub requested_by: String,
    /// The provider organisation asked (Task.owner NPI).
    pub owner_npi: String,
    /// The tracking id answers must carry.
    pub tracking_id: String,
    /// Its system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_system: Option<String>,
    /// Claim or prior authorization.
    pub attach_to: AttachTo,
    /// The claim or authorization request identifier (Task.reasonReference).
    pub reference: String,
    /// The prior-authorization case, when the reference names one of the exchange's cases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    /// The member, when the Task names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    /// Coded documents asked for.
    pub needed: Vec<NeededDocument>,
    /// Questionnaires asked for (canonical URLs).
    pub questionnaires: Vec<String>,
    /// Due date (`YYYY-MM-DD` or dateTime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    /// Status.
    pub status: RequestStatus,
    /// The attachment that answers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment_id: Option<String>,
    /// Created (RFC 3339).
    pub authored: String,
    /// Last change (RFC 3339).
    pub last_modified: String,
    /// The Task as the payer sent it (returned with the exchange's id, status and times).
    pub task: serde_json::Value,
}

impl AttachmentRequest {
    /// Updates the status after attachment documents with `received_codes` arrived (`is_final`: no more follow).
    /// Returns whether anything changed (a closed request stays as it is).
    pub fn record_answer(&mut self, attachment_id: &str, received_codes: &[&str], is_final: bool, at: &str) -> bool {
        if !self.status.is_open() {
            return false;
        }
        self.attachment_id = Some(attachment_id.to_owned());
        let all_codes = self.needed.iter().all(|n| received_codes.contains(&n.code.as_str()));
        self.status = if is_final || (all_codes && self.questionnaires.is_empty()) {
            RequestStatus::Completed
        } else {
            RequestStatus::InProgress
        };
        self.last_modified = at.to_owned();
        true
    }
}

fn key(id: &str) -> Key {
    Key::new(format!("TASK#{id}"), "TASK")
}

fn tracking_key(payer: &str, tracking: &str) -> Key {
    Key::new(format!("PAYER#{payer}#TASKS"), format!("TRACK#{}", super::attachments::index_value(tracking)))
}

fn owner_key(npi: &str, authored: &str, id: &str) -> Key {
    Key::new(format!("NPI#{npi}#TASKS"), format!("{authored}#{id}"))
}

/// Where attachment requests live.
#[derive(Clone)]
pub struct AttachmentRequestRepo {
    store: Arc<dyn StateStore>,
}

impl std::fmt::Debug for AttachmentRequestRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachmentRequestRepo").finish_non_exhaustive()
    }
}

impl AttachmentRequestRepo {
    /// A repository over `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        AttachmentRequestRepo { store }
    }

    fn item(req: &AttachmentRequest) -> Result<Item, PortError> {
        Ok(Item::new(key(&req.id), serde_json::to_value(req).map_err(|e| PortError::Invalid(e.to_string()))?))
    }

    /// The writes that create `req` (with its tracking-id and owner index entries), for a caller's transaction.
    pub fn create_ops(req: &AttachmentRequest) -> Result<Vec<WriteOp>, PortError> {
        Ok(vec![
            WriteOp::PutNew(Self::item(req)?),
            WriteOp::PutNew(Item::new(
                tracking_key(&req.payer, &req.tracking_id),
                serde_json::json!({ "taskId": req.id }),
            )),
            WriteOp::PutNew(Item::new(
                owner_key(&req.owner_npi, &req.authored, &req.id),
                serde_json::json!({ "taskId": req.id }),
            )),
        ])
    }

    /// The write that saves `req` read at `version`.
    pub fn save_op(req: &AttachmentRequest, version: u64) -> Result<WriteOp, PortError> {
        Ok(WriteOp::Update { item: Self::item(req)?, expected_version: version })
    }

    /// The request `id`, with its version.
    pub async fn get(&self, id: &str) -> Result<Option<(AttachmentRequest, u64)>, PortError> {
        let Some(item) = self.store.get(&key(id)).await? else { return Ok(None) };
        let req = serde_json::from_value(item.body).map_err(|e| PortError::undecodable("attachment request", &e))?;
        Ok(Some((req, item.version)))
    }

    /// The payer's request with `tracking_id`.
    pub async fn by_tracking(
        &self,
        payer: &str,
        tracking_id: &str,
    ) -> Result<Option<(AttachmentRequest, u64)>, PortError> {
        let Some(item) = self.store.get(&tracking_key(payer, tracking_id)).await? else { return Ok(None) };
        match item.body.get("taskId").and_then(|v| v.as_str()) {
            Some(id) => self.get(id).await,
            None => Ok(None),
        }
    }

    /// Requests addressed to the provider organisation `npi`, oldest first, at most `limit`.
    pub async fn for_owner(&self, npi: &str, limit: usize) -> Result<Vec<AttachmentRequest>, PortError> {
        let page = self.store.query(&Query::prefix(format!("NPI#{npi}#TASKS"), "", limit)).await?;
        let mut out = Vec::with_capacity(page.items.len());
        for item in page.items {
            if let Some(id) = item.body.get("taskId").and_then(|v| v.as_str()) {
                if let Some((req, _)) = self.get(id).await? {
                    out.push(req);
                }
            }
        }
        Ok(out)
    }
}

const CDEX_TEMP: &str = "http://hl7.org/fhir/us/davinci-cdex/CodeSystem/cdex-temp";
const PAS_TEMP: &str = "http://hl7.org/fhir/us/davinci-pas/CodeSystem/PASTempCodes";
const PA_LINE_NUMBER: &str = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-paLineNumber";

/// The CDex attachment request (a Task, profile `cdex-task-attachment-request`) that items a reviewer pended asking
/// for documents (`pended`: item sequence and LOINC codes) become, so the provider finds it among its open requests and answers it with `$submit-attachment`
/// (or a 275) under its tracking id. `None` when no documents are asked for, or when the case's requester is not
/// identified by an NPI (the Task's owner must be).
pub fn for_pended_case(
    case: &super::prior_auth::PaCase,
    pended: &[(u32, Vec<String>)],
    requested_by: &str,
    now: &str,
) -> Option<AttachmentRequest> {
    if pended.iter().all(|(_, codes)| codes.is_empty()) {
        return None;
    }
    let npi = case.requester.npi()?.to_owned();
    let suffix = crate::domain::ids::random_id();
    let id = format!("task-{suffix}");
    let tracking_id = format!("{}-{}", case.id, &suffix[..8]);
    let needed: Vec<NeededDocument> = pended
        .iter()
        .flat_map(|(line, codes)| {
            codes.iter().map(move |code| NeededDocument { code: code.clone(), line: Some(*line) })
        })
        .collect();
    let due = case.deadline.get(..10).map(str::to_owned);
    let mut input: Vec<serde_json::Value> = needed
        .iter()
        .map(|n| {
            serde_json::json!({
                "extension": [{ "url": PA_LINE_NUMBER, "valueInteger": n.line }],
                "type": { "coding": [{ "system": PAS_TEMP, "code": "attachments-needed" }] },
                "valueCodeableConcept": { "coding": [{ "system": "http://loinc.org", "code": n.code }] },
            })
        })
        .collect();
    input.push(serde_json::json!({
        "type": { "coding": [{ "system": PAS_TEMP, "code": "payer-url" }] },
        "valueUrl": "/fhir/$submit-attachment",
    }));
    input.push(serde_json::json!({
        "type": { "coding": [{ "system": CDEX_TEMP, "code": "purpose-of-use" }] },
        "valueCodeableConcept": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "COVAUTH",
        }] },
    }));
    let mut task = serde_json::json!({
        "resourceType": "Task",
        "meta": { "profile": ["http://hl7.org/fhir/us/davinci-cdex/StructureDefinition/cdex-task-attachment-request"] },
        "identifier": [{
            "type": { "coding": [{ "system": CDEX_TEMP, "code": "tracking-id" }] },
            "system": "urn:ietf:rfc:3986",
            "value": tracking_id,
        }],
        "status": "requested",
        "intent": "order",
        "code": { "coding": [{ "system": PAS_TEMP, "code": "attachment-request-code" }] },
        "for": { "identifier": {
            "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB" }] },
            "value": case.subscriber.member_id,
        } },
        "authoredOn": now,
        "lastModified": now,
        "requester": { "identifier": { "value": case.payer } },
        "owner": { "identifier": { "system": "http://hl7.org/fhir/sid/us-npi", "value": npi } },
        "reasonCode": { "coding": [{ "system": "http://hl7.org/fhir/claim-use", "code": "preauthorization" }] },
        "reasonReference": { "identifier": { "value": case.id } },
        "input": input,
    });
    if let Some(due) = &due {
        task["restriction"] = serde_json::json!({ "period": { "end": due } });
    }
    Some(AttachmentRequest {
        id,
        payer: case.payer.clone(),
        requested_by: requested_by.to_owned(),
        owner_npi: npi,
        tracking_id,
        tracking_system: Some("urn:ietf:rfc:3986".to_owned()),
        attach_to: AttachTo::Preauthorization,
        reference: case.id.clone(),
        case_id: Some(case.id.clone()),
        member_id: Some(case.subscriber.member_id.clone()),
        needed,
        questionnaires: Vec::new(),
        due,
        status: RequestStatus::Requested,
        attachment_id: None,
        authored: now.to_owned(),
        last_modified: now.to_owned(),
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> AttachmentRequest {
        AttachmentRequest {
            id: "task-1".into(),
            payer: "P".into(),
            requested_by: "payer".into(),
            owner_npi: "1234567893".into(),
            tracking_id: "T1".into(),
            tracking_system: None,
            attach_to: AttachTo::Claim,
            reference: "Claim123".into(),
            case_id: None,
            member_id: None,
            needed: vec![
                NeededDocument { code: "11506-3".into(), line: Some(1) },
                NeededDocument { code: "34117-2".into(), line: None },
            ],
            questionnaires: vec![],
            due: None,
            status: RequestStatus::Requested,
            attachment_id: None,
            authored: "2026-11-25T00:00:00Z".into(),
            last_modified: "2026-11-25T00:00:00Z".into(),
            task: serde_json::json!({}),
        }
    }

    #[test]
    fn status_follows_what_arrived() {
        let mut r = request();
        assert!(r.record_answer("a", &["11506-3"], false, "t1"));
        assert_eq!(r.status, RequestStatus::InProgress);
        assert!(r.record_answer("a", &["11506-3", "34117-2"], false, "t2"));
        assert_eq!(r.status, RequestStatus::Completed);
        // Closed requests stay closed, and nothing is saved for them.
        assert!(!r.record_answer("a", &[], false, "t3"));
        assert_eq!((r.status, r.last_modified.as_str()), (RequestStatus::Completed, "t2"));

        let mut r = request();
        assert!(r.record_answer("a", &[], true, "t1"));
        assert_eq!(r.status, RequestStatus::Completed, "a final submission completes the request");
    }
}
