//! Prior authorization in-process, through the function's router (auth middleware, parse, validate, policy
//! decision, case and submission records in one transaction, vaulted request and answer) over the embedded store
//! (a redb file and encrypted files in a temporary directory) with the demo payer data, on a current-thread Tokio
//! runtime (one core). Every iteration is a new submission (fresh Bundle.identifier / ISA13), so each one
//! creates a case.
//!
//! - `pas_submit`: `POST /fhir/Claim/$submit` with `events/prior-auth/sample-pas-bundle.json` (one item approved,
//!   one pended);
//! - `x12_278`: `POST /x12/278` with `events/prior-auth/sample-278.x12`;
//! - `pas_parse_only`: the request Bundle's rules alone (the baseline the figures are compared with).
//!
//! Before criterion runs, each flow is timed over 2,000 sequential requests and p50 / p99 are printed.
//!
//! Run: `cargo bench -j 2 -p prior-auth --no-default-features --bench prior_auth -- --measurement-time 5`. With
//! `TMPDIR=/dev/shm` the data directory is on tmpfs, where `fsync` is free, which separates the exchange's own work
//! from the disk's flush latency.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use criterion::{criterion_group, criterion_main, Criterion};
use exchange_core::adapters::notifier::HttpNotifier;
use exchange_core::app::App;
use exchange_core::domain::payer_data::PayerData;
use http::Request;
use prior_auth::{PriorAuth, Settings};
use tower::ServiceExt;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

struct Bench {
    router: axum::Router,
    provider: String,
    bundle: serde_json::Value,
    x12: String,
    _dir: tempfile::TempDir,
}

async fn setup() -> Bench {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::embedded(dir.path(), "").expect("embedded app");
    let data =
        PayerData::parse(&std::fs::read(format!("{ROOT}/infra/local-runner/demo/payer-data.json")).expect("demo"))
            .expect("demo data");
    app.repo.load(&data).await.expect("load");
    let partner = data.trading_partners.iter().find(|p| p.id.as_str() == "demo-provider").expect("demo-provider");
    let provider = app.tokens.issue(partner, app.clock.now(), 3600).await.expect("token");
    let notifier = Arc::new(HttpNotifier::new(Duration::from_secs(1)).expect("notifier"));
    let pa = Arc::new(PriorAuth::new(Arc::new(app), notifier, Settings::default()));
    let bundle: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("{ROOT}/events/prior-auth/sample-pas-bundle.json")).expect("sample bundle"),
    )
    .expect("json");
    let x12 = std::fs::read_to_string(format!("{ROOT}/events/prior-auth/sample-278.x12")).expect("sample 278");
    Bench { router: prior_auth::router(pa), provider, bundle, x12, _dir: dir }
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

fn percentiles(
    rt: &tokio::runtime::Runtime,
    b: &Bench,
    name: &str,
    mut f: impl FnMut(u64) -> (String, Vec<u8>, &'static str),
) {
    let mut times = Vec::with_capacity(2000);
    for n in 0..2000u64 {
        let (path, body, ct) = f(n);
        let t = Instant::now();
        let status = rt.block_on(send(b, &path, ct, body));
        times.push(t.elapsed());
        assert_eq!(status, 200, "{name}");
    }
    times.sort();
    eprintln!("{name}: p50 {:?}  p99 {:?}  (2,000 sequential requests)", times[1000], times[1980]);
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let b = rt.block_on(setup());
    let mut counter = 10_000_000u64;
    // `cargo test --all-targets` runs benches once in test mode (unoptimised): skip the 4,000-request percentiles.
    if std::env::args().any(|a| a == "--bench") {
        percentiles(&rt, &b, "pas_submit", |n| {
            ("/fhir/Claim/$submit".into(), pas_body(&b, n), "application/fhir+json")
        });
        percentiles(&rt, &b, "x12_278", |n| ("/x12/278".into(), x12_body(&b, n + 5000), "application/edi-x12"));
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
