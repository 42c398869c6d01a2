//! Outbound envelopes and acknowledgments: ISA/GS/ST framing, TA1, and 999 (005010X231A1).

use time::OffsetDateTime;

use super::envelope::{Group, SetAck};
use super::isa::{Delimiters, IsaFields};
use super::writer::{fixed, X12Writer};

/// Guide version of the 999 this exchange emits.
pub const X231A1: &str = "005010X231A1";

/// Who an outbound interchange is from and to, and its control number.
#[derive(Debug, Clone)]
pub struct OutboundEnvelope {
    /// ISA05/ISA06 of the answer: the inbound receiver (us).
    pub sender: (String, String),
    /// ISA07/ISA08 of the answer: the inbound sender (the partner).
    pub receiver: (String, String),
    /// ISA13 (and the base of GS06): unique per trading partner, from the state store.
    pub control_number: u64,
    /// ISA15, echoed from the inbound interchange.
    pub usage: String,
    /// Time stamp for ISA09/ISA10 and GS04/GS05.
    pub now: OffsetDateTime,
}

impl OutboundEnvelope {
    /// The answer's envelope for an inbound interchange: sender and receiver swapped, usage echoed.
    pub fn answering(fields: &IsaFields, control_number: u64, now: OffsetDateTime) -> Self {
        let usage = if fields.usage == "P" || fields.usage == "T" { fields.usage.clone() } else { "P".to_owned() };
        OutboundEnvelope {
            sender: fields.receiver.clone(),
            receiver: fields.sender.clone(),
            control_number,
            usage,
            now,
        }
    }

    /// ISA13 as nine digits.
    pub fn isa13(&self) -> String {
        format!("{:09}", self.control_number % 1_000_000_000)
    }
}

/// `CCYYMMDD` of a time.
pub fn ccyymmdd(t: OffsetDateTime) -> String {
    format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day())
}

/// `HHMM` of a time.
pub fn hhmm(t: OffsetDateTime) -> String {
    format!("{:02}{:02}", t.hour(), t.minute())
}

/// Writes one outbound interchange: ISA, then groups, then IEA.
#[derive(Debug)]
pub struct InterchangeWriter {
    w: X12Writer,
    env: OutboundEnvelope,
    groups: usize,
    open_group: Option<(String, usize)>,
}

impl InterchangeWriter {
    /// Starts an interchange in `delimiters` and writes its ISA.
    pub fn new(delimiters: Delimiters, env: OutboundEnvelope) -> Self {
        // A damaged ISA can declare delimiters no answer should be written in (non-ASCII bytes): use the common ones.
        let usable = |b: u8| b.is_ascii() && !b.is_ascii_alphanumeric() && b != b' ';
        let delimiters = if [delimiters.element, delimiters.component, delimiters.segment]
            .into_iter()
            .chain(delimiters.repetition)
            .all(usable)
        {
            delimiters
        } else {
            Delimiters::default()
        };
        let mut w = X12Writer::new(delimiters).with_newlines(false);
        let e = char::from(delimiters.element);
        let rep = char::from(delimiters.repetition.unwrap_or(b'^'));
        let t = env.now;
        let isa = format!(
            "ISA{e}00{e}{}{e}00{e}{}{e}{}{e}{}{e}{}{e}{}{e}{:02}{:02}{:02}{e}{}{e}{rep}{e}00501{e}{}{e}0{e}{}{e}{}",
            fixed("", 10),
            fixed("", 10),
            fixed(&w.clean(&env.sender.0), 2),
            fixed(&w.clean(&env.sender.1), 15),
            fixed(&w.clean(&env.receiver.0), 2),
            fixed(&w.clean(&env.receiver.1), 15),
            t.year() % 100,
            u8::from(t.month()),
            t.day(),
            hhmm(t),
            env.isa13(),
            env.usage,
            char::from(delimiters.component),
        );
        w.raw_segment(isa.as_bytes());
        InterchangeWriter { w, env, groups: 0, open_group: None }
    }

    /// The envelope being written.
    pub fn envelope(&self) -> &OutboundEnvelope {
        &self.env
    }

    /// The underlying segment writer (for transaction set bodies).
    pub fn writer(&mut self) -> &mut X12Writer {
        &mut self.w
    }

    /// Writes a TA1 for the inbound interchange (allowed before the first GS).
    pub fn ta1(&mut self, inbound: &IsaFields, accepted: bool, note_code: &str) {
        let ack = if accepted { "A" } else { "R" };
        // TA102/TA103 echo the inbound ISA09/ISA10; when those are not digits (the reason for the TA1, perhaps),
        // zeros keep the TA1 itself well-formed.
        let digits = |s: &str, n: usize| {
            if s.len() == n && s.bytes().all(|b| b.is_ascii_digit()) {
                s.to_owned()
            } else {
                "0".repeat(n)
            }
        };
        let (date, time) = (digits(&inbound.date, 6), digits(&inbound.time, 4));
        self.w.segment("TA1", &[&digits(&inbound.control_number, 9), &date, &time, ack, note_code]);
    }

    /// Opens a functional group: GS with application codes swapped from the inbound group.
    pub fn begin_group(&mut self, functional_id: &str, app_sender: &str, app_receiver: &str, version: &str) {
        self.groups += 1;
        let gs06 = self.group_control_number();
        let t = self.env.now;
        let sender = self.w.clean(app_sender);
        let receiver = self.w.clean(app_receiver);
        self.w.segment("GS", &[functional_id, &sender, &receiver, &ccyymmdd(t), &hhmm(t), &gs06, "X", version]);
        self.open_group = Some((gs06, 0));
    }

    /// GS06 of the current group: the interchange control number with the group's ordinal appended
    /// when there is more than one group, so it stays unique per partner.
    fn group_control_number(&self) -> String {
        let base = self.env.control_number % 10_000_000;
        format!("{}{:02}", base, self.groups)
    }

    /// Opens a transaction set: writes ST and starts the segment count.
    pub fn begin_set(&mut self, set_id: &str, control_number: &str, version: &str) {
        self.w.start_count();
        self.w.segment("ST", &[set_id, control_number, version]);
    }

    /// Closes a transaction set: writes SE with the segment count.
    pub fn end_set(&mut self, control_number: &str) {
        let count = self.w.count() + 1;
        self.w.segment("SE", &[&count.to_string(), control_number]);
        if let Some((_, sets)) = self.open_group.as_mut() {
            *sets += 1;
        }
    }

    /// Closes the open functional group with GE.
    pub fn end_group(&mut self) {
        if let Some((gs06, sets)) = self.open_group.take() {
            self.w.segment("GE", &[&sets.to_string(), &gs06]);
        }
    }

    /// Writes IEA and returns the interchange bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.end_group();
        let isa13 = self.env.isa13();
        self.w.segment("IEA", &[&self.groups.to_string(), &isa13]);
        self.w.into_bytes()
    }
}

/// A TA1-only interchange answering an inbound interchange.
pub fn ta1_interchange(
    delimiters: Delimiters,
    inbound: &IsaFields,
    env: OutboundEnvelope,
    accepted: bool,
    note: &str,
) -> Vec<u8> {
    let mut iw = InterchangeWriter::new(delimiters, env);
    iw.ta1(inbound, accepted, note);
    iw.finish()
}

/// Which inbound groups get a 999.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acknowledge {
    /// Only groups with a rejected set (or rejected themselves): real-time flows, where the response set is the
    /// answer to an accepted one.
    Rejections,
    /// Every group: flows with no response transaction (the 275), where the 999 is the only answer.
    EveryGroup,
}

/// Writes the 999s of an answered interchange, one per inbound group that `which` names, together in one `FA`
/// group addressed like the first of them. `acks_per_group[i]` holds the acks of `groups[i]`'s sets;
/// `st_counter` numbers the sets of the outbound interchange and is advanced.
pub fn write_999_group(
    iw: &mut InterchangeWriter,
    groups: &[Group<'_>],
    acks_per_group: &[Vec<SetAck>],
    st_counter: &mut u32,
    which: Acknowledge,
) {
    let needs_999: Vec<usize> = groups
        .iter()
        .zip(acks_per_group)
        .enumerate()
        .filter(|(_, (g, acks))| {
            which == Acknowledge::EveryGroup || g.is_rejected() || acks.iter().any(SetAck::is_rejected)
        })
        .map(|(i, _)| i)
        .collect();
    let Some(first) = needs_999.first() else { return };
    let g = &groups[*first];
    iw.begin_group("FA", g.gs.text(3), g.gs.text(2), X231A1);
    for i in &needs_999 {
        *st_counter += 1;
        let acks: Vec<&SetAck> = acks_per_group[*i].iter().collect();
        write_999(iw, &format!("{st_counter:04}"), &groups[*i], &acks);
    }
    iw.end_group();
}

/// IK303, the loop identifier code of a segment in error (element 447, AN 1-4): the loop's number in the
/// transaction set diagram, which is the implementation guide's loop name without its letter (`2100C` and `2100D`
/// are both loop `2100`). Empty (IK303 is situational) for a segment outside any numbered loop: the header, the
/// trailer, or one the guide does not place.
pub fn loop_identifier_code(loop_id: &str) -> &str {
    let digits = loop_id.bytes().take_while(u8::is_ascii_digit).count();
    match loop_id.get(..digits) {
        Some(code) if digits == 4 => code,
        _ => "",
    }
}

/// Writes one 999 transaction set acknowledging `group`, with one `SetAck` per set of the group (same order).
/// Returns the AK901 code written (A, E, P or R).
pub fn write_999(iw: &mut InterchangeWriter, st_control: &str, group: &Group<'_>, acks: &[&SetAck]) -> &'static str {
    iw.begin_set("999", st_control, X231A1);
    let w = iw.writer();
    w.segment("AK1", &[group.functional_id(), group.control_number(), group.version()]);
    let received = group.sets.len();
    let mut accepted = 0;
    if !group.is_rejected() {
        for (set, ack) in group.sets.iter().zip(acks) {
            w.segment("AK2", &[set.set_id(), set.control_number(), set.version()]);
            for seg in &ack.segment_errors {
                let pos = seg.position.to_string();
                let loop_code = seg.loop_id.map_or("", loop_identifier_code);
                w.segment("IK3", &[seg.segment_id.as_str(), &pos, loop_code, seg.code]);
                for el in &seg.elements {
                    let position = w.composite(&[
                        el.position.to_string(),
                        el.component.map(|c| c.to_string()).unwrap_or_default(),
                        el.repetition.map(|r| r.to_string()).unwrap_or_default(),
                    ]);
                    let bad = el.bad_value.as_deref().map(|v| w.clean(v)).unwrap_or_default();
                    w.segment("IK4", &[position.as_str(), &el.data_element.to_string(), el.code, &bad]);
                }
            }
            if ack.is_rejected() {
                let mut codes: Vec<&str> = ack.set_codes.clone();
                if codes.is_empty() {
                    codes.push("5");
                }
                let mut els = vec!["R"];
                els.extend(codes.iter().take(5));
                w.segment("IK5", &els);
            } else {
                accepted += 1;
                w.segment("IK5", &["A"]);
            }
        }
    }
    let declared = group.ge.and_then(|ge| ge.text(1).parse::<usize>().ok()).unwrap_or(received).to_string();
    let code = if group.is_rejected() || accepted == 0 {
        "R"
    } else if accepted == received {
        "A"
    } else {
        "P"
    };
    let mut els: Vec<String> = vec![code.to_owned(), declared, received.to_string(), accepted.to_string()];
    els.extend(group.errors.iter().map(|c| (*c).to_owned()));
    w.segment("AK9", &els);
    iw.end_set(st_control);
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ik303_is_the_numeric_loop_identifier_of_the_guides_loop_name() {
        for (guide_loop, code) in [("2100C", "2100"), ("2010EC", "2010"), ("2000E", "2000"), ("2120", "2120")] {
            assert_eq!(loop_identifier_code(guide_loop), code);
        }
        for outside in ["HEADER", "UNKNOWN", "270", "HL", "", "21000"] {
            assert_eq!(loop_identifier_code(outside), "", "{outside}");
        }
    }
}
