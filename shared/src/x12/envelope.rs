//! Envelope structure and checks: ISA/IEA, GS/GE, ST/SE.
//!
//! [`parse_interchange`] splits an interchange into functional groups and transaction sets and applies the envelope
//! rules. Interchange-level faults reject the whole interchange ([`Ta1Rejection`], answered with a TA1). Group and
//! set faults are recorded on the group or set (answered in a 999) so that good sets of the same group are still
//! processed.

use std::collections::HashSet;

use super::error::{X12Error, X12ErrorKind};
use super::isa::{self, Delimiters, IsaFields};
use super::tokenizer::{Segment, Tokenizer};

/// A transaction set this exchange accepts on an endpoint: functional identifier, set id and guide version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetKind {
    /// GS01 functional identifier code (`HS` for 270).
    pub functional_id: &'static str,
    /// ST01 transaction set identifier (`270`).
    pub set_id: &'static str,
    /// GS08 / ST03 implementation convention reference (`005010X279A1`).
    pub version: &'static str,
}

/// One IK4 element error of a 999.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementError {
    /// IK401-1: element position in the segment (1-based).
    pub position: usize,
    /// IK401-2: component position, for composite errors.
    pub component: Option<usize>,
    /// IK401-3: repetition position, for repeated elements.
    pub repetition: Option<usize>,
    /// IK402: data element reference number.
    pub data_element: u16,
    /// IK403: implementation data element syntax error code (1 missing, 4 too short, 5 too long, 6 invalid
    /// character, 7 invalid code value, 8 invalid date, 9 invalid time, I10 not used element present, ...).
    pub code: &'static str,
    /// IK404: copy of the bad data element; only ever set for code values (never PHI).
    pub bad_value: Option<String>,
}

/// One IK3 segment error of a 999, with its element errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentError {
    /// IK301: segment id.
    pub segment_id: String,
    /// IK302: position of the segment in the set (ST = 1).
    pub position: usize,
    /// IK303: loop identifier (e.g. `2100C`), when known.
    pub loop_id: Option<&'static str>,
    /// IK304: implementation segment syntax error code (1 unrecognized, 2 unexpected, 3 required missing,
    /// 4 loop over maximum, 5 segment over maximum use, 8 has element errors, I4 not-used segment present, ...).
    pub code: &'static str,
    /// IK4 errors of this segment.
    pub elements: Vec<ElementError>,
}

/// The acknowledgment of one transaction set: IK3/IK4 details and IK5 codes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetAck {
    /// Segment-level errors.
    pub segment_errors: Vec<SegmentError>,
    /// IK502..IK506 codes (1 not supported, 2 trailer missing, 3 control numbers disagree, 4 segment count wrong,
    /// 5 segments in error, 6 bad set identifier, 7 bad control number, 23 duplicate control number,
    /// I5 implementation segments in error, I6 implementation convention not supported).
    pub set_codes: Vec<&'static str>,
}

impl SetAck {
    /// Whether the set is rejected.
    pub fn is_rejected(&self) -> bool {
        !self.segment_errors.is_empty() || !self.set_codes.is_empty()
    }

    /// Adds a set-level code once.
    pub fn add_code(&mut self, code: &'static str) {
        if !self.set_codes.contains(&code) && self.set_codes.len() < 5 {
            self.set_codes.push(code);
        }
    }
}

/// One transaction set (ST..SE).
#[derive(Debug, Clone)]
pub struct TransactionSet<'a> {
    /// The ST segment.
    pub st: Segment<'a>,
    /// Segments between ST and SE.
    pub body: Vec<Segment<'a>>,
    /// The SE segment, when present.
    pub se: Option<Segment<'a>>,
    /// The kind this set was recognized as, when supported here.
    pub kind: Option<SetKind>,
    /// Envelope and syntax errors found so far (the guide layer adds its own).
    pub ack: SetAck,
}

impl<'a> TransactionSet<'a> {
    /// ST01.
    pub fn set_id(&self) -> &'a str {
        self.st.text(1)
    }

    /// ST02.
    pub fn control_number(&self) -> &'a str {
        self.st.text(2)
    }

    /// ST03 (implementation convention reference).
    pub fn version(&self) -> &'a str {
        self.st.text(3)
    }
}

/// One functional group (GS..GE).
#[derive(Debug, Clone)]
pub struct Group<'a> {
    /// The GS segment.
    pub gs: Segment<'a>,
    /// Its transaction sets.
    pub sets: Vec<TransactionSet<'a>>,
    /// The GE segment, when present.
    pub ge: Option<Segment<'a>>,
    /// AK904..AK908 codes for group-level faults (1 not supported, 2 version not supported, 3 trailer missing,
    /// 4 control numbers disagree, 5 set count wrong, 6 control number syntax).
    pub errors: Vec<&'static str>,
}

impl<'a> Group<'a> {
    /// GS01.
    pub fn functional_id(&self) -> &'a str {
        self.gs.text(1)
    }

    /// GS06.
    pub fn control_number(&self) -> &'a str {
        self.gs.text(6)
    }

    /// GS08.
    pub fn version(&self) -> &'a str {
        self.gs.text(8)
    }

    /// Whether the whole group is rejected (AK9 R without processing its sets).
    pub fn is_rejected(&self) -> bool {
        !self.errors.is_empty()
    }
}

/// A parsed interchange.
#[derive(Debug, Clone)]
pub struct Interchange<'a> {
    /// Delimiters read from the ISA.
    pub delimiters: Delimiters,
    /// The ISA segment.
    pub isa: Segment<'a>,
    /// The functional groups.
    pub groups: Vec<Group<'a>>,
}

impl<'a> Interchange<'a> {
    /// ISA05/ISA06, trimmed.
    pub fn sender(&self) -> (&'a str, &'a str) {
        (self.isa.trimmed(5), self.isa.trimmed(6))
    }

    /// ISA07/ISA08, trimmed.
    pub fn receiver(&self) -> (&'a str, &'a str) {
        (self.isa.trimmed(7), self.isa.trimmed(8))
    }

    /// ISA13.
    pub fn control_number(&self) -> &'a str {
        self.isa.text(13)
    }

    /// ISA14 = 1: the sender asks for a TA1.
    pub fn ack_requested(&self) -> bool {
        self.isa.text(14) == "1"
    }

    /// ISA15 usage indicator (`P` production, `T` test).
    pub fn usage(&self) -> &'a str {
        self.isa.text(15)
    }

    /// The header fields as owned values (for writing a TA1).
    pub fn fields(&self) -> IsaFields {
        IsaFields {
            sender: (self.sender().0.to_owned(), self.sender().1.to_owned()),
            receiver: (self.receiver().0.to_owned(), self.receiver().1.to_owned()),
            date: self.isa.text(9).to_owned(),
            time: self.isa.text(10).to_owned(),
            version: self.isa.text(12).to_owned(),
            control_number: self.control_number().to_owned(),
            ack_requested: self.isa.text(14).to_owned(),
            usage: self.usage().to_owned(),
        }
    }

    /// Every transaction set, in order.
    pub fn sets(&self) -> impl Iterator<Item = &TransactionSet<'a>> {
        self.groups.iter().flat_map(|g| g.sets.iter())
    }
}

/// Why a whole interchange was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ta1Rejection {
    /// TA105 interchange note code.
    pub note_code: &'static str,
    /// The header fields, when they could be read (without them no TA1 can be addressed).
    pub fields: Option<IsaFields>,
    /// Delimiters to answer in (the partner's when readable).
    pub delimiters: Delimiters,
    /// The underlying error, for logs.
    pub error: X12Error,
}

/// Maps a tokenizer error found in the ISA to a TA105 note code.
fn note_code_for(kind: X12ErrorKind) -> &'static str {
    match kind {
        X12ErrorKind::UnsupportedVersion => "017",
        X12ErrorKind::DelimiterCollision => "026",
        X12ErrorKind::Truncated => "023",
        X12ErrorKind::Empty | X12ErrorKind::NotX12 | X12ErrorKind::IsaMalformed => "022",
        X12ErrorKind::InvalidSegmentId | X12ErrorKind::BinaryLengthInvalid | X12ErrorKind::BinaryLengthMismatch => {
            "024"
        }
    }
}

fn reject(input: &[u8], error: X12Error, note_code: &'static str, delimiters: Delimiters) -> Box<Ta1Rejection> {
    Box::new(Ta1Rejection { note_code, fields: isa::salvage_fields(input), delimiters, error })
}

fn is_digits(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// ISA element checks beyond the fixed shape: each failure has its own TA105 code.
fn check_isa_fields(isa: &Segment<'_>) -> Option<&'static str> {
    const ID_QUALIFIERS: &[&str] =
        &["01", "14", "20", "27", "28", "29", "30", "33", "ZZ", "02", "04", "08", "09", "12", "16"];
    let checks: [(bool, &'static str); 10] = [
        (matches!(isa.text(1), "00" | "03"), "010"),
        (matches!(isa.text(3), "00" | "01"), "012"),
        (ID_QUALIFIERS.contains(&isa.text(5)), "005"),
        (!isa.trimmed(6).is_empty(), "006"),
        (ID_QUALIFIERS.contains(&isa.text(7)), "007"),
        (!isa.trimmed(8).is_empty(), "008"),
        (is_digits(isa.text(9), 6, 6) && valid_yymmdd(isa.text(9)), "014"),
        (is_digits(isa.text(10), 4, 4) && valid_hhmm(isa.text(10)), "015"),
        (is_digits(isa.text(13), 9, 9), "018"),
        (matches!(isa.text(14), "0" | "1"), "019"),
    ];
    if let Some((_, code)) = checks.iter().find(|(ok, _)| !ok) {
        return Some(code);
    }
    if !matches!(isa.text(15), "P" | "T") {
        return Some("020");
    }
    None
}

fn valid_yymmdd(s: &str) -> bool {
    let m: u32 = s[2..4].parse().unwrap_or(0);
    let d: u32 = s[4..6].parse().unwrap_or(0);
    (1..=12).contains(&m) && (1..=31).contains(&d)
}

fn valid_hhmm(s: &str) -> bool {
    let h: u32 = s[0..2].parse().unwrap_or(99);
    let m: u32 = s[2..4].parse().unwrap_or(99);
    h < 24 && m < 60
}

/// Finds where to resume after a syntax error inside a transaction set: the start of the next `SE` segment.
fn resync_to_se(input: &[u8], from: usize, d: Delimiters) -> Option<usize> {
    let mut i = from;
    while i + 3 < input.len() {
        let at = memchr::memchr(d.segment, &input[i..])? + i;
        let mut j = at + 1;
        while input.get(j).is_some_and(|b| b.is_ascii_whitespace()) {
            j += 1;
        }
        if input.get(j..j + 3) == Some(&[b'S', b'E', d.element][..]) {
            return Some(j);
        }
        i = at + 1;
    }
    None
}

/// The IK3/IK4 error for a tokenizer error inside a set.
fn syntax_error_in_set(err: &X12Error, input: &[u8], set_position: usize) -> SegmentError {
    let id_end = input[err.offset.min(input.len())..].iter().take(3).take_while(|b| b.is_ascii_alphanumeric()).count();
    let at_segment_start = matches!(err.kind, X12ErrorKind::InvalidSegmentId);
    let segment_id = if at_segment_start {
        String::from_utf8_lossy(&input[err.offset..err.offset + id_end]).into_owned()
    } else {
        // Binary errors are reported at the BIN/BDS segment: find its id before the offset.
        binary_segment_id(input, err.offset).to_owned()
    };
    let elements = match err.kind {
        X12ErrorKind::BinaryLengthInvalid => vec![ElementError {
            position: if segment_id == "BDS" { 2 } else { 1 },
            component: None,
            repetition: None,
            data_element: 784,
            code: "6",
            bad_value: None,
        }],
        X12ErrorKind::BinaryLengthMismatch => vec![ElementError {
            position: if segment_id == "BDS" { 3 } else { 2 },
            component: None,
            repetition: None,
            data_element: 785,
            code: "5",
            bad_value: None,
        }],
        _ => Vec::new(),
    };
    SegmentError {
        segment_id: if segment_id.is_empty() { "UNK".to_owned() } else { segment_id },
        position: set_position,
        loop_id: None,
        code: if elements.is_empty() { "1" } else { "8" },
        elements,
    }
}

fn binary_segment_id(input: &[u8], offset: usize) -> &'static str {
    let window = &input[offset.saturating_sub(32)..offset.min(input.len())];
    if memchr::memmem::rfind(window, b"BDS").is_some() {
        "BDS"
    } else {
        "BIN"
    }
}

/// Parses and checks an interchange. `supported` lists the transaction sets this endpoint answers; a group or set
/// of any other kind is rejected in the 999 (not the TA1).
pub fn parse_interchange<'a>(input: &'a [u8], supported: &[SetKind]) -> Result<Interchange<'a>, Box<Ta1Rejection>> {
    let mut tok = match Tokenizer::new(input) {
        Ok(t) => t,
        Err(e) => return Err(reject(input, e, note_code_for(e.kind), Delimiters::default())),
    };
    let d = tok.delimiters();
    let isa = match tok.next() {
        Some(Ok(seg)) if seg.is("ISA") => seg,
        Some(Err(e)) => return Err(reject(input, e, note_code_for(e.kind), d)),
        _ => return Err(reject(input, X12Error::new(X12ErrorKind::NotX12, 0, 0), "022", d)),
    };
    if let Some(code) = check_isa_fields(&isa) {
        return Err(reject(input, X12Error::new(X12ErrorKind::IsaMalformed, 0, isa.offset), code, d));
    }

    let mut groups: Vec<Group<'a>> = Vec::new();
    let mut current_set: Option<TransactionSet<'a>> = None;
    let mut in_group = false;
    let mut iea: Option<Segment<'a>> = None;
    // ST02s of the current group, for the duplicate check (IK5 23) in constant time per set.
    let mut st02s: HashSet<&'a str> = HashSet::new();

    loop {
        let seg = match tok.next() {
            None => break,
            Some(Ok(seg)) => seg,
            Some(Err(e)) => {
                // Inside a set: that set is rejected; resynchronize on its SE and go on with the others.
                if let Some(set) = current_set.as_mut() {
                    let position = set.body.len() + 2;
                    set.ack.segment_errors.push(syntax_error_in_set(&e, input, position));
                    set.ack.add_code("5");
                    match resync_to_se(input, e.offset, d) {
                        Some(pos) => {
                            tok.resume_at(pos);
                            continue;
                        }
                        None => return Err(reject(input, e, "023", d)),
                    }
                }
                return Err(reject(input, e, note_code_for(e.kind), d));
            }
        };
        if iea.is_some() {
            // Content after IEA.
            return Err(reject(input, X12Error::new(X12ErrorKind::InvalidSegmentId, seg.index, seg.offset), "024", d));
        }
        match seg.id {
            b"GS" => {
                if let Some(set) = current_set.take() {
                    close_set_without_se(&mut groups, set);
                }
                if in_group {
                    if let Some(g) = groups.last_mut() {
                        push_once(&mut g.errors, "3");
                    }
                }
                st02s.clear();
                let mut group = Group { gs: seg, sets: Vec::new(), ge: None, errors: Vec::new() };
                check_group_header(&mut group, supported);
                if groups.iter().any(|earlier| earlier.control_number() == group.control_number()) {
                    // The sender's mistake, not a second copy to process: the repeated group is rejected whole
                    // (AK905 19, functional group control number not unique within the interchange).
                    push_once(&mut group.errors, "19");
                }
                groups.push(group);
                in_group = true;
            }
            b"ST" => {
                if !in_group {
                    return Err(reject(
                        input,
                        X12Error::new(X12ErrorKind::InvalidSegmentId, seg.index, seg.offset),
                        "024",
                        d,
                    ));
                }
                if let Some(set) = current_set.take() {
                    // A set without SE still claims its ST02 in this group.
                    st02s.insert(set.control_number());
                    close_set_without_se(&mut groups, set);
                }
                current_set =
                    Some(TransactionSet { st: seg, body: Vec::new(), se: None, kind: None, ack: SetAck::default() });
            }
            b"SE" => match current_set.take() {
                Some(mut set) => {
                    set.se = Some(seg);
                    if let Some(g) = groups.last_mut() {
                        check_set_envelope(&mut set, g, supported, &mut st02s);
                        g.sets.push(set);
                    }
                }
                None => {
                    return Err(reject(
                        input,
                        X12Error::new(X12ErrorKind::InvalidSegmentId, seg.index, seg.offset),
                        "024",
                        d,
                    ))
                }
            },
            b"GE" => {
                if let Some(set) = current_set.take() {
                    close_set_without_se(&mut groups, set);
                }
                match groups.last_mut() {
                    Some(g) if in_group => {
                        g.ge = Some(seg);
                        check_group_trailer(g);
                        in_group = false;
                    }
                    _ => {
                        return Err(reject(
                            input,
                            X12Error::new(X12ErrorKind::InvalidSegmentId, seg.index, seg.offset),
                            "024",
                            d,
                        ))
                    }
                }
            }
            b"IEA" => {
                if let Some(set) = current_set.take() {
                    close_set_without_se(&mut groups, set);
                }
                if in_group {
                    if let Some(g) = groups.last_mut() {
                        push_once(&mut g.errors, "3");
                    }
                }
                iea = Some(seg);
            }
            b"ISA" => {
                return Err(reject(
                    input,
                    X12Error::new(X12ErrorKind::InvalidSegmentId, seg.index, seg.offset),
                    "024",
                    d,
                ))
            }
            _ => match current_set.as_mut() {
                Some(set) => set.body.push(seg),
                None => {
                    // TA1 is allowed between ISA and the first GS; anything else outside a set is not.
                    if !(seg.is("TA1") && groups.is_empty()) {
                        return Err(reject(
                            input,
                            X12Error::new(X12ErrorKind::InvalidSegmentId, seg.index, seg.offset),
                            "024",
                            d,
                        ));
                    }
                }
            },
        }
    }

    let Some(iea) = iea else {
        return Err(reject(input, X12Error::new(X12ErrorKind::Truncated, tok.position(), input.len()), "023", d));
    };
    if iea.text(2) != isa.text(13) {
        return Err(reject(input, X12Error::new(X12ErrorKind::IsaMalformed, iea.index, iea.offset), "001", d));
    }
    if iea.text(1).parse::<usize>().ok() != Some(groups.len()) {
        return Err(reject(input, X12Error::new(X12ErrorKind::IsaMalformed, iea.index, iea.offset), "021", d));
    }
    Ok(Interchange { delimiters: d, isa, groups })
}

fn push_once(codes: &mut Vec<&'static str>, code: &'static str) {
    if !codes.contains(&code) && codes.len() < 5 {
        codes.push(code);
    }
}

fn close_set_without_se<'a>(groups: &mut [Group<'a>], mut set: TransactionSet<'a>) {
    set.ack.add_code("2");
    if let Some(g) = groups.last_mut() {
        g.sets.push(set);
    }
}

fn check_group_header(group: &mut Group<'_>, supported: &[SetKind]) {
    let fid = group.functional_id();
    if !supported.iter().any(|k| k.functional_id == fid) {
        push_once(&mut group.errors, "1");
    } else if !supported.iter().any(|k| k.functional_id == fid && k.version == group.version()) {
        push_once(&mut group.errors, "2");
    }
    if !is_digits(group.control_number(), 1, 9) {
        push_once(&mut group.errors, "6");
    }
}

fn check_group_trailer(group: &mut Group<'_>) {
    let Some(ge) = group.ge else { return };
    if ge.text(2) != group.control_number() {
        push_once(&mut group.errors, "4");
    }
    if ge.text(1).parse::<usize>().ok() != Some(group.sets.len()) {
        push_once(&mut group.errors, "5");
    }
}

fn check_set_envelope<'a>(
    set: &mut TransactionSet<'a>,
    group: &Group<'a>,
    supported: &[SetKind],
    st02s: &mut HashSet<&'a str>,
) {
    let set_id = set.set_id();
    let control = set.control_number();
    // A set may be supported in more than one guide version: the one the group names, else the first.
    let kind = supported
        .iter()
        .find(|k| k.set_id == set_id && k.version == group.version())
        .or_else(|| supported.iter().find(|k| k.set_id == set_id));
    match kind {
        None => set.ack.add_code("1"),
        Some(kind) if kind.functional_id != group.functional_id() => set.ack.add_code("6"),
        Some(kind) => {
            let st03 = set.version();
            if (!st03.is_empty() && st03 != kind.version) || group.version() != kind.version {
                set.ack.add_code("I6");
            } else {
                set.kind = Some(*kind);
            }
        }
    }
    if !(4..=9).contains(&control.len()) || !control.bytes().all(|b| b.is_ascii_alphanumeric()) {
        set.ack.add_code("7");
    }
    if !st02s.insert(control) {
        set.ack.add_code("23");
    }
    if let Some(se) = set.se {
        if se.text(2) != control {
            set.ack.add_code("3");
        }
        if se.text(1).parse::<usize>().ok() != Some(set.body.len() + 2) {
            set.ack.add_code("4");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: &[SetKind] = &[SetKind { functional_id: "HS", set_id: "270", version: "005010X279A1" }];
    const ISA: &str =
        "ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *260412*1230*^*00501*000000001*0*T*:~";

    fn interchange(sets: &[&str], ge_count: usize) -> String {
        let mut s = format!("{ISA}GS*HS*S*R*20260412*1230*7*X*005010X279A1~");
        for body in sets {
            s.push_str(body);
        }
        s.push_str(&format!("GE*{ge_count}*7~IEA*1*000000001~"));
        s
    }

    const GOOD: &str = "ST*270*0001*005010X279A1~BHT*0022*13*1*20260412*1230~SE*3*0001~";

    #[test]
    fn parses_groups_and_sets() {
        let input = interchange(&[GOOD, &GOOD.replace("0001", "0002")], 2);
        let ic = parse_interchange(input.as_bytes(), KINDS).unwrap();
        assert_eq!(ic.groups.len(), 1);
        assert_eq!(ic.groups[0].sets.len(), 2);
        assert!(ic.sets().all(|s| !s.ack.is_rejected() && s.kind.is_some()));
    }

    #[test]
    fn set_trailer_faults_reject_only_that_set() {
        let bad_count = "ST*270*0002*005010X279A1~BHT*0022*13*1*20260412*1230~SE*9*0002~";
        let bad_ctl = "ST*270*0003*005010X279A1~BHT*0022*13*1*20260412*1230~SE*3*0033~";
        let input = interchange(&[GOOD, bad_count, bad_ctl], 3);
        let ic = parse_interchange(input.as_bytes(), KINDS).unwrap();
        let sets = &ic.groups[0].sets;
        assert!(!sets[0].ack.is_rejected());
        assert_eq!(sets[1].ack.set_codes, vec!["4"]);
        assert_eq!(sets[2].ack.set_codes, vec!["3"]);
    }

    #[test]
    fn group_faults() {
        let input = interchange(&[GOOD], 2);
        let ic = parse_interchange(input.as_bytes(), KINDS).unwrap();
        assert_eq!(ic.groups[0].errors, vec!["5"]);
        let input = interchange(&[GOOD], 1).replace("GE*1*7", "GE*1*8");
        let ic = parse_interchange(input.as_bytes(), KINDS).unwrap();
        assert_eq!(ic.groups[0].errors, vec!["4"]);
    }

    #[test]
    fn a_repeated_group_control_number_rejects_the_repeated_group() {
        let group = "GS*HS*S*R*20260412*1000*7*X*005010X279A1~ST*270*0001*005010X279A1~BHT*0022*13*1*20260412*1000~SE*3*0001~GE*1*7~";
        let text = format!(
            "ISA*00*          *00*          *ZZ*S              *ZZ*R              *260412*1000*^*00501*000000001*0*T*:~{group}{group}IEA*2*000000001~"
        );
        let kinds = [SetKind { functional_id: "HS", set_id: "270", version: "005010X279A1" }];
        let ic = parse_interchange(text.as_bytes(), &kinds).expect("parses");
        assert_eq!(ic.groups.len(), 2);
        assert!(ic.groups[0].errors.is_empty(), "{:?}", ic.groups[0].errors);
        assert_eq!(ic.groups[1].errors, vec!["19"]);
    }

    #[test]
    fn unsupported_set_and_mismatched_functional_id() {
        let other = "ST*278*0002*005010X217~SE*2*0002~";
        let input = interchange(&[GOOD, other], 2);
        let ic = parse_interchange(input.as_bytes(), KINDS).unwrap();
        assert_eq!(ic.groups[0].sets[1].ack.set_codes, vec!["1"]);
        let hb = interchange(&[GOOD], 1).replace("GS*HS", "GS*HB");
        let ic = parse_interchange(hb.as_bytes(), KINDS).unwrap();
        assert_eq!(ic.groups[0].errors, vec!["1"]);
    }

    #[test]
    fn interchange_faults_are_ta1() {
        let input = interchange(&[GOOD], 1);
        let bad_iea = input.replace("IEA*1*000000001", "IEA*1*000000002");
        assert_eq!(parse_interchange(bad_iea.as_bytes(), KINDS).unwrap_err().note_code, "001");
        let bad_count = input.replace("IEA*1*", "IEA*2*");
        assert_eq!(parse_interchange(bad_count.as_bytes(), KINDS).unwrap_err().note_code, "021");
        let truncated = &input[..input.len() - 20];
        let err = parse_interchange(truncated.as_bytes(), KINDS).unwrap_err();
        assert_eq!(err.note_code, "023");
        assert_eq!(err.fields.unwrap().control_number, "000000001");
        let bad_usage = input.replacen("*0*T*", "*0*X*", 1);
        assert_eq!(parse_interchange(bad_usage.as_bytes(), KINDS).unwrap_err().note_code, "020");
    }

    #[test]
    fn binary_error_inside_a_set_rejects_that_set_and_resyncs() {
        let bin = "ST*270*0002*005010X279A1~BIN*11a*hello~world~SE*3*0002~";
        let input = interchange(&[GOOD, bin, &GOOD.replace("0001", "0003")], 3);
        let ic = parse_interchange(input.as_bytes(), KINDS).unwrap();
        let sets = &ic.groups[0].sets;
        assert_eq!(sets.len(), 3);
        assert!(!sets[0].ack.is_rejected());
        let err = &sets[1].ack.segment_errors[0];
        assert_eq!(err.segment_id, "BIN");
        assert_eq!(err.elements[0].data_element, 784);
        assert!(!sets[2].ack.is_rejected());
    }
}
