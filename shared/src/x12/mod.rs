//! The exchange's own X12 codec.
//!
//! Layers, bottom up: [`isa`] reads the delimiters; [`tokenizer`] yields zero-copy segments; [`envelope`] checks
//! ISA/GS/ST framing and control numbers; [`guide`] applies implementation-guide tables (loops, usage, code lists);
//! [`ack`] writes TA1 and 999; [`writer`] writes segments in the partner's delimiters.
//!
//! `x12-types` is deliberately not used on the inbound path: it assumes `*`/`~` and truncates text and BIN payloads
//! (see the README's dependency table).

pub mod ack;
pub mod answering;
pub mod envelope;
pub mod error;
pub mod guide;
pub mod isa;
pub mod tokenizer;
pub mod writer;

pub use envelope::{parse_interchange, Group, Interchange, SetAck, SetKind, Ta1Rejection, TransactionSet};
pub use error::{X12Error, X12ErrorKind};
pub use isa::Delimiters;
pub use tokenizer::{Segment, Tokenizer};
pub use writer::X12Writer;
