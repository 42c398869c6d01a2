//! X12 codec throughput on one generated 10,000-set 005010X279A1 270 interchange (~3 MB).
//!
//! - `memchr_terminators`: `memchr_iter(b'~')`, a scanning floor (it finds segment ends and nothing else);
//! - `tokenize`: every segment and every element of it (sums element lengths);
//! - `parse_interchange`: the envelope layer (ISA/GS/ST framing, counts and control numbers);
//! - `parse_and_validate`: envelope + the 005010X279A1 guide tables on every set.
//!
//! Run: `cargo bench -j 2 -p exchange-core --bench tokenizer -- --measurement-time 5`.
//! Quote `tokenize` as a ratio to `memchr_terminators` from the same run.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use exchange_core::x12::envelope::{parse_interchange, SetAck};
use exchange_core::x12::guide::{self, x279a1};
use exchange_core::x12::Tokenizer;

const SETS: usize = 10_000;

/// One 270 interchange with `sets` transaction sets in one functional group, one segment per line.
///
/// The sets rotate through the shapes a provider sends: a subscriber inquiry with a date of service (as in
/// `events/eligibility/sample-270.x12`), one asking several service types (a repeated EQ01), a dependent inquiry
/// (2000D loop), and one for an unknown member id. Every set has its own ST02/SE02, BHT03 and TRN02.
fn interchange(sets: usize) -> Vec<u8> {
    const SUBSCRIBERS: [(&str, &str, &str, &str); 4] = [
        ("11122333301", "SMITH", "ROBERT", "19430519"),
        ("000123450", "DOE", "PATIENT", "19900101"),
        ("000123451", "DOE", "JANE", "19881231"),
        ("W100200300", "O'BRIEN", "SAM", "19850315"),
    ];
    let mut s = String::with_capacity(sets * 340 + 400);
    s.push_str(
        "ISA*00*          *00*          *ZZ*DEMOPROVIDER   *ZZ*DEMOPAYER      *261125*1000*^*00501*000000101*0*T*:~\n",
    );
    s.push_str("GS*HS*DEMOPROVIDER*DEMOPAYER*20261125*1000*101*X*005010X279A1~\n");
    for i in 1..=sets {
        let st02 = format!("{i:09}");
        let mut body: Vec<String> = vec![
            format!("ST*270*{st02}*005010X279A1"),
            format!("BHT*0022*13*REF-{i:09}*20261125*1000"),
            "HL*1**20*1".into(),
            "NM1*PR*2*DEMO HEALTH PLAN*****PI*DEMOPAYER".into(),
            "HL*2*1*21*1".into(),
            "NM1*1P*2*ACME HOME HEALTH*****XX*1234567893".into(),
        ];
        let (id, last, first, dob) = SUBSCRIBERS[i % SUBSCRIBERS.len()];
        match i % 10 {
            // Dependent of 11122333301 (no own member id): subscriber level, then the 2000D loop.
            7 => {
                body.push("HL*3*2*22*1".into());
                body.push("NM1*IL*1*SMITH*ROBERT****MI*11122333301".into());
                body.push("HL*4*3*23*0".into());
                body.push(format!("TRN*1*TRACE-{i:09}*9DEMOPROV1"));
                body.push("NM1*03*1*SMITH*MARY".into());
                body.push("DMG*D8*19781014*F".into());
                body.push("DTP*291*D8*20261125".into());
                body.push("EQ*30".into());
            }
            // Unknown member.
            9 => {
                body.push("HL*3*2*22*0".into());
                body.push(format!("TRN*1*TRACE-{i:09}*9DEMOPROV1"));
                body.push(format!("NM1*IL*1*NOBODY*NEMO****MI*ZZ{i:09}"));
                body.push("DMG*D8*19700101*U".into());
                body.push("EQ*30".into());
            }
            // Several service types in one EQ.
            3 => {
                body.push("HL*3*2*22*0".into());
                body.push(format!("TRN*1*TRACE-{i:09}*9DEMOPROV1"));
                body.push(format!("NM1*IL*1*{last}*{first}****MI*{id}"));
                body.push(format!("DMG*D8*{dob}"));
                body.push("DTP*291*D8*20261125".into());
                body.push("EQ*98^UC^47^86".into());
            }
            _ => {
                body.push("HL*3*2*22*0".into());
                body.push(format!("TRN*1*TRACE-{i:09}*9DEMOPROV1"));
                body.push(format!("NM1*IL*1*{last}*{first}****MI*{id}"));
                body.push(format!("DMG*D8*{dob}"));
                body.push("DTP*291*D8*20261125".into());
                body.push("EQ*30".into());
            }
        }
        body.push(format!("SE*{}*{st02}", body.len() + 1));
        for seg in body {
            s.push_str(&seg);
            s.push_str("~\n");
        }
    }
    s.push_str(&format!("GE*{sets}*101~\nIEA*1*000000101~\n"));
    s.into_bytes()
}

/// Every segment, every element: the work a consumer of the tokenizer does at the least.
fn tokenize_all(input: &[u8]) -> (usize, usize) {
    let mut segments = 0usize;
    let mut element_bytes = 0usize;
    for seg in Tokenizer::new(input).expect("ISA") {
        let seg = seg.expect("segment");
        segments += 1;
        element_bytes += seg.id.len();
        for el in seg.elements() {
            element_bytes += el.len();
        }
        if let Some(bin) = seg.binary() {
            element_bytes += bin.len();
        }
    }
    (segments, element_bytes)
}

fn check(input: &[u8]) {
    let ic = parse_interchange(input, &[x279a1::KIND_270]).expect("interchange");
    assert_eq!(ic.groups.len(), 1);
    assert!(ic.groups[0].errors.is_empty(), "group errors: {:?}", ic.groups[0].errors);
    assert_eq!(ic.groups[0].sets.len(), SETS);
    for set in ic.sets() {
        let mut ack = set.ack.clone();
        guide::validate(&x279a1::GUIDE_270, &set.body, &mut ack);
        assert!(!ack.is_rejected(), "set {} rejected: {ack:?}", set.control_number());
    }
}

fn benches(c: &mut Criterion) {
    let input = interchange(SETS);
    check(&input);
    let (segments, _) = tokenize_all(&input);
    eprintln!("input: {} bytes, {SETS} sets, {segments} segments", input.len());

    let mut g = c.benchmark_group("x12_270_10k");
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function("memchr_terminators", |b| b.iter(|| memchr::memchr_iter(b'~', black_box(&input)).count()));
    g.bench_function("tokenize_segments_only", |b| {
        b.iter(|| Tokenizer::new(black_box(&input)).expect("ISA").map(|s| s.expect("segment").offset).sum::<usize>())
    });
    g.bench_function("tokenize", |b| b.iter(|| tokenize_all(black_box(&input))));
    // The envelope benches take a second per iteration while set control numbers are checked pairwise.
    g.sample_size(10);
    g.bench_function("parse_interchange", |b| {
        b.iter(|| {
            let ic = parse_interchange(black_box(&input), &[x279a1::KIND_270]).expect("interchange");
            ic.groups.len()
        })
    });
    g.bench_function("parse_and_validate", |b| {
        b.iter(|| {
            let ic = parse_interchange(black_box(&input), &[x279a1::KIND_270]).expect("interchange");
            let mut located = 0usize;
            for set in ic.sets() {
                let mut ack: SetAck = set.ack.clone();
                located += guide::validate(&x279a1::GUIDE_270, &set.body, &mut ack).len();
            }
            located
        })
    });
    g.finish();
}

criterion_group!(tokenizer, benches);
criterion_main!(tokenizer);
