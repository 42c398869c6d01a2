//! The table-driven implementation-guide layer.
//!
//! A guide ([`TransactionGuide`]) describes a transaction set as HL levels (2000A/B/C/D), each with its name loop
//! (2100x), its detail loop (2110x, started by EQ or EB) and, inside a detail loop, bracketed LS/LE loops (2120x).
//! Each loop lists its segments with usage, maximum use and element rules (usage, type, length, code list).
//! [`validate`] walks a set's segments once, assigns every segment to its loop, and collects 999 IK3/IK4 errors.

pub mod x217;
pub mod x279a1;

use super::envelope::{ElementError, SegmentError, SetAck};
use super::tokenizer::Segment;

/// Implementation usage of a segment or element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// Must be present.
    Required,
    /// May be present.
    Situational,
    /// Must not be present.
    NotUsed,
}

/// Data element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// Identifier (a code).
    Id,
    /// Alphanumeric string.
    An,
    /// Integer (N0).
    N0,
    /// Decimal number.
    R,
    /// Date CCYYMMDD.
    Dt,
    /// Time HHMM[SS[d..]].
    Tm,
    /// A date or date range whose format is named by the previous element (D8 / RD8).
    DateByFormat,
    /// Composite: content checked only for presence.
    Composite,
}

/// One element's rule.
#[derive(Debug, Clone, Copy)]
pub struct ElementRule {
    /// Position in the segment (1-based).
    pub pos: u8,
    /// Data element reference number (IK402).
    pub de: u16,
    /// Usage.
    pub usage: Usage,
    /// Type.
    pub ty: DataType,
    /// Minimum length.
    pub min: u16,
    /// Maximum length.
    pub max: u16,
    /// Allowed codes (empty: any).
    pub codes: &'static [&'static str],
    /// Whether the element repeats (its repetitions are checked one by one).
    pub repeats: bool,
}

/// Shorthand constructor for element rules in the guide tables.
pub const fn el(
    pos: u8,
    de: u16,
    usage: Usage,
    ty: DataType,
    min: u16,
    max: u16,
    codes: &'static [&'static str],
) -> ElementRule {
    ElementRule { pos, de, usage, ty, min, max, codes, repeats: false }
}

/// A repeating element rule.
pub const fn rep(
    pos: u8,
    de: u16,
    usage: Usage,
    ty: DataType,
    min: u16,
    max: u16,
    codes: &'static [&'static str],
) -> ElementRule {
    ElementRule { pos, de, usage, ty, min, max, codes, repeats: true }
}

/// One segment's rule within a loop.
#[derive(Debug, Clone, Copy)]
pub struct SegmentRule {
    /// Segment id.
    pub id: &'static str,
    /// Usage within the loop.
    pub usage: Usage,
    /// Maximum use within one loop instance.
    pub max_use: u16,
    /// Highest element position allowed.
    pub max_elements: u8,
    /// Element rules.
    pub elements: &'static [ElementRule],
}

/// Shorthand constructor for segment rules.
pub const fn seg(
    id: &'static str,
    usage: Usage,
    max_use: u16,
    max_elements: u8,
    elements: &'static [ElementRule],
) -> SegmentRule {
    SegmentRule { id, usage, max_use, max_elements, elements }
}

/// One loop: an id and its segments in order (the first is the loop's trigger).
#[derive(Debug, Clone, Copy)]
pub struct LoopRule {
    /// Loop id (`2100C`).
    pub id: &'static str,
    /// Segments.
    pub segments: &'static [SegmentRule],
}

/// One HL level: its 2000 loop, the 2100 name loop, the 2110 detail loop and the bracketed 2115/2120 loops.
#[derive(Debug, Clone, Copy)]
pub struct LevelRule {
    /// HL03 hierarchical level code (`20`, `21`, `22`, `23`).
    pub level_code: &'static str,
    /// The 2000 loop (HL and what follows it before the name loop).
    pub hl_loop: LoopRule,
    /// The 2100 loop (starts with NM1).
    pub name_loop: LoopRule,
    /// The 2110 loop (starts with EQ or EB), when the level has one.
    pub detail_loop: Option<LoopRule>,
    /// The LS/LE bracketed loop inside the detail loop (2120), when the level has one.
    pub bracket_loop: Option<LoopRule>,
    /// Whether the level must occur at least once.
    pub required: bool,
    /// How many name loops (each started by NM1) one level may hold: 1 in 270/271, several for 278's 2010E/2010F.
    pub max_name_loops: u16,
}

/// A whole transaction set guide.
#[derive(Debug, Clone, Copy)]
pub struct TransactionGuide {
    /// ST01.
    pub set_id: &'static str,
    /// Header segments after ST (BHT).
    pub header: LoopRule,
    /// HL levels.
    pub levels: &'static [LevelRule],
}

/// A segment with the loop it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Located<'a> {
    /// Loop id (`HEADER`, `2000A`, `2100C`, `2110C`, `2120C`, ...).
    pub loop_id: &'static str,
    /// The segment.
    pub segment: Segment<'a>,
    /// Position in the set (ST = 1).
    pub position: usize,
    /// HL01 of the level the segment belongs to (0 for the header).
    pub hl_id: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Hl,
    Name,
    Detail,
    Bracket,
}

struct Walker<'g> {
    rule: &'g LevelRule,
    part: Part,
    /// Segment counts of the open instance of each part (indexed by `Part as usize`).
    counts: [Vec<(&'static str, u16)>; 4],
    /// Name loops opened in this level.
    name_loops: u16,
}

/// Validates a set's body (the segments between ST and SE) against `guide`, adding IK3/IK4 errors to `ack`.
/// Returns every segment with its loop, for the flow to read.
pub fn validate<'a>(guide: &TransactionGuide, body: &[Segment<'a>], ack: &mut SetAck) -> Vec<Located<'a>> {
    let mut out = Vec::with_capacity(body.len());
    let mut header_counts: Vec<(&'static str, u16)> = Vec::new();
    let mut walker: Option<Walker<'_>> = None;
    let mut hl_ids: Vec<usize> = Vec::new();
    let mut expected_hl = 1usize;
    let mut hl_id = 0usize;
    let mut levels_seen: Vec<&'static str> = Vec::new();

    for (i, s) in body.iter().enumerate() {
        let position = i + 2;
        let id = s.id_str();
        if id == "HL" {
            if let Some(w) = walker.take() {
                close_open_loops(&w, position, ack);
            } else {
                check_required(&guide.header, &header_counts, position, ack);
            }
            let level = s.text(3);
            let Some(rule) = guide.levels.iter().find(|l| l.level_code == level) else {
                let mut err = segment_error(s, position, None, "8");
                err.elements.push(ElementError {
                    position: 3,
                    component: None,
                    repetition: None,
                    data_element: 735,
                    code: "7",
                    bad_value: Some(level.to_owned()),
                });
                push(ack, err);
                out.push(Located { loop_id: "UNKNOWN", segment: *s, position, hl_id });
                continue;
            };
            // HL01 counts up from 1; HL02 names an earlier HL.
            let this_id: usize = s.text(1).parse().unwrap_or(0);
            let parent = s.text(2);
            let mut hl_errors = Vec::new();
            if this_id != expected_hl {
                hl_errors.push(el_err(1, 628, "7", None));
            }
            if !parent.is_empty() && !parent.parse::<usize>().is_ok_and(|p| hl_ids.contains(&p)) {
                hl_errors.push(el_err(2, 734, "7", None));
            }
            if !hl_errors.is_empty() {
                let mut err = segment_error(s, position, Some(rule.hl_loop.id), "8");
                err.elements = hl_errors;
                push(ack, err);
            }
            expected_hl = this_id + 1;
            hl_ids.push(this_id);
            hl_id = this_id;
            levels_seen.push(rule.level_code);
            let mut w = Walker { rule, part: Part::Hl, counts: Default::default(), name_loops: 0 };
            check_segment(&rule.hl_loop, s, position, &mut w.counts[Part::Hl as usize], ack);
            out.push(Located { loop_id: rule.hl_loop.id, segment: *s, position, hl_id });
            walker = Some(w);
            continue;
        }
        let Some(w) = walker.as_mut() else {
            // Header.
            if guide.header.segments.iter().any(|r| r.id == id) {
                check_segment(&guide.header, s, position, &mut header_counts, ack);
            } else {
                push(ack, segment_error(s, position, Some(guide.header.id), unexpected_code(guide, id)));
            }
            out.push(Located { loop_id: guide.header.id, segment: *s, position, hl_id: 0 });
            continue;
        };
        let rule = w.rule;
        // Transitions: NM1 opens the name loop; EQ/EB opens (or repeats) the detail loop; LS/LE bracket 2120.
        let (next_part, loop_rule) = transition(rule, w.part, id);
        let Some(lr) = loop_rule else {
            let here = current_loop(rule, w.part).id;
            push(ack, segment_error(s, position, Some(here), unexpected_code(guide, id)));
            out.push(Located { loop_id: here, segment: *s, position, hl_id });
            continue;
        };
        let trigger = lr.segments.first().map(|f| f.id) == Some(id);
        let entering_bracket = w.part == Part::Detail && next_part == Part::Bracket;
        let leaving_bracket = w.part == Part::Bracket && next_part == Part::Detail;
        if leaving_bracket {
            close_loop(rule, Part::Bracket, &w.counts[Part::Bracket as usize], position, ack);
        } else if !entering_bracket && (next_part != w.part || (trigger && !w.counts[w.part as usize].is_empty())) {
            // A loop instance ends where the next loop (or the next instance of the same loop) starts.
            close_loop(rule, w.part, &w.counts[w.part as usize], position, ack);
            w.counts[next_part as usize].clear();
        }
        if entering_bracket {
            w.counts[Part::Bracket as usize].clear();
        }
        if next_part == Part::Name && id == "NM1" {
            w.name_loops += 1;
            if w.name_loops > rule.max_name_loops {
                push(ack, segment_error(s, position, Some(lr.id), "4"));
            }
        }
        // LS and LE belong to the detail loop; they only move the walker in and out of the bracket.
        let counted_part = if id == "LS" || id == "LE" { Part::Detail } else { next_part };
        check_segment(lr, s, position, &mut w.counts[counted_part as usize], ack);
        w.part = next_part;
        let loop_id = if id == "LS" || id == "LE" { rule.detail_loop.as_ref().map_or(lr.id, |d| d.id) } else { lr.id };
        out.push(Located { loop_id, segment: *s, position, hl_id });
    }
    let end_position = body.len() + 2;
    match walker {
        Some(w) => close_open_loops(&w, end_position, ack),
        None => check_required(&guide.header, &header_counts, end_position, ack),
    }
    for level in guide.levels.iter().filter(|l| l.required) {
        if !levels_seen.contains(&level.level_code) {
            push(
                ack,
                SegmentError {
                    segment_id: "HL".to_owned(),
                    position: end_position,
                    loop_id: Some(level.hl_loop.id),
                    code: "I7",
                    elements: Vec::new(),
                },
            );
        }
    }
    out
}

fn current_loop(rule: &LevelRule, part: Part) -> &LoopRule {
    match part {
        Part::Hl => &rule.hl_loop,
        Part::Name => &rule.name_loop,
        Part::Detail => rule.detail_loop.as_ref().unwrap_or(&rule.name_loop),
        Part::Bracket => rule.bracket_loop.as_ref().unwrap_or(&rule.name_loop),
    }
}

fn in_loop(lr: &LoopRule, id: &str) -> bool {
    lr.segments.iter().any(|r| r.id == id)
}

/// Where segment `id` goes from `part`: the part it belongs to and that part's loop.
fn transition<'r>(rule: &'r LevelRule, part: Part, id: &str) -> (Part, Option<&'r LoopRule>) {
    let detail_trigger = rule.detail_loop.as_ref().and_then(|d| d.segments.first()).map(|s| s.id);
    match part {
        Part::Hl => {
            if in_loop(&rule.hl_loop, id) && id != "HL" {
                (Part::Hl, Some(&rule.hl_loop))
            } else if id == "NM1" {
                (Part::Name, Some(&rule.name_loop))
            } else {
                (part, None)
            }
        }
        Part::Name => {
            if id == "NM1" && rule.max_name_loops > 1 {
                (Part::Name, Some(&rule.name_loop))
            } else if Some(id) == detail_trigger {
                (Part::Detail, rule.detail_loop.as_ref())
            } else if in_loop(&rule.name_loop, id) && id != "NM1" {
                (Part::Name, Some(&rule.name_loop))
            } else {
                (part, None)
            }
        }
        Part::Detail => {
            let detail = rule.detail_loop.as_ref();
            if id == "LS" && rule.bracket_loop.is_some() {
                (Part::Bracket, detail)
            } else if detail.is_some_and(|d| in_loop(d, id)) {
                (Part::Detail, detail)
            } else {
                (part, None)
            }
        }
        Part::Bracket => {
            let bracket = rule.bracket_loop.as_ref();
            if id == "LE" {
                (Part::Detail, rule.detail_loop.as_ref())
            } else if bracket.is_some_and(|b| in_loop(b, id)) {
                (Part::Bracket, bracket)
            } else {
                (part, None)
            }
        }
    }
}

fn unexpected_code(guide: &TransactionGuide, id: &str) -> &'static str {
    let known = guide.header.segments.iter().any(|s| s.id == id)
        || guide.levels.iter().any(|l| {
            in_loop(&l.hl_loop, id)
                || in_loop(&l.name_loop, id)
                || l.detail_loop.as_ref().is_some_and(|d| in_loop(d, id))
                || l.bracket_loop.as_ref().is_some_and(|b| in_loop(b, id))
                || id == "LS"
                || id == "LE"
        });
    if known {
        "2"
    } else {
        "1"
    }
}

fn close_open_loops(w: &Walker<'_>, position: usize, ack: &mut SetAck) {
    if w.part == Part::Bracket {
        close_loop(w.rule, Part::Bracket, &w.counts[Part::Bracket as usize], position, ack);
        close_loop(w.rule, Part::Detail, &w.counts[Part::Detail as usize], position, ack);
    } else {
        close_loop(w.rule, w.part, &w.counts[w.part as usize], position, ack);
    }
    // A level that never reached its name loop is missing its NM1.
    if w.part == Part::Hl {
        check_required(&w.rule.name_loop, &[], position, ack);
    }
}

fn close_loop(rule: &LevelRule, part: Part, counts: &[(&'static str, u16)], position: usize, ack: &mut SetAck) {
    check_required(current_loop(rule, part), counts, position, ack);
}

fn check_required(lr: &LoopRule, counts: &[(&'static str, u16)], position: usize, ack: &mut SetAck) {
    for r in lr.segments.iter().filter(|r| r.usage == Usage::Required) {
        if !counts.iter().any(|(id, n)| *id == r.id && *n > 0) {
            push(
                ack,
                SegmentError {
                    segment_id: r.id.to_owned(),
                    position,
                    loop_id: Some(lr.id),
                    code: "3",
                    elements: Vec::new(),
                },
            );
        }
    }
}

fn push(ack: &mut SetAck, err: SegmentError) {
    ack.segment_errors.push(err);
    ack.add_code("5");
}

fn segment_error(s: &Segment<'_>, position: usize, loop_id: Option<&'static str>, code: &'static str) -> SegmentError {
    SegmentError { segment_id: s.id_str().to_owned(), position, loop_id, code, elements: Vec::new() }
}

fn el_err(position: usize, de: u16, code: &'static str, bad: Option<String>) -> ElementError {
    ElementError { position, component: None, repetition: None, data_element: de, code, bad_value: bad }
}

fn check_segment(
    lr: &LoopRule,
    s: &Segment<'_>,
    position: usize,
    counts: &mut Vec<(&'static str, u16)>,
    ack: &mut SetAck,
) {
    let Some(rule) = lr.segments.iter().find(|r| r.id == s.id_str()) else { return };
    let count = match counts.iter_mut().find(|(id, _)| *id == rule.id) {
        Some((_, n)) => {
            *n += 1;
            *n
        }
        None => {
            counts.push((rule.id, 1));
            1
        }
    };
    if rule.usage == Usage::NotUsed {
        push(ack, segment_error(s, position, Some(lr.id), "I4"));
        return;
    }
    if count > rule.max_use {
        push(ack, segment_error(s, position, Some(lr.id), "5"));
        return;
    }
    let errors = check_elements(rule, s);
    if !errors.is_empty() {
        let mut err = segment_error(s, position, Some(lr.id), "8");
        err.elements = errors;
        push(ack, err);
    }
}

/// Checks a segment's elements against its rule.
pub fn check_elements(rule: &SegmentRule, s: &Segment<'_>) -> Vec<ElementError> {
    let mut errors = Vec::new();
    let present = s.element_count();
    if present > usize::from(rule.max_elements) {
        errors.push(el_err(usize::from(rule.max_elements) + 1, 0, "3", None));
    }
    for r in rule.elements {
        let pos = usize::from(r.pos);
        let value = s.element(pos);
        if value.is_empty() {
            if r.usage == Usage::Required {
                errors.push(el_err(pos, r.de, "1", None));
            }
            continue;
        }
        if r.usage == Usage::NotUsed {
            errors.push(el_err(pos, r.de, "I10", None));
            continue;
        }
        let check_one = |v: &[u8], errors: &mut Vec<ElementError>, repetition: Option<usize>| {
            if let Some(code) = check_value(r, v, s, pos) {
                let bad = (code == "7").then(|| String::from_utf8_lossy(v).into_owned());
                errors.push(ElementError {
                    position: pos,
                    component: None,
                    repetition,
                    data_element: r.de,
                    code,
                    bad_value: bad,
                });
            }
        };
        if r.repeats {
            for (i, v) in s.repetitions(pos).enumerate() {
                check_one(v, &mut errors, Some(i + 1));
            }
        } else {
            check_one(value, &mut errors, None);
        }
    }
    errors
}

fn check_value(r: &ElementRule, v: &[u8], s: &Segment<'_>, pos: usize) -> Option<&'static str> {
    if r.ty == DataType::Composite {
        return None;
    }
    let len = v.len();
    if r.ty == DataType::DateByFormat {
        let format = s.text(pos - 1);
        return match format {
            "D8" if is_date(v) => None,
            "RD8" if len == 17 && v[8] == b'-' && is_date(&v[..8]) && is_date(&v[9..]) && v[..8] <= v[9..] => None,
            _ => Some("8"),
        };
    }
    if !v.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Some("6");
    }
    if len < usize::from(r.min) {
        return Some("4");
    }
    if len > usize::from(r.max) {
        return Some("5");
    }
    match r.ty {
        DataType::Id if !r.codes.is_empty() => {
            let text = std::str::from_utf8(v).unwrap_or("");
            (!r.codes.contains(&text)).then_some("7")
        }
        DataType::N0 => (!v.iter().all(u8::is_ascii_digit)).then_some("6"),
        DataType::R => {
            let t = std::str::from_utf8(v).unwrap_or("");
            (t.parse::<f64>().is_err() || t.contains(['e', 'E'])).then_some("6")
        }
        DataType::Dt => (!is_date(v)).then_some("8"),
        DataType::Tm => (!is_time(v)).then_some("9"),
        _ => None,
    }
}

/// Whether `v` is a valid CCYYMMDD calendar date.
pub fn is_date(v: &[u8]) -> bool {
    if v.len() != 8 || !v.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let n = |a: usize, b: usize| v[a..b].iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    let (y, m, d) = (n(0, 4), n(4, 6), n(6, 8));
    let Ok(month) = time::Month::try_from(m as u8) else { return false };
    let Ok(year) = i32::try_from(y) else { return false };
    d >= 1 && d <= u32::from(month.length(year))
}

fn is_time(v: &[u8]) -> bool {
    if !(4..=8).contains(&v.len()) || !v.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let h = u32::from(v[0] - b'0') * 10 + u32::from(v[1] - b'0');
    let m = u32::from(v[2] - b'0') * 10 + u32::from(v[3] - b'0');
    h < 24 && m < 60
}
