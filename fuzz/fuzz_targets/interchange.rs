//! Envelope parsing, 005010X279A1 guide validation of every set, and the 999 / TA1 answer, over arbitrary bytes.

#![no_main]

use exchange_core::x12::ack::{ta1_interchange, write_999, InterchangeWriter, OutboundEnvelope};
use exchange_core::x12::envelope::{parse_interchange, SetAck};
use exchange_core::x12::guide::{self, x279a1};
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

fuzz_target!(|data: &[u8]| {
    let now = OffsetDateTime::UNIX_EPOCH;
    match parse_interchange(data, &[x279a1::KIND_270]) {
        Ok(ic) => {
            let fields = ic.fields();
            let mut iw = InterchangeWriter::new(ic.delimiters, OutboundEnvelope::answering(&fields, 42, now));
            if ic.ack_requested() {
                iw.ta1(&fields, true, "000");
            }
            iw.begin_group("FA", "RECEIVER", "SENDER", "005010X231A1");
            for (i, group) in ic.groups.iter().enumerate() {
                let mut acks: Vec<SetAck> = Vec::with_capacity(group.sets.len());
                for set in &group.sets {
                    let mut ack = set.ack.clone();
                    let located = guide::validate(&x279a1::GUIDE_270, &set.body, &mut ack);
                    assert_eq!(located.len(), set.body.len());
                    acks.push(ack);
                }
                let refs: Vec<&SetAck> = acks.iter().collect();
                write_999(&mut iw, &format!("{:04}", i + 1), group, &refs);
            }
            iw.end_group();
            let _ = iw.finish();
        }
        Err(rej) => {
            assert!(rej.error.offset <= data.len(), "offset {} past {}", rej.error.offset, data.len());
            if let Some(fields) = &rej.fields {
                let env = OutboundEnvelope::answering(fields, 42, now);
                let _ = ta1_interchange(rej.delimiters, fields, env, false, rej.note_code);
            }
        }
    }
});
