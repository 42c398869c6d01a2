//! The tokenizer over arbitrary bytes: no panic, offsets inside the input, and every non-binary segment's elements
//! equal a naive split of its text.

#![no_main]

use exchange_core::x12::Tokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let len = data.len();
    let tok = match Tokenizer::new(data) {
        Ok(tok) => tok,
        Err(e) => {
            assert!(e.offset <= len, "ISA error offset {} past {len}", e.offset);
            return;
        }
    };
    let d = tok.delimiters();
    for seg in tok {
        let s = match seg {
            Ok(s) => s,
            Err(e) => {
                assert!(e.offset <= len, "error offset {} past {len}", e.offset);
                break;
            }
        };
        assert!(s.offset < len);
        for n in 0..24 {
            let _ = s.element(n);
            let _ = s.text(n);
            let _ = s.component(n, 2);
            let _ = s.repetitions(n).count();
        }
        if s.binary().is_none() {
            // Differential check: the segment's text up to its terminator, split naively.
            let body_start = s.offset + s.id.len();
            let end = body_start + data[body_start..].iter().position(|b| *b == d.segment).expect("terminator");
            let body = &data[body_start..end];
            let naive: Vec<&[u8]> =
                if body.is_empty() { Vec::new() } else { body[1..].split(|b| *b == d.element).collect() };
            let got: Vec<&[u8]> = s.elements().collect();
            assert_eq!(got, naive);
            assert_eq!(s.element_count(), naive.len());
        }
    }
});
