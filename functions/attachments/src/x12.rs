//! `POST /x12/275`: a 275 interchange (005010X210 claims attachments, or 005010X211 for services review) in; its
//! documents stored and a 999 out (TA1 for a broken interchange). Each `LX` loop is one document; the attachment
//! control number is the loop's `TRN02` (what the claim carries in `PWK06`), else the set's `REF*IK`, else `BGN02`.
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
use exchange_core::control_numbers;
use exchange_core::domain::attachments::AttachTo;
use exchange_core::domain::PartnerRole;
use exchange_core::http::{answer_response, media_type, CallerContext, Problem, X12_MEDIA_TYPE};
use exchange_core::ports::PortError;
use exchange_core::record::{idempotency_key, replay, vault_exchange};
use exchange_core::x12::ack::{ta1_interchange, InterchangeWriter, OutboundEnvelope};
use exchange_core::x12::envelope::{parse_interchange, ElementError, SegmentError, SetAck, SetKind};
use exchange_core::x12::Segment;

use crate::intake::{self, Document, Refusal, Submission};
use crate::Attachments;

/// The 275 for claims attachments.
pub const KIND_275_X210: SetKind = SetKind { functional_id: "PI", set_id: "275", version: "005010X210" };
/// The 275 for services review (the 278's companion).
pub const KIND_275_X211: SetKind = SetKind { functional_id: "PI", set_id: "275", version: "005010X211" };

/// The largest 275 interchange taken inline.
pub const MAX_275_BYTES: usize = crate::cdex::MAX_SUBMIT_BYTES;

fn x12_response(body: Vec<u8>, replayed: bool) -> Response {
    answer_response(StatusCode::OK, X12_MEDIA_TYPE, body, replayed)
}

/// A 999 segment error at `position` (1-based from ST).
fn segment_error(
    seg: &Segment<'_>,
    position: usize,
    code: &'static str,
    element: Option<(usize, u16, &'static str)>,
) -> SegmentError {
    SegmentError {
        segment_id: seg.id_str().to_owned(),
        position,
        loop_id: None,
        code,
        elements: element
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
            .unwrap_or_default(),
    }
}

fn missing(ack: &mut SetAck, id: &str, position: usize) {
    ack.segment_errors.push(SegmentError {
        segment_id: id.to_owned(),
        position,
        loop_id: None,
        code: "3",
        elements: vec![],
    });
    ack.add_code("5");
}

/// Where a refusal is reported in the 999: the segment and element at fault.
struct Positions {
    payer: Option<usize>,
    provider: Option<usize>,
    tracking: Option<usize>,
}

/// Reads one 275 set into submissions (one per LX loop), recording defects in `ack`.
fn read_set<'a>(body: &[Segment<'a>], ack: &mut SetAck) -> Vec<(Submission, Positions, Vec<usize>)> {
    let pos = |i: usize| i + 2;
    let mut payer = None;
    let mut organization = None;
    let mut submitter = None;
    let mut member = None;
    let mut service_date = None;
    let mut ref_ik = None;
    let mut bgn02 = None;
    let mut positions = Positions { payer: None, provider: None, tracking: None };
    let mut loops: Vec<(usize, Vec<(usize, &Segment<'a>)>)> = Vec::new();
    for (i, seg) in body.iter().enumerate() {
        if seg.is("LX") {
            loops.push((i, Vec::new()));
            continue;
        }
        if let Some((_, segs)) = loops.last_mut() {
            segs.push((i, seg));
            continue;
        }
        match seg.id_str() {
            "BGN" => bgn02 = Some(seg.trimmed(2).to_owned()).filter(|s| !s.is_empty()),
            "NM1" => {
                let id = seg.trimmed(9).to_owned();
                match seg.text(1) {
                    "PR" => {
                        payer = Some(id);
                        positions.payer = Some(pos(i));
                    }
                    "85" | "1P" => {
                        organization = Some(id);
                        positions.provider = Some(pos(i));
                    }
                    "41" => submitter = Some(id),
                    "QC" => member = Some(id),
                    _ => {}
                }
            }
            "REF" if seg.text(1) == "IK" => ref_ik = Some(seg.trimmed(2).to_owned()),
            "DTP" if seg.text(1) == "472" => service_date = Some(ccyymmdd(seg.text(3))),
            _ => {}
        }
    }
    if payer.as_deref().is_none_or(str::is_empty) {
        missing(ack, "NM1", 2);
    }
    if member.as_deref().is_none_or(str::is_empty) {
        missing(ack, "NM1", 2);
    }
    if loops.is_empty() {
        missing(ack, "LX", body.len() + 1);
    }
    let mut out = Vec::new();
    for (lx_at, segs) in &loops {
        let mut tracking = None;
        let mut codes = Vec::new();
        let mut content: Option<(Vec<u8>, &'static str, usize)> = None;
        for (i, seg) in segs {
            match seg.id_str() {
                "TRN" => {
                    tracking = Some(seg.trimmed(2).to_owned()).filter(|s| !s.is_empty());
                    positions.tracking = Some(pos(*i));
                }
                "STC" => {
                    let code = String::from_utf8_lossy(seg.component(1, 2)).trim().to_owned();
                    if !code.is_empty() {
                        codes.push(code);
                    }
                }
                "BIN" => match seg.binary() {
                    Some(b) => content = Some((b.to_vec(), "x12-bin", pos(*i))),
                    None => {
                        ack.segment_errors.push(segment_error(seg, pos(*i), "8", Some((2, 785, "1"))));
                        ack.add_code("5");
                    }
                },
                "BDS" => {
                    let data = seg.binary().unwrap_or_default();
                    let decoded = match seg.trimmed(1) {
                        "B64" => STANDARD
                            .decode(data.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect::<Vec<u8>>())
                            .ok(),
                        "ASC" => Some(data.to_vec()),
                        _ => {
                            ack.segment_errors.push(segment_error(seg, pos(*i), "8", Some((1, 1270, "7"))));
                            ack.add_code("5");
                            continue;
                        }
                    };
                    match decoded {
                        Some(bytes) => content = Some((bytes, "x12-bds", pos(*i))),
                        None => {
                            // BDS03 does not decode under the BDS01 filter.
                            ack.segment_errors.push(segment_error(seg, pos(*i), "8", Some((3, 785, "6"))));
                            ack.add_code("5");
                        }
                    }
                }
                _ => {}
            }
        }
        let Some((bytes, kind, at)) = content else {
            if !ack.is_rejected() {
                missing(ack, "BIN", pos(*lx_at));
            }
            continue;
        };
        let Some(tracking_id) = tracking.clone().or_else(|| ref_ik.clone()).or_else(|| bgn02.clone()) else {
            missing(ack, "TRN", pos(*lx_at));
            continue;
        };
        let content_type = sniff(&bytes).to_owned();
        out.push((
            Submission {
                channel: "x12",
                tracking_id,
                tracking_system: None,
                attach_to: AttachTo::Claim,
                payer_id: payer.clone().unwrap_or_default(),
                organization_npi: organization.clone(),
                provider_id: submitter.clone(),
                member_id: member.clone().unwrap_or_default(),
                service_date: service_date.clone(),
                is_final: true,
                documents: vec![Document {
                    codes,
                    line_items: vec![],
                    content_type,
                    kind: kind.into(),
                    content: bytes,
                    location: format!("segment {at}"),
                }],
            },
            Positions { payer: positions.payer, provider: positions.provider, tracking: positions.tracking },
            vec![at],
        ));
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
    let trimmed = bytes
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(bytes)
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| &bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)[i..])
        .unwrap_or(&[]);
    if bytes.starts_with(b"%PDF-") {
        "application/pdf"
    } else if trimmed.starts_with(b"<") {
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
fn refusal_error(r: &Refusal, p: &Positions, content_at: usize) -> SegmentError {
    let at = |pos: Option<usize>, id: &str, el: usize, de: u16| SegmentError {
        segment_id: id.to_owned(),
        position: pos.unwrap_or(content_at),
        loop_id: None,
        code: "8",
        elements: vec![ElementError {
            position: el,
            component: None,
            repetition: None,
            data_element: de,
            code: "7",
            bad_value: None,
        }],
    };
    match r {
        Refusal::UnknownPayer => at(p.payer, "NM1", 9, 67),
        Refusal::NotYourProvider => at(p.provider, "NM1", 9, 67),
        Refusal::TrackingIdReused => at(p.tracking, "TRN", 2, 127),
        Refusal::ContentType { .. } | Refusal::TooLarge { .. } | Refusal::Empty { .. } => {
            at(Some(content_at), "BIN", 2, 785)
        }
    }
}

/// `POST /x12/275`.
pub async fn post_275(
    State(svc): State<Arc<Attachments>>,
    ctx: CallerContext,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if ctx.caller.role != PartnerRole::Provider || !ctx.caller.has_scope("attachments") {
        return Problem::forbidden("attachments need a provider token with the attachments scope").into_response();
    }
    let mt = media_type(&headers);
    if !matches!(mt.as_str(), "application/edi-x12" | "text/plain" | "application/x12" | "") {
        return Problem::unsupported_media_type("application/edi-x12 or text/plain").into_response();
    }
    let body = match body {
        Ok(b) if b.len() <= MAX_275_BYTES => b,
        Ok(_) => return Problem::too_large(MAX_275_BYTES).into_response(),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Problem::too_large(MAX_275_BYTES).into_response()
        }
        Err(e) => return Problem::bad_request(e.body_text()).into_response(),
    };
    let identity =
        exchange_core::x12::isa::salvage_fields(&body).map(|f| format!("{}#{}", f.sender.1, f.control_number));
    let idem_key = identity.as_ref().map(|id| idempotency_key(&ctx, "X12-275", id));
    if let Some(key) = &idem_key {
        match replay(&svc.core, key, &body).await {
            Ok(Some(Ok((_, bytes)))) => return x12_response(bytes, true),
            Ok(Some(Err(()))) => return ta1_only(&svc, &ctx, &body, "025").await,
            Ok(None) => {}
            Err(e) => return Problem::from_port(&ctx.request_id, &e).into_response(),
        }
    }
    match answer(&svc, &ctx, &body, idem_key).await {
        Ok(resp) => resp,
        Err(e) => Problem::from_port(&ctx.request_id, &e).into_response(),
    }
}

async fn ta1_only(svc: &Attachments, ctx: &CallerContext, body: &[u8], note: &str) -> Response {
    let store = svc.core.store.as_ref();
    match control_numbers::ta1_rejection(store, &ctx.caller.partner, body, note, svc.core.clock.now()).await {
        Ok(Some(bytes)) => x12_response(bytes, false),
        Ok(None) => Problem::bad_request("not an X12 interchange").into_response(),
        Err(e) => Problem::from_port(&ctx.request_id, &e).into_response(),
    }
}

async fn answer(
    svc: &Attachments,
    ctx: &CallerContext,
    input: &[u8],
    idem_key: Option<exchange_core::ports::Key>,
) -> Result<Response, PortError> {
    let now = svc.core.clock.now();
    let interchange = match parse_interchange(input, &[KIND_275_X210, KIND_275_X211]) {
        Ok(ic) => ic,
        Err(rej) => {
            let Some(fields) = rej.fields else {
                return Ok(Problem::bad_request(format!("not an X12 interchange: {}", rej.error)).into_response());
            };
            let control = control_numbers::next_interchange(svc.core.store.as_ref(), &ctx.caller.partner).await?;
            let env = OutboundEnvelope::answering(&fields, control, now);
            tracing::info!(request_id = %ctx.request_id, ta1 = rej.note_code, "275 interchange rejected");
            return Ok(x12_response(ta1_interchange(rej.delimiters, &fields, env, false, rej.note_code), false));
        }
    };
    let fields = interchange.fields();
    let senders = &ctx.partner.x12_sender_ids;
    if !senders.is_empty() && !senders.iter().any(|s| s.trim() == fields.sender.1) {
        return Ok(ta1_only(svc, ctx, input, "006").await);
    }
    let control = control_numbers::next_interchange(svc.core.store.as_ref(), &ctx.caller.partner).await?;
    let env = OutboundEnvelope::answering(&fields, control, now);
    let mut iw = InterchangeWriter::new(interchange.delimiters, env);
    if interchange.ack_requested() {
        iw.ta1(&fields, true, "000");
    }
    let mut payer = String::from("unknown");
    let mut stored = 0usize;
    let mut acks_per_group: Vec<Vec<SetAck>> = Vec::new();
    for group in &interchange.groups {
        let mut acks = Vec::with_capacity(group.sets.len());
        for set in &group.sets {
            let mut ack = set.ack.clone();
            if !group.is_rejected() && set.kind.is_some() && !ack.is_rejected() {
                for (submission, positions, at) in read_set(&set.body, &mut ack) {
                    match intake::accept(svc, &ctx.partner, submission).await? {
                        Ok(accepted) => {
                            payer = accepted.attachment.payer.clone();
                            stored += 1;
                        }
                        Err(refusal) => {
                            ack.segment_errors.push(refusal_error(&refusal, &positions, at[0]));
                            ack.add_code("5");
                        }
                    }
                }
            }
            acks.push(ack);
        }
        acks_per_group.push(acks);
    }
    let mut st_counter = 0u32;
    // A 999 answers every group, accepted or not: the 275 has no other response.
    write_999_all(&mut iw, &interchange.groups, &acks_per_group, &mut st_counter);
    let out = iw.finish();
    let vaulted = vault_exchange(&svc.core, ctx, "x12/275", input, &out, &payer).await?;
    if let Some(key) = idem_key {
        let op = vaulted.idempotency_op(key, X12_MEDIA_TYPE, 200, &payer, now)?;
        if let Err(e) = svc.core.store.transact(vec![op]).await {
            if !matches!(e, PortError::Conflict(_)) {
                return Err(e);
            }
        }
    }
    tracing::info!(request_id = %ctx.request_id, partner = %ctx.caller.partner, isa13 = %fields.control_number, stored, "275 answered");
    Ok(x12_response(out, false))
}

/// Writes a 999 for every group (accepted groups too), unlike the real-time flows where the response set is the
/// acknowledgment of an accepted set.
fn write_999_all(
    iw: &mut InterchangeWriter,
    groups: &[exchange_core::x12::envelope::Group<'_>],
    acks_per_group: &[Vec<SetAck>],
    st_counter: &mut u32,
) {
    let Some(first) = groups.first() else { return };
    iw.begin_group("FA", first.gs.text(3), first.gs.text(2), exchange_core::x12::ack::X231A1);
    for (group, acks) in groups.iter().zip(acks_per_group) {
        *st_counter += 1;
        let acks: Vec<&SetAck> = acks.iter().collect();
        exchange_core::x12::ack::write_999(iw, &format!("{st_counter:04}"), group, &acks);
    }
    iw.end_group();
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
