//! Access tokens: what every protected request pays to check its bearer token, and the token endpoint.
//!
//! - `access_token_verify`: [`TokenService::verify`] of a token it has not seen (base64, ES384 signature with
//!   aws-lc-rs, claims): what the first request with a new token pays, once per token (a five-minute token is
//!   then remembered);
//! - `access_token_verify_remembered`: the same token again (the verified-token cache: expiry re-checked);
//! - `token_endpoint`: `POST /auth/token` through the router: form, client assertion (ES384 against the partner's
//!   JWK Set), claims, scopes, the `jti` written to the replay ledger (embedded store: a durable commit), and the
//!   access token signed with the exchange's key;
//! - `decode_only`: base64url-decoding and parsing a token's claims, the baseline the figures are compared with.
//!
//! Run: `cargo bench -j 2 -p auth --no-default-features --bench token -- --measurement-time 5`.

use std::hint::black_box;
use std::sync::Arc;

use axum::body::Body;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use exchange_core::app::App;
use exchange_core::auth::{TokenService, TOKEN_LIFETIME_SECS};
use exchange_core::domain::payer_data::PayerData;
use exchange_core::jose::{Jwk, Jwks};
use p384::ecdsa::signature::Signer as _;
use serde_json::json;
use tower::ServiceExt;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const BASE: &str = "https://exchange.bench";

fn jwk(key: &p384::ecdsa::SigningKey) -> Jwk {
    Jwk::ec_p384("bench-1", key.verifying_key().to_encoded_point(false).as_bytes()).expect("a P-384 point")
}

fn assertion(key: &p384::ecdsa::SigningKey, now: i64, n: u64) -> String {
    let header = json!({"alg": "ES384", "typ": "JWT", "kid": "bench-1"});
    let claims = json!({
        "iss": "demo-provider", "sub": "demo-provider", "aud": format!("{BASE}/auth/token"),
        "exp": now + 240, "jti": format!("bench-{n}-{}", rand::random::<u64>())
    });
    let input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig: p384::ecdsa::Signature = key.sign(input.as_bytes());
    let form = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
    format!(
        "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&scope=eligibility+prior-auth&client_assertion={form}"
    )
}

async fn post(router: &axum::Router, body: String) -> u16 {
    let req = axum::http::Request::post("/auth/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let _ = axum::body::to_bytes(resp.into_body(), usize::MAX).await;
    status
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let app = Arc::new(App::embedded(dir.path(), "").expect("embedded app"));
    let mut data =
        PayerData::parse(&std::fs::read(format!("{ROOT}/infra/local-runner/demo/payer-data.json")).expect("demo"))
            .expect("demo data");
    let key = p384::ecdsa::SigningKey::random(&mut rand::thread_rng());
    for p in &mut data.trading_partners {
        if p.id.as_str() == "demo-provider" {
            p.client_jwks = Some(Jwks { keys: vec![jwk(&key)] });
        }
    }
    rt.block_on(app.repo().load(&data)).expect("load");
    let partner = data.trading_partners.iter().find(|p| p.id.as_str() == "demo-provider").expect("partner").clone();
    let now = app.clock().now();
    let tokens: &TokenService = app.tokens();
    let settings = auth::Settings { public_base_url: Some(BASE.into()) };
    let router = auth::router(Arc::new(auth::Auth::new(app.clone(), settings)));
    // The answers must be real ones, or the figures mean nothing.
    assert_eq!(rt.block_on(post(&router, assertion(&key, now.unix_timestamp(), 0))), 200, "token issued");
    let token = rt.block_on(tokens.issue(&partner, now, TOKEN_LIFETIME_SECS)).expect("token");
    assert!(rt.block_on(tokens.verify(&token, now)).is_ok(), "token verifies");

    let mut g = c.benchmark_group("auth");
    g.bench_function("decode_only", |b| {
        b.iter(|| {
            let claims = black_box(&token).split('.').nth(1).unwrap_or("");
            let bytes = URL_SAFE_NO_PAD.decode(claims).unwrap_or_default();
            serde_json::from_slice::<serde_json::Value>(&bytes).is_ok()
        })
    });
    g.bench_function("access_token_verify", |b| {
        // A new token each time (issued outside the timed part), so the cache never answers.
        b.iter_batched(
            || rt.block_on(tokens.issue(&partner, now, TOKEN_LIFETIME_SECS)).expect("token"),
            |t| rt.block_on(tokens.verify(&t, now)).is_ok(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("access_token_verify_remembered", |b| {
        b.iter(|| rt.block_on(tokens.verify(black_box(&token), now)).is_ok())
    });
    let mut n = 1u64;
    g.bench_function("token_endpoint", |b| {
        b.iter_batched(
            || {
                n += 1;
                assertion(&key, now.unix_timestamp(), n)
            },
            |body| rt.block_on(post(&router, body)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(token_benches, benches);
criterion_main!(token_benches);
