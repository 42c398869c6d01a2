//! The ISA interchange header: where every delimiter is declared.
//!
//! The ISA is fixed-width: 106 bytes, the element separator at byte 3 and after each of its 16 fixed-width elements,
//! the repetition separator in ISA11 (byte 82), the component separator in ISA16 (byte 104) and the segment
//! terminator right after it (byte 105).

use super::error::{X12Error, X12ErrorKind};

/// Length of an ISA segment including its terminator.
pub const ISA_LEN: usize = 106;

/// Widths of ISA01..ISA16.
const ISA_WIDTHS: [usize; 16] = [2, 10, 2, 10, 2, 15, 2, 15, 6, 4, 1, 5, 9, 1, 1, 1];

/// The four delimiters of an interchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    /// Element separator (ISA byte 3).
    pub element: u8,
    /// Repetition separator (ISA11), when the interchange declares one.
    pub repetition: Option<u8>,
    /// Component element separator (ISA16).
    pub component: u8,
    /// Segment terminator (the byte after ISA16).
    pub segment: u8,
}

impl Default for Delimiters {
    /// The common `*`, `^`, `:`, `~`.
    fn default() -> Self {
        Delimiters { element: b'*', repetition: Some(b'^'), component: b':', segment: b'~' }
    }
}

/// Offset of the ISA: after a UTF-8 byte-order mark and leading whitespace.
pub fn isa_start(input: &[u8]) -> Result<usize, X12Error> {
    let mut start = if input.starts_with(&[0xEF, 0xBB, 0xBF]) { 3 } else { 0 };
    while input.get(start).is_some_and(|b| b.is_ascii_whitespace()) {
        start += 1;
    }
    if start >= input.len() {
        return Err(X12Error::new(X12ErrorKind::Empty, 0, start));
    }
    if !input[start..].starts_with(b"ISA") {
        return Err(X12Error::new(X12ErrorKind::NotX12, 0, start));
    }
    Ok(start)
}

/// Offsets of the 16 element separators inside a well-formed ISA.
fn separator_offsets() -> [usize; 16] {
    let mut offsets = [0usize; 16];
    let mut pos = 3;
    for (i, width) in ISA_WIDTHS.iter().enumerate() {
        offsets[i] = pos;
        pos += 1 + width;
    }
    offsets
}

/// Reads the delimiters from an ISA that starts at `isa[0]`, checking its fixed-width shape.
pub fn read_delimiters(isa: &[u8]) -> Result<Delimiters, X12Error> {
    if isa.len() < ISA_LEN {
        return Err(X12Error::new(X12ErrorKind::IsaMalformed, 0, isa.len()));
    }
    let element = isa[3];
    for off in separator_offsets() {
        if isa[off] != element {
            // An element is wider or narrower than its fixed width.
            return Err(X12Error::new(X12ErrorKind::IsaMalformed, 0, off));
        }
    }
    let repetition = isa[82];
    let component = isa[104];
    let segment = isa[105];
    let version = &isa[84..89];
    let declared = [element, repetition, component, segment];
    let distinct = (0..4).all(|i| (i + 1..4).all(|j| declared[i] != declared[j]));
    if !distinct || declared.iter().any(|b| b.is_ascii_alphanumeric() || *b == b' ') {
        // 4010 interchanges put 'U' in ISA11: report the version, which is the real cause.
        if version != b"00501" && repetition == b'U' {
            return Err(X12Error::new(X12ErrorKind::UnsupportedVersion, 0, 84));
        }
        return Err(X12Error::new(X12ErrorKind::DelimiterCollision, 0, 82));
    }
    if version != b"00501" {
        return Err(X12Error::new(X12ErrorKind::UnsupportedVersion, 0, 84));
    }
    Ok(Delimiters { element, repetition: Some(repetition), component, segment })
}

/// Header fields of an ISA that could be read even when the ISA is malformed: enough to address a TA1.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IsaFields {
    /// ISA05/ISA06 sender qualifier and id (trimmed).
    pub sender: (String, String),
    /// ISA07/ISA08 receiver qualifier and id (trimmed).
    pub receiver: (String, String),
    /// ISA09 date (YYMMDD).
    pub date: String,
    /// ISA10 time (HHMM).
    pub time: String,
    /// ISA12 version.
    pub version: String,
    /// ISA13 control number.
    pub control_number: String,
    /// ISA14 acknowledgment requested.
    pub ack_requested: String,
    /// ISA15 usage indicator (P or T).
    pub usage: String,
}

/// Best-effort read of ISA fields by splitting on byte 3, for answering a malformed interchange with a TA1.
/// Returns `None` when not even a 9-digit ISA13 can be found.
pub fn salvage_fields(input: &[u8]) -> Option<IsaFields> {
    let start = isa_start(input).ok()?;
    let isa = &input[start..];
    let sep = *isa.get(3)?;
    let end = isa.len().min(ISA_LEN + 8);
    let parts: Vec<&[u8]> = isa[..end].split(|b| *b == sep).collect();
    let text = |i: usize| parts.get(i).map(|p| String::from_utf8_lossy(p).trim().to_owned()).unwrap_or_default();
    let control_number = text(13);
    if control_number.len() != 9 || !control_number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(IsaFields {
        sender: (text(5), text(6)),
        receiver: (text(7), text(8)),
        date: text(9),
        time: text(10),
        version: text(12),
        control_number,
        ack_requested: text(14),
        usage: text(15).chars().next().map(String::from).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISA: &[u8] =
        b"ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *260412*1230*^*00501*000000001*0*T*:~";

    #[test]
    fn reads_standard_delimiters() {
        assert_eq!(ISA.len(), ISA_LEN);
        let d = read_delimiters(ISA).unwrap();
        assert_eq!(d, Delimiters::default());
    }

    #[test]
    fn reads_custom_delimiters() {
        let isa = ISA
            .iter()
            .map(|b| match b {
                b'*' => b'|',
                b'~' => b'!',
                b'^' => b'~',
                x => *x,
            })
            .collect::<Vec<_>>();
        let d = read_delimiters(&isa).unwrap();
        assert_eq!(d, Delimiters { element: b'|', repetition: Some(b'~'), component: b':', segment: b'!' });
    }

    #[test]
    fn rejects_short_and_misaligned_isa() {
        assert_eq!(read_delimiters(&ISA[..100]).unwrap_err().kind, X12ErrorKind::IsaMalformed);
        let mut shifted = ISA.to_vec();
        shifted.remove(20); // ISA02 one byte short
        shifted.push(b'\n');
        assert_eq!(read_delimiters(&shifted).unwrap_err().kind, X12ErrorKind::IsaMalformed);
    }

    #[test]
    fn rejects_colliding_delimiters() {
        let mut isa = ISA.to_vec();
        isa[104] = b'^'; // component = repetition
        assert_eq!(read_delimiters(&isa).unwrap_err().kind, X12ErrorKind::DelimiterCollision);
    }

    #[test]
    fn rejects_4010() {
        let mut isa = ISA.to_vec();
        isa[82] = b'U';
        isa[84..89].copy_from_slice(b"00401");
        assert_eq!(read_delimiters(&isa).unwrap_err().kind, X12ErrorKind::UnsupportedVersion);
    }

    #[test]
    fn salvages_control_number_from_a_short_isa() {
        let short = b"ISA*00**00**ZZ*SENDER*ZZ*RECEIVER*260412*1230*^*00501*000000042*0*T*:~";
        let f = salvage_fields(short).unwrap();
        assert_eq!(f.control_number, "000000042");
        assert_eq!(f.sender.1, "SENDER");
        assert!(salvage_fields(b"ISA*00").is_none());
    }
}
