//! The SMART Backend Services token endpoint (`functions/auth`) end to end: API Gateway v2 events through the auth
//! router merged with the eligibility router, over the real embedded adapters, with demo-provider's keys (one
//! P-384, one RSA) registered in the payer data. A token from `/auth/token` must open the routes its scopes allow,
//! and every bad assertion must get RFC 6749's `invalid_client` (401) without echoing it.

use std::sync::Arc;

use exchange_core::jose::{b64url, Jwk};
use exchange_tests::davinci::{jwk, sign};
use exchange_tests::prior_auth::SteppingClock;
use exchange_tests::{demo_data_path, Reply};
use serde_json::{json, Value};
use time::macros::datetime;

const BASE: &str = "https://exchange.test";
const TOKEN_URL: &str = "https://exchange.test/auth/token";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

struct Fixture {
    router: axum::Router,
    app: Arc<exchange_core::app::App>,
    clock: Arc<SteppingClock>,
    key: p384::ecdsa::SigningKey,
    /// The key of an EHR registered as demo-provider's CDS client (`jwks`), not as its backend (`clientJwks`).
    ehr_key: p384::ecdsa::SigningKey,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Self {
        Self::with_keys(vec![]).await
    }

    /// demo-provider registers its P-384 key and `extra` keys.
    async fn with_keys(extra: Vec<Jwk>) -> Self {
        use exchange_core::domain::payer_data::PayerData;
        use exchange_core::jose::Jwks;

        let clock = Arc::new(SteppingClock::at(datetime!(2026-03-10 10:00 UTC)));
        let (app, dir) = exchange_tests::embedded_app(clock.clone());
        let mut data = PayerData::parse(&std::fs::read(demo_data_path()).expect("demo")).expect("demo valid");
        let key = p384::ecdsa::SigningKey::random(&mut rand::thread_rng());
        let ehr_key = p384::ecdsa::SigningKey::random(&mut rand::thread_rng());
        for p in &mut data.trading_partners {
            if p.id.as_str() == "demo-provider" {
                let mut keys = vec![jwk(&key, "backend-1")];
                keys.extend(extra.iter().cloned());
                p.client_jwks = Some(Jwks { keys });
                p.jwks = Some(Jwks { keys: vec![jwk(&ehr_key, "backend-1")] });
                p.cds_issuers = vec!["https://ehr.example".into()];
            }
        }
        app.repo().load(&data).await.expect("load");
        let settings = auth::Settings { public_base_url: Some(BASE.into()) };
        let router =
            auth::routes(Arc::new(auth::Auth::new(app.clone(), settings))).merge(eligibility::router(app.clone()));
        Fixture { router, app, clock, key, ehr_key, _dir: dir }
    }

    fn now(&self) -> i64 {
        use exchange_core::ports::Clock;
        self.clock.now().unix_timestamp()
    }

    /// A client assertion for demo-provider, claims overridable (`null` removes a claim).
    fn assertion(&self, overrides: Value) -> String {
        let now = self.now();
        let mut claims = json!({
            "iss": "demo-provider", "sub": "demo-provider", "aud": TOKEN_URL,
            "exp": now + 240, "jti": exchange_tests::davinci::random_jti()
        });
        if let (Some(c), Some(o)) = (claims.as_object_mut(), overrides.as_object()) {
            for (k, v) in o {
                if v.is_null() {
                    c.remove(k);
                } else {
                    c.insert(k.clone(), v.clone());
                }
            }
        }
        sign(&self.key, "backend-1", &claims)
    }

    async fn send(&self, path: &str, content_type: &str, token: Option<&str>, body: &[u8]) -> Reply {
        exchange_tests::request(&self.router, "POST", path, content_type, token, body).await
    }

    /// An exchange token for a registered partner, as the admin tooling issues it.
    async fn token(&self, partner: &str) -> String {
        use exchange_core::ports::Clock;
        let id = exchange_core::domain::PartnerId::parse(partner).expect("id");
        let p = self.app.repo().partner(&id).await.expect("repo").expect("registered");
        self.app.tokens().issue(&p, self.clock.now(), 300).await.expect("token")
    }

    async fn send_as(&self, method: &str, path: &str, token: &str, body: &[u8]) -> Reply {
        exchange_tests::request(&self.router, method, path, "application/json", Some(token), body).await
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Reply {
        let body: String = form.iter().map(|(k, v)| format!("{k}={}", form_encode(v))).collect::<Vec<_>>().join("&");
        self.send("/auth/token", "application/x-www-form-urlencoded", None, body.as_bytes()).await
    }

    async fn ask(&self, assertion: &str, scope: &str) -> Reply {
        self.token_request(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion),
            ("scope", scope),
        ])
        .await
    }
}

fn form_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn sample_270() -> Vec<u8> {
    std::fs::read(exchange_tests::repo_root().join("events/eligibility/sample-270.x12")).expect("sample 270")
}

fn assert_oauth_error(reply: &Reply, status: u16, code: &str, secret: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.json()["error"], code, "{}", reply.text());
    assert_eq!(reply.header("cache-control"), "no-store");
    assert!(!secret.is_empty() && !reply.text().contains(secret), "the answer echoes the assertion");
}

#[tokio::test]
async fn a_granted_token_opens_the_routes_of_its_scopes_and_only_those() {
    let fx = Fixture::new().await;
    // Asked for more than it is allowed: granted the allowed part, in the order asked.
    let reply = fx.ask(&fx.assertion(json!({})), "prior-auth admin eligibility reviewer").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("cache-control"), "no-store");
    let body = reply.json();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["scope"], "prior-auth eligibility");
    let token = body["access_token"].as_str().expect("access_token").to_owned();

    let answer = fx.send("/x12/270", "application/edi-x12", Some(&token), &sample_270()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.segments().iter().any(|s| s.starts_with("ST*271")), "a 271: {}", answer.text());

    // A token without the route's scope is refused (RFC 6750 insufficient scope: 403), without data.
    let narrow = fx.ask(&fx.assertion(json!({})), "prior-auth").await.json();
    let narrow = narrow["access_token"].as_str().expect("token");
    let refused = fx.send("/x12/270", "application/edi-x12", Some(narrow), &sample_270()).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(!refused.text().contains("ST*271"));

    // Five minutes later the token has expired.
    fx.clock.advance(time::Duration::seconds(301));
    let late = fx.send("/x12/270", "application/edi-x12", Some(&token), &sample_270()).await;
    assert_eq!(late.status, 401, "{}", late.text());
}

#[tokio::test]
async fn every_assertion_that_does_not_authenticate_is_invalid_client() {
    let fx = Fixture::new().await;
    let now = fx.now();
    let other_key = p384::ecdsa::SigningKey::random(&mut rand::thread_rng());
    let claims =
        json!({"iss": "demo-provider", "sub": "demo-provider", "aud": TOKEN_URL, "exp": now + 240, "jti": "x-1"});
    let cases: Vec<(&str, String)> = vec![
        ("signed by a key nobody registered, under the registered kid", sign(&other_key, "backend-1", &claims)),
        ("an unknown kid", sign(&fx.key, "backend-9", &claims)),
        ("signed by the partner's CDS client (EHR) key, under the same kid", sign(&fx.ehr_key, "backend-1", &claims)),
        ("expired", fx.assertion(json!({"exp": now - 120}))),
        ("living over five minutes", fx.assertion(json!({"exp": now + 3600}))),
        ("another audience", fx.assertion(json!({"aud": "https://exchange.test/cds-services/order-sign-crd"}))),
        ("sub other than iss", fx.assertion(json!({"sub": "other-provider"}))),
        ("an unknown client id", fx.assertion(json!({"iss": "nobody", "sub": "nobody"}))),
        ("a registered partner without keys", fx.assertion(json!({"iss": "other-provider", "sub": "other-provider"}))),
        ("no jti", fx.assertion(json!({"jti": null}))),
        ("not a JWS", "not-a-token".to_owned()),
        ("alg none", {
            let parts: Vec<String> = fx.assertion(json!({})).split('.').map(str::to_owned).collect();
            let none = exchange_core::jose::b64url(br#"{"alg":"none","typ":"JWT"}"#);
            format!("{none}.{}.", parts[1])
        }),
    ];
    for (what, assertion) in cases {
        let reply = fx.ask(&assertion, "eligibility").await;
        assert_eq!(reply.status, 401, "{what}: {}", reply.text());
        assert_oauth_error(&reply, 401, "invalid_client", &assertion);
    }

    // Replayed: the same assertion is good once.
    let once = fx.assertion(json!({}));
    assert_eq!(fx.ask(&once, "eligibility").await.status, 200);
    let replay = fx.ask(&once, "eligibility").await;
    assert_oauth_error(&replay, 401, "invalid_client", &once);
    assert!(replay.json()["error_description"].as_str().unwrap_or("").contains("jti"));
}

#[tokio::test]
async fn malformed_requests_are_invalid_request_and_use_up_nothing() {
    let fx = Fixture::new().await;
    let assertion = fx.assertion(json!({}));
    let a = assertion.as_str();
    let grant = ("grant_type", "client_credentials");
    let kind = ("client_assertion_type", ASSERTION_TYPE);
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "another grant",
            vec![("grant_type", "password"), kind, ("client_assertion", a), ("scope", "eligibility")],
            "unsupported_grant_type",
        ),
        ("no grant", vec![kind, ("client_assertion", a), ("scope", "eligibility")], "invalid_request"),
        ("no assertion", vec![grant, kind, ("scope", "eligibility")], "invalid_request"),
        (
            "another assertion type",
            vec![grant, ("client_assertion_type", "urn:x"), ("client_assertion", a), ("scope", "eligibility")],
            "invalid_request",
        ),
        ("no scope", vec![grant, kind, ("client_assertion", a)], "invalid_request"),
        (
            "a scope twice",
            vec![grant, kind, ("client_assertion", a), ("scope", "eligibility"), ("scope", "admin")],
            "invalid_request",
        ),
        (
            "only scopes not allowed",
            vec![grant, kind, ("client_assertion", a), ("scope", "admin reviewer")],
            "invalid_scope",
        ),
    ];
    for (what, form, code) in cases {
        let reply = fx.token_request(&form).await;
        assert_eq!(reply.status, 400, "{what}: {}", reply.text());
        assert_oauth_error(&reply, 400, code, a);
    }
    let json = fx.send("/auth/token", "application/json", None, br#"{"grant_type":"client_credentials"}"#).await;
    assert_eq!((json.status, json.json()["error"].as_str()), (400, Some("invalid_request")));

    // None of the refusals used the assertion up.
    assert_eq!(fx.ask(&assertion, "eligibility").await.status, 200);
}

#[tokio::test]
async fn an_rs384_key_is_accepted_too() {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{KeyPair as _, RsaPublicKeyComponents, RSA_PKCS1_SHA384};
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa");
    let public = RsaPublicKeyComponents::<Vec<u8>>::from(rsa.public_key());
    let rsa_jwk = Jwk::rsa("backend-rsa", &public.n, &public.e);
    let sign_rs384 = |kid: &str, jti: &str, now: i64| {
        let header = json!({"alg": "RS384", "typ": "JWT", "kid": kid});
        let claims =
            json!({"iss": "demo-provider", "sub": "demo-provider", "aud": TOKEN_URL, "exp": now + 200, "jti": jti});
        let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let mut sig = vec![0; rsa.public_modulus_len()];
        rsa.sign(&RSA_PKCS1_SHA384, &SystemRandom::new(), input.as_bytes(), &mut sig).expect("sign");
        format!("{input}.{}", b64url(&sig))
    };

    // Before the key is registered: refused.
    let unregistered = Fixture::new().await;
    let token = sign_rs384("backend-rsa", "rsa-1", unregistered.now());
    assert_oauth_error(&unregistered.ask(&token, "eligibility").await, 401, "invalid_client", &token);

    let fx = Fixture::with_keys(vec![rsa_jwk]).await;
    let reply = fx.ask(&sign_rs384("backend-rsa", "rsa-2", fx.now()), "eligibility").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let access = reply.json()["access_token"].as_str().expect("token").to_owned();
    let answer = fx.send("/x12/270", "application/edi-x12", Some(&access), &sample_270()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test]
async fn the_admin_registers_a_partners_keys_by_loading_payer_data() {
    let fx = Fixture::new().await;
    let key = p384::ecdsa::SigningKey::random(&mut rand::thread_rng());
    let now = fx.now();
    let claims =
        json!({"iss": "other-provider", "sub": "other-provider", "aud": TOKEN_URL, "exp": now + 200, "jti": "o-1"});
    let assertion = sign(&key, "other-1", &claims);
    assert_eq!(fx.ask(&assertion, "eligibility").await.status, 401, "no keys registered yet");

    let mut data: Value = serde_json::from_slice(&std::fs::read(demo_data_path()).expect("demo")).expect("json");
    for p in data["tradingPartners"].as_array_mut().expect("partners") {
        if p["id"] == "other-provider" {
            p["clientJwks"] = json!({"keys": [jwk(&key, "other-1")]});
        }
    }
    let admin = fx.token("admin").await;
    let provider = fx.token("demo-provider").await;
    let body = serde_json::to_vec(&data).expect("json");
    assert_eq!(fx.send_as("PUT", "/admin/payer-data", &provider, &body).await.status, 403, "a provider loads nothing");
    let mut bad = data.clone();
    bad["members"][0]["dateOfBirth"] = json!("1961-13-45");
    let refused = fx.send_as("PUT", "/admin/payer-data", &admin, &serde_json::to_vec(&bad).expect("json")).await;
    assert_eq!(refused.status, 422, "{}", refused.text());
    assert!(refused.text().contains("/members/0/dateOfBirth"), "{}", refused.text());
    assert!(!refused.text().contains("1961-13-45"), "the bad value is not echoed");
    let loaded = fx.send_as("PUT", "/admin/payer-data", &admin, &body).await;
    assert_eq!(loaded.status, 200, "{}", loaded.text());
    assert!(loaded.json()["version"].as_u64().is_some_and(|v| v >= 2));

    // Loaded: the partner's next assertion gets a token (other instances see new payer data within 30 s).
    let now = fx.now();
    let claims =
        json!({"iss": "other-provider", "sub": "other-provider", "aud": TOKEN_URL, "exp": now + 200, "jti": "o-2"});
    let reply = fx.ask(&sign(&key, "other-1", &claims), "eligibility").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let access = reply.json()["access_token"].as_str().expect("token").to_owned();
    let sample = sample_270();
    assert_eq!(fx.send("/x12/270", "application/edi-x12", Some(&access), &sample).await.status, 200);

    // Offboarded: a load without the partner revokes it at once, its unexpired token and its keys with it.
    data["tradingPartners"].as_array_mut().expect("partners").retain(|p| p["id"] != "other-provider");
    let body = serde_json::to_vec(&data).expect("json");
    assert_eq!(fx.send_as("PUT", "/admin/payer-data", &admin, &body).await.status, 200);
    assert_eq!(fx.send("/x12/270", "application/edi-x12", Some(&access), &sample).await.status, 401);
    let claims =
        json!({"iss": "other-provider", "sub": "other-provider", "aud": TOKEN_URL, "exp": now + 200, "jti": "o-3"});
    assert_eq!(fx.ask(&sign(&key, "other-1", &claims), "eligibility").await.status, 401);
}

#[tokio::test]
async fn a_new_deployments_bootstrap_admin_loads_the_first_payer_data_and_then_counts_no_more() {
    use exchange_core::jose::Jwks;

    let clock = Arc::new(SteppingClock::at(datetime!(2026-03-10 10:00 UTC)));
    let (app, dir) = exchange_tests::embedded_app(clock.clone());
    let key = p384::ecdsa::SigningKey::random(&mut rand::thread_rng());
    app.repo().set_bootstrap_admin(Jwks { keys: vec![jwk(&key, "boot-1")] }).expect("bootstrap");
    let settings = auth::Settings { public_base_url: Some(BASE.into()) };
    let fx = Fixture {
        router: auth::routes(Arc::new(auth::Auth::new(app.clone(), settings))),
        app,
        clock,
        key,
        ehr_key: p384::ecdsa::SigningKey::random(&mut rand::thread_rng()),
        _dir: dir,
    };
    let now = fx.now();
    let assertion = |iss: &str, jti: &str| {
        sign(&fx.key, "boot-1", &json!({"iss": iss, "sub": iss, "aud": TOKEN_URL, "exp": now + 200, "jti": jti}))
    };
    assert_eq!(fx.ask(&assertion("demo-provider", "b-0"), "eligibility").await.status, 401, "only the admin exists");
    let reply = fx.ask(&assertion("admin", "b-1"), "admin").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let admin = reply.json()["access_token"].as_str().expect("token").to_owned();
    let data = std::fs::read(demo_data_path()).expect("demo");
    let loaded = fx.send_as("PUT", "/admin/payer-data", &admin, &data).await;
    assert_eq!(loaded.status, 200, "{}", loaded.text());
    // Loaded: the demo data's admin registers no keys, so the bootstrap key opens nothing any more.
    assert_eq!(fx.ask(&assertion("admin", "b-2"), "admin").await.status, 401);
}
