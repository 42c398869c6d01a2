//! Prior authorization in-process, through the function's router (auth middleware, parse, validate, policy
//! decision, vaulted request and answer, then the case, its submission record and the request's audit record in one
//! transaction), with the demo payer data, on a current-thread Tokio runtime (one core). Every iteration is a new
//! submission (fresh Bundle.identifier / ISA13), so each one creates a case.
//!
//! - `pas_submit`: `POST /fhir/Claim/$submit` with `events/prior-auth/sample-pas-bundle.json` (one item approved,
//!   one pended);
//! - `x12_278`: `POST /x12/278` with `events/prior-auth/sample-278.x12`;
//! - `pas_parse_only`: the request Bundle's rules alone (the baseline the criterion figures are compared with).
//!
//! Before criterion runs, p50 / p99 over 2,000 requests are printed for each flow on two stores, and for the
//! baseline the embedded figures are compared with, interleaved one of each per round (so all see the same disk):
//! - the embedded store (a redb file and encrypted files in a temporary directory: what the local runner uses);
//! - the in-memory store and blob store (the exchange's own work, without any storage engine or disk);
//! - `durable_floor`: only the durable writes a submission must make, on the same file system as the embedded
//!   store: two documents of the sample request's and answer's sizes written concurrently through the embedded
//!   blob store (each flushed with its directory), then one redb commit of one item of a case's size. No parsing,
//!   deciding or encryption: what the disk costs whatever the exchange does.
//!
//! Run: `cargo bench -j 2 -p prior-auth --no-default-features --bench prior_auth -- --measurement-time 5`. With
//! `TMPDIR=/dev/shm` the data directories are on tmpfs, where `fsync` is free.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use criterion::{criterion_group, criterion_main, Criterion};
use exchange_core::adapters::embedded::EmbeddedAdapters;
use exchange_core::adapters::notifier::HttpNotifier;
use exchange_core::app::App;
use exchange_core::domain::payer_data::PayerData;
use exchange_core::ports::{BlobStore, Item, Key, StateStore};
use http::Request;
use prior_auth::{PriorAuth, Settings};
use tower::ServiceExt;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The function's router with a provider token and the sample requests.
struct Bench {
    router: axum::Router,
    provider: String,
    bundle: serde_json::Value,
    x12: String,
    _dir: tempfile::TempDir,
}

/// The function over the embedded store (`in_memory` false) or the in-memory one.
async fn setup(in_memory: bool) -> Bench {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = if in_memory {
        App::in_memory(dir.path()).expect("in-memory app")
    } else {
        App::embedded(dir.path(), "").expect("embedded app")
    };
    let data =
        PayerData::parse(&std::fs::read(format!("{ROOT}/infra/local-runner/demo/payer-data.json")).expect("demo"))
            .expect("demo data");
    app.repo().load(&data).await.expect("load");
    let partner = data.trading_partners.iter().find(|p| p.id.as_str() == "demo-provider").expect("demo-provider");
    let provider = app.tokens().issue(partner, app.clock().now(), 3600).await.expect("token");
    let notifier = Arc::new(HttpNotifier::new(Duration::from_secs(1)).expect("notifier"));
    let pa = Arc::new(PriorAuth::new(Arc::new(app), notifier, Settings::default()));
    let bundle: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("{ROOT}/events/prior-auth/sample-pas-bundle.json")).expect("sample bundle"),
    )
    .expect("json");
    let x12 = std::fs::read_to_string(format!("{ROOT}/events/prior-auth/sample-278.x12")).expect("sample 278");
    Bench { router: prior_auth::router(pa), provider, bundle, x12, _dir: dir }
}

/// The durable writes of one submission and nothing else, on the embedded adapters in a directory of their own.
struct Floor {
    adapters: EmbeddedAdapters,
    request: Vec<u8>,
    answer: Vec<u8>,
    case: serde_json::Value,
    _dir: tempfile::TempDir,
}

impl Floor {
    fn new(request_len: usize, answer_len: usize, case_len: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let adapters = EmbeddedAdapters::open(dir.path()).expect("embedded adapters");
        let case = serde_json::json!({ "padding": "x".repeat(case_len) });
        Floor { adapters, request: vec![b'r'; request_len], answer: vec![b'a'; answer_len], case, _dir: dir }
    }

    async fn write(&self, n: u64) {
        let (inbound, outbound) = (format!("inbound/floor/{n}"), format!("outbound/floor/{n}"));
        let (a, b) = tokio::join!(
            self.adapters.blobs.put(&inbound, self.request.clone()),
            self.adapters.blobs.put(&outbound, self.answer.clone()),
        );
        a.expect("request document");
        b.expect("answer document");
        let item = Item::new(Key::new(format!("FLOOR#{n}"), "CASE"), self.case.clone());
        self.adapters.store.put_new(item).await.expect("commit");
    }
}

async fn send(b: &Bench, path: &str, content_type: &str, body: Vec<u8>) -> u16 {
    let req = Request::post(path)
        .header("authorization", format!("Bearer {}", b.provider))
        .header("content-type", content_type)
        .body(Body::from(body))
        .expect("request");
    let resp = b.router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let _ = axum::body::to_bytes(resp.into_body(), usize::MAX).await;
    status
}

fn pas_body(b: &Bench, n: u64) -> Vec<u8> {
    let mut bundle = b.bundle.clone();
    bundle["identifier"]["value"] = serde_json::Value::from(format!("BENCH-{n}"));
    serde_json::to_vec(&bundle).expect("json")
}

fn x12_body(b: &Bench, n: u64) -> Vec<u8> {
    // ISA13 sits at a fixed position (ISA is fixed width); the IEA02 must match it.
    let control = format!("{:09}", n % 1_000_000_000);
    let mut text = b.x12.clone();
    let isa_end = text.find('~').unwrap_or(0);
    let isa: Vec<&str> = text[..isa_end].split('*').collect();
    let old = isa.get(13).copied().unwrap_or("").to_owned();
    text = text.replacen(&format!("*{old}*"), &format!("*{control}*"), 1);
    text = text.replace(&format!("IEA*1*{old}"), &format!("IEA*1*{control}"));
    text.into_bytes()
}

/// Prints p50 and p99 of `times` as `name`; returns the p99.
fn percentiles(name: &str, mut times: Vec<Duration>) -> Duration {
    times.sort();
    let at = |q: usize| times.get(times.len() * q / 100).copied().unwrap_or_default();
    eprintln!("{name}: p50 {:?}  p99 {:?}  ({} requests, interleaved)", at(50), at(99), times.len());
    at(99)
}

/// Times one request and checks it was answered 200.
fn timed(rt: &tokio::runtime::Runtime, b: &Bench, path: &str, content_type: &str, body: Vec<u8>) -> Duration {
    let t = Instant::now();
    let status = rt.block_on(send(b, path, content_type, body));
    let elapsed = t.elapsed();
    assert_eq!(status, 200, "{path}");
    elapsed
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let b = rt.block_on(setup(false));
    let mut counter = 10_000_000u64;
    // `cargo test --all-targets` runs benches once in test mode (unoptimised): skip the percentile runs.
    if std::env::args().any(|a| a == "--bench") {
        let memory = rt.block_on(setup(true));
        let sample = pas_body(&b, 0);
        let answer_len = rt.block_on(async {
            let req = Request::post("/fhir/Claim/$submit")
                .header("authorization", format!("Bearer {}", memory.provider))
                .header("content-type", "application/fhir+json")
                .body(Body::from(sample.clone()))
                .expect("request");
            let resp = memory.router.clone().oneshot(req).await.expect("infallible");
            axum::body::to_bytes(resp.into_body(), usize::MAX).await.map(|b| b.len()).unwrap_or(0)
        });
        // A case item is about the size of the answer (the same items, decisions and references).
        let floor = Floor::new(sample.len(), answer_len, answer_len);
        let (ct, x12) = ("application/fhir+json", "application/edi-x12");
        // Interleaved, one of each per round, so that every flow and the floor see the same disk: this machine's
        // flush latency drifts over seconds, and flows timed one after the other would compare different disks.
        let mut rounds: Vec<[Duration; 5]> = Vec::with_capacity(2000);
        for n in 0..2000u64 {
            let t = Instant::now();
            rt.block_on(floor.write(n));
            let floor_time = t.elapsed();
            rounds.push([
                floor_time,
                timed(&rt, &b, "/fhir/Claim/$submit", ct, pas_body(&b, n)),
                timed(&rt, &memory, "/fhir/Claim/$submit", ct, pas_body(&memory, n + 1)),
                timed(&rt, &b, "/x12/278", x12, x12_body(&b, n + 5000)),
                timed(&rt, &memory, "/x12/278", x12, x12_body(&memory, n + 5000)),
            ]);
        }
        let names = ["durable_floor", "pas_submit", "pas_submit_memory_store", "x12_278", "x12_278_memory_store"];
        let p99: Vec<Duration> = names
            .iter()
            .enumerate()
            .map(|(i, name)| percentiles(name, rounds.iter().map(|r| r[i]).collect()))
            .collect();
        let ratio = |a: Duration| a.as_secs_f64() / p99[0].as_secs_f64();
        eprintln!(
            "p99 against the durable floor: pas_submit {:.2}x (memory store {:.2}x), x12_278 {:.2}x (memory store {:.2}x)",
            ratio(p99[1]),
            ratio(p99[2]),
            ratio(p99[3]),
            ratio(p99[4])
        );
    }

    let mut g = c.benchmark_group("prior_auth");
    g.bench_function("pas_parse_only", |bench| {
        bench.iter(|| prior_auth::pas::request::parse_submit(black_box(&b.bundle)).is_ok())
    });
    g.bench_function("pas_submit", |bench| {
        bench.iter(|| {
            counter += 1;
            rt.block_on(send(&b, "/fhir/Claim/$submit", "application/fhir+json", pas_body(&b, counter)))
        })
    });
    g.bench_function("x12_278", |bench| {
        bench.iter(|| {
            counter += 1;
            rt.block_on(send(&b, "/x12/278", "application/edi-x12", x12_body(&b, counter)))
        })
    });
    g.finish();
}

criterion_group!(prior_auth_benches, benches);
criterion_main!(prior_auth_benches);
