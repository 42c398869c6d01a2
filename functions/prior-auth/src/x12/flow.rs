//! The 278 flow: a request interchange in; a 278 response per accepted set, a 999 for rejected sets, or a TA1
//! for a rejected interchange out. Everything the interchange creates or changes (cases, their submission
//! records, the interchange's idempotency record) is committed in one transaction with the request's audit
//! record. Independent of HTTP: [`super::routes`] maps the [`Reply278`].

use axum::http::StatusCode;
use exchange_core::commit::Commit;
use exchange_core::domain::prior_auth::{CaseRepo, PaCase};
use exchange_core::http::{CallerContext, X12_MEDIA_TYPE};
use exchange_core::ports::{Key, PortError, WriteOp};
use exchange_core::x12::answering::{open_interchange, Opened, Refused, X12Reply};
use exchange_core::x12::envelope::SetAck;
use exchange_core::x12::guide::{self, x217};

use super::request::{from_278, Request278};
use super::response::{write_278, X217};
use crate::intake::{self, Intake, Party, Rejection};
use crate::service::PriorAuthService;

/// Transaction sets per real-time interchange: everything an interchange writes commits in one transaction, and
/// DynamoDB transactions hold at most 100 writes (a new case takes five).
pub const MAX_SETS: usize = 16;

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
    svc: &PriorAuthService,
    ctx: &CallerContext,
    req: &Request278,
    submission_key: &str,
    now: time::OffsetDateTime,
) -> Result<SetResult, PortError> {
    let submitter = ctx.caller.partner.as_str();
    // A request quoting an earlier one (REF*NT administrative reference or REF*BB authorization number).
    for reference in &req.references {
        let Some((mut case, version)) = svc.cases.get(reference).await? else { continue };
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
                intake::decide_added_items(&svc.repo, &mut case, &sequences, &[], now).await?;
                true
            }
            _ => false,
        };
        return Ok(SetResult::Existing { case: Box::new(case), version, changed });
    }
    if matches!(req.certification_type(), "3" | "S" | "4") || !req.references.is_empty() {
        // Nothing to cancel or revise (no reference), or a reference to no case of this partner's: whatever the
        // certification type, a request that names an earlier review is about that review, and never opens a new
        // case in its place.
        return Ok(SetResult::Rejected(Rejection::new(Party::Event, "15", "C", "REF02")));
    }
    match intake::take(&svc.repo, &ctx.partner, "x12", submission_key, req.to_request(), now).await? {
        Intake::Decided(case) => Ok(SetResult::Created(case)),
        Intake::Rejected(r) => Ok(SetResult::Rejected(r)),
    }
}

/// What a 278 interchange is answered with.
#[derive(Debug)]
pub enum Reply278 {
    /// An X12 answer (278s, 999, TA1), or not X12 at all.
    X12(X12Reply),
    /// More than [`MAX_SETS`] transaction sets.
    TooManySets,
    /// A case the interchange changes was changed by another request meanwhile: the partner resends.
    ChangedMeanwhile,
}

/// The answer to an interchange refused whole.
fn refusal(ctx: &CallerContext, refused: Refused) -> Reply278 {
    match &refused {
        Refused::NotX12(error) => {
            tracing::info!(request_id = %ctx.request_id, error = %error, "not an X12 interchange")
        }
        Refused::Ta1 { note, .. } => {
            tracing::info!(request_id = %ctx.request_id, ta1 = note, "278 interchange rejected")
        }
    }
    Reply278::X12(refused.into())
}

impl PriorAuthService {
    /// Answers a 278 request interchange and commits what it creates or changes. `idem_key` is where the answer
    /// is remembered for a retry (sender ISA06 + ISA13); a concurrent retry that committed first gets its answer.
    pub async fn answer_278(
        &self,
        ctx: &CallerContext,
        input: &[u8],
        idem_key: Option<Key>,
    ) -> Result<Reply278, PortError> {
        let now = self.clock.now();
        let opened = open_interchange(&self.numbers, &ctx.partner, input, &[x217::KIND_278], now).await?;
        let Opened { interchange, fields, writer: mut iw, .. } = match opened {
            Ok(opened) => opened,
            Err(refused) => return Ok(refusal(ctx, refused)),
        };
        let set_count: usize = interchange.groups.iter().map(|g| g.sets.len()).sum();
        if set_count > MAX_SETS {
            return Ok(Reply278::TooManySets);
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
                    let located = guide::validate(&x217::GUIDE_278_REQUEST, &set.body, &mut ack);
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
                        let mut result = process_set(self, ctx, &req, &key, now).await?;
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

        let vaulted = self.records.vault_exchange(ctx, "x12/278", input, &out, &payer).await?;
        if let Some(key) = &idem_key {
            ops.push(vaulted.idempotency_op(key.clone(), X12_MEDIA_TYPE, 200, &payer, now)?);
        }
        if let Err(e) =
            self.committer.commit(ctx, Commit::answered(StatusCode::OK).writes(ops).keeping_exchange(&vaulted)).await
        {
            if matches!(e, PortError::Conflict(_)) {
                // A concurrent retry of the same interchange committed first: its answer, as a retry gets it.
                if let Some(key) = &idem_key {
                    if let Ok(Some(Ok((_, bytes)))) = self.records.replay(key, input).await {
                        return Ok(Reply278::X12(X12Reply::replayed(bytes)));
                    }
                }
                // Otherwise a referenced case changed meanwhile: the partner resends.
                return Ok(Reply278::ChangedMeanwhile);
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
        Ok(Reply278::X12(X12Reply::new(out)))
    }
}
