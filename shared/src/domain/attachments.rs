//! Claims attachments: documents a provider sends a payer for a claim or a prior-authorization case, whether they
//! arrive as an X12 275 or as a CDex `$submit-attachment`, and the payer's requests for them (CDex Tasks).
//!
//! One [`Attachment`] per submitter and tracking id (CDex TrackingId, the 275's TRN02 attachment control number, the
//! control number a claim carries in PWK06): its id is derived from both, so a retry or a later part of a non-final
//! submission finds it, and the conditional create makes two racing first parts one attachment. The document
//! contents live in the vault (encrypted, SHA-256 checked); the records here say where.
//!
//! Index entries (written in the attachment's transaction) let a payer list what is addressed to it by date,
//! tracking id, member, claim or case, and a provider list what it submitted, without scanning.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ports::{Item, Key, PortError, Query, StateStore, WriteOp};

/// The largest document the exchange accepts (CAQH CORE asks for at least 64 MB per attachment).
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;

/// The most documents one attachment holds (its record stays well under DynamoDB's 400 KB item limit).
pub const MAX_DOCUMENTS_PER_ATTACHMENT: usize = 100;

/// How many receipt-date index entries a date lookup reads.
pub const RECEIVED_SCAN: usize = 10_000;

/// What an attachment supports (CDex `AttachTo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachTo {
    /// A claim (solicited or unsolicited claims attachment).
    Claim,
    /// A prior-authorization request (PAS additional information).
    Preauthorization,
}

impl AttachTo {
    /// Parses the CDex code; `None` for anything else.
    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "claim" => Some(AttachTo::Claim),
            "preauthorization" => Some(AttachTo::Preauthorization),
            _ => None,
        }
    }

    /// The CDex code.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachTo::Claim => "claim",
            AttachTo::Preauthorization => "preauthorization",
        }
    }
}

/// One stored document of an attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachedDocument {
    /// 1-based position within the attachment, stable across submissions.
    pub index: u32,
    /// LOINC attachment codes.
    pub codes: Vec<String>,
    /// Claim or request line items it supports.
    pub line_items: Vec<String>,
    /// Media type of the stored bytes.
    pub content_type: String,
    /// What arrived: `DocumentReference` (its attachment's bytes are stored), another FHIR resource type (the
    /// resource's JSON is stored as sent) or `x12-bin` / `x12-bds` (the 275's payload).
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the stored bytes (hex).
    pub sha256: String,
    /// Vault path.
    pub path: String,
}

/// One submission that added to an attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmissionEntry {
    /// When (RFC 3339).
    pub at: String,
    /// `x12` or `fhir`.
    pub channel: String,
    /// SHA-256 of the submission's canonical content: the same content again is a retry.
    pub content_sha256: String,
    /// The documents it added (indexes).
    pub documents: Vec<u32>,
    /// Whether it said it was the last.
    #[serde(rename = "final")]
    pub is_final: bool,
}

/// An attachment: documents for one claim or prior-authorization request, addressed to one payer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// Exchange id ([`attachment_id`]).
    pub id: String,
    /// The payer it is addressed to (payer data id).
    pub payer: String,
    /// The submitting partner.
    pub submitter: String,
    /// Claim or prior authorization.
    pub attach_to: AttachTo,
    /// The provider's (or, when solicited, the payer's) tracking id.
    pub tracking_id: String,
    /// The tracking id's system, when it came as a FHIR Identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_system: Option<String>,
    /// The claim or authorization request it supports, when known (from the payer's request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The prior-authorization case it is linked to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    /// The payer's request (CDex Task) it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Member id.
    pub member_id: String,
    /// Billing / submitting organisation NPI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_npi: Option<String>,
    /// Rendering or attending provider id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// Date (or first date) of service, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_date: Option<String>,
    /// Whether the submitter said no more documents follow.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// First receipt (RFC 3339).
    pub received: String,
    /// Last change (RFC 3339).
    pub updated: String,
    /// The documents.
    pub documents: Vec<AttachedDocument>,
    /// Every submission that added to it.
    pub history: Vec<SubmissionEntry>,
}

impl Attachment {
    /// LOINC codes over all documents, in first-seen order.
    pub fn codes(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for code in self.documents.iter().flat_map(|d| d.codes.iter()) {
            if !out.contains(&code.as_str()) {
                out.push(code);
            }
        }
        out
    }

    /// The submission whose content hashed to `sha256`, if any (a retry).
    pub fn submission_with(&self, sha256: &str) -> Option<&SubmissionEntry> {
        self.history.iter().find(|s| s.content_sha256 == sha256)
    }
}

/// The attachment id for `submitter`'s `tracking_id`: a hash, so ids reveal neither and are stable.
pub fn attachment_id(submitter: &str, tracking_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(submitter.as_bytes());
    h.update([0]);
    h.update(tracking_id.as_bytes());
    format!("att-{}", &hex::encode(h.finalize())[..24])
}

/// The vault path of document `index` of attachment `id`, written by the submission that drew `nonce`: two
/// submissions racing for the same index never write the same object.
pub fn document_path(id: &str, index: u32, nonce: &str) -> String {
    format!("attachments/{id}/{index}-{nonce}")
}

/// How a payer looks for attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Received on or after `from` and before `to` (RFC 3339 or `YYYY-MM-DD` prefixes); the newest last.
    Received {
        /// Lower bound (inclusive), or everything.
        from: Option<String>,
        /// Upper bound (exclusive), or everything.
        to: Option<String>,
    },
    /// By tracking id.
    Tracking(String),
    /// By member id.
    Member(String),
    /// By the claim or request identifier it supports.
    Reference(String),
    /// By prior-authorization case.
    Case(String),
}

fn key(id: &str) -> Key {
    Key::new(format!("ATTACHMENT#{id}"), "ATTACHMENT")
}

fn payer_index(payer: &str) -> String {
    format!("PAYER#{payer}#ATTACHMENTS")
}

fn index_key(payer: &str, sk: String) -> Key {
    Key::new(payer_index(payer), sk)
}

fn submitter_key(att: &Attachment) -> Key {
    Key::new(format!("PARTNER#{}", att.submitter), format!("ATTACHMENT#{}#{}", att.received, att.id))
}

/// Index values are free text from the submitter: `#` would let one value read as a prefix of another's key.
pub(crate) fn index_value(value: &str) -> String {
    value.replace('%', "%25").replace('#', "%23")
}

/// Member ids compare as the payer data compares them: case-insensitively.
fn member_index(member_id: &str) -> String {
    index_value(&member_id.to_ascii_uppercase())
}

fn pointer(key: Key, id: &str) -> Item {
    Item::new(key, serde_json::json!({ "attachmentId": id }))
}

/// Where attachments live.
#[derive(Clone)]
pub struct AttachmentRepo {
    store: Arc<dyn StateStore>,
}

impl std::fmt::Debug for AttachmentRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachmentRepo").finish_non_exhaustive()
    }
}

impl AttachmentRepo {
    /// A repository over `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        AttachmentRepo { store }
    }

    fn item(att: &Attachment) -> Result<Item, PortError> {
        let body = serde_json::to_value(att).map_err(|e| PortError::Invalid(e.to_string()))?;
        Ok(Item::new(key(&att.id), body))
    }

    /// The attachment `id`, with its version.
    pub async fn get(&self, id: &str) -> Result<Option<(Attachment, u64)>, PortError> {
        let Some(item) = self.store.get(&key(id)).await? else { return Ok(None) };
        let att = serde_json::from_value(item.body).map_err(|e| PortError::undecodable("attachment", &e))?;
        Ok(Some((att, item.version)))
    }

    /// The index entries that depend on what the attachment is linked to.
    fn link_entries(att: &Attachment) -> Vec<Key> {
        let mut keys = Vec::new();
        if let Some(reference) = &att.reference {
            keys.push(index_key(&att.payer, format!("REF#{}#{}", index_value(reference), att.id)));
        }
        if let Some(case) = &att.case_id {
            keys.push(index_key(&att.payer, format!("CASE#{case}#{}", att.id)));
        }
        keys
    }

    /// The writes that create `att` and its index entries. `Conflict` at commit when it already exists.
    pub fn create_ops(att: &Attachment) -> Result<Vec<WriteOp>, PortError> {
        let mut ops = vec![
            WriteOp::PutNew(Self::item(att)?),
            WriteOp::PutNew(pointer(submitter_key(att), &att.id)),
            WriteOp::PutNew(pointer(index_key(&att.payer, format!("DATE#{}#{}", att.received, att.id)), &att.id)),
            WriteOp::PutNew(pointer(
                index_key(&att.payer, format!("TRACK#{}#{}", index_value(&att.tracking_id), att.id)),
                &att.id,
            )),
            WriteOp::PutNew(pointer(
                index_key(&att.payer, format!("MEMBER#{}#{}", member_index(&att.member_id), att.id)),
                &att.id,
            )),
        ];
        ops.extend(Self::link_entries(att).into_iter().map(|k| WriteOp::PutNew(pointer(k, &att.id))));
        Ok(ops)
    }

    /// The writes that save `att` read at `version` as `before`, adding index entries for new links.
    pub fn save_ops(att: &Attachment, before: &Attachment, version: u64) -> Result<Vec<WriteOp>, PortError> {
        let old = Self::link_entries(before);
        let mut ops = vec![WriteOp::Update { item: Self::item(att)?, expected_version: version }];
        for k in Self::link_entries(att).into_iter().filter(|k| !old.contains(k)) {
            ops.push(WriteOp::PutNew(pointer(k, &att.id)));
        }
        Ok(ops)
    }

    /// Commits writes built by this repository (and others') in one transaction.
    pub async fn commit(&self, ops: Vec<WriteOp>) -> Result<(), PortError> {
        self.store.transact(ops).await
    }

    async fn via_pointers(&self, page: crate::ports::Page) -> Result<Vec<Attachment>, PortError> {
        let mut out = Vec::with_capacity(page.items.len());
        for item in page.items {
            let Some(id) = item.body.get("attachmentId").and_then(|v| v.as_str()) else { continue };
            if let Some((att, _)) = self.get(id).await? {
                if !out.iter().any(|a: &Attachment| a.id == att.id) {
                    out.push(att);
                }
            }
        }
        Ok(out)
    }

    /// Attachments addressed to `payer` that match `lookup`, at most `limit`.
    pub async fn addressed_to(&self, payer: &str, lookup: &Lookup, limit: usize) -> Result<Vec<Attachment>, PortError> {
        let pk = payer_index(payer);
        let prefix = match lookup {
            Lookup::Received { from, to } => {
                // Whole days and times compare as text: RFC 3339 in UTC, whole seconds.
                // The store's queries are by prefix, not by range: the date window is applied to the oldest
                // RECEIVED_SCAN entries. Known limit: a payer with more attachments than that needs a range query.
                let mut page = self.store.query(&Query::prefix(pk, "DATE#", RECEIVED_SCAN)).await?;
                page.items.retain(|i| {
                    let at = i.key.sk.trim_start_matches("DATE#");
                    from.as_deref().is_none_or(|f| at >= f) && to.as_deref().is_none_or(|t| at < t)
                });
                page.items.truncate(limit);
                return self.via_pointers(page).await;
            }
            Lookup::Tracking(t) => format!("TRACK#{}#", index_value(t)),
            Lookup::Member(m) => format!("MEMBER#{}#", member_index(m)),
            Lookup::Reference(r) => format!("REF#{}#", index_value(r)),
            Lookup::Case(c) => format!("CASE#{c}#"),
        };
        let page = self.store.query(&Query::prefix(pk, prefix, limit)).await?;
        self.via_pointers(page).await
    }

    /// What `submitter` sent, oldest first, at most `limit`.
    pub async fn submitted_by(&self, submitter: &str, limit: usize) -> Result<Vec<Attachment>, PortError> {
        let page = self.store.query(&Query::prefix(format!("PARTNER#{submitter}"), "ATTACHMENT#", limit)).await?;
        self.via_pointers(page).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryStateStore;

    fn attachment(submitter: &str, tracking: &str, received: &str) -> Attachment {
        Attachment {
            id: attachment_id(submitter, tracking),
            payer: "P1".into(),
            submitter: submitter.into(),
            attach_to: AttachTo::Claim,
            tracking_id: tracking.into(),
            tracking_system: None,
            reference: None,
            case_id: None,
            task_id: None,
            member_id: "M#1".into(),
            organization_npi: None,
            provider_id: None,
            service_date: None,
            is_final: false,
            received: received.into(),
            updated: received.into(),
            documents: vec![],
            history: vec![],
        }
    }

    #[test]
    fn ids_are_per_submitter_and_tracking_id() {
        assert_eq!(attachment_id("a", "t"), attachment_id("a", "t"));
        assert_ne!(attachment_id("a", "t"), attachment_id("b", "t"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(attachment_id("ab", "c"), attachment_id("a", "bc"));
    }

    #[tokio::test]
    async fn one_attachment_per_tracking_id_and_every_lookup_finds_it() {
        let repo = AttachmentRepo::new(Arc::new(MemoryStateStore::new()));
        let a = attachment("prov", "T1", "2026-11-20T10:00:00Z");
        repo.commit(AttachmentRepo::create_ops(&a).unwrap()).await.unwrap();
        // The same tracking id again cannot create a second attachment.
        let again = repo.commit(AttachmentRepo::create_ops(&a).unwrap()).await;
        assert!(matches!(again, Err(PortError::Conflict(_))), "{again:?}");
        let b = attachment("prov", "T2", "2026-11-21T10:00:00Z");
        repo.commit(AttachmentRepo::create_ops(&b).unwrap()).await.unwrap();

        let ids = |v: Vec<Attachment>| v.into_iter().map(|a| a.tracking_id).collect::<Vec<_>>();
        assert_eq!(ids(repo.addressed_to("P1", &Lookup::Tracking("T1".into()), 10).await.unwrap()), ["T1"]);
        assert_eq!(ids(repo.addressed_to("P1", &Lookup::Member("M#1".into()), 10).await.unwrap()).len(), 2);
        // A member id that is a prefix of another with `#` does not match it; case does not matter.
        assert!(repo.addressed_to("P1", &Lookup::Member("M".into()), 10).await.unwrap().is_empty());
        assert_eq!(ids(repo.addressed_to("P1", &Lookup::Member("m#1".into()), 10).await.unwrap()).len(), 2);
        let day = Lookup::Received { from: Some("2026-11-21".into()), to: Some("2026-11-22".into()) };
        assert_eq!(ids(repo.addressed_to("P1", &day, 10).await.unwrap()), ["T2"]);
        assert!(repo.addressed_to("P2", &Lookup::Tracking("T1".into()), 10).await.unwrap().is_empty());
        assert_eq!(ids(repo.submitted_by("prov", 10).await.unwrap()), ["T1", "T2"]);
        assert!(repo.submitted_by("other", 10).await.unwrap().is_empty());

        // Linking to a case later adds its index entry; a stale version is refused.
        let (before, version) = repo.get(&a.id).await.unwrap().unwrap();
        let mut linked = before.clone();
        linked.case_id = Some("C1".into());
        repo.commit(AttachmentRepo::save_ops(&linked, &before, version).unwrap()).await.unwrap();
        assert_eq!(ids(repo.addressed_to("P1", &Lookup::Case("C1".into()), 10).await.unwrap()), ["T1"]);
        let stale = repo.commit(AttachmentRepo::save_ops(&linked, &before, version).unwrap()).await;
        assert!(matches!(stale, Err(PortError::Conflict(_))), "{stale:?}");
    }
}
