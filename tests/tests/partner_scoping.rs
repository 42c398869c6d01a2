//! Partner scoping, route by route. Every function's routes are served over one exchange with the demo data, where
//! demo-provider has submitted a prior-authorization case, an attachment and a Subscription, and demo-payer has
//! asked it for documents (a Task). Each route is then called with a token of every partner: the owner
//! (demo-provider), another provider (other-provider), the payer (demo-payer), a payer partner acting for another
//! payer (other-payer) and the admin. Whoever the table does not allow gets 403 or 404 (a list may answer 200
//! empty) and, whatever the status, nothing of what was seeded: no case, attachment, Subscription or Task id, no
//! member id or name.

use std::sync::Arc;

use exchange_tests::prior_auth::{case_id, subscription, PaExchange};
use exchange_tests::{demo_data_path, repo_root, Reply};
use serde_json::{json, Value};
use time::macros::datetime;

const PARTNERS: [&str; 5] = ["demo-provider", "other-provider", "demo-payer", "other-payer", "admin"];

/// What a route does with the seeded data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Reads one resource: the allowed get 200; the others 403/404.
    Read,
    /// Lists or searches: the allowed get 200 with the seeded data; the others 403/404 or 200 without it.
    List,
    /// Changes something: only the forbidden are called (403/404), so the seeds stay as they are.
    Write,
}

struct Route {
    method: &'static str,
    path: String,
    body: Value,
    kind: Kind,
    allowed: &'static [&'static str],
}

fn route(method: &'static str, path: String, kind: Kind, allowed: &'static [&'static str], body: Value) -> Route {
    Route { method, path, body, kind, allowed }
}

fn content_type(path: &str) -> &'static str {
    if path.starts_with("/fhir/") {
        "application/fhir+json"
    } else {
        "application/json"
    }
}

async fn call(ex: &PaExchange, router: &axum::Router, partner: &str, r: &Route) -> Reply {
    let token = ex.token(partner).await;
    let body = if r.body.is_null() { Vec::new() } else { r.body.to_string().into_bytes() };
    exchange_tests::request(router, r.method, &r.path, content_type(&r.path), Some(&token), &body).await
}

#[tokio::test]
async fn every_route_answers_only_the_partners_it_serves_and_reveals_nothing_to_the_others() {
    let ex = PaExchange::new(&demo_data_path(), datetime!(2026-03-10 10:00 UTC)).await;
    let core = ex.pa.core.clone();
    let dv = Arc::new(davinci::Davinci::new(
        core.clone(),
        Arc::new(davinci::crd::ehr::HttpEhr::new()),
        davinci::Settings::default(),
    ));
    let router = eligibility::router(core.clone())
        .merge(prior_auth::routes(ex.pa.clone()))
        .merge(attachments::routes(Arc::new(attachments::Attachments::new(core.clone()))))
        .merge(davinci::routes(dv))
        .merge(auth::routes(Arc::new(auth::Auth::new(core.clone(), auth::Settings::default()))));
    let send = |partner: &'static str, method: &'static str, path: String, body: Value| {
        let (ex, router) = (&ex, &router);
        async move {
            let token = ex.token(partner).await;
            let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
            exchange_tests::request(router, method, &path, content_type(&path), Some(&token), &body).await
        }
    };

    // The seeds.
    let bundle: Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("events/prior-auth/sample-pas-bundle.json")).expect("pas"),
    )
    .expect("json");
    let submitted = send("demo-provider", "POST", "/fhir/Claim/$submit".into(), bundle.clone()).await;
    assert_eq!(submitted.status, 200, "{}", submitted.text());
    let case = case_id(&submitted.json());
    let cdex: Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("events/attachments/submit-attachment-parameters.json")).expect("cdex"),
    )
    .expect("json");
    assert_eq!(send("demo-provider", "POST", "/fhir/$submit-attachment".into(), cdex).await.status, 200);
    let listed = send("demo-provider", "GET", "/attachments".into(), Value::Null).await.json();
    let attachment = listed["attachments"][0]["id"].as_str().expect("the attachment").to_owned();
    let sub = send(
        "demo-provider",
        "POST",
        "/fhir/Subscription".into(),
        subscription("1234567893", "https://ehr.example/hook"),
    )
    .await;
    assert_eq!(sub.status, 201, "{}", sub.text());
    let subscription_id = sub.json()["id"].as_str().expect("subscription id").to_owned();
    let asked = send(
        "demo-payer",
        "POST",
        format!("/review/cases/{case}/documentation-requests"),
        json!({"items": [2], "documentation": ["18748-4"]}),
    )
    .await;
    assert_eq!(asked.status, 200, "{}", asked.text());
    let tasks = send("demo-provider", "GET", "/fhir/Task".into(), Value::Null).await.json();
    let task = tasks["entry"][0]["resource"]["id"].as_str().expect("the Task").to_owned();
    let secrets =
        [case.clone(), attachment.clone(), subscription_id.clone(), task.clone(), "11122333301".into(), "SMITH".into()];

    const PROVIDER: &[&str] = &["demo-provider"];
    const PAYER: &[&str] = &["demo-payer"];
    const BOTH: &[&str] = &["demo-provider", "demo-payer"];
    const ADMIN: &[&str] = &["admin"];
    let demo_data: Value = serde_json::from_slice(&std::fs::read(demo_data_path()).expect("demo")).expect("json");
    let inquiry = {
        let mut b = bundle.clone();
        b["identifier"]["value"] = json!("INQUIRY-1");
        b
    };
    let table = vec![
        route("GET", "/review/cases".into(), Kind::List, PAYER, Value::Null),
        route("GET", format!("/review/cases/{case}"), Kind::Read, PAYER, Value::Null),
        route(
            "POST",
            format!("/review/cases/{case}/decisions"),
            Kind::Write,
            PAYER,
            json!({"decisions": [{"item": 2, "action": "A1"}]}),
        ),
        route(
            "POST",
            format!("/review/cases/{case}/documentation-requests"),
            Kind::Write,
            PAYER,
            json!({"items": [2], "documentation": ["11506-3"]}),
        ),
        route("GET", "/review/dead-letters".into(), Kind::Read, PAYER, Value::Null),
        route(
            "GET",
            "/metrics/prior-auth?from=2026-03-01&to=2026-03-31".into(),
            Kind::Read,
            &["demo-payer", "admin"],
            Value::Null,
        ),
        route("GET", "/attachments".into(), Kind::List, BOTH, Value::Null),
        route("GET", format!("/attachments/{attachment}"), Kind::Read, BOTH, Value::Null),
        route("GET", format!("/attachments/{attachment}/documents/1"), Kind::Read, BOTH, Value::Null),
        route("GET", "/fhir/DocumentReference?patient:identifier=11122333301".into(), Kind::List, BOTH, Value::Null),
        route("GET", "/fhir/Task".into(), Kind::List, PROVIDER, Value::Null),
        route("GET", format!("/fhir/Task/{task}"), Kind::Read, BOTH, Value::Null),
        route("GET", "/fhir/Subscription".into(), Kind::List, PROVIDER, Value::Null),
        route("GET", format!("/fhir/Subscription/{subscription_id}"), Kind::Read, PROVIDER, Value::Null),
        route("DELETE", format!("/fhir/Subscription/{subscription_id}"), Kind::Write, PROVIDER, Value::Null),
        route("POST", "/fhir/Claim/$inquire".into(), Kind::List, PROVIDER, inquiry),
        route("GET", "/admin/audit?partner=demo-provider".into(), Kind::List, ADMIN, Value::Null),
        route("GET", "/admin/audit?member=11122333301".into(), Kind::List, ADMIN, Value::Null),
        route("GET", "/admin/audit/verify".into(), Kind::Read, ADMIN, Value::Null),
        route("PUT", "/admin/payer-data".into(), Kind::Write, ADMIN, demo_data.clone()),
    ];

    let mut failures = Vec::new();
    for r in &table {
        for partner in PARTNERS {
            let allowed = r.allowed.contains(&partner);
            if allowed && r.kind == Kind::Write {
                continue;
            }
            let reply = call(&ex, &router, partner, r).await;
            let text = reply.text();
            let what = format!("{} {} as {partner}: {}", r.method, r.path, reply.status);
            if allowed {
                if reply.status != 200 {
                    failures.push(format!("{what} (allowed): {}", text.chars().take(200).collect::<String>()));
                }
                continue;
            }
            let refused = matches!(reply.status, 403 | 404) || (r.kind == Kind::List && reply.status == 200);
            if !refused {
                failures.push(format!("{what} (not allowed)"));
            }
            // The audit trail names partners and routes, not seeded ids, to anyone but the admin.
            if let Some(secret) = secrets.iter().find(|s| text.contains(s.as_str())) {
                failures.push(format!("{what} reveals {secret}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} scoping failures:\n{}", failures.len(), failures.join("\n"));

    // The allowed lists do carry the seeds (so the table tests something).
    let seen = |partner: &'static str, path: &'static str| {
        let send = &send;
        async move { send(partner, "GET", path.to_owned(), Value::Null).await.text() }
    };
    assert!(seen("demo-payer", "/review/cases").await.contains(&case));
    assert!(seen("demo-provider", "/fhir/Subscription").await.contains(&subscription_id));
    assert!(seen("admin", "/admin/audit?member=11122333301").await.contains(&case));
}
