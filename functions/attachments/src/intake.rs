//! Channel-neutral intake: a [`Submission`] (from a 275 or a CDex `$submit-attachment`) is checked against the
//! payer data and the caller, its documents are vaulted, and the attachment record, its index entries and the
//! payer request it answers are written in one transaction. Documents are written before the record and deleted
//! again when the record cannot be written, so no record points at missing content.

use axum::http::StatusCode;
use exchange_core::auth::random_id;
use exchange_core::commit::Commit;
use exchange_core::domain::attachment_requests::AttachmentRequestRepo;
use exchange_core::domain::attachments::{
    attachment_id, document_path, AttachTo, AttachedDocument, Attachment, AttachmentRepo, SubmissionEntry,
    MAX_DOCUMENTS_PER_ATTACHMENT, MAX_DOCUMENT_BYTES,
};
use exchange_core::domain::ids::MAX_REFERENCE_LEN;
use exchange_core::domain::payer_data::bare_media_type;
use exchange_core::domain::prior_auth::rfc3339;
use exchange_core::domain::uploads::{Upload, UploadRepo, UploadState};
use exchange_core::domain::TradingPartner;
use exchange_core::http::CallerContext;
use exchange_core::ports::{EncryptionContext, PortError, WriteOp};
use exchange_core::record::sha256_hex;

use crate::service::AttachmentService;

/// One document of a submission.
#[derive(Debug, Clone)]
pub struct Document {
    /// LOINC attachment codes.
    pub codes: Vec<String>,
    /// Line items it supports.
    pub line_items: Vec<String>,
    /// Media type.
    pub content_type: String,
    /// What arrived (`DocumentReference`, a resource type, `x12-bin`, `x12-bds`).
    pub kind: String,
    /// The bytes (empty until [`check`] reads them when the document is a staged upload).
    pub content: Vec<u8>,
    /// Where the document sits in the request (FHIRPath or X12 position), for error answers.
    pub location: String,
    /// The staged upload the request names instead of inline content (`Attachment.url`).
    pub upload: Option<String>,
}

/// A document's staged upload, as [`check`] found it.
#[derive(Debug, Clone)]
struct Staged {
    upload: Upload,
    version: u64,
}

/// A submission, whichever channel it came through.
#[derive(Debug, Clone)]
pub struct Submission {
    /// `x12` or `fhir`.
    pub channel: &'static str,
    /// Tracking id.
    pub tracking_id: String,
    /// Its system (FHIR).
    pub tracking_system: Option<String>,
    /// Claim or prior authorization.
    pub attach_to: AttachTo,
    /// The payer id the submitter addressed.
    pub payer_id: String,
    /// Organisation NPI.
    pub organization_npi: Option<String>,
    /// Provider id.
    pub provider_id: Option<String>,
    /// Member id.
    pub member_id: String,
    /// Service date.
    pub service_date: Option<String>,
    /// No more documents follow.
    pub is_final: bool,
    /// The documents.
    pub documents: Vec<Document>,
}

impl Submission {
    /// A hash of what the submission says (not how it was encoded): the same content again is a retry.
    fn content_sha256(&self, digests: &[String]) -> String {
        let mut h = exchange_core::vault::Sha256Hasher::new();
        for part in [
            self.tracking_id.as_str(),
            self.attach_to.as_str(),
            self.member_id.as_str(),
            self.service_date.as_deref().unwrap_or(""),
            if self.is_final { "final" } else { "partial" },
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        for (doc, digest) in self.documents.iter().zip(digests) {
            for part in doc.codes.iter().chain(&doc.line_items).chain([&doc.content_type, digest]) {
                h.update(part.as_bytes());
                h.update([0]);
            }
            h.update([1]);
        }
        hex::encode(h.finish())
    }
}

/// Why a submission is refused: the caller's mistake, answered 4xx (999 for X12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The payer id is not this exchange's payer.
    UnknownPayer,
    /// Neither the organisation nor the provider is one the caller submits for.
    NotYourProvider,
    /// A document's media type is not one the payer accepts.
    ContentType {
        /// The media type.
        content_type: String,
        /// Where.
        location: String,
    },
    /// A document is larger than [`MAX_DOCUMENT_BYTES`].
    TooLarge {
        /// Where.
        location: String,
    },
    /// A document is empty.
    Empty {
        /// Where.
        location: String,
    },
    /// The tracking id was already used for different content and its submission was final.
    TrackingIdReused,
    /// The tracking id belongs to an attachment for another member, payer or purpose.
    DifferentSubject,
    /// More documents than one attachment holds.
    TooManyDocuments,
    /// A tracking id longer than [`MAX_REFERENCE_LEN`] or a member id longer than 80 characters.
    TooLong {
        /// Which: `TrackingId` or `MemberId`.
        what: &'static str,
    },
    /// The named upload does not exist or belongs to another partner.
    UnknownUpload {
        /// Where.
        location: String,
    },
    /// The named upload's bytes have not been received.
    UploadNotReceived {
        /// Where.
        location: String,
    },
    /// The staged bytes or the submission disagree with what the upload declared.
    UploadMismatch {
        /// Which: `size`, `sha256` or `contentType`.
        what: &'static str,
        /// Where.
        location: String,
    },
    /// The upload was already submitted as another attachment's document, or is named twice.
    UploadUsed,
    /// The staged uploads one submission names add up to more than [`MAX_STAGED_BYTES_PER_SUBMISSION`].
    TooMuchStaged,
}

impl Refusal {
    /// What to tell the caller (no PHI: codes, paths and media types only).
    pub fn message(&self) -> String {
        match self {
            Refusal::UnknownPayer => "the payer id does not name this exchange's payer".into(),
            Refusal::NotYourProvider => {
                "neither OrganizationId nor ProviderId is a provider this trading partner submits for".into()
            }
            Refusal::ContentType { content_type, .. } => {
                format!("the payer does not accept attachment documents of type {content_type:?}")
            }
            Refusal::TooLarge { .. } => format!("a document is larger than {MAX_DOCUMENT_BYTES} bytes"),
            Refusal::Empty { .. } => "a document has no content".into(),
            Refusal::TrackingIdReused => {
                "this tracking id was already used for different content in a final submission".into()
            }
            Refusal::DifferentSubject => {
                "this tracking id belongs to an attachment for another member or another AttachTo".into()
            }
            Refusal::TooManyDocuments => {
                format!("an attachment holds at most {MAX_DOCUMENTS_PER_ATTACHMENT} documents")
            }
            Refusal::TooLong { what } => format!("{what} is too long"),
            Refusal::UnknownUpload { .. } => "the attachment url names no upload of this trading partner".into(),
            Refusal::UploadNotReceived { .. } => {
                "the upload named by the attachment url has not been received; PUT it to its upload URL first".into()
            }
            Refusal::UploadMismatch { what, .. } => {
                format!("the uploaded document does not match the {what} declared when the upload was created")
            }
            Refusal::UploadUsed => "the upload was already submitted, or is named twice in this submission".into(),
            Refusal::TooMuchStaged => format!(
                "the uploads one submission names may add up to {MAX_STAGED_BYTES_PER_SUBMISSION} bytes; submit the \
                 rest as further non-final parts"
            ),
        }
    }
}

/// What an accepted submission led to.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The attachment as stored.
    pub attachment: Attachment,
    /// Whether this was a retry of a submission already stored (nothing new written).
    pub replayed: bool,
    /// Why the attachment is held rather than linked, when it is.
    pub held: Option<String>,
}

/// What [`check`] found.
#[derive(Debug)]
pub enum Verdict {
    /// The caller's mistake: nothing may be stored.
    Refused(Refusal),
    /// The same content again: the attachment as stored, nothing to write.
    Retry(Box<Accepted>),
    /// New content to [`store`].
    Store(Box<Plan>),
}

/// A checked submission and what storing it starts from.
#[derive(Debug)]
pub struct Plan {
    sub: Submission,
    payer: String,
    existing: Option<(Attachment, u64)>,
    content_sha256: String,
    /// Per document, its staged upload (read and checked), if it came as one.
    staged: Vec<Option<Staged>>,
}

/// Most bytes one submission may bring in as staged uploads: every staged document is held in memory (and copied
/// once more while it is sealed) by a function with 2 GB.
pub const MAX_STAGED_BYTES_PER_SUBMISSION: u64 = 2 * MAX_DOCUMENT_BYTES as u64;

/// The upload record `doc` names, if it is the caller's and of the document's media type (no bytes read).
async fn resolve_upload(
    svc: &AttachmentService,
    partner: &TradingPartner,
    doc: &Document,
    id: &str,
) -> Result<Result<Staged, Refusal>, PortError> {
    let location = doc.location.clone();
    let Some((upload, version)) = svc.uploads.get(id).await?.filter(|(u, _)| u.owner == partner.id.as_str()) else {
        return Ok(Err(Refusal::UnknownUpload { location }));
    };
    if upload.content_type != bare_media_type(&doc.content_type) {
        return Ok(Err(Refusal::UploadMismatch { what: "contentType", location }));
    }
    Ok(Ok(Staged { upload, version }))
}

/// Reads a pending upload's staged bytes into `doc`, checked against its declaration.
async fn read_staged(
    svc: &AttachmentService,
    doc: &mut Document,
    upload: &Upload,
) -> Result<Result<(), Refusal>, PortError> {
    let location = doc.location.clone();
    let blobs = svc.vault.blobs();
    let path = upload.path();
    let size = match blobs.size(&path).await {
        Ok(size) => size,
        Err(PortError::NotFound(_)) => return Ok(Err(Refusal::UploadNotReceived { location })),
        Err(e) => return Err(e),
    };
    // Checked before reading: a staged object is whatever the caller PUT, not what it declared.
    if size != upload.size {
        return Ok(Err(Refusal::UploadMismatch { what: "size", location }));
    }
    let bytes = blobs.get(&path).await?;
    // Replaced between the two reads (a presigned URL works until it expires): the read is what counts.
    if bytes.len() as u64 != upload.size {
        return Ok(Err(Refusal::UploadMismatch { what: "size", location }));
    }
    if sha256_hex(&bytes) != upload.sha256 {
        return Ok(Err(Refusal::UploadMismatch { what: "sha256", location }));
    }
    doc.content = bytes;
    Ok(Ok(()))
}

/// Checks a submission against the payer data, the caller and what its tracking id already holds, writing nothing.
pub async fn check(svc: &AttachmentService, partner: &TradingPartner, sub: Submission) -> Result<Verdict, PortError> {
    let Some(data) = svc.repo.current().await? else {
        return Err(PortError::Unavailable("no payer data loaded".into()));
    };
    let payer = data.payer;
    if sub.tracking_id.len() > MAX_REFERENCE_LEN {
        return Ok(Verdict::Refused(Refusal::TooLong { what: "TrackingId" }));
    }
    if sub.member_id.len() > 80 {
        return Ok(Verdict::Refused(Refusal::TooLong { what: "MemberId" }));
    }
    if !payer.answers_to(&sub.payer_id) {
        return Ok(Verdict::Refused(Refusal::UnknownPayer));
    }
    let ours = |id: &Option<String>| id.as_deref().is_some_and(|i| partner.may_submit_for(i));
    if !ours(&sub.organization_npi) && !ours(&sub.provider_id) {
        return Ok(Verdict::Refused(Refusal::NotYourProvider));
    }
    let mut sub = sub;
    // Upload records only: their bytes are read last, once nothing cheaper refuses the submission.
    let mut staged: Vec<Option<Staged>> = Vec::with_capacity(sub.documents.len());
    for doc in &sub.documents {
        let Some(id) = &doc.upload else {
            staged.push(None);
            continue;
        };
        if staged.iter().flatten().any(|s| &s.upload.id == id) {
            return Ok(Verdict::Refused(Refusal::UploadUsed));
        }
        match resolve_upload(svc, partner, doc, id).await? {
            Ok(s) => staged.push(Some(s)),
            Err(refusal) => return Ok(Verdict::Refused(refusal)),
        }
    }
    for (doc, staged) in sub.documents.iter().zip(&staged) {
        if doc.content.len() > MAX_DOCUMENT_BYTES {
            return Ok(Verdict::Refused(Refusal::TooLarge { location: doc.location.clone() }));
        }
        if doc.content.is_empty() && staged.is_none() {
            return Ok(Verdict::Refused(Refusal::Empty { location: doc.location.clone() }));
        }
        if !payer.accepts_content_type(&doc.content_type) {
            return Ok(Verdict::Refused(Refusal::ContentType {
                content_type: doc.content_type.clone(),
                location: doc.location.clone(),
            }));
        }
    }
    let digests: Vec<String> = sub
        .documents
        .iter()
        .zip(&staged)
        .map(|(d, s)| s.as_ref().map_or_else(|| sha256_hex(&d.content), |s| s.upload.sha256.clone()))
        .collect();
    let content_sha256 = sub.content_sha256(&digests);
    let existing = svc.attachments.get(&attachment_id(partner.id.as_str(), &sub.tracking_id)).await?;
    if let Some((att, _)) = &existing {
        if att.submission_with(&content_sha256).is_some() {
            let held = hold_reason(att);
            return Ok(Verdict::Retry(Box::new(Accepted { attachment: att.clone(), replayed: true, held })));
        }
        if att.is_final {
            return Ok(Verdict::Refused(Refusal::TrackingIdReused));
        }
        if !att.member_id.eq_ignore_ascii_case(&sub.member_id)
            || att.attach_to != sub.attach_to
            || att.payer != payer.id
        {
            return Ok(Verdict::Refused(Refusal::DifferentSubject));
        }
    }
    // Not a retry: every upload it names must still be unused.
    if staged.iter().flatten().any(|s| s.upload.state != UploadState::Pending) {
        return Ok(Verdict::Refused(Refusal::UploadUsed));
    }
    let held = existing.as_ref().map_or(0, |(a, _)| a.documents.len());
    if held + sub.documents.len() > MAX_DOCUMENTS_PER_ATTACHMENT {
        return Ok(Verdict::Refused(Refusal::TooManyDocuments));
    }
    let staged_bytes: u64 = staged.iter().flatten().map(|s| s.upload.size).sum();
    if staged_bytes > MAX_STAGED_BYTES_PER_SUBMISSION {
        return Ok(Verdict::Refused(Refusal::TooMuchStaged));
    }
    for (doc, s) in sub.documents.iter_mut().zip(&staged) {
        if let Some(s) = s {
            if let Err(refusal) = read_staged(svc, doc, &s.upload).await? {
                return Ok(Verdict::Refused(refusal));
            }
        }
    }
    Ok(Verdict::Store(Box::new(Plan { sub, payer: payer.id, existing, content_sha256, staged })))
}

/// Checks and stores a submission: [`check`], then [`store`].
pub async fn accept(
    svc: &AttachmentService,
    ctx: &CallerContext,
    sub: Submission,
) -> Result<Result<Accepted, Refusal>, PortError> {
    match check(svc, &ctx.partner, sub).await? {
        Verdict::Refused(r) => Ok(Err(r)),
        Verdict::Retry(a) => Ok(Ok(*a)),
        Verdict::Store(plan) => store_or_join(svc, ctx, *plan).await.map(Ok),
    }
}

/// [`store`], answering a lost race like a retry: when a concurrent submission of the same content under the
/// tracking id committed first (this one's commit fails with `Conflict`), the answer is that submission's, replayed,
/// and nothing of this one is kept. Any other conflict stays `Conflict`.
pub async fn store_or_join(svc: &AttachmentService, ctx: &CallerContext, plan: Plan) -> Result<Accepted, PortError> {
    let id = attachment_id(ctx.partner.id.as_str(), &plan.sub.tracking_id);
    let content_sha256 = plan.content_sha256.clone();
    match store(svc, ctx, plan).await {
        Err(PortError::Conflict(why)) => match svc.attachments.get(&id).await? {
            Some((att, _)) if att.submission_with(&content_sha256).is_some() => {
                ctx.audit_resource("attachment", &att.id);
                ctx.audit_member(&att.member_id);
                let held = hold_reason(&att);
                Ok(Accepted { attachment: att, replayed: true, held })
            }
            _ => Err(PortError::Conflict(why)),
        },
        other => other,
    }
}

/// Stores a checked submission: the document paths are written down in the clean-up ledger, the documents
/// written, then the record, its index entries, the payer request it answers, the uploads it used and the
/// ledger entry's removal commit in one transaction. `Conflict` when another submission under the tracking id won a
/// race (a retry then finds it). A function that dies half-way leaves the ledger entry, and the sweep deletes the
/// documents: there is never content without a record, nor a record without content.
pub async fn store(svc: &AttachmentService, ctx: &CallerContext, plan: Plan) -> Result<Accepted, PortError> {
    let Plan { sub, payer, existing, content_sha256, staged } = plan;
    let partner = ctx.partner.as_ref();
    let submitter = partner.id.as_str();
    let id = attachment_id(submitter, &sub.tracking_id);
    let at = rfc3339(svc.clock.now());
    let mut att = match &existing {
        Some((att, _)) => att.clone(),
        None => Attachment {
            id: id.clone(),
            payer: payer.clone(),
            submitter: submitter.to_owned(),
            attach_to: sub.attach_to,
            tracking_id: sub.tracking_id.clone(),
            tracking_system: sub.tracking_system.clone(),
            reference: None,
            case_id: None,
            task_id: None,
            member_id: sub.member_id.clone(),
            organization_npi: sub.organization_npi.clone(),
            provider_id: sub.provider_id.clone(),
            service_date: sub.service_date.clone(),
            is_final: false,
            received: at.clone(),
            updated: at.clone(),
            documents: Vec::new(),
            history: Vec::new(),
        },
    };

    // Vault first: a record is only written once everything it points at exists.
    let first_index = att.documents.len() as u32 + 1;
    // A path of its own per write: a submission that loses a race deletes only what it wrote.
    let paths: Vec<String> =
        (0..sub.documents.len()).map(|n| document_path(&id, first_index + n as u32, &random_id())).collect();
    // Written down before they are written: a crash before the commit leaves them to the sweep.
    let cover = svc.committer.cover(paths.clone(), "attachment-write").await?;
    let mut commit = Commit::answered(StatusCode::OK).covered_by(cover);
    let mut added = Vec::new();
    for ((n, doc), path) in sub.documents.iter().enumerate().zip(paths) {
        let index = first_index + n as u32;
        let context = EncryptionContext::for_document(&path, &payer);
        let stored = match svc.vault.put(&path, &context, &doc.content).await {
            Ok(s) => s,
            Err(e) => {
                svc.committer.abandon(commit).await;
                return Err(e);
            }
        };
        commit.keep(path.clone());
        att.documents.push(AttachedDocument {
            index,
            codes: doc.codes.clone(),
            line_items: doc.line_items.clone(),
            content_type: doc.content_type.clone(),
            kind: doc.kind.clone(),
            size: stored.size,
            sha256: stored.sha256,
            path,
        });
        added.push(index);
    }
    att.is_final = sub.is_final;
    att.updated = at.clone();
    att.history.push(SubmissionEntry {
        at: at.clone(),
        channel: sub.channel.to_owned(),
        content_sha256,
        documents: added,
        is_final: sub.is_final,
    });

    // Whatever fails from here on (linking, building the writes, the commit) deletes the documents just written.
    let writes = async {
        let mut ops: Vec<WriteOp> = Vec::new();
        link(svc, partner, &payer, &mut att, &at, &mut ops).await?;
        ops.extend(match &existing {
            Some((before, version)) => AttachmentRepo::save_ops(&att, before, *version)?,
            None => AttachmentRepo::create_ops(&att)?,
        });
        for s in staged.iter().flatten() {
            ops.push(UploadRepo::mark_used_op(&s.upload, s.version, &att.id)?);
        }
        Ok::<_, PortError>(ops)
    }
    .await;
    let commit = match writes {
        Ok(ops) => commit.writes(ops),
        Err(e) => {
            svc.committer.abandon(commit).await;
            return Err(e);
        }
    };
    // The request's audit record, naming the attachment and its member, commits with it.
    ctx.audit_resource_on_commit("attachment", &att.id);
    ctx.audit_member_on_commit(&att.member_id);
    svc.committer.commit(ctx, commit).await?;
    // The staged copies are now vault documents; the upload's own ledger entry deletes any copy left here.
    for s in staged.iter().flatten() {
        if let Err(e) = svc.vault.blobs().delete(&s.upload.path()).await {
            tracing::warn!(error = %e, "could not delete a used upload's staged copy");
        }
    }
    let held = hold_reason(&att);
    Ok(Accepted { attachment: att, replayed: false, held })
}

/// Links the attachment to the payer's request with its tracking id and, for prior authorization, to the case;
/// adds the request's update to `ops`.
async fn link(
    svc: &AttachmentService,
    partner: &TradingPartner,
    payer: &str,
    att: &mut Attachment,
    at: &str,
    ops: &mut Vec<WriteOp>,
) -> Result<(), PortError> {
    let mut case_candidates: Vec<String> = Vec::new();
    if let Some((mut request, version)) = svc.requests.by_tracking(payer, &att.tracking_id).await? {
        // Only the organisation the payer asked may answer the request.
        if partner.may_submit_for(&request.owner_npi) && request.attach_to == att.attach_to {
            att.task_id = Some(request.id.clone());
            att.reference = Some(request.reference.clone());
            case_candidates.extend(request.case_id.clone());
            case_candidates.push(request.reference.clone());
            if request.record_answer(&att.id, &att.codes(), att.is_final, at) {
                ops.push(AttachmentRequestRepo::save_op(&request, version)?);
            }
        }
    }
    if att.attach_to == AttachTo::Preauthorization && att.case_id.is_none() {
        case_candidates.push(att.tracking_id.clone());
        for candidate in case_candidates {
            let Some((case, _)) = svc.cases.get(&candidate).await? else { continue };
            // Another partner's case, or one addressed to another payer, is not linked (nor revealed).
            if case.submitter == att.submitter && case.payer == payer {
                att.case_id = Some(case.id);
                break;
            }
        }
    }
    Ok(())
}

/// Why an attachment is held: nothing it can be linked to has been received yet.
fn hold_reason(att: &Attachment) -> Option<String> {
    if att.task_id.is_some() || att.case_id.is_some() {
        return None;
    }
    Some(match att.attach_to {
        AttachTo::Claim => "The attachment is held: no claim or payer request with this tracking id has been received \
                            yet. It is kept and matched when the claim arrives."
            .into(),
        AttachTo::Preauthorization => "The attachment is held: no prior-authorization request with this tracking id \
                                       has been received yet. It is kept and matched when the request arrives."
            .into(),
    })
}
