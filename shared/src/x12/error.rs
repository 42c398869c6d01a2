//! Tokenizer and envelope errors: a small enum of kinds, with the segment index and byte offset where they occurred.

use std::fmt;

/// What went wrong while reading an interchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum X12ErrorKind {
    /// The input is empty or holds only whitespace.
    Empty,
    /// The input does not start with an ISA segment.
    NotX12,
    /// The ISA is not 106 bytes with its separators at the fixed positions.
    IsaMalformed,
    /// Two ISA delimiters are the same byte, or one is alphanumeric.
    DelimiterCollision,
    /// ISA12 is not 00501 (this exchange speaks HIPAA 5010 only).
    UnsupportedVersion,
    /// The input ends inside a segment or before IEA.
    Truncated,
    /// A segment id is not 2-3 alphanumerics followed by a separator.
    InvalidSegmentId,
    /// BIN01 / BDS02 is not a number.
    BinaryLengthInvalid,
    /// BIN01 / BDS02 disagrees with the payload (no segment terminator where the length ends).
    BinaryLengthMismatch,
}

impl X12ErrorKind {
    /// A short description, safe to show to a caller (no input content).
    pub fn describe(self) -> &'static str {
        match self {
            X12ErrorKind::Empty => "empty interchange",
            X12ErrorKind::NotX12 => "not an X12 interchange: it must start with an ISA segment",
            X12ErrorKind::IsaMalformed => "ISA segment is not 106 bytes with separators at the fixed positions",
            X12ErrorKind::DelimiterCollision => "ISA delimiters collide or are alphanumeric",
            X12ErrorKind::UnsupportedVersion => "interchange control version is not 00501",
            X12ErrorKind::Truncated => "interchange ends before its IEA trailer",
            X12ErrorKind::InvalidSegmentId => "invalid segment identifier",
            X12ErrorKind::BinaryLengthInvalid => "binary segment length is not numeric",
            X12ErrorKind::BinaryLengthMismatch => "binary segment length disagrees with its payload",
        }
    }
}

/// A tokenizer or envelope error with its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct X12Error {
    /// What went wrong.
    pub kind: X12ErrorKind,
    /// Zero-based index of the segment in the interchange.
    pub segment_index: usize,
    /// Byte offset in the input.
    pub offset: usize,
}

impl X12Error {
    /// An error of `kind` at segment `segment_index`, byte `offset`.
    pub fn new(kind: X12ErrorKind, segment_index: usize, offset: usize) -> Self {
        X12Error { kind, segment_index, offset }
    }

    /// The same error with its offset moved by `by` bytes (for errors found in a sub-slice).
    pub fn shifted(mut self, by: usize) -> Self {
        self.offset += by;
        self
    }
}

impl fmt::Display for X12Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (segment {}, byte {})", self.kind.describe(), self.segment_index, self.offset)
    }
}

impl std::error::Error for X12Error {}
