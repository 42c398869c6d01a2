//! The front half every inbound X12 flow shares: parse the interchange, refuse it whole with a TA1 when its
//! envelope is bad or its sender is not the calling partner's, and open the answer interchange (numbered from the
//! partner's control numbers, with TA1 000 first when the sender asked for one). A flow then answers the groups.

use time::OffsetDateTime;

use super::ack::{ta1_interchange, InterchangeWriter, OutboundEnvelope};
use super::envelope::{parse_interchange, Interchange, SetKind};
use super::isa::IsaFields;
use super::X12Error;
use crate::control_numbers::ControlNumbers;
use crate::domain::TradingPartner;
use crate::ports::PortError;

/// An interchange accepted for answering.
#[derive(Debug)]
pub struct Opened<'a> {
    /// The parsed interchange.
    pub interchange: Interchange<'a>,
    /// Its header fields.
    pub fields: IsaFields,
    /// The answer, its envelope open (and TA1 000 written when asked for).
    pub writer: InterchangeWriter,
    /// The answer's ISA13.
    pub control: u64,
}

/// Why an interchange is answered whole, without its groups being read.
#[derive(Debug)]
pub enum Refused {
    /// Not an interchange whose ISA can be read: nobody to address a TA1 to.
    NotX12(X12Error),
    /// A TA1 rejecting the interchange.
    Ta1 {
        /// The TA1 interchange.
        body: Vec<u8>,
        /// TA105 (`006`: the sender is not one the calling partner registered).
        note: &'static str,
        /// The inbound ISA13.
        inbound_control: String,
        /// The TA1's ISA13.
        control: u64,
    },
}

/// What an inbound interchange is answered with.
#[derive(Debug)]
pub enum X12Reply {
    /// An X12 answer (the flow's sets, 999, TA1), new or (`replayed`) the original answer to a retry.
    Answered {
        /// The interchange.
        body: bytes::Bytes,
        /// The original answer to a retry.
        replayed: bool,
    },
    /// Not an interchange whose ISA can be read (no TA1 can be addressed).
    NotX12(String),
}

impl X12Reply {
    /// A new answer.
    pub fn new(body: Vec<u8>) -> Self {
        X12Reply::Answered { body: body.into(), replayed: false }
    }

    /// The original answer to a retry.
    pub fn replayed(body: bytes::Bytes) -> Self {
        X12Reply::Answered { body, replayed: true }
    }
}

impl From<Refused> for X12Reply {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::NotX12(error) => X12Reply::NotX12(error.to_string()),
            Refused::Ta1 { body, .. } => X12Reply::new(body),
        }
    }
}

/// Opens `input` (a `partner`'s interchange of one of the `supported` kinds) for answering at `now`.
pub async fn open_interchange<'a>(
    numbers: &ControlNumbers,
    partner: &TradingPartner,
    input: &'a [u8],
    supported: &[SetKind],
    now: OffsetDateTime,
) -> Result<Result<Opened<'a>, Refused>, PortError> {
    let (interchange, fields) = match parse_interchange(input, supported) {
        Ok(interchange) => {
            let fields = interchange.fields();
            (interchange, fields)
        }
        Err(rejection) => {
            let Some(fields) = rejection.fields else { return Ok(Err(Refused::NotX12(rejection.error))) };
            let control = numbers.next_interchange(&partner.id).await?;
            let env = OutboundEnvelope::answering(&fields, control, now);
            let body = ta1_interchange(rejection.delimiters, &fields, env, false, rejection.note_code);
            let inbound_control = fields.control_number;
            return Ok(Err(Refused::Ta1 { body, note: rejection.note_code, inbound_control, control }));
        }
    };
    let control = numbers.next_interchange(&partner.id).await?;
    let env = OutboundEnvelope::answering(&fields, control, now);
    // The interchange's sender must be one the calling partner registered.
    if !partner.sends_as(&fields.sender.1) {
        let body = ta1_interchange(interchange.delimiters, &fields, env, false, "006");
        return Ok(Err(Refused::Ta1 { body, note: "006", inbound_control: fields.control_number, control }));
    }
    let mut writer = InterchangeWriter::new(interchange.delimiters, env);
    if interchange.ack_requested() {
        writer.ta1(&fields, true, "000");
    }
    Ok(Ok(Opened { interchange, fields, writer, control }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::x12::guide::x279a1::KIND_270;

    const SAMPLE_270: &str = include_str!("../../../events/eligibility/sample-270.x12");

    fn partner(sender_ids: &[&str]) -> TradingPartner {
        serde_json::from_value(serde_json::json!({
            "id": "p1", "role": "provider", "name": "P", "x12SenderIds": sender_ids
        }))
        .expect("partner")
    }

    fn numbers() -> ControlNumbers {
        ControlNumbers::new(Arc::new(crate::adapters::memory::MemoryStateStore::new()))
    }

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-11-25 10:00 UTC)
    }

    #[tokio::test]
    async fn a_registered_senders_interchange_is_opened_with_ta1_000_when_asked() {
        let asked = SAMPLE_270.replacen("*0*T*:~", "*1*T*:~", 1);
        let opened = open_interchange(&numbers(), &partner(&["DEMOPROVIDER"]), asked.as_bytes(), &[KIND_270], now())
            .await
            .expect("store");
        let Ok(opened) = opened else { panic!("refused: {opened:?}") };
        assert_eq!(opened.fields.control_number, "000000101");
        let answer = String::from_utf8(opened.writer.finish()).expect("utf-8");
        assert!(answer.contains("TA1*000000101*"), "{answer}");
        assert!(answer.contains("*A*000~"), "{answer}");
    }

    #[tokio::test]
    async fn an_unregistered_sender_gets_ta1_006_and_garbage_gets_no_ta1() {
        let numbers = numbers();
        let refused =
            open_interchange(&numbers, &partner(&["SOMEONEELSE"]), SAMPLE_270.as_bytes(), &[KIND_270], now()).await;
        let Ok(Err(Refused::Ta1 { body, note, inbound_control, control })) = refused else { panic!("{refused:?}") };
        assert_eq!((note, inbound_control.as_str()), ("006", "000000101"));
        let ta1 = String::from_utf8(body).expect("utf-8");
        assert!(ta1.contains("TA1*000000101*") && ta1.contains("*R*006~"), "{ta1}");
        assert!(ta1.contains(&format!("*{control:09}*")), "the TA1 carries its own ISA13: {ta1}");

        let garbage = open_interchange(&numbers, &partner(&["DEMOPROVIDER"]), b"hello", &[KIND_270], now()).await;
        assert!(matches!(garbage, Ok(Err(Refused::NotX12(_)))), "{garbage:?}");
    }

    #[tokio::test]
    async fn a_bad_envelope_is_refused_with_its_note_code() {
        // ISA12 names a version this exchange does not speak: TA1 017 (invalid version).
        let old = SAMPLE_270.replacen("*00501*", "*00401*", 1);
        let refused =
            open_interchange(&numbers(), &partner(&["DEMOPROVIDER"]), old.as_bytes(), &[KIND_270], now()).await;
        let Ok(Err(Refused::Ta1 { note, body, .. })) = refused else { panic!("{refused:?}") };
        assert_eq!(note, "017");
        assert!(String::from_utf8_lossy(&body).contains("*R*017~"));
    }
}
