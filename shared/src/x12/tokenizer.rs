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

/// Segments and elements past which [`find_byte`] hands over to `memchr`.
const SHORT_SCAN: usize = 64;

/// Bytes per word of the in-register scans.
const WORD: usize = 8;

/// Position of the first `needle` in `hay`.
///
/// X12 elements are a few bytes and segments a few dozen: there a call into `memchr` (an indirect call, then vector
/// setup) costs more than the scan. The first [`SHORT_SCAN`] bytes are scanned eight at a time in a register (SWAR:
/// XOR with the needle turns a match into a zero byte, and the lowest zero byte is found exactly with the
/// `(x - 0x01..) & !x & 0x80..` test); the rest, if any, goes to `memchr`.
#[inline]
fn find_byte(needle: u8, hay: &[u8]) -> Option<usize> {
    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const HI: u64 = u64::from_ne_bytes([0x80; 8]);
    let pattern = u64::from_ne_bytes([needle; 8]);
    let head = &hay[..hay.len().min(SHORT_SCAN)];
    let mut chunks = head.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ pattern;
        let zero = x.wrapping_sub(LO) & !x & HI;
        if zero != 0 {
            return Some(base + (zero.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    if let Some(i) = chunks.remainder().iter().position(|b| *b == needle) {
        return Some(base + i);
    }
    if hay.len() > SHORT_SCAN {
        memchr(needle, &hay[SHORT_SCAN..]).map(|i| i + SHORT_SCAN)
    } else {
        None
    }
}

/// One segment of an interchange, borrowed from the input.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// Segment id (`ISA`, `GS`, `NM1`, ...).
    pub id: &'a [u8],
    /// The segment's text after the id, without the terminator: starts with the element separator
    /// (empty when the segment has no elements). For `BIN`/`BDS` the binary payload is in [`Segment::binary`].
    rest: &'a [u8],
    /// `rest` followed by up to [`WORD`] more bytes of the input (the terminator and what follows; never returned),
    /// so that [`Elements`] can load whole words near the segment's end without a byte-by-byte tail.
    ahead: &'a [u8],
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
        Elements::new(self.ahead, self.rest.len(), self.delimiters.element)
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
///
/// Elements are a few bytes long, so finding each separator with its own search is mostly call and setup cost, and
/// each search waits for the previous one. Instead the body is read a word (eight bytes) at a time into a mask with
/// one bit per separator byte, and each element pops the lowest bit.
#[derive(Debug, Clone)]
pub struct Elements<'a> {
    /// The body after the leading separator, plus lookahead bytes past `len` that are loaded but never returned.
    body: &'a [u8],
    /// Length of the body proper.
    len: usize,
    /// Start of the next element.
    start: usize,
    /// Offset of the word `mask` describes.
    window: usize,
    /// High bit of byte `k` set when `body[window + k]` is a separator at or after `start` and before `len`.
    mask: u64,
    sep: u8,
    done: bool,
}

impl<'a> Elements<'a> {
    /// Elements of a segment whose text after the id is `ahead[..rest_len]` (starting with the separator).
    fn new(ahead: &'a [u8], rest_len: usize, sep: u8) -> Self {
        let mut it = Elements { body: &[], len: 0, start: 0, window: 0, mask: 0, sep, done: true };
        if rest_len == 0 || ahead.len() < rest_len {
            return it;
        }
        it.body = &ahead[1..];
        it.len = rest_len - 1;
        it.done = false;
        it.mask = it.separators_at(0);
        it
    }

    /// The separator mask of the word at `at` (`at < len`), limited to the body proper.
    #[inline]
    fn separators_at(&self, at: usize) -> u64 {
        let mut word = [self.sep ^ 0xFF; WORD];
        match self.body.get(at..at + WORD) {
            Some(bytes) => word.copy_from_slice(bytes),
            None => {
                let tail = self.body.get(at..).unwrap_or(&[]);
                word[..tail.len()].copy_from_slice(tail);
            }
        }
        let mask = zero_bytes(u64::from_le_bytes(word) ^ u64::from_ne_bytes([self.sep; WORD]));
        let valid = self.len.saturating_sub(at);
        if valid < WORD {
            mask & ((1u64 << (8 * valid)) - 1)
        } else {
            mask
        }
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.done {
            return None;
        }
        while self.mask == 0 {
            self.window += WORD;
            if self.window >= self.len {
                self.done = true;
                return Some(self.body.get(self.start..self.len).unwrap_or(&[]));
            }
            self.mask = self.separators_at(self.window);
        }
        let end = self.window + (self.mask.trailing_zeros() / 8) as usize;
        self.mask &= self.mask - 1;
        let element = self.body.get(self.start..end).unwrap_or(&[]);
        self.start = end + 1;
        Some(element)
    }
}

/// Exactly the zero bytes of `x`: the high bit of each byte that is zero (no borrow between bytes, unlike the
/// cheaper test in [`find_byte`], which is exact only for the lowest zero byte).
#[inline]
fn zero_bytes(x: u64) -> u64 {
    const LOW7: u64 = u64::from_ne_bytes([0x7F; WORD]);
    !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7)
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

    #[cold]
    fn error(&mut self, kind: X12ErrorKind, offset: usize) -> X12Error {
        self.failed = true;
        X12Error::new(kind, self.index, offset)
    }

    /// Reads a BIN/BDS payload whose declared length sits at the current position; returns the segment.
    #[inline(never)]
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
                ahead: &input[id_end..len_end],
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
            ahead: &input[id_end..len_end],
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

    #[inline]
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
        let end = match find_byte(d.segment, &input[id_end..]) {
            Some(i) => id_end + i,
            None => return Some(Err(self.error(X12ErrorKind::Truncated, input.len()))),
        };
        let seg = Segment {
            id,
            rest: &input[id_end..end],
            ahead: &input[id_end..(end + WORD).min(input.len())],
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
    fn find_byte_agrees_with_memchr() {
        // Every length up to past the SWAR window, the needle at every position (and absent), with bytes around it
        // that trip naive zero-byte tests (0x80, 0xFF, needle +/- 1).
        for len in 0..150 {
            let mut hay: Vec<u8> = (0..len).map(|i| [0x80u8, 0xFF, b'}', b'\x7f', b'A', 0][i % 6]).collect();
            assert_eq!(find_byte(b'~', &hay), memchr(b'~', &hay), "len {len}, absent");
            for at in 0..len {
                let saved = hay[at];
                hay[at] = b'~';
                assert_eq!(find_byte(b'~', &hay), Some(at), "len {len}, at {at}");
                if at + 1 < len {
                    let next = hay[at + 1];
                    hay[at + 1] = b'~';
                    assert_eq!(find_byte(b'~', &hay), Some(at), "len {len}, two from {at}");
                    hay[at + 1] = next;
                }
                hay[at] = saved;
            }
        }
        assert_eq!(find_byte(0, &[1, 0, 0]), Some(1));
        assert_eq!(find_byte(0xFF, &[0xFE, 0x7F, 0xFF]), Some(2));
    }

    #[test]
    fn elements_agree_with_split_at_every_length_and_position() {
        // Bodies of every length up to three words, with separators at assorted places, each both followed by more
        // input and as the last segment of the input (no lookahead bytes).
        for len in 0..26 {
            for pattern in 0..12u32 {
                let body: String = (0..len)
                    .map(|i| if (i * 7 + pattern as usize) % (pattern as usize % 5 + 2) == 0 { '*' } else { 'A' })
                    .collect();
                for tail in ["~NM1*X~", "~"] {
                    let input = format!("{ISA}REF*{body}{tail}");
                    let segs: Vec<_> = Tokenizer::new(input.as_bytes()).unwrap().collect::<Result<_, _>>().unwrap();
                    let got: Vec<&[u8]> = segs[1].elements().collect();
                    let want: Vec<&[u8]> = body.as_bytes().split(|b| *b == b'*').collect();
                    assert_eq!(got, want, "body {body:?} tail {tail:?}");
                    assert_eq!(segs[1].element_count(), want.len());
                }
            }
        }
        let input = format!("{ISA}SE~");
        let segs: Vec<_> = Tokenizer::new(input.as_bytes()).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(segs[1].elements().count(), 0);
    }

    #[test]
    fn zero_bytes_is_exact() {
        for b in 0..=255u8 {
            for lane in 0..8 {
                let mut word = [0x5Au8; 8];
                word[lane] = b;
                let mut want = 0u64;
                for (k, v) in word.iter().enumerate() {
                    if *v == 0 {
                        want |= 0x80 << (8 * k);
                    }
                }
                assert_eq!(zero_bytes(u64::from_le_bytes(word)), want);
            }
        }
        assert_eq!(zero_bytes(0), u64::from_ne_bytes([0x80; 8]));
        assert_eq!(zero_bytes(0x0100), u64::from_ne_bytes([0x80; 8]) & !0x8000);
    }

    #[test]
    fn truncated_segment_is_an_error() {
        let input = format!("{ISA}GS*HS*A");
        let err = Tokenizer::new(input.as_bytes()).unwrap().nth(1).unwrap().unwrap_err();
        assert_eq!(err.kind, X12ErrorKind::Truncated);
        assert_eq!(err.offset, input.len());
    }
}
