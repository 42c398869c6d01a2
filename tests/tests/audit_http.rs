//! The audit trail end to end: requests through the eligibility router append records naming the caller, the
//! route, the members answered and the outcome; the admin exports them as AuditEvents by partner and by member;
//! once sealed, a record changed or removed in the store is reported by `GET /admin/audit/verify` with its digest
//! and key.

use std::sync::Arc;

use exchange_core::ports::{Key, Query, WriteOp};
use exchange_tests::{Reply, TestExchange};
use serde_json::Value;
use time::macros::date;

async fn exchange() -> (TestExchange, axum::Router) {
    let ex = TestExchange::on(date!(2026 - 03 - 10)).await;
    let auth = Arc::new(auth::Auth::new(ex.app.clone(), auth::Settings::default()));
    let router = ex.router.clone().merge(auth::routes(auth));
    (ex, router)
}

async fn get(router: &axum::Router, path: &str, token: &str) -> Reply {
    exchange_tests::request(router, "GET", path, "application/json", Some(token), b"").await
}

fn sample_270() -> Vec<u8> {
    std::fs::read(exchange_tests::repo_root().join("events/eligibility/sample-270.x12")).expect("sample")
}

#[tokio::test]
async fn requests_are_recorded_exported_by_partner_and_member_and_tampering_is_found() {
    let (ex, router) = exchange().await;
    let answer = ex.post_270(&sample_270()).await;
    assert_eq!(answer.status, 200);
    let request_id = answer.header("x-request-id").to_owned();
    let admin = ex.token("admin").await;

    // By partner: one AuditEvent for the 270, naming the member the 271 answered and the vaulted exchange.
    let trail = get(&router, "/admin/audit?partner=demo-provider", &admin).await;
    assert_eq!(trail.status, 200, "{}", trail.text());
    let events = trail.json()["entry"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 1, "{}", trail.text());
    let event = &events[0]["resource"];
    assert_eq!(event["resourceType"], "AuditEvent");
    assert_eq!(event["action"], "E");
    assert_eq!(event["outcome"], "0");
    assert_eq!(event["source"]["site"], "POST /x12/270");
    assert_eq!(event["agent"][0]["who"]["identifier"]["value"], "demo-provider");
    let ext = |url: &str| event["extension"].as_array().and_then(|a| a.iter().find(|e| e["url"] == url)).cloned();
    assert_eq!(ext("urn:exchange:audit:request-id").map(|e| e["valueString"].clone()), Some(Value::from(request_id)));
    let entity_values: Vec<&str> = event["entity"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["what"]["identifier"]["value"].as_str())
        .collect();
    let member = "11122333301";
    assert!(entity_values.contains(&member), "{entity_values:?}");
    assert!(entity_values.iter().any(|v| v.starts_with("exchange/x12/270/demo-provider/")), "{entity_values:?}");

    // By member: the same record.
    let by_member = get(&router, &format!("/admin/audit?member={member}"), &admin).await;
    assert_eq!(by_member.json()["total"], 1, "{}", by_member.text());
    for limit in ["0", "1001"] {
        let out_of_range = get(&router, &format!("/admin/audit?partner=demo-provider&limit={limit}"), &admin).await;
        assert_eq!(out_of_range.status, 400, "limit={limit}: {}", out_of_range.text());
    }

    // Not the admin: 403, and nothing of the trail (this refusal is itself recorded).
    let provider = ex.token("demo-provider").await;
    let refused = get(&router, "/admin/audit?partner=demo-provider", &provider).await;
    assert_eq!(refused.status, 403);
    assert!(!refused.text().contains(member));

    // Sealed a minute later (past the grace period), the trail verifies.
    let sealer = ex.app.sealer().expect("the embedded app seals");
    let pass = sealer.seal(ex.app.clock().now() + time::Duration::minutes(1)).await.expect("seal");
    assert!(pass.records >= 2 && pass.digests >= 2, "{pass:?}");
    let verified = get(&router, "/admin/audit/verify", &admin).await.json();
    assert_eq!(verified["intact"], true, "{verified}");
    assert!(verified["sealed"].as_u64().is_some_and(|n| n >= 2), "{verified}");

    // Change the 270's record in the store: the verification names the digest and the record.
    let store = ex.app.store().clone();
    let place = ext("urn:exchange:audit:key").and_then(|e| e["valueString"].as_str().map(str::to_owned)).expect("key");
    let (pk, sk) = place.split_once('/').expect("pk/sk");
    let key = Key::new(pk, sk);
    let item = store.get(&key).await.expect("get").expect("the record");
    let mut changed = item.clone();
    changed.body["entry"]["outcome"] = Value::from(500);
    store.update(changed, item.version).await.expect("tamper");
    let report = get(&router, "/admin/audit/verify", &admin).await.json();
    assert_eq!(report["intact"], false, "{report}");
    let problem = |report: &Value, kind: &str| {
        report["problems"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["kind"] == kind && p["record"] == place.as_str()))
            .cloned()
    };
    let changed = problem(&report, "changed").expect("the changed record is reported");
    assert_eq!((changed["partner"].as_str(), changed["digest"].as_u64()), (Some("demo-provider"), Some(1)), "{report}");

    // Removed instead: still found, in the same digest.
    let current = store.get(&key).await.expect("get").expect("record").version;
    store.transact(vec![WriteOp::Delete { key: key.clone(), expected_version: current }]).await.expect("remove");
    let report = get(&router, "/admin/audit/verify", &admin).await.json();
    let removed = problem(&report, "removed").expect("the removed record is reported");
    assert_eq!(removed["digest"], 1, "{report}");

    // No audit item carries a TTL: the trail is kept (every record partition of the day).
    let day = pk.rsplit_once('#').map(|(day, _)| day.to_owned()).expect("AUDIT#<day>#<shard>");
    let mut items = Vec::new();
    for shard in 0..exchange_core::domain::audit::AUDIT_SHARDS {
        let page = store.query(&Query::prefix(format!("{day}#{shard:02}"), "", 100)).await.expect("query");
        items.extend(page.items);
    }
    assert!(!items.is_empty() && items.iter().all(|i| i.ttl.is_none()), "{} records", items.len());
}
