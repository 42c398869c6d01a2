//! End to end 270 → 271 through `x12_flow::answer_interchange` over the embedded store (a redb file and encrypted
//! files in a temporary directory) loaded with the demo payer data, on a current-thread Tokio runtime (one core).
//!
//! - `interchange_10k`: one interchange of 10,000 sets (subscribers found by member id, a dependent, a subscriber
//!   whose coverage ended, a member id the payer does not know), throughput in sets per second;
//! - `interchange_1_set`: latency of a one-set interchange (a real-time inquiry).
//!
//! Run: `cargo bench -j 2 -p eligibility --no-default-features --bench eligibility -- --measurement-time 5`
//! (`--no-default-features` leaves out the Lambda entry point and the AWS SDK, which the flow does not use).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eligibility::x12_flow::{answer_interchange, X12Outcome};
use eligibility::App;
use exchange_core::domain::ids::PartnerId;
use exchange_core::domain::partner::{Caller, PartnerRole};
use exchange_core::domain::payer_data::PayerData;
use exchange_core::http::CallerContext;

const SETS: usize = 10_000;
const DEMO_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/local-runner/demo/payer-data.json");

/// Who a set asks about.
enum Person {
    /// A subscriber by member id, last and first name, date of birth.
    Subscriber(&'static str, &'static str, &'static str, &'static str),
    /// A dependent without a member id of their own, under their subscriber's id.
    Dependent { subscriber_id: &'static str, last: &'static str, first: &'static str, dob: &'static str },
    /// A member id the payer does not know (answered with AAA 75).
    Unknown,
}

/// The mix of one block of ten sets: mostly subscribers found, one dependent, one whose coverage ended, one unknown.
const MIX: [Person; 10] = [
    Person::Subscriber("11122333301", "SMITH", "ROBERT", "19430519"),
    Person::Subscriber("000123450", "DOE", "PATIENT", "19900101"),
    Person::Subscriber("000123451", "DOE", "JANE", "19881231"),
    Person::Subscriber("W100200300", "O'BRIEN", "SAM", "19850315"),
    Person::Subscriber("W100200301", "O'BRIEN", "KIM", "20150720"),
    Person::Dependent { subscriber_id: "11122333301", last: "SMITH", first: "MARY", dob: "19781014" },
    Person::Subscriber("000123454", "DOE", "ALPHA", "19800101"),
    Person::Subscriber("000123457", "DOE", "TERRY", "19750505"),
    Person::Subscriber("W500000001", "ROE", "ALEX", "20000101"),
    Person::Unknown,
];

/// A 270 interchange of `sets` sets in one group, one segment per line; the date of service is `today`.
fn interchange(sets: usize, today: &str) -> Vec<u8> {
    let mut s = String::with_capacity(sets * 330 + 400);
    s.push_str(
        "ISA*00*          *00*          *ZZ*DEMOPROVIDER   *ZZ*DEMOPAYER      *261125*1000*^*00501*000000101*0*T*:~\n",
    );
    s.push_str(&format!("GS*HS*DEMOPROVIDER*DEMOPAYER*{today}*1000*101*X*005010X279A1~\n"));
    for i in 1..=sets {
        let st02 = format!("{i:09}");
        let mut body: Vec<String> = vec![
            format!("ST*270*{st02}*005010X279A1"),
            format!("BHT*0022*13*REF-{i:09}*{today}*1000"),
            "HL*1**20*1".into(),
            "NM1*PR*2*DEMO HEALTH PLAN*****PI*DEMOPAYER".into(),
            "HL*2*1*21*1".into(),
            "NM1*1P*2*ACME HOME HEALTH*****XX*1234567893".into(),
        ];
        match &MIX[i % MIX.len()] {
            Person::Subscriber(id, last, first, dob) => {
                body.push("HL*3*2*22*0".into());
                body.push(format!("TRN*1*TRACE-{i:09}*9DEMOPROV1"));
                body.push(format!("NM1*IL*1*{last}*{first}****MI*{id}"));
                body.push(format!("DMG*D8*{dob}"));
                body.push(format!("DTP*291*D8*{today}"));
                body.push(if i % 3 == 0 { "EQ*98^UC^47".into() } else { "EQ*30".into() });
            }
            Person::Dependent { subscriber_id, last, first, dob } => {
                body.push("HL*3*2*22*1".into());
                body.push(format!("NM1*IL*1*{last}*ROBERT****MI*{subscriber_id}"));
                body.push("HL*4*3*23*0".into());
                body.push(format!("TRN*1*TRACE-{i:09}*9DEMOPROV1"));
                body.push(format!("NM1*03*1*{last}*{first}"));
                body.push(format!("DMG*D8*{dob}"));
                body.push("EQ*30".into());
            }
            Person::Unknown => {
                body.push("HL*3*2*22*0".into());
                body.push(format!("TRN*1*TRACE-{i:09}*9DEMOPROV1"));
                body.push(format!("NM1*IL*1*NOBODY*NEMO****MI*ZZ{i:09}"));
                body.push("DMG*D8*19700101".into());
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

fn today() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day())
}

fn check(outcome: &X12Outcome, sets: usize) {
    assert!(outcome.ta1_note.is_none(), "TA1 {:?}", outcome.ta1_note);
    assert_eq!(outcome.sets, sets);
    assert_eq!(outcome.rejected_sets, 0, "999 rejections");
    let text = String::from_utf8_lossy(&outcome.body);
    assert_eq!(text.matches("ST*271*").count(), sets, "one 271 per set");
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::embedded(dir.path(), "").expect("embedded app");
    let data = PayerData::parse(&std::fs::read(DEMO_DATA).expect("demo data")).expect("demo data parses");
    let partner_id = PartnerId::parse("demo-provider").expect("partner id");
    let partner = rt.block_on(async {
        app.repo().load(&data).await.expect("load demo data");
        app.repo().partner(&partner_id).await.expect("partner lookup").expect("demo-provider registered")
    });
    let ctx = CallerContext {
        caller: Caller {
            partner: partner_id,
            role: PartnerRole::Provider,
            scopes: vec!["eligibility".into()],
            token_id: "bench".into(),
            client_id: "demo-provider".into(),
        },
        partner: Arc::new(partner),
        request_id: "bench-0000000000000000".into(),
        audit: Default::default(),
    };
    let svc = eligibility::service::Eligibility::new(&app);
    let today = today();

    let big = interchange(SETS, &today);
    let outcome = rt.block_on(answer_interchange(&svc, &ctx, &big)).expect("answer");
    check(&outcome, SETS);
    eprintln!(
        "10k interchange: {} bytes in, {} bytes out, {} sets, {} with an AAA rejection",
        big.len(),
        outcome.body.len(),
        outcome.sets,
        outcome.aaa_rejections
    );
    let one = interchange(1, &today);
    check(&rt.block_on(answer_interchange(&svc, &ctx, &one)).expect("answer"), 1);

    let mut g = c.benchmark_group("eligibility_270_271");
    g.throughput(Throughput::Elements(1));
    g.bench_function("interchange_1_set", |b| {
        b.iter(|| rt.block_on(answer_interchange(&svc, &ctx, black_box(&one))).expect("answer").body.len())
    });
    g.throughput(Throughput::Elements(SETS as u64));
    g.sample_size(10);
    g.bench_function("interchange_10k", |b| {
        b.iter(|| rt.block_on(answer_interchange(&svc, &ctx, black_box(&big))).expect("answer").body.len())
    });
    g.finish();
}

criterion_group!(eligibility, benches);
criterion_main!(eligibility);
