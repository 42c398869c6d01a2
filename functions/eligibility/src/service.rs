//! The eligibility service: a 270 interchange or a JSON inquiry in, its answer out, and what is kept of it
//! committed. It takes the ports it uses (payer data, control numbers, the exchange records, the committer, the
//! clock), knows nothing of HTTP, and is what both routes call.

use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use exchange_core::app::App;
use exchange_core::commit::{Commit, Committer};
use exchange_core::control_numbers::ControlNumbers;
use exchange_core::domain::payer_data::PayerDataRepo;
use exchange_core::http::{CallerContext, X12_MEDIA_TYPE};
use exchange_core::ports::{Clock, Item, Key, PortError, WriteOp};
use exchange_core::record::ExchangeRecords;
use exchange_core::x12::ack::{InterchangeWriter, OutboundEnvelope};
use exchange_core::x12::isa::IsaFields;
use exchange_core::x12::{Delimiters, X12Error};

use crate::json_api;
use crate::matching;
use crate::record::InquiryRecord;
use crate::response_271::write_271;
use crate::x12_flow::{self, FlowError, X12Outcome};

/// What a provider's inquiry is answered with.
#[derive(Debug)]
pub enum Reply {
    /// The answer, new or (`replayed`) the original answer to the same request.
    Answered {
        /// The answer's bytes (an X12 interchange, or the JSON response).
        body: axum::body::Bytes,
        /// The original answer to a retry.
        replayed: bool,
    },
    /// The idempotency key (ISA13 or `Idempotency-Key`) was used before for a different request.
    KeyReused,
}

/// Why an interchange got no X12 answer at all.
#[derive(Debug, thiserror::Error)]
pub enum EligibilityError {
    /// Not an interchange whose ISA can be read: no TA1 can be addressed.
    #[error("not an X12 interchange: {0}")]
    NotX12(X12Error),
    /// A dependency failed.
    #[error("dependency unavailable: {0}")]
    Unavailable(#[from] PortError),
}

/// Milliseconds since `started` (for the inquiry record and the logs).
fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The eligibility service (see the module docs).
#[derive(Clone)]
pub struct Eligibility {
    repo: PayerDataRepo,
    numbers: Arc<ControlNumbers>,
    records: ExchangeRecords,
    committer: Committer,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Eligibility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eligibility").finish_non_exhaustive()
    }
}

/// An inquiry's answer before it is kept.
pub(crate) struct ToKeep<'a> {
    /// `x12/270` or `json/eligibility` (the vault folder).
    pub kind: &'a str,
    /// The request as received.
    pub request: &'a [u8],
    /// The answer.
    pub response: Vec<u8>,
    /// Its media type.
    pub content_type: &'a str,
    /// The payer the documents are encrypted for.
    pub payer: String,
    /// Where the answer is remembered for a retry.
    pub idempotency: Option<Key>,
    /// The inquiry record (paths and time are filled in when kept).
    pub record: InquiryRecord,
}

impl Eligibility {
    /// The service over the app's ports.
    pub fn new(app: &App) -> Self {
        Eligibility {
            repo: app.repo().clone(),
            numbers: app.control_numbers().clone(),
            records: app.exchange_records(),
            committer: app.committer().clone(),
            clock: app.clock().clone(),
        }
    }

    /// Payer data (the inquiry's members, plans and the payer).
    pub fn repo(&self) -> &PayerDataRepo {
        &self.repo
    }

    /// Outbound control numbers.
    pub fn control_numbers(&self) -> &ControlNumbers {
        &self.numbers
    }

    /// Time.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Answers a 270 interchange (271s, a 999 for rejected sets, or a TA1) and keeps it. `idempotency` is where
    /// the answer is remembered for a retry (the sender's ISA06 and ISA13); a concurrent retry that committed first
    /// gets its answer back, as a retry would.
    pub async fn answer_270(
        &self,
        ctx: &CallerContext,
        body: &[u8],
        idempotency: Option<Key>,
    ) -> Result<Reply, EligibilityError> {
        let started = Instant::now();
        let outcome = match x12_flow::answer_interchange(self, ctx, body).await {
            Ok(o) => o,
            Err(FlowError::NotX12(e)) => return Err(EligibilityError::NotX12(e)),
            Err(FlowError::Unavailable(e)) => return Err(e.into()),
        };
        // Taken apart, not cloned: the answer's bytes move into the vault and the reply.
        let X12Outcome {
            body: answer,
            ta1_note,
            inbound_control,
            outbound_control,
            sets,
            rejected_sets,
            aaa_rejections,
            payer_id,
        } = outcome;
        let record = InquiryRecord {
            request_id: ctx.request_id.clone(),
            partner: ctx.caller.partner.as_str().to_owned(),
            channel: "x12".into(),
            inbound_control: inbound_control.clone(),
            outbound_control,
            sets,
            rejected_sets,
            aaa_rejections,
            ta1_note: ta1_note.map(str::to_owned),
            latency_ms: elapsed_ms(started),
            request_path: String::new(),
            response_path: String::new(),
            at: String::new(),
        };
        // A TA1-rejected interchange is not remembered for idempotency: the partner will fix and resend it.
        let idempotency = if ta1_note.is_none() { idempotency } else { None };
        let answered = ToKeep {
            kind: "x12/270",
            request: body,
            response: answer,
            content_type: X12_MEDIA_TYPE,
            payer: payer_id.unwrap_or_else(|| "unknown".into()),
            idempotency,
            record,
        };
        let answer = self.keep(ctx, answered).await?;
        tracing::info!(
            request_id = %ctx.request_id,
            partner = %ctx.caller.partner,
            isa13 = inbound_control.as_deref().unwrap_or(""),
            sets,
            rejected_sets,
            aaa = aaa_rejections,
            ta1 = ta1_note.unwrap_or(""),
            latency_ms = elapsed_ms(started),
            "270 answered"
        );
        Ok(answer)
    }

    /// Answers a JSON inquiry (already validated against its schema) and keeps it; `body` is the request as
    /// received (what a retry is compared with), `idempotency` the caller's `Idempotency-Key`.
    pub async fn answer_json(
        &self,
        ctx: &CallerContext,
        request: &json_api::Request,
        body: &[u8],
        idempotency: Option<Key>,
    ) -> Result<Reply, PortError> {
        let started = Instant::now();
        if let Some(key) = &idempotency {
            match self.records.replay(key, body).await? {
                Some(Ok((_, bytes))) => return Ok(Reply::Answered { body: bytes, replayed: true }),
                Some(Err(())) => return Ok(Reply::KeyReused),
                None => {}
            }
        }
        let inquiry = json_api::to_inquiry(request);
        let data = self.repo.current().await.ok().flatten();
        let now = self.clock.now();
        let answer = matching::answer(&inquiry, data.as_ref(), &self.repo, &ctx.partner, now.date()).await;
        answer.member_ids().for_each(|m| ctx.audit_member(m));
        let control = self.numbers.next_interchange(&ctx.caller.partner).await?;
        let payer =
            data.as_ref().map(|d| d.payer.id.clone()).unwrap_or_else(|| request.trading_partner_service_id.clone());
        let fields = IsaFields {
            sender: ("ZZ".into(), ctx.caller.partner.as_str().to_owned()),
            receiver: ("ZZ".into(), payer.clone()),
            usage: "P".into(),
            ..IsaFields::default()
        };
        let mut iw = InterchangeWriter::new(Delimiters::default(), OutboundEnvelope::answering(&fields, control, now));
        iw.begin_group("HB", &payer, ctx.caller.partner.as_str(), "005010X279A1");
        write_271(&mut iw, "0001", &inquiry, &answer, &ctx.request_id);
        let x12 = String::from_utf8_lossy(&iw.finish()).into_owned();
        let response = serde_json::to_vec(&json_api::response_json(request, &inquiry, &answer, x12))
            .map_err(|e| PortError::Invalid(format!("the answer cannot be serialized: {e}")))?;
        let record = InquiryRecord {
            request_id: ctx.request_id.clone(),
            partner: ctx.caller.partner.as_str().to_owned(),
            channel: "json".into(),
            inbound_control: Some(request.control_number.clone()),
            outbound_control: Some(control),
            sets: 1,
            rejected_sets: 0,
            aaa_rejections: usize::from(answer.first_rejection().is_some()),
            ta1_note: None,
            latency_ms: elapsed_ms(started),
            request_path: String::new(),
            response_path: String::new(),
            at: String::new(),
        };
        let reply = self
            .keep(
                ctx,
                ToKeep {
                    kind: "json/eligibility",
                    request: body,
                    response,
                    content_type: "application/json",
                    payer,
                    idempotency,
                    record,
                },
            )
            .await?;
        tracing::info!(request_id = %ctx.request_id, partner = %ctx.caller.partner, latency_ms = elapsed_ms(started), "eligibility answered");
        Ok(reply)
    }

    /// Vaults the request and the answer, and commits the inquiry record, the idempotency record and the
    /// request's audit record together. When the idempotency record exists already (a concurrent retry committed
    /// first), that request's answer is returned as a retry gets it.
    pub(crate) async fn keep(&self, ctx: &CallerContext, a: ToKeep<'_>) -> Result<Reply, PortError> {
        let ToKeep { kind, request, response, content_type, payer, idempotency, mut record } = a;
        let now = self.clock.now();
        let partner = ctx.caller.partner.as_str();
        let vaulted = self.records.vault_exchange(ctx, kind, request, &response, &payer).await?;
        record.request_path = vaulted.request_path.clone();
        record.response_path = vaulted.response_path.clone();
        record.at = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let record_item = Item::new(
            Key::new(format!("PARTNER#{partner}"), format!("INQUIRY#{}#{}", record.at, ctx.request_id)),
            serde_json::to_value(&record).map_err(|e| PortError::Invalid(e.to_string()))?,
        )
        .with_gsi1(Key::new(
            format!("INQUIRIES#{}", &record.at[..record.at.len().min(10)]),
            format!("{}#{partner}", record.at),
        ));
        let mut commit =
            Commit::answered(StatusCode::OK).write(WriteOp::PutNew(record_item)).keeping_exchange(&vaulted);
        if let Some(key) = &idempotency {
            commit.push(vaulted.idempotency_op(key.clone(), content_type, 200, &payer, now)?);
        }
        match (self.committer.commit(ctx, commit).await, idempotency) {
            (Ok(()), _) => Ok(Reply::Answered { body: response.into(), replayed: false }),
            (Err(PortError::Conflict(_)), Some(key)) => match self.records.replay(&key, request).await {
                Ok(Some(Ok((_, bytes)))) => Ok(Reply::Answered { body: bytes, replayed: true }),
                Ok(Some(Err(()))) => Ok(Reply::KeyReused),
                Ok(None) | Err(_) => Err(PortError::Conflict("the request's record could not be written".into())),
            },
            (Err(e), _) => Err(e),
        }
    }
}
