//! The X12 writer: segments in the delimiters the trading partner used.
//!
//! Text that would contain one of the interchange's delimiters is written with that byte replaced by a space,
//! because X12 has no escape mechanism and a stray delimiter would corrupt the partner's parse.

use super::isa::Delimiters;

/// Builds an interchange's bytes segment by segment.
#[derive(Debug, Clone)]
pub struct X12Writer {
    delimiters: Delimiters,
    buf: Vec<u8>,
    /// Segments written since the last [`X12Writer::start_count`] (for SE01).
    counted: usize,
    /// Whether to put a newline after each terminator (readability for humans; partners accept both).
    newline: bool,
}

impl X12Writer {
    /// A writer in the given delimiters.
    pub fn new(delimiters: Delimiters) -> Self {
        X12Writer { delimiters, buf: Vec::with_capacity(1024), counted: 0, newline: false }
    }

    /// Puts a line feed after every segment terminator (unless the terminator is itself a line feed).
    pub fn with_newlines(mut self, newline: bool) -> Self {
        self.newline = newline && self.delimiters.segment != b'\n';
        self
    }

    /// The delimiters in use.
    pub fn delimiters(&self) -> Delimiters {
        self.delimiters
    }

    /// Starts counting segments (call when writing ST).
    pub fn start_count(&mut self) {
        self.counted = 0;
    }

    /// Segments written since [`X12Writer::start_count`], including the one being closed by SE.
    pub fn count(&self) -> usize {
        self.counted
    }

    /// Writes one segment from its id and elements; trailing empty elements are dropped as X12 requires.
    /// Element and segment delimiters inside an element become spaces. Component and repetition separators are kept,
    /// because elements built with [`X12Writer::repeat`] and [`X12Writer::composite`] contain them on purpose: pass
    /// free text (names, messages) through [`X12Writer::clean`] first.
    pub fn segment<S: AsRef<str>>(&mut self, id: &str, elements: &[S]) {
        let last = elements.iter().rposition(|e| !e.as_ref().is_empty()).map_or(0, |i| i + 1);
        self.buf.extend_from_slice(id.as_bytes());
        for el in &elements[..last] {
            self.buf.push(self.delimiters.element);
            self.push_element(el.as_ref());
        }
        self.end_segment();
    }

    fn end_segment(&mut self) {
        self.buf.push(self.delimiters.segment);
        if self.newline {
            self.buf.push(b'\n');
        }
        self.counted += 1;
    }

    /// Joins values with the repetition separator (or keeps the first when the interchange has none).
    pub fn repeat<S: AsRef<str>>(&self, values: &[S]) -> String {
        match self.delimiters.repetition {
            Some(rep) => {
                let sep = char::from(rep).to_string();
                values.iter().map(|v| self.clean(v.as_ref())).collect::<Vec<_>>().join(&sep)
            }
            None => values.first().map(|v| self.clean(v.as_ref())).unwrap_or_default(),
        }
    }

    /// Joins components with the component separator, dropping trailing empty components.
    pub fn composite<S: AsRef<str>>(&self, components: &[S]) -> String {
        let last = components.iter().rposition(|c| !c.as_ref().is_empty()).map_or(0, |i| i + 1);
        let sep = char::from(self.delimiters.component).to_string();
        components[..last].iter().map(|c| self.clean(c.as_ref())).collect::<Vec<_>>().join(&sep)
    }

    /// Replaces delimiter bytes in free text with spaces.
    /// Characters outside printable ASCII also become spaces: X12's character sets are ASCII, and a partner's
    /// parser counts bytes.
    pub fn clean(&self, text: &str) -> String {
        let d = self.delimiters;
        text.chars()
            .map(|c| {
                let printable = c == ' ' || c.is_ascii_graphic();
                let is_delim = printable
                    && [Some(d.element), Some(d.component), Some(d.segment), d.repetition].contains(&Some(c as u8));
                if !printable || is_delim {
                    ' '
                } else {
                    c
                }
            })
            .collect()
    }

    fn push_element(&mut self, text: &str) {
        let d = self.delimiters;
        for &b in text.as_bytes() {
            let bad = b == d.element || b == d.segment;
            self.buf.push(if bad { b' ' } else { b });
        }
    }

    /// Writes raw, already-formed bytes (an ISA built with fixed widths).
    pub fn raw_segment(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.end_segment();
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Finishes and returns the bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Pads or cuts `text` to exactly `width` bytes (ISA fixed-width fields); non-ASCII characters become spaces so that
/// characters and bytes agree.
pub fn fixed(text: &str, width: usize) -> String {
    let mut s: String = text.chars().map(|c| if c.is_ascii() { c } else { ' ' }).take(width).collect();
    while s.len() < width {
        s.push(' ');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_trailing_empty_elements_and_cleans_delimiters() {
        let mut w = X12Writer::new(Delimiters::default());
        w.segment("NM1", &["IL", "1", "O*BRIEN~X", "", "", ""]);
        assert_eq!(w.as_bytes(), b"NM1*IL*1*O BRIEN X~");
        assert_eq!(w.count(), 1);
    }

    #[test]
    fn writes_in_partner_delimiters() {
        let d = Delimiters { element: b'|', repetition: Some(b'~'), component: b':', segment: b'!' };
        let mut w = X12Writer::new(d);
        let reps = w.repeat(&["1", "33"]);
        let comp = w.composite(&["HC", "99213", ""]);
        w.segment("EB", &["1", "", &reps]);
        w.segment("SV1", &[comp.as_str()]);
        assert_eq!(w.as_bytes(), b"EB|1||1~33!SV1|HC:99213!");
    }

    #[test]
    fn fixed_width_fields() {
        assert_eq!(fixed("AB", 5), "AB   ");
        assert_eq!(fixed("ABCDEFG", 3), "ABC");
    }
}
