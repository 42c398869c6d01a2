//! CRD order-sign in-process, through the function's router: the CDS client JWT verified (ES384 against the
//! partner's registered key), the request checked, three orders evaluated under the member's plan, the answer built,
//! and the kept assertions with the JWT's replay record committed in one transaction, with the demo payer data, on
//! a current-thread Tokio runtime (one core). Two stores: the embedded one (a redb file in a temporary directory,
//! one durable commit per call) and the in-memory one, which leaves the exchange's own work (what runs in the Lambda
//! besides the DynamoDB round trips).
//!
//! The three orders are the demo plan's three policy outcomes: CPT 97110 (covered, no authorization), CPT 70551
//! (authorization needed, documents and a form) and HCPCS S9090 (not covered). Every iteration presents a new JWT
//! (a fresh `jti`), minted outside the timed part.
//!
//! - `order_sign_3_orders`: `POST /cds-services/order-sign-crd`, embedded store;
//! - `order_sign_3_orders_memory_store`: the same over the in-memory store;
//! - `jwt_verify_only`: the ES384 client JWT's signature and registered claims alone (part of every hook call);
//! - `request_parse_only`: the hook request's checks alone (the baseline the figures are compared with).
//!
//! Before criterion runs, order-sign is timed over 2,000 sequential requests on each store and p50 / p99 are
//! printed.
//!
//! Run: `cargo bench -j 2 -p davinci --no-default-features --bench crd -- --measurement-time 5`. With
//! `TMPDIR=/dev/shm` the data directory is on tmpfs, where `fsync` is free, which separates the exchange's own work
//! from the disk's flush latency.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use davinci::crd::ehr::HttpEhr;
use davinci::crd::request::{self, Hook};
use davinci::{Davinci, Settings};
use exchange_core::app::App;
use exchange_core::domain::payer_data::PayerData;
use exchange_core::jose::{check_claims, Jwk, Jwks, UnverifiedJws};
use p384::ecdsa::signature::Signer as _;
use serde_json::{json, Value};
use tower::ServiceExt;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const BASE: &str = "https://exchange.bench";
const ISSUER: &str = "https://ehr.bench";
const AUDIENCE: &str = "https://exchange.bench/cds-services/order-sign-crd";

struct Bench {
    router: axum::Router,
    key: p384::ecdsa::SigningKey,
    jwks: Jwks,
    body: Vec<u8>,
    now: i64,
    _dir: tempfile::TempDir,
}

fn jwk(key: &p384::ecdsa::SigningKey) -> Jwk {
    Jwk::ec_p384("bench-1", key.verifying_key().to_encoded_point(false).as_bytes()).expect("a P-384 point")
}

fn order(id: &str, system: &str, code: &str) -> Value {
    json!({
        "resourceType": "ServiceRequest", "id": id, "status": "draft", "intent": "order",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": "Patient/pat1"}
    })
}

fn order_sign_body() -> Vec<u8> {
    let cpt = "http://www.ama-assn.org/go/cpt";
    let hcpcs = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets";
    let orders = [order("pt", cpt, "97110"), order("mri", cpt, "70551"), order("sauna", hcpcs, "S9090")];
    let body = json!({
        "hook": "order-sign",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {
            "userId": "Practitioner/pr1", "patientId": "pat1",
            "draftOrders": {"resourceType": "Bundle", "type": "collection",
                            "entry": orders.iter().map(|o| json!({"resource": o})).collect::<Vec<_>>()}
        },
        "prefetch": {"coverage": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
            "resourceType": "Coverage", "id": "cov1", "status": "active", "subscriberId": "11122333301",
            "beneficiary": {"reference": "Patient/pat1"},
            "payor": [{"identifier": {"value": "DEMOPAYER"}}]
        }}]}}
    });
    serde_json::to_vec(&body).expect("json")
}

/// The function over the embedded store (`in_memory` false) or the in-memory one.
async fn setup(in_memory: bool) -> Bench {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = if in_memory {
        App::in_memory(dir.path()).expect("in-memory app")
    } else {
        App::embedded(dir.path(), "").expect("embedded app")
    };
    let mut data =
        PayerData::parse(&std::fs::read(format!("{ROOT}/infra/local-runner/demo/payer-data.json")).expect("demo"))
            .expect("demo data");
    let key = p384::ecdsa::SigningKey::random(&mut rand::thread_rng());
    let jwks = Jwks { keys: vec![jwk(&key)] };
    for p in &mut data.trading_partners {
        if p.id.as_str() == "demo-provider" {
            p.jwks = Some(jwks.clone());
            p.cds_issuers = vec![ISSUER.to_owned()];
        }
    }
    app.repo().load(&data).await.expect("load");
    let now = app.clock().now().unix_timestamp();
    let settings = Settings { public_base_url: Some(BASE.into()), fetch_from_ehr: false, allow_http_ehr: false };
    let dv = Arc::new(Davinci::new(Arc::new(app), Arc::new(HttpEhr::new()), settings));
    Bench { router: davinci::router(dv), key, jwks, body: order_sign_body(), now, _dir: dir }
}

/// A fresh CDS client JWT (new `jti`); not part of what is timed.
fn jwt(b: &Bench, n: u64) -> String {
    let header = json!({"alg": "ES384", "typ": "JWT", "kid": "bench-1"});
    let claims = json!({
        "iss": ISSUER, "sub": "ehr-client", "aud": AUDIENCE,
        "iat": b.now, "exp": b.now + 240, "jti": format!("bench-{n}-{}", rand::random::<u64>())
    });
    let input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig: p384::ecdsa::Signature = b.key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

async fn order_sign(b: &Bench, jwt: String) -> u16 {
    let req = axum::http::Request::post("/cds-services/order-sign-crd")
        .header("authorization", format!("Bearer {jwt}"))
        .header("content-type", "application/json")
        .body(Body::from(b.body.clone()))
        .expect("request");
    let resp = b.router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let _ = axum::body::to_bytes(resp.into_body(), usize::MAX).await;
    status
}

fn percentiles(rt: &tokio::runtime::Runtime, b: &Bench, name: &str) {
    let mut times = Vec::with_capacity(2000);
    for n in 0..2000u64 {
        let token = jwt(b, 1_000_000 + n);
        let t = Instant::now();
        let status = rt.block_on(order_sign(b, token));
        times.push(t.elapsed());
        assert_eq!(status, 200, "{name}");
    }
    times.sort();
    eprintln!("{name}: p50 {:?}  p99 {:?}  (2,000 sequential requests)", times[1000], times[1980]);
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let embedded = rt.block_on(setup(false));
    let memory = rt.block_on(setup(true));
    // The answers must be real ones, or the figures mean nothing.
    for b in [&embedded, &memory] {
        assert_eq!(rt.block_on(order_sign(b, jwt(b, 0))), 200, "order-sign answered");
    }
    // `cargo test --all-targets` runs benches once in test mode (unoptimised): skip the 4,000-request percentiles.
    if std::env::args().any(|a| a == "--bench") {
        percentiles(&rt, &embedded, "order_sign_3_orders");
        percentiles(&rt, &memory, "order_sign_3_orders_memory_store");
    }

    let mut counter = 1u64;
    let mut g = c.benchmark_group("crd");
    g.bench_function("request_parse_only", |bench| {
        bench.iter(|| request::parse(Hook::OrderSign, black_box(&embedded.body)).is_ok())
    });
    let token = jwt(&embedded, 0);
    g.bench_function("jwt_verify_only", |bench| {
        bench.iter(|| {
            UnverifiedJws::parse(black_box(&token))
                .and_then(|jws| jws.verify(&embedded.jwks))
                .and_then(|claims| check_claims(&claims, AUDIENCE, embedded.now, 300))
                .is_ok()
        })
    });
    for (name, b) in [("order_sign_3_orders", &embedded), ("order_sign_3_orders_memory_store", &memory)] {
        g.bench_function(name, |bench| {
            bench.iter_batched(
                || {
                    counter += 1;
                    jwt(b, counter)
                },
                |token| rt.block_on(order_sign(b, token)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(crd_benches, benches);
criterion_main!(crd_benches);
