//! The zero-copy X12 tokenizer.
//!
//! It reads every delimiter from the ISA segment (see [`super::isa`]) and then yields [`Segment`]s that borrow from
//! the input: no allocation per segment or element. Whitespace (CR, LF, tabs, spaces) between segments is skipped,
//! so one-segment-per-line files and single-line files read alike. `BIN` and `BDS` segments are special: their
//! length element says how many bytes of binary payload follow, and those bytes may contain any value, delimiters
//! included.

use memchr::{memchr, memchr2};

use super::error::{X12Error, X12ErrorKind};
use super::isa::{self, Delimiters};

/// One segment of an interchange, borrowed from the input.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// Segment id (`ISA`, `GS`, `NM1`, ...).
    pub id: &'a [u8],
    /// The segment's text after the id, without the terminator: starts with the element separator
    /// (empty when the segment has no elements). For `BIN`/`BDS` the binary payload is in [`Segment::binary`].
    rest: &'a [u8],
    /// Binary payload of a `BIN` (BIN02) or `BDS` (BDS03) segment.
    binary: Option<&'a [u8]>,
    /// The delimiters in force.
    pub delimiters: Delimiters,
    /// Zero-based position of the segment in the interchange.
    pub index: usize,
    /// Byte offset of the segment's first byte in the input.
    pub offset: usize,
}

impl<'a> Segment<'a> {
    /// The segment id as text (ids are ASCII alphanumerics, checked by the tokenizer).
    pub fn id_str(&self) -> &'a str {
        std::str::from_utf8(self.id).unwrap_or("")
    }

    /// Whether the segment id equals `id`.
    pub fn is(&self, id: &str) -> bool {
        self.id == id.as_bytes()
    }

    /// Element `n` (1-based, as in `NM1-03`), or an empty slice when absent. For `BIN`, element 2 is the payload;
    /// for `BDS`, element 3.
    pub fn element(&self, n: usize) -> &'a [u8] {
        if n == 0 {
            return self.id;
        }
        if let Some(bin) = self.binary {
            let payload_pos = if self.is("BDS") { 3 } else { 2 };
            if n == payload_pos {
                return bin;
            }
            if n > payload_pos {
                return &[];
            }
        }
        self.elements().nth(n - 1).unwrap_or(&[])
    }

    /// Element `n` as text; non-UTF-8 bytes yield an empty string (X12 text elements are ASCII).
    pub fn text(&self, n: usize) -> &'a str {
        std::str::from_utf8(self.element(n)).unwrap_or("")
    }

    /// Element `n`'s text with trailing spaces removed (fixed-width ISA fields).
    pub fn trimmed(&self, n: usize) -> &'a str {
        self.text(n).trim_end_matches(' ')
    }

    /// The binary payload of a `BIN` or `BDS` segment.
    pub fn binary(&self) -> Option<&'a [u8]> {
        self.binary
    }

    /// Iterates the segment's elements (1-based order), excluding a binary payload.
    pub fn elements(&self) -> Elements<'a> {
        let body = if self.rest.is_empty() { None } else { Some(&self.rest[1..]) };
        Elements { rest: body, sep: self.delimiters.element }
    }

    /// Number of elements present (trailing empty elements counted as written).
    pub fn element_count(&self) -> usize {
        let n = self.elements().count();
        if self.binary.is_some() {
            n + 1
        } else {
            n
        }
    }

    /// Component `c` (1-based) of element `n`, or an empty slice.
    pub fn component(&self, n: usize, c: usize) -> &'a [u8] {
        let el = self.element(n);
        if c == 0 {
            return &[];
        }
        el.split(|b| *b == self.delimiters.component).nth(c - 1).unwrap_or(&[])
    }

    /// Repetitions of element `n` (split on the repetition separator when the interchange declares one).
    pub fn repetitions(&self, n: usize) -> impl Iterator<Item = &'a [u8]> {
        let el = self.element(n);
        let rep = self.delimiters.repetition;
        let mut parts = el.split(move |b| Some(*b) == rep);
        let empty = el.is_empty();
        std::iter::from_fn(move || if empty { None } else { parts.next() })
    }
}

/// Iterator over a segment's elements.
#[derive(Debug, Clone)]
pub struct Elements<'a> {
    rest: Option<&'a [u8]>,
    sep: u8,
}

impl<'a> Iterator for Elements<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match memchr(self.sep, rest) {
            Some(i) => {
                self.rest = Some(&rest[i + 1..]);
                Some(&rest[..i])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// Streaming tokenizer over one interchange's bytes.
#[derive(Debug, Clone)]
pub struct Tokenizer<'a> {
    input: &'a [u8],
    pos: usize,
    index: usize,
    delimiters: Delimiters,
    failed: bool,
}

impl<'a> Tokenizer<'a> {
    /// Reads the ISA (after an optional UTF-8 byte-order mark and leading whitespace) and prepares to tokenize.
    /// Fails with a TA1-worthy error when the ISA is malformed.
    pub fn new(input: &'a [u8]) -> Result<Self, X12Error> {
        let start = isa::isa_start(input)?;
        let delimiters = isa::read_delimiters(&input[start..]).map_err(|e| e.shifted(start))?;
        Ok(Tokenizer { input, pos: start, index: 0, delimiters, failed: false })
    }

    /// The delimiters read from the ISA.
    pub fn delimiters(&self) -> Delimiters {
        self.delimiters
    }

    /// Byte offset of the next unread byte.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// After an error, continues tokenizing from byte `pos` (the envelope layer resynchronizes on the next SE).
    pub fn resume_at(&mut self, pos: usize) {
        self.pos = pos;
        self.failed = false;
    }

    /// The input being tokenized.
    pub fn input(&self) -> &'a [u8] {
        self.input
    }

    fn skip_whitespace(&mut self) {
        while let Some(&b) = self.input.get(self.pos) {
            if b.is_ascii_whitespace() && b != self.delimiters.segment && b != self.delimiters.element {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn error(&mut self, kind: X12ErrorKind, offset: usize) -> X12Error {
        self.failed = true;
        X12Error::new(kind, self.index, offset)
    }

    /// Reads a BIN/BDS payload whose declared length sits at the current position; returns the segment.
    fn binary_segment(&mut self, seg_start: usize, id_end: usize, bds: bool) -> Result<Segment<'a>, X12Error> {
        let d = self.delimiters;
        let input = self.input;
        // BDS*filter*length*payload ; BIN*length*payload
        let mut cursor = id_end;
        if bds {
            // skip separator and filter element
            if input.get(cursor) != Some(&d.element) {
                return Err(self.error(X12ErrorKind::BinaryLengthInvalid, cursor));
            }
            cursor += 1;
            match memchr2(d.element, d.segment, &input[cursor..]) {
                Some(i) if input[cursor + i] == d.element => cursor += i,
                _ => return Err(self.error(X12ErrorKind::BinaryLengthInvalid, cursor)),
            }
        }
        if input.get(cursor) != Some(&d.element) {
            return Err(self.error(X12ErrorKind::BinaryLengthInvalid, cursor));
        }
        let len_start = cursor + 1;
        let len_end = match memchr2(d.element, d.segment, &input[len_start..]) {
            Some(i) => len_start + i,
            None => return Err(self.error(X12ErrorKind::Truncated, input.len())),
        };
        let len_text = &input[len_start..len_end];
        if len_text.is_empty() || len_text.len() > 15 || !len_text.iter().all(u8::is_ascii_digit) {
            return Err(self.error(X12ErrorKind::BinaryLengthInvalid, len_start));
        }
        let declared: usize =
            len_text.iter().fold(0usize, |acc, b| acc.saturating_mul(10).saturating_add(usize::from(b - b'0')));
        if input[len_end] != d.element {
            // BIN01 with no payload element: only valid for a zero length.
            if declared != 0 {
                return Err(self.error(X12ErrorKind::BinaryLengthMismatch, len_end));
            }
            let seg = Segment {
                id: &input[seg_start..id_end],
                rest: &input[id_end..len_end],
                binary: Some(&[]),
                delimiters: d,
                index: self.index,
                offset: seg_start,
            };
            self.pos = len_end + 1;
            self.index += 1;
            return Ok(seg);
        }
        let payload_start = len_end + 1;
        let payload_end = payload_start.checked_add(declared).filter(|end| *end <= input.len());
        let Some(payload_end) = payload_end else {
            return Err(self.error(X12ErrorKind::BinaryLengthMismatch, payload_start));
        };
        if input.get(payload_end) != Some(&d.segment) {
            return Err(self.error(X12ErrorKind::BinaryLengthMismatch, payload_end));
        }
        let seg = Segment {
            id: &input[seg_start..id_end],
            rest: &input[id_end..len_end],
            binary: Some(&input[payload_start..payload_end]),
            delimiters: d,
            index: self.index,
            offset: seg_start,
        };
        self.pos = payload_end + 1;
        self.index += 1;
        Ok(seg)
    }
}

impl<'a> Iterator for Tokenizer<'a> {
    type Item = Result<Segment<'a>, X12Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        self.skip_whitespace();
        if self.pos >= self.input.len() {
            return None;
        }
        let d = self.delimiters;
        let input = self.input;
        let seg_start = self.pos;
        // Segment id: 2-3 uppercase alphanumerics, ended by an element separator or the terminator.
        let mut id_end = seg_start;
        while id_end < input.len() && id_end - seg_start < 4 && input[id_end].is_ascii_alphanumeric() {
            id_end += 1;
        }
        let id_len = id_end - seg_start;
        let next = input.get(id_end).copied();
        if !(2..=3).contains(&id_len) || (next != Some(d.element) && next != Some(d.segment)) {
            if next.is_none() {
                return Some(Err(self.error(X12ErrorKind::Truncated, input.len())));
            }
            return Some(Err(self.error(X12ErrorKind::InvalidSegmentId, seg_start)));
        }
        let id = &input[seg_start..id_end];
        if id == b"BIN" || id == b"BDS" {
            return Some(self.binary_segment(seg_start, id_end, id == b"BDS"));
        }
        let end = match memchr(d.segment, &input[id_end..]) {
            Some(i) => id_end + i,
            None => return Some(Err(self.error(X12ErrorKind::Truncated, input.len()))),
        };
        let seg = Segment {
            id,
            rest: &input[id_end..end],
            binary: None,
            delimiters: d,
            index: self.index,
            offset: seg_start,
        };
        self.pos = end + 1;
        self.index += 1;
        Some(Ok(seg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISA: &str =
        "ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *260412*1230*^*00501*000000001*0*T*:~";

    fn segments(input: &str) -> Vec<String> {
        Tokenizer::new(input.as_bytes())
            .expect("valid ISA")
            .map(|s| s.map(|s| s.id_str().to_owned()))
            .collect::<Result<_, _>>()
            .expect("tokenizes")
    }

    #[test]
    fn reads_segments_across_newlines_and_bom() {
        let input = format!("\u{feff}{ISA}\r\nGS*HS*A*B*20260412*1230*1*X*005010X279A1~\n\nIEA*1*000000001~\r\n");
        assert_eq!(segments(&input), vec!["ISA", "GS", "IEA"]);
    }

    #[test]
    fn elements_components_and_repetitions() {
        let input = format!("{ISA}EB*1**1^33^35*HM*GOLD~SV1*HC:99213:25*10~");
        let segs: Vec<_> = Tokenizer::new(input.as_bytes()).unwrap().collect::<Result<_, _>>().unwrap();
        let eb = segs[1];
        assert_eq!(eb.text(1), "1");
        assert_eq!(eb.text(2), "");
        let reps: Vec<_> = eb.repetitions(3).collect();
        assert_eq!(reps, vec![&b"1"[..], b"33", b"35"]);
        assert_eq!(eb.text(5), "GOLD");
        assert_eq!(eb.text(9), "");
        assert_eq!(segs[2].component(1, 2), b"99213");
        assert_eq!(segs[2].component(1, 3), b"25");
        assert_eq!(segs[0].trimmed(6), "SENDER");
    }

    #[test]
    fn bin_payload_may_hold_delimiters() {
        let payload = "a*b~c\n:d";
        let input = format!("{ISA}BIN*{}*{payload}~IEA*1*000000001~", payload.len());
        let segs: Vec<_> = Tokenizer::new(input.as_bytes()).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(segs[1].binary(), Some(payload.as_bytes()));
        assert_eq!(segs[1].element(1), payload.len().to_string().as_bytes());
        assert_eq!(segs[1].element(2), payload.as_bytes());
        assert!(segs[2].is("IEA"));
    }

    #[test]
    fn bds_payload_uses_its_second_element_as_length() {
        let input = format!("{ISA}BDS*B64*8*QUJD~REP~IEA*1*000000001~");
        let segs: Vec<_> = Tokenizer::new(input.as_bytes()).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(segs[1].element(1), b"B64");
        assert_eq!(segs[1].element(3), b"QUJD~REP");
        assert!(segs[2].is("IEA"));
    }

    #[test]
    fn bin_length_errors_carry_positions() {
        let input = format!("{ISA}BIN*11a*hello~");
        let err = Tokenizer::new(input.as_bytes()).unwrap().nth(1).unwrap().unwrap_err();
        assert_eq!(err.kind, X12ErrorKind::BinaryLengthInvalid);
        assert_eq!(err.segment_index, 1);
        assert_eq!(err.offset, ISA.len() + 4);

        let input = format!("{ISA}BIN*3*hello~");
        let err = Tokenizer::new(input.as_bytes()).unwrap().nth(1).unwrap().unwrap_err();
        assert_eq!(err.kind, X12ErrorKind::BinaryLengthMismatch);
    }

    #[test]
    fn truncated_segment_is_an_error() {
        let input = format!("{ISA}GS*HS*A");
        let err = Tokenizer::new(input.as_bytes()).unwrap().nth(1).unwrap().unwrap_err();
        assert_eq!(err.kind, X12ErrorKind::Truncated);
        assert_eq!(err.offset, input.len());
    }
}
