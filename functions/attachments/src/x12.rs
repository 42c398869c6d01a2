//! `POST /x12/275`: a 275 interchange (005010X210 claims attachments, or 005010X211 for services review) in; its
//! documents stored and a 999 out (TA1 for a broken interchange). Each `LX` loop is one document; the attachment
//! control number is the loop's `TRN02` (what the claim carries in `PWK06`), else the set's `REF*IK`, else `BGN02`.
//! Loops with the same control number are one attachment. A set is stored whole or not at all: every attachment
//! of it is checked before any is stored, so a set the 999 rejects left nothing behind.
//!
//! Segments read: `BGN`; `NM1*PR` (payer, NM109), `NM1*85`/`NM1*1P` (provider), `NM1*41` (submitter), `NM1*QC`
//! (patient, NM109 member id), `DTP*472` (service date); per `LX`: `TRN`, `STC` (C043-2: the LOINC attachment code),
//! `CAT`, `EFI` and `BIN` (BIN01 = byte length of BIN02) or `BDS` (BDS01 filter `B64` or `ASC`, BDS02 length,
//! BDS03 data). X12 names no media type: it is recognised from the content (PDF, XML such as C-CDA, TIFF, JPEG,
//! PNG, text).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use exchange_core::commit::Commit;
use exchange_core::domain::attachments::AttachTo;
use exchange_core::domain::PartnerRole;
use exchange_core::http::{
    receive_x12, x12_reply_response, CallerContext, Problem, X12Route, MAX_BODY_BYTES, X12_MEDIA_TYPE,
};
use exchange_core::ports::PortError;
use exchange_core::x12::ack::{write_999_group, Acknowledge};
use exchange_core::x12::answering::{open_interchange, Opened, Refused, X12Reply};
use exchange_core::x12::envelope::{ElementError, SegmentError, SetAck, SetKind};
use exchange_core::x12::Segment;

use crate::intake::{self, Document, Refusal, Submission, Verdict};
use crate::service::AttachmentService;
use crate::Attachments;

/// The 275 for claims attachments.
pub const KIND_275_X210: SetKind = SetKind { functional_id: "PI", set_id: "275", version: "005010X210" };
/// The 275 for services review (the 278's companion).
pub const KIND_275_X211: SetKind = SetKind { functional_id: "PI", set_id: "275", version: "005010X211" };

/// A 999 error at segment `position` (1-based from ST), optionally at one element (position, data element, IK403).
fn segment_error(
    id: &str,
    position: usize,
    code: &'static str,
    element: Option<(usize, u16, &'static str)>,
) -> SegmentError {
    let elements = element
        .map(|(pos, de, c)| {
            vec![ElementError {
                position: pos,
                component: None,
                repetition: None,
                data_element: de,
                code: c,
                bad_value: None,
            }]
        })
        .unwrap_or_default();
    SegmentError { segment_id: id.to_owned(), position, loop_id: None, code, elements }
}

/// Records a segment error and marks the set rejected.
fn reject(ack: &mut SetAck, error: SegmentError) {
    ack.segment_errors.push(error);
    ack.add_code("5");
}

/// Where the segments a refusal concerns are, for the 999.
#[derive(Debug, Clone, Copy, Default)]
struct Positions {
    payer: usize,
    provider: usize,
    member: usize,
    tracking: usize,
    content: usize,
}

/// The set-level parties of a 275 (1000A–1000D).
#[derive(Default)]
struct Parties {
    payer: Option<(String, usize)>,
    organization: Option<(String, usize)>,
    submitter: Option<String>,
    member: Option<(String, usize)>,
    service_date: Option<String>,
    ref_ik: Option<String>,
    bgn02: Option<String>,
}

/// Reads one 275 set into one submission per control number, recording defects in `ack` (then nothing is
/// returned).
fn read_set(body: &[Segment<'_>], ack: &mut SetAck) -> Vec<(Submission, Positions)> {
    let pos = |i: usize| i + 2;
    let mut parties = Parties::default();
    let mut loops: Vec<(usize, Vec<(usize, &Segment<'_>)>)> = Vec::new();
    for (i, seg) in body.iter().enumerate() {
        if seg.is("LX") {
            loops.push((i, Vec::new()));
        } else if let Some((_, segs)) = loops.last_mut() {
            segs.push((i, seg));
        } else {
            match seg.id_str() {
                "BGN" => parties.bgn02 = Some(seg.trimmed(2).to_owned()).filter(|s| !s.is_empty()),
                "NM1" => {
                    let id = seg.trimmed(9).to_owned();
                    match seg.text(1) {
                        "PR" => parties.payer = Some((id, pos(i))),
                        "85" | "1P" => parties.organization = Some((id, pos(i))),
                        "41" => parties.submitter = Some(id),
                        "QC" => parties.member = Some((id, pos(i))),
                        _ => {}
                    }
                }
                "REF" if seg.text(1) == "IK" => parties.ref_ik = Some(seg.trimmed(2).to_owned()),
                "DTP" if seg.text(1) == "472" => parties.service_date = Some(ccyymmdd(seg.text(3))),
                _ => {}
            }
        }
    }
    // A required name loop without its NM109: reported at the NM1 when present, else where it belongs (after BGN).
    for found in [&parties.payer, &parties.member] {
        match found {
            Some((id, at)) if id.is_empty() => reject(ack, segment_error("NM1", *at, "8", Some((9, 67, "1")))),
            Some(_) => {}
            None => reject(ack, segment_error("NM1", 3, "3", None)),
        }
    }
    if loops.is_empty() {
        reject(ack, segment_error("LX", body.len() + 1, "3", None));
    }

    let mut out: Vec<(Submission, Positions)> = Vec::new();
    for (lx_at, segs) in &loops {
        let mut tracking: Option<(String, usize)> = None;
        let mut codes = Vec::new();
        let mut content: Option<(Vec<u8>, &'static str, usize)> = None;
        for (i, seg) in segs {
            match seg.id_str() {
                "TRN" => tracking = Some((seg.trimmed(2).to_owned(), pos(*i))).filter(|(t, _)| !t.is_empty()),
                "STC" => {
                    let code = String::from_utf8_lossy(seg.component(1, 2)).trim().to_owned();
                    if !code.is_empty() {
                        codes.push(code);
                    }
                }
                "BIN" => match seg.binary() {
                    Some(b) => content = Some((b.to_vec(), "x12-bin", pos(*i))),
                    None => reject(ack, segment_error("BIN", pos(*i), "8", Some((2, 785, "1")))),
                },
                "BDS" => {
                    let data = seg.binary().unwrap_or_default();
                    let decoded = match seg.trimmed(1) {
                        "B64" => {
                            let compact: Vec<u8> = data.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
                            STANDARD.decode(compact).ok()
                        }
                        "ASC" => Some(data.to_vec()),
                        _ => {
                            reject(ack, segment_error("BDS", pos(*i), "8", Some((1, 1270, "7"))));
                            continue;
                        }
                    };
                    match decoded {
                        Some(bytes) => content = Some((bytes, "x12-bds", pos(*i))),
                        // BDS03 does not decode under the BDS01 filter.
                        None => reject(ack, segment_error("BDS", pos(*i), "8", Some((3, 785, "6")))),
                    }
                }
                _ => {}
            }
        }
        let Some((bytes, kind, content_at)) = content else {
            if !ack.is_rejected() {
                reject(ack, segment_error("BIN", pos(*lx_at), "3", None));
            }
            continue;
        };
        let (tracking_id, tracking_at) = match tracking {
            Some(t) => t,
            None => match parties.ref_ik.clone().or_else(|| parties.bgn02.clone()) {
                Some(t) => (t, pos(*lx_at)),
                None => {
                    reject(ack, segment_error("TRN", pos(*lx_at), "3", None));
                    continue;
                }
            },
        };
        let document = Document {
            codes,
            line_items: vec![],
            content_type: sniff(&bytes).to_owned(),
            kind: kind.into(),
            content: bytes,
            location: format!("segment {content_at}"),
            upload: None,
        };
        // Loops under one control number are one attachment's documents.
        if let Some((sub, _)) = out.iter_mut().find(|(s, _)| s.tracking_id == tracking_id) {
            sub.documents.push(document);
            continue;
        }
        let positions = Positions {
            payer: parties.payer.as_ref().map_or(3, |p| p.1),
            provider: parties.organization.as_ref().map_or(3, |p| p.1),
            member: parties.member.as_ref().map_or(3, |p| p.1),
            tracking: tracking_at,
            content: content_at,
        };
        let submission = Submission {
            channel: "x12",
            tracking_id,
            tracking_system: None,
            attach_to: AttachTo::Claim,
            payer_id: parties.payer.as_ref().map(|p| p.0.clone()).unwrap_or_default(),
            organization_npi: parties.organization.as_ref().map(|p| p.0.clone()),
            provider_id: parties.submitter.clone(),
            member_id: parties.member.as_ref().map(|p| p.0.clone()).unwrap_or_default(),
            service_date: parties.service_date.clone(),
            is_final: true,
            documents: vec![document],
        };
        out.push((submission, positions));
    }
    if ack.is_rejected() {
        return Vec::new();
    }
    out
}

/// `CCYYMMDD` (or the first date of an `RD8` range) as `YYYY-MM-DD`; other text as it is.
fn ccyymmdd(v: &str) -> String {
    let d = v.split('-').next().unwrap_or(v);
    if d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()) {
        format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..])
    } else {
        v.to_owned()
    }
}

/// The media type of a 275 payload, from its first bytes.
pub fn sniff(bytes: &[u8]) -> &'static str {
    let text_start = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes).trim_ascii_start();
    if bytes.starts_with(b"%PDF-") {
        "application/pdf"
    } else if text_start.starts_with(b"<") {
        "application/xml"
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        "image/tiff"
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "image/jpeg"
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if std::str::from_utf8(bytes).is_ok() {
        "text/plain"
    } else {
        "application/octet-stream"
    }
}

/// The 999 error for a refusal, at the segment it concerns.
fn refusal_error(r: &Refusal, p: Positions) -> SegmentError {
    let (id, at, element, data_element) = match r {
        Refusal::UnknownPayer => ("NM1", p.payer, 9, 67),
        Refusal::NotYourProvider => ("NM1", p.provider, 9, 67),
        Refusal::TrackingIdReused | Refusal::DifferentSubject | Refusal::TooLong { what: "TrackingId" } => {
            ("TRN", p.tracking, 2, 127)
        }
        Refusal::TooLong { .. } => ("NM1", p.member, 9, 67),
        // A 275 carries its documents inline: the upload refusals cannot arise, and would be the BIN's anyway.
        Refusal::ContentType { .. }
        | Refusal::TooLarge { .. }
        | Refusal::Empty { .. }
        | Refusal::TooManyDocuments
        | Refusal::UnknownUpload { .. }
        | Refusal::UploadNotReceived { .. }
        | Refusal::UploadMismatch { .. }
        | Refusal::UploadUsed
        | Refusal::TooMuchStaged => ("BIN", p.content, 2, 785),
    };
    segment_error(id, at, "8", Some((element, data_element, "7")))
}

/// `POST /x12/275`.
pub async fn post_275(
    State(svc): State<Arc<Attachments>>,
    ctx: CallerContext,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let route = X12Route {
        role: PartnerRole::Provider,
        scope: "attachments",
        idempotency_scope: "X12-275",
        max_bytes: MAX_BODY_BYTES,
    };
    let request = match receive_x12(&svc.core, &ctx, route, &headers, body).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    match svc.service.answer_275(&ctx, &request.body, request.idempotency_key).await {
        Ok(reply) => x12_reply_response(reply),
        Err(e) => Problem::from_port(&ctx.request_id, &e).into_response(),
    }
}

/// Checks every attachment of a set, then stores them all; refusals go into the set's ack and nothing is stored.
/// Returns the payer the stored attachments are addressed to.
async fn store_set(
    svc: &AttachmentService,
    ctx: &CallerContext,
    submissions: Vec<(Submission, Positions)>,
    ack: &mut SetAck,
) -> Result<Option<String>, PortError> {
    let mut plans = Vec::with_capacity(submissions.len());
    for (submission, positions) in submissions {
        match intake::check(svc, &ctx.partner, submission).await? {
            Verdict::Refused(refusal) => reject(ack, refusal_error(&refusal, positions)),
            Verdict::Retry(_) => {}
            Verdict::Store(plan) => plans.push(plan),
        }
    }
    if ack.is_rejected() {
        return Ok(None);
    }
    let mut payer = None;
    for plan in plans {
        // The store notes the attachment and its member in the audit record it commits with.
        let stored = intake::store_or_join(svc, ctx, *plan).await?.attachment;
        payer = Some(stored.payer);
    }
    Ok(payer)
}

impl AttachmentService {
    /// Answers a 275 interchange: each set's attachments are checked, then stored (each committed with its own
    /// audit record); every group gets a 999. `idem_key` is where the answer is remembered for a retry (sender
    /// ISA06 + ISA13); a concurrent retry that committed first gets its answer.
    pub async fn answer_275(
        &self,
        ctx: &CallerContext,
        input: &[u8],
        idem_key: Option<exchange_core::ports::Key>,
    ) -> Result<X12Reply, PortError> {
        let svc = self;
        let now = svc.clock.now();
        let opened = open_interchange(&svc.numbers, &ctx.partner, input, &[KIND_275_X210, KIND_275_X211], now).await?;
        let Opened { interchange, fields, writer: mut iw, .. } = match opened {
            Ok(opened) => opened,
            Err(refused) => {
                if let Refused::Ta1 { note, .. } = &refused {
                    tracing::info!(request_id = %ctx.request_id, ta1 = note, "275 interchange rejected");
                }
                return Ok(refused.into());
            }
        };
        let mut payer = String::from("unknown");
        let mut stored_sets = 0usize;
        let mut acks_per_group: Vec<Vec<SetAck>> = Vec::new();
        for group in &interchange.groups {
            let mut acks = Vec::with_capacity(group.sets.len());
            for set in &group.sets {
                let mut ack = set.ack.clone();
                if !group.is_rejected() && set.kind.is_some() && !ack.is_rejected() {
                    let submissions = read_set(&set.body, &mut ack);
                    if let Some(p) = store_set(svc, ctx, submissions, &mut ack).await? {
                        payer = p;
                        stored_sets += 1;
                    }
                }
                acks.push(ack);
            }
            acks_per_group.push(acks);
        }
        let mut st_counter = 0u32;
        // The 275 has no response transaction: every group gets a 999, accepted or not.
        write_999_group(&mut iw, &interchange.groups, &acks_per_group, &mut st_counter, Acknowledge::EveryGroup);
        let out = iw.finish();
        let vaulted = svc.records.vault_exchange(ctx, "x12/275", input, &out, &payer).await?;
        if let Some(key) = idem_key {
            // The exchange is not named in this commit: the sets' attachments are committed already, so if only
            // the idempotency record loses a race, this answer (which says what was stored) and its documents
            // stay true and are kept.
            let op = vaulted.idempotency_op(key.clone(), X12_MEDIA_TYPE, 200, &payer, now)?;
            let documents = || Commit::answered(StatusCode::OK).keeping_exchange(&vaulted);
            match svc.committer.commit(ctx, Commit::answered(StatusCode::OK).write(op)).await {
                Ok(()) => {}
                // A concurrent retry of the same interchange recorded its answer first: that answer, byte for
                // byte, as a retry gets it (this one's documents are not needed).
                Err(PortError::Conflict(_)) => {
                    if let Ok(Some(Ok((_, bytes)))) = svc.records.replay(&key, input).await {
                        svc.committer.abandon(documents()).await;
                        return Ok(X12Reply::replayed(bytes));
                    }
                }
                Err(e) => {
                    svc.committer.abandon(documents()).await;
                    return Err(e);
                }
            }
        }
        tracing::info!(request_id = %ctx.request_id, partner = %ctx.caller.partner, isa13 = %fields.control_number, stored_sets, "275 answered");
        Ok(X12Reply::new(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_are_recognised() {
        assert_eq!(sniff(b"%PDF-1.5\n"), "application/pdf");
        assert_eq!(sniff(b"\n  <levelone/>"), "application/xml");
        assert_eq!(sniff(b"\xEF\xBB\xBF<ClinicalDocument/>"), "application/xml");
        assert_eq!(sniff(b"II*\0rest"), "image/tiff");
        assert_eq!(sniff(b"plain words"), "text/plain");
        assert_eq!(sniff(&[0, 159, 146, 150]), "application/octet-stream");
        assert_eq!(ccyymmdd("20030401-20030411"), "2003-04-01");
    }
}
