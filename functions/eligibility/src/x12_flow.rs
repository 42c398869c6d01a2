//! 270 interchange → 271 interchange (plus 999 / TA1): the X12 eligibility flow, independent of HTTP.

use exchange_core::domain::payer_data::CurrentDataSet;
use exchange_core::http::CallerContext;
use exchange_core::ports::PortError;
use exchange_core::x12::answering::{open_interchange, Opened, Refused};
use exchange_core::x12::envelope::SetAck;
use exchange_core::x12::guide::{self, x279a1};
use exchange_core::x12::X12Error;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::StreamExt;

use crate::inquiry::{self, Inquiry};
use crate::matching::{self, Answer};
use crate::response_271::write_271;
use crate::service::Eligibility;

/// How many sets of one interchange are matched at once: enough to overlap store round trips, few enough not to
/// flood the store (each set makes two or three reads).
const ANSWER_CONCURRENCY: usize = 16;

/// What answering an interchange produced.
#[derive(Debug, Clone)]
pub struct X12Outcome {
    /// The answer interchange.
    pub body: Vec<u8>,
    /// The interchange was rejected with a TA1 (note code).
    pub ta1_note: Option<&'static str>,
    /// Inbound ISA13, when readable.
    pub inbound_control: Option<String>,
    /// Outbound ISA13.
    pub outbound_control: Option<u64>,
    /// Transaction sets received.
    pub sets: usize,
    /// Transaction sets rejected in the 999.
    pub rejected_sets: usize,
    /// 271s whose answer carries an AAA rejection.
    pub aaa_rejections: usize,
    /// The payer id the answer is for (encryption context of the vaulted documents).
    pub payer_id: Option<String>,
}

impl X12Outcome {
    /// A TA1 rejecting the whole interchange.
    fn ta1(body: Vec<u8>, note: &'static str, inbound_control: String, outbound_control: u64) -> Self {
        X12Outcome {
            body,
            ta1_note: Some(note),
            inbound_control: Some(inbound_control),
            outbound_control: Some(outbound_control),
            sets: 0,
            rejected_sets: 0,
            aaa_rejections: 0,
            payer_id: None,
        }
    }
}

/// Why no X12 answer could be written at all.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// Not an interchange whose ISA can be read: no TA1 can be addressed.
    #[error("{0}")]
    NotX12(X12Error),
    /// A dependency failed before any answer could be numbered.
    #[error("dependency unavailable: {0}")]
    Unavailable(#[from] PortError),
}

/// Answers one 270 interchange.
pub async fn answer_interchange(svc: &Eligibility, ctx: &CallerContext, input: &[u8]) -> Result<X12Outcome, FlowError> {
    let now = svc.clock().now();
    let opened = open_interchange(svc.control_numbers(), &ctx.partner, input, &[x279a1::KIND_270], now).await?;
    let Opened { interchange, fields, writer: mut iw, control } = match opened {
        Ok(opened) => opened,
        Err(Refused::NotX12(e)) => return Err(FlowError::NotX12(e)),
        Err(Refused::Ta1 { body, note, inbound_control, control }) => {
            return Ok(X12Outcome::ta1(body, note, inbound_control, control))
        }
    };

    let data: Option<CurrentDataSet> = match svc.repo().current().await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(request_id = %ctx.request_id, error = %e, "payer data unavailable");
            None
        }
    };
    let today = now.date();

    let mut outcome = X12Outcome {
        body: Vec::new(),
        ta1_note: None,
        inbound_control: Some(fields.control_number.clone()),
        outbound_control: Some(control),
        sets: 0,
        rejected_sets: 0,
        aaa_rejections: 0,
        payer_id: data.as_ref().map(|d| d.payer.id.clone()),
    };

    // Validate every set first; answer the good ones in one HB group per inbound group.
    let mut acks_per_group: Vec<Vec<SetAck>> = Vec::with_capacity(interchange.groups.len());
    let mut st_counter = 0u32;
    for group in &interchange.groups {
        let mut acks = Vec::with_capacity(group.sets.len());
        let mut inquiries: Vec<Inquiry> = Vec::new();
        for set in &group.sets {
            outcome.sets += 1;
            let mut ack = set.ack.clone();
            if !group.is_rejected() && set.kind.is_some() && !ack.is_rejected() {
                let located = guide::validate(&x279a1::GUIDE_270, &set.body, &mut ack);
                if !ack.is_rejected() {
                    inquiries.push(inquiry::from_270(&located));
                }
            }
            if ack.is_rejected() || group.is_rejected() {
                outcome.rejected_sets += 1;
            }
            acks.push(ack);
        }
        // Sets are answered concurrently (their lookups overlap), in order.
        // (Boxed so that the handler's future stays `Send` for every lifetime axum asks about.)
        let pending: Vec<BoxFuture<'_, Answer>> = inquiries
            .iter()
            .map(|inq| matching::answer(inq, data.as_ref(), svc.repo(), &ctx.partner, today).boxed())
            .collect();
        let answered: Vec<Answer> = futures_util::stream::iter(pending).buffered(ANSWER_CONCURRENCY).collect().await;
        let answers: Vec<(Inquiry, Answer)> = inquiries.into_iter().zip(answered).collect();
        if !answers.is_empty() {
            iw.begin_group("HB", group.gs.text(3), group.gs.text(2), x279a1::KIND_271.version);
            for (inq, ans) in &answers {
                ans.member_ids().for_each(|m| ctx.audit_member(m));
                st_counter += 1;
                let st02 = format!("{st_counter:04}");
                if ans.first_rejection().is_some() {
                    outcome.aaa_rejections += 1;
                }
                let trace = format!("{}-{st_counter}", &ctx.request_id[..ctx.request_id.len().min(20)]);
                write_271(&mut iw, &st02, inq, ans, &trace);
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
    outcome.body = iw.finish();
    Ok(outcome)
}
