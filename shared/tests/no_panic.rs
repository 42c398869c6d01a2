//! Robustness of the X12 codec on hostile input, deterministic and on stable Rust (the libFuzzer targets in `fuzz/`
//! explore further on nightly).
//!
//! Conformance-like interchanges (built here) are mutated 20,000 times: byte flips, truncations, inserted
//! delimiters, deleted and duplicated ranges, and absurd BIN/BDS lengths. Each mutant goes through the tokenizer, the
//! envelope parser, the 005010X279A1 guide and the 999 / TA1 writers. Nothing may panic, every error offset must lie
//! within the input, and whatever the writers produce must tokenize again.

use std::panic::{catch_unwind, AssertUnwindSafe};

use exchange_core::x12::ack::{ta1_interchange, write_999, InterchangeWriter, OutboundEnvelope};
use exchange_core::x12::envelope::{parse_interchange, SetAck};
use exchange_core::x12::guide::{self, x279a1};
use exchange_core::x12::Tokenizer;
use time::macros::datetime;
use time::OffsetDateTime;

const ITERATIONS: usize = 20_000;

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const ISA_STD: &str =
    "ISA*00*          *00*          *ZZ*DEMOPROVIDER   *ZZ*DEMOPAYER      *261125*1000*^*00501*000000101*1*T*:~";

/// A subscriber inquiry (the shape of the shared conformance samples), with its ST02.
fn subscriber_set(st02: &str) -> String {
    format!(
        "ST*270*{st02}*005010X279A1~BHT*0022*13*10001234*20261125*1319~HL*1**20*1~\
         NM1*PR*2*ABC COMPANY*****PI*842610001~HL*2*1*21*1~NM1*1P*2*BONE AND JOINT CLINIC*****SV*2000035~\
         HL*3*2*22*0~TRN*1*93175-012547*9877281234~NM1*IL*1*SMITH*ROBERT****MI*11122333301~\
         DMG*D8*19430519~DTP*291*D8*20261101~EQ*30^1^33~SE*13*{st02}~"
    )
}

/// A dependent inquiry with a date range and a REF.
fn dependent_set(st02: &str) -> String {
    format!(
        "ST*270*{st02}*005010X279A1~BHT*0022*13*REF-77*20261125*1000*RT~HL*1**20*1~\
         NM1*PR*2*DEMO HEALTH PLAN*****PI*DEMOPAYER~HL*2*1*21*1~NM1*1P*1*JONES*MARCUS****XX*1234567893~\
         PRV*PE*PXC*207Q00000X~HL*3*2*22*1~NM1*IL*1*SMITH*ROBERT****MI*11122333301~REF*6P*GRP-0042~\
         HL*4*3*23*0~TRN*1*TRACE-2*9DEMOPROV1~NM1*03*1*SMITH*MARY~DMG*D8*19781014*F~\
         DTP*291*RD8*20261101-20261125~EQ*98^UC~SE*17*{st02}~"
    )
}

/// The standard-delimiter interchanges: a single set, a batch, and a batch with a binary segment in one set.
fn seeds() -> Vec<Vec<u8>> {
    let single = format!(
        "{ISA_STD}\nGS*HS*DEMOPROVIDER*DEMOPAYER*20261125*1000*101*X*005010X279A1~\n{}GE*1*101~\nIEA*1*000000101~\n",
        subscriber_set("0001")
    );
    let batch = format!(
        "\u{feff}{ISA_STD}GS*HS*DEMOPROVIDER*DEMOPAYER*20261125*1000*7*X*005010X279A1~{}{}{}GE*3*7~IEA*1*000000101~",
        subscriber_set("0001"),
        dependent_set("0002"),
        subscriber_set("0003")
    );
    let payload = "BIN payload with * and ~ and : inside";
    let binary = format!(
        "{ISA_STD}GS*HS*A*B*20261125*1000*9*X*005010X279A1~{}ST*270*0002*005010X279A1~BIN*{}*{payload}~\
         BDS*B64*8*QUJD~REP~SE*4*0002~GE*2*9~IEA*1*000000101~",
        subscriber_set("0001"),
        payload.len()
    );
    // Custom delimiters: element '|', repetition '!', component '>', segment '\n' (no separate terminator
    // character), as some clearinghouses send.
    let custom = format!(
        "{}\n{}GE|1|5\nIEA|1|000000101\n",
        ISA_STD.replace('*', "|").replace('^', "!").replace(":~", ">"),
        format!("GS*HS*S*R*20261125*1000*5*X*005010X279A1~{}", dependent_set("0001"))
            .replace('*', "|")
            .replace('^', "!")
            .replace(':', ">")
            .replace('~', "\n")
    );
    vec![single.into_bytes(), batch.into_bytes(), binary.into_bytes(), custom.into_bytes()]
}

/// Applies one to three random mutations.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    const DELIMITERS: &[u8] = b"*~^:|!>\n\r ";
    const HUGE: &[&str] = &[
        "999999999999999",
        "18446744073709551615",
        "18446744073709551616",
        "000000000000000000000001",
        "4294967296",
        "",
        "-1",
        "1e9",
    ];
    for _ in 0..1 + rng.below(3) {
        let len = input.len();
        match rng.below(9) {
            // Flip one bit.
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            // Replace one byte with anything.
            1 if len > 0 => {
                let at = rng.below(len);
                input[at] = rng.next() as u8;
            }
            // Truncate.
            2 => {
                let at = rng.below(len + 1);
                input.truncate(at);
            }
            // Insert a delimiter (or whitespace).
            3 => {
                let at = rng.below(len + 1);
                input.insert(at, *rng.pick(DELIMITERS));
            }
            // Delete a range.
            4 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(40)).min(len);
                input.drain(at..end);
            }
            // Duplicate a range (repeated segments, loops over their maximum).
            5 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(200)).min(len);
                let copy = input[at..end].to_vec();
                let to = rng.below(len + 1);
                input.splice(to..to, copy);
            }
            // A BIN or BDS segment with an absurd length, at a segment boundary.
            6 => {
                let huge = rng.pick(HUGE);
                let seg = if rng.below(2) == 0 { format!("BIN*{huge}*abc~") } else { format!("BDS*B64*{huge}*abc~") };
                let at = boundary(rng, input);
                input.splice(at..at, seg.bytes());
            }
            // Rewrite an existing BIN/BDS length.
            7 => {
                if let Some(at) = find(input, b"BIN*").or_else(|| find(input, b"BDS*B64*").map(|p| p + 4)) {
                    let start = at + 4;
                    let end = input[start..].iter().position(|b| *b == b'*').map_or(input.len(), |p| start + p);
                    input.splice(start..end, rng.pick(HUGE).bytes());
                }
            }
            // An arbitrary segment id, at a segment boundary.
            _ => {
                let ids: &[&[u8]] =
                    &[b"ST*", b"SE*", b"GS*", b"GE*", b"IEA*", b"ISA*", b"HL*", b"LS*", b"LE*", b"~", b"TA1*"];
                let at = boundary(rng, input);
                input.splice(at..at, rng.pick(ids).iter().copied());
            }
        }
    }
}

/// A random position just after a '~' (or the end).
fn boundary(rng: &mut Rng, input: &[u8]) -> usize {
    let ends: Vec<usize> = input.iter().enumerate().filter(|(_, b)| **b == b'~').map(|(i, _)| i + 1).collect();
    if ends.is_empty() {
        input.len()
    } else {
        *rng.pick(&ends)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Everything the exchange does with an inbound interchange that does not touch storage. With `read_back`, what
/// the 999 / TA1 writers produce must tokenize again.
fn exercise(input: &[u8], read_back: bool) {
    let len = input.len();
    let now: OffsetDateTime = datetime!(2026-11-25 10:00 UTC);

    // Tokenizer alone, with every accessor on every segment.
    match Tokenizer::new(input) {
        Ok(tok) => {
            for seg in tok {
                match seg {
                    Ok(s) => {
                        assert!(s.offset < len, "segment offset {} past input {len}", s.offset);
                        for n in 0..24 {
                            let _ = s.element(n);
                            let _ = s.text(n);
                            let _ = s.trimmed(n);
                            let _ = s.component(n, 1);
                            let _ = s.component(n, 3);
                            let _ = s.repetitions(n).count();
                        }
                        let _ = s.element_count();
                        let _ = s.binary();
                        let _ = s.id_str();
                    }
                    Err(e) => assert!(e.offset <= len, "error offset {} past input {len}: {e}", e.offset),
                }
            }
        }
        Err(e) => assert!(e.offset <= len, "ISA error offset {} past input {len}: {e}", e.offset),
    }

    // Envelope, guide and acknowledgments.
    match parse_interchange(input, &[x279a1::KIND_270]) {
        Ok(ic) => {
            let fields = ic.fields();
            let env = OutboundEnvelope::answering(&fields, 42, now);
            let mut iw = InterchangeWriter::new(ic.delimiters, env);
            if ic.ack_requested() {
                iw.ta1(&fields, true, "000");
            }
            iw.begin_group("FA", ic.groups.first().map_or("", |g| g.gs.text(3)), "", "005010X231A1");
            for (gi, group) in ic.groups.iter().enumerate() {
                let mut acks: Vec<SetAck> = Vec::with_capacity(group.sets.len());
                for set in &group.sets {
                    let mut ack = set.ack.clone();
                    let located = guide::validate(&x279a1::GUIDE_270, &set.body, &mut ack);
                    assert_eq!(located.len(), set.body.len());
                    acks.push(ack);
                }
                let refs: Vec<&SetAck> = acks.iter().collect();
                write_999(&mut iw, &format!("{:04}", gi + 1), group, &refs);
            }
            iw.end_group();
            let out = iw.finish();
            if read_back {
                retokenize(&out, "999");
            }
        }
        Err(rej) => {
            assert!(rej.error.offset <= len, "TA1 error offset {} past input {len}: {}", rej.error.offset, rej.error);
            if let Some(fields) = &rej.fields {
                let env = OutboundEnvelope::answering(fields, 42, now);
                let out = ta1_interchange(rej.delimiters, fields, env, false, rej.note_code);
                if read_back {
                    retokenize(&out, "TA1");
                }
            }
        }
    }
}

/// What the exchange writes must read back as X12.
fn retokenize(out: &[u8], what: &str) {
    let tok = Tokenizer::new(out).unwrap_or_else(|e| panic!("{what} ISA unreadable: {e}"));
    for seg in tok {
        if let Err(e) = seg {
            panic!("{what} does not tokenize: {e}: {}", String::from_utf8_lossy(out));
        }
    }
}

#[test]
fn seeds_are_accepted() {
    for seed in seeds() {
        let ic = parse_interchange(&seed, &[x279a1::KIND_270]).expect("seed parses");
        assert!(ic.groups.iter().all(|g| !g.is_rejected()), "{}", String::from_utf8_lossy(&seed));
        // Every set is guide-clean except the one carrying BIN/BDS (not 270 segments: rejected in the 999).
        for set in ic.sets().filter(|s| !s.body.iter().any(|seg| seg.is("BIN") || seg.is("BDS"))) {
            let mut ack = set.ack.clone();
            guide::validate(&x279a1::GUIDE_270, &set.body, &mut ack);
            assert!(!ack.is_rejected(), "seed set {} rejected: {ack:?}", set.control_number());
        }
        exercise(&seed, true);
    }
}

/// Runs `ITERATIONS` mutants through [`exercise`]; returns the first few failures.
fn run_mutants(read_back: bool) -> Vec<String> {
    let seeds = seeds();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut failures = Vec::new();
    for i in 0..ITERATIONS {
        let mut input = rng.pick(&seeds).clone();
        mutate(&mut rng, &mut input);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| exercise(&input, read_back))) {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!("iteration {i}: {msg}\n  input: {:?}", String::from_utf8_lossy(&input)));
            if failures.len() >= 5 {
                break;
            }
        }
    }
    failures
}

#[test]
fn mutated_interchanges_never_panic() {
    let failures = run_mutants(false);
    assert!(failures.is_empty(), "{} mutant(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// The TA1 or 999 answering a damaged ISA is itself well-formed X12: non-ASCII bytes in ISA fields or delimiters,
/// and delimiters inside ISA qualifiers, are not copied into the answer's ISA.
#[test]
fn acknowledgments_to_mutants_read_back_as_x12() {
    let failures = run_mutants(true);
    assert!(failures.is_empty(), "{} mutant(s) failed:\n{}", failures.len(), failures.join("\n"));
}
