//! `POST /x12/278`: a 278 request interchange in; a 278 response per accepted set, a 999 for rejected sets, or a
//! TA1 for a rejected interchange out. X12 answers are HTTP 200 (the acknowledgment is the answer); 4xx are for
//! bodies that are not X12 at all. Everything the interchange creates or changes (cases, their submission
//! records, the interchange's idempotency record) is written in one transaction.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use exchange_core::commit::Commit;
use exchange_core::domain::prior_auth::{CaseRepo, PaCase};
use exchange_core::domain::PartnerRole;
use exchange_core::http::{
    receive_x12, ta1_answer, x12_response, CallerContext, Problem, X12Route, MAX_BODY_BYTES, X12_MEDIA_TYPE,
};
use exchange_core::ports::{PortError, WriteOp};
use exchange_core::x12::ack::{ta1_interchange, InterchangeWriter, OutboundEnvelope};
use exchange_core::x12::envelope::{parse_interchange, SetAck};
use exchange_core::x12::guide::{self, x217};

use super::request::{from_278, Request278};
use super::response::{write_278, X217};
use crate::intake::{self, Intake, Party, Rejection};
use crate::PriorAuth;

/// Transaction sets per real-time interchange: everything an interchange writes commits in one transaction, and
/// DynamoDB transactions hold at most 100 writes (a new case takes five).
pub const MAX_SETS: usize = 16;

fn unavailable(ctx: &CallerContext, e: &PortError) -> Response {
    Problem::from_port(&ctx.request_id, e).into_response()
}

/// What one accepted set led to.
enum SetResult {
    /// A new case.
    Created(Box<PaCase>),
    /// An existing case, changed (cancel, revision, extension) or only reported (status inquiry).
    Existing { case: Box<PaCase>, version: u64, changed: bool },
    /// Stopped by a rejection.
    Rejected(Rejection),
}

async fn process_set(
    pa: &PriorAuth,
    ctx: &CallerContext,
    req: &Request278,
    submission_key: &str,
    now: time::OffsetDateTime,
) -> Result<SetResult, PortError> {
    let submitter = ctx.caller.partner.as_str();
    // A request quoting an earlier one (REF*NT administrative reference or REF*BB authorization number).
    for reference in &req.references {
        let Some((mut case, version)) = pa.cases.get(reference).await? else { continue };
        if case.submitter != submitter || !intake::same_parties(&case, &req.subscriber, &req.requester) {
            continue; // Another partner's (or another member's) case is not revealed, nor changed.
        }
        let by = submitter.to_owned();
        let changed = match req.certification_type() {
            "3" => {
                case.cancel(&by, now);
                true
            }
            "S" | "4" => {
                let mut sequences = Vec::new();
                for item in &req.items {
                    let mut fresh = item.clone();
                    fresh.decision = None;
                    match case.items.iter_mut().find(|i| i.sequence == item.sequence) {
                        Some(existing) => *existing = fresh,
                        None => case.items.push(fresh),
                    }
                    sequences.push(item.sequence);
                }
                intake::decide_added_items(&pa.core, &mut case, &sequences, &[], now).await?;
                true
            }
            _ => false,
        };
        return Ok(SetResult::Existing { case: Box::new(case), version, changed });
    }
    if matches!(req.certification_type(), "3" | "S" | "4") {
        // Nothing to cancel or revise: the reference is missing or unknown.
        return Ok(SetResult::Rejected(Rejection::new(Party::Event, "15", "C", "REF02")));
    }
    match intake::take(&pa.core, &ctx.partner, "x12", submission_key, req.to_request(), now).await? {
        Intake::Decided(case) => Ok(SetResult::Created(case)),
        Intake::Rejected(r) => Ok(SetResult::Rejected(r)),
    }
}

/// `POST /x12/278`.
pub async fn post_278(
    State(pa): State<Arc<PriorAuth>>,
    ctx: CallerContext,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let route = X12Route {
        role: PartnerRole::Provider,
        scope: "prior-auth",
        idempotency_scope: "X12-278",
        max_bytes: MAX_BODY_BYTES,
    };
    let request = match receive_x12(&pa.core, &ctx, route, &headers, body).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    match answer(&pa, &ctx, &request.body, request.idempotency_key).await {
        Ok(resp) => resp,
        Err(e) => unavailable(&ctx, &e),
    }
}

async fn answer(
    pa: &PriorAuth,
    ctx: &CallerContext,
    input: &[u8],
    idem_key: Option<exchange_core::ports::Key>,
) -> Result<Response, PortError> {
    let now = pa.core.clock().now();
    let interchange = match parse_interchange(input, &[x217::KIND_278]) {
        Ok(ic) => ic,
        Err(rej) => {
            let Some(fields) = rej.fields else {
                tracing::info!(request_id = %ctx.request_id, error = %rej.error, "not an X12 interchange");
                return Ok(Problem::bad_request(format!("not an X12 interchange: {}", rej.error)).into_response());
            };
            let control = pa.core.control_numbers().next_interchange(&ctx.caller.partner).await?;
            let env = OutboundEnvelope::answering(&fields, control, now);
            tracing::info!(request_id = %ctx.request_id, ta1 = rej.note_code, "278 interchange rejected");
            return Ok(x12_response(ta1_interchange(rej.delimiters, &fields, env, false, rej.note_code), false));
        }
    };
    let fields = interchange.fields();
    if !ctx.partner.sends_as(&fields.sender.1) {
        return Ok(ta1_answer(&pa.core, ctx, input, "006").await);
    }
    let set_count: usize = interchange.groups.iter().map(|g| g.sets.len()).sum();
    if set_count > MAX_SETS {
        return Ok(Problem::bad_request(format!(
            "a real-time 278 interchange carries at most {MAX_SETS} transaction sets; send batches separately"
        ))
        .into_response());
    }
    let control = pa.core.control_numbers().next_interchange(&ctx.caller.partner).await?;
    let env = OutboundEnvelope::answering(&fields, control, now);
    let mut iw = InterchangeWriter::new(interchange.delimiters, env);
    if interchange.ack_requested() {
        iw.ta1(&fields, true, "000");
    }

    let mut ops: Vec<WriteOp> = Vec::new();
    let mut payer = String::from("unknown");
    let mut acks_per_group: Vec<Vec<SetAck>> = Vec::new();
    let mut st_counter = 0u32;
    let mut answered = 0usize;
    let mut touched = std::collections::HashSet::new();
    for group in &interchange.groups {
        let mut acks = Vec::with_capacity(group.sets.len());
        let mut accepted: Vec<(Request278, SetResult)> = Vec::new();
        for set in &group.sets {
            let mut ack = set.ack.clone();
            if !group.is_rejected() && set.kind.is_some() && !ack.is_rejected() {
                let located = guide::validate(&x217::GUIDE_278, &set.body, &mut ack);
                if !ack.is_rejected() {
                    let req = from_278(&located);
                    // ST02 is unique within its group only: the group's GS06 is part of the set's identity.
                    let key = format!(
                        "X12#{}#{}#{}#{}",
                        fields.sender.1,
                        fields.control_number,
                        group.control_number(),
                        set.st.text(2)
                    );
                    let mut result = process_set(pa, ctx, &req, &key, now).await?;
                    // Two sets of one interchange may not change the same case: they would race in one
                    // transaction. The second is refused at its event.
                    if let SetResult::Existing { case, changed: true, .. } = &result {
                        if !touched.insert(case.id.clone()) {
                            result = SetResult::Rejected(Rejection::new(Party::Event, "15", "C", "REF02"));
                        }
                    }
                    accepted.push((req, result));
                }
            }
            acks.push(ack);
        }
        if !accepted.is_empty() {
            iw.begin_group("HI", group.gs.text(3), group.gs.text(2), X217);
            for (req, result) in &accepted {
                st_counter += 1;
                let st02 = format!("{st_counter:04}");
                answered += 1;
                match result {
                    SetResult::Created(case) => {
                        crate::audit_new_case(ctx, case);
                        payer = case.payer.clone();
                        ops.extend(CaseRepo::create_ops(case, None)?);
                        write_278(&mut iw, &st02, req, Some(case), None, now);
                    }
                    SetResult::Existing { case, version, changed } => {
                        crate::audit_case(ctx, case);
                        payer = case.payer.clone();
                        if *changed {
                            ops.extend(CaseRepo::save_ops(case, *version, None)?);
                        }
                        write_278(&mut iw, &st02, req, Some(case), None, now);
                    }
                    SetResult::Rejected(r) => write_278(&mut iw, &st02, req, None, Some(r), now),
                }
            }
            iw.end_group();
        }
        acks_per_group.push(acks);
    }
    exchange_core::x12::ack::write_999_group(
        &mut iw,
        &interchange.groups,
        &acks_per_group,
        &mut st_counter,
        exchange_core::x12::ack::Acknowledge::Rejections,
    );
    let out = iw.finish();

    let vaulted = pa.core.exchange_records().vault_exchange(ctx, "x12/278", input, &out, &payer).await?;
    if let Some(key) = &idem_key {
        ops.push(vaulted.idempotency_op(key.clone(), X12_MEDIA_TYPE, 200, &payer, now)?);
    }
    if let Err(e) =
        pa.core.committer().commit(ctx, Commit::answered(StatusCode::OK).writes(ops).keeping_exchange(&vaulted)).await
    {
        if matches!(e, PortError::Conflict(_)) {
            // A concurrent retry of the same interchange committed first: its answer, as a retry gets it.
            if let Some(key) = &idem_key {
                if let Ok(Some(Ok((_, bytes)))) = exchange_core::record::replay(&pa.core, key, input).await {
                    return Ok(x12_response(bytes, true));
                }
            }
            // Otherwise a referenced case changed meanwhile: the partner resends.
            return Ok(Problem::new(StatusCode::CONFLICT, "conflict", "A referenced request changed meanwhile")
                .with_detail("resend the interchange")
                .into_response());
        }
        return Err(e);
    }
    tracing::info!(
        request_id = %ctx.request_id,
        partner = %ctx.caller.partner,
        isa13 = %fields.control_number,
        sets = set_count,
        answered,
        rejected_sets = set_count - answered,
        "278 answered"
    );
    Ok(x12_response(out, false))
}
